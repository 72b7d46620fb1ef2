//! Shared helpers: an in-process server over the memory engine, raw HTTP/1.1 and h2c clients,
//! the server binary as a child process, and (`clients`) the real Deno and npm clients.
#![allow(dead_code)]

pub mod balancer;
pub mod clients;
pub mod cluster;
pub mod denokv_readme;
pub mod exposition;
pub mod multidb;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kv_connect_server::{KvConnectServer, ServerConfig};
use kv_proto::pb;
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-access-token";

/// Which HTTP version the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2c,
}

pub const BOTH: [Proto; 2] = [Proto::Http1, Proto::H2c];

pub struct TestServer {
    pub addr: SocketAddr,
    /// The unauthenticated metrics listener, when `metrics_addr` was configured.
    pub metrics_addr: Option<SocketAddr>,
    pub db: Arc<kv_db::Db>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), kv_connect_server::ServeError>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let db = kv_db::Db::open(
            kv_engine_memory::MemoryBackend::new(),
            kv_db::DbConfig::default(),
        )
        .await
        .unwrap();
        Self::start_db(Arc::new(db), tweak).await
    }

    pub async fn start_db(db: Arc<kv_db::Db>, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = ServerConfig::new(TOKEN);
        tweak(&mut config);
        let server = KvConnectServer::from_arc(db.clone(), config)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr();
        let metrics_addr = server.metrics_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_with_shutdown(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            metrics_addr,
            db,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers graceful shutdown and waits for it.
    pub async fn shutdown(&mut self) -> Result<(), kv_connect_server::ServeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap(),
            None => Ok(()),
        }
    }
}

pub fn client(proto: Proto) -> Client<HttpConnector, Full<Bytes>> {
    let mut b = Client::builder(TokioExecutor::new());
    if proto == Proto::H2c {
        b.http2_only(true);
    }
    b.build_http()
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn send(proto: Proto, req: Request<Full<Bytes>>) -> Resp {
    let res = client(proto).request(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let version = res.version();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
        version,
    }
}

pub async fn post(
    proto: Proto,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = Request::post(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(proto, b.body(Full::new(body.into())).unwrap()).await
}

/// The metadata as parsed JSON.
pub struct Meta {
    pub json: serde_json::Value,
    pub token: String,
    pub database_id: String,
}

pub async fn metadata(proto: Proto, server: &TestServer) -> Meta {
    metadata_at(proto, server.addr).await
}

/// The metadata of the server at `addr` (e.g. a spawned binary).
pub async fn metadata_at(proto: Proto, addr: SocketAddr) -> Meta {
    let auth = format!("Bearer {TOKEN}");
    let r = post(
        proto,
        &format!("http://{addr}/"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"supportedVersions":[1,2,3]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    Meta {
        token: json["token"].as_str().unwrap().to_string(),
        database_id: json["databaseId"].as_str().unwrap().to_string(),
        json,
    }
}

/// A data-path client: metadata exchanged once, then POSTs with the v3 headers.
pub struct Kv {
    pub proto: Proto,
    pub base: String,
    pub token: String,
    pub database_id: String,
}

impl Kv {
    pub async fn connect(proto: Proto, server: &TestServer) -> Kv {
        Self::at(proto, server.addr).await
    }

    /// A client of the server at `addr` (e.g. a spawned binary).
    pub async fn at(proto: Proto, addr: SocketAddr) -> Kv {
        let m = metadata_at(proto, addr).await;
        Kv {
            proto,
            base: format!("http://{addr}/v2"),
            token: m.token,
            database_id: m.database_id,
        }
    }

    pub async fn raw(&self, method: &str, body: impl Into<Bytes>) -> Resp {
        let auth = format!("Bearer {}", self.token);
        post(
            self.proto,
            &format!("{}/{method}", self.base),
            &[
                ("authorization", &auth),
                ("x-denokv-version", "3"),
                ("x-denokv-database-id", &self.database_id),
                ("content-type", "application/x-protobuf"),
            ],
            body,
        )
        .await
    }

    /// Starts a `/watch` of `keys` and returns the response as it arrives (status, headers,
    /// then the frame stream).
    pub async fn start_watch(&self, keys: &[Vec<u8>]) -> http::Response<hyper::body::Incoming> {
        self.start_watch_on(&client(self.proto), keys).await
    }

    /// [`Kv::start_watch`] through `client` (streams of one HTTP/2 client share its connection).
    pub async fn start_watch_on(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        keys: &[Vec<u8>],
    ) -> http::Response<hyper::body::Incoming> {
        let body = pb::Watch {
            keys: keys
                .iter()
                .map(|k| pb::WatchKey { key: k.clone() })
                .collect(),
        }
        .encode_to_vec();
        let req = Request::post(format!("{}/watch", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("x-denokv-version", "3")
            .header("x-denokv-database-id", &self.database_id)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        client.request(req).await.unwrap()
    }

    pub async fn read(&self, req: &pb::SnapshotRead) -> pb::SnapshotReadOutput {
        let r = self.raw("snapshot_read", req.encode_to_vec()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.content_type(), "application/x-protobuf");
        pb::SnapshotReadOutput::decode(r.body).unwrap()
    }

    pub async fn write(&self, req: &pb::AtomicWrite) -> pb::AtomicWriteOutput {
        let r = self.raw("atomic_write", req.encode_to_vec()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.content_type(), "application/x-protobuf");
        pb::AtomicWriteOutput::decode(r.body).unwrap()
    }

    /// Reads one key; its entry if present.
    pub async fn get(&self, key: &[u8]) -> Option<pb::KvEntry> {
        let mut end = key.to_vec();
        end.push(0);
        let out = self
            .read(&pb::SnapshotRead {
                ranges: vec![pb::ReadRange {
                    start: key.to_vec(),
                    end,
                    limit: 1,
                    reverse: false,
                }],
            })
            .await;
        out.ranges[0].values.first().cloned()
    }
}

pub fn bytes_value(data: &[u8]) -> Option<pb::KvValue> {
    Some(pb::KvValue {
        data: data.to_vec(),
        encoding: pb::ValueEncoding::VeBytes as i32,
    })
}

pub fn set(key: &[u8], data: &[u8]) -> pb::Mutation {
    pb::Mutation {
        key: key.to_vec(),
        value: bytes_value(data),
        mutation_type: pb::MutationType::MSet as i32,
        ..Default::default()
    }
}

pub fn write_of(mutations: Vec<pb::Mutation>) -> pb::AtomicWrite {
    pb::AtomicWrite {
        mutations,
        ..Default::default()
    }
}

/// The key `["<s>"]`.
pub fn key(s: &str) -> Vec<u8> {
    let mut k = vec![2];
    k.extend_from_slice(s.as_bytes());
    k.push(0);
    k
}

/// The server binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_kv-connect-server");

/// A running `kv-connect-server` process; killed if still running when dropped.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment variables through which the server binary takes settings that a test passes as
/// arguments: tests that start it clear them ([`clear_server_env`]), so that the caller's
/// environment cannot change what runs.
pub const SERVER_SETTINGS_ENV: &[&str] = &[
    "DATABASE_URL",
    "KV_CONNECT_ENGINE",
    "KV_CONNECT_PATH",
    "KV_CONNECT_ADDR",
    "KV_CONNECT_TLS_CERT",
    "KV_CONNECT_TLS_KEY",
    "KV_CONNECT_READ_ONLY",
    "KV_CONNECT_DATABASE_ID",
    "KV_CONNECT_DATABASE_SCHEMA",
    "KV_CONNECT_DATABASE_REPLICA_URL",
    "KV_CONNECT_TOKEN_TTL",
    "KV_CONNECT_QUEUE_LEASE",
    "KV_CONNECT_HTTP2_MAX_CONCURRENT_STREAMS",
    "KV_CONNECT_BACKUP_RETENTION",
    "KV_CONNECT_BACKUP_RETENTION_GRACE",
];

/// Removes [`SERVER_SETTINGS_ENV`] from `cmd`'s environment.
pub fn clear_server_env(cmd: &mut std::process::Command) {
    for var in SERVER_SETTINGS_ENV {
        cmd.env_remove(var);
    }
}

/// Starts the binary with `args` (and the test token) and waits for its listening line.
pub fn spawn(args: &[&str]) -> Proc {
    spawn_with(args, &[])
}

/// [`spawn`] with extra environment variables (set after the test token, so they may replace
/// it).
pub fn spawn_with(args: &[&str], envs: &[(&str, &str)]) -> Proc {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .env("DENO_KV_ACCESS_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("kv-connect-server listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Proc { child, addr }
}

impl Proc {
    /// SIGTERM, then the exit status (panics if it takes more than 10 s). Call it off the
    /// async runtime (`spawn_blocking`) when the test still holds client connections.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("server did not exit within 30 s of SIGTERM");
    }
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kvcs-{name}-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The body of `GET /healthz` of the server at `addr`.
pub async fn healthz(addr: SocketAddr) -> String {
    let req = Request::get(format!("http://{addr}/healthz"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(Proto::Http1, req).await.text()
}

/// The value of a `name: value` line of a `/healthz` report.
pub fn field<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in {report:?}"))
}

/// Waits (at most 30 s) until the server at `addr`, running with `--backup-to`, has shipped
/// every commit.
pub async fn wait_until_shipped(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let report = healthz(addr).await;
        // One server on a file engine ships itself: it is never on standby.
        assert_eq!(field(&report, "backup_standby"), "false", "{report}");
        if field(&report, "backup_initial_snapshot_done") == "true"
            && field(&report, "backup_shipped_through") == field(&report, "backup_committed")
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backup never caught up: {report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
