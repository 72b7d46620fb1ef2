//! `RemoteDatabase` against a scriptable fake KV Connect server: retries and backoff, unknown
//! write outcomes, 4xx handling, watch reconnection, de-duplication and coalescing, metadata refresh,
//! protocol versions, HTTP version selection and the queue extension's wire behaviour.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kv_connect_client::{
    key, Backoff, HttpVersionPolicy, Kv, KvError, RemoteConfig, RemoteDatabase,
};
use kv_proto as wire;
use kv_proto::queue_pb::{DequeueRequest, DequeueResponse, FinishRequest};
use kv_traits::{
    Consistency, Database, KvEntry, KvValue, QueueLease, ReadRange, Versionstamp, WatchKeyOutput,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Auto,
    Http1,
    Http2,
}

/// One received request.
#[derive(Clone, Debug)]
struct Req {
    path: String,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    /// 1-based number of this request among those to the same path.
    n: usize,
}

enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Fail the exchange after the request was received (h2: stream reset, h1: connection
    /// closed).
    Drop,
    /// A streaming body: these chunks, then end (or stay open).
    Stream {
        chunks: Vec<Vec<u8>>,
        stay_open: bool,
    },
    /// The reply after a delay (a long poll).
    Delayed(Duration, Box<Reply>),
    /// A streaming body fed by the test: one body chunk per message, ends when the sender is
    /// dropped.
    Live(tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>),
}

fn ok(body: Vec<u8>) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![("content-type", "application/x-protobuf".into())],
        body,
    }
}

fn status(code: u16, text: &str) -> Reply {
    Reply::Full {
        status: code,
        headers: vec![],
        body: text.as_bytes().to_vec(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A metadata answer: protocol `version`, data token `token`, expiring in `ttl`.
fn metadata(version: u32, token: &str, ttl: Duration, extensions: Option<&str>) -> Reply {
    let body = format!(
        r#"{{"version":{version},"databaseId":"00000000-0000-0000-0000-000000000000","endpoints":[{{"url":"/v2","consistency":"strong"}}],"token":"{token}","expiresAt":"{}"}}"#,
        rfc3339(SystemTime::now() + ttl)
    );
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(e) = extensions {
        headers.push(("x-denokv-extensions", e.to_string()));
    }
    Reply::Full {
        status: 200,
        headers,
        body: body.into_bytes(),
    }
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Fake {
    async fn start(proto: Proto, handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Fake::serve(listener, proto, Arc::new(handler))
    }

    fn serve(listener: TcpListener, proto: Proto, handler: Handler) -> Fake {
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::<Req>::new()));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (log2, tasks2) = (log.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log) = (handler.clone(), log2.clone());
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, log) = (handler.clone(), log.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let path = parts.uri.path().to_string();
                            let req = {
                                let mut log = log.lock().unwrap();
                                let n = log.iter().filter(|r| r.path == path).count() + 1;
                                let req = Req {
                                    path,
                                    version: parts.version,
                                    headers: parts.headers,
                                    body,
                                    n,
                                };
                                log.push(req.clone());
                                req
                            };
                            let mut reply = handler(&req);
                            while let Reply::Delayed(d, inner) = reply {
                                tokio::time::sleep(d).await;
                                reply = *inner;
                            }
                            respond(reply)
                        }
                    });
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder = match proto {
                        Proto::Auto => builder,
                        Proto::Http1 => builder.http1_only(),
                        Proto::Http2 => builder.http2_only(),
                    };
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
                tasks2.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Fake { addr, log, tasks }
    }

    /// Stops accepting and kills every connection.
    fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self, path: &str) -> Vec<Req> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn count(&self, path: &str) -> usize {
        self.requests(path).len()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop();
    }
}

fn respond(reply: Reply) -> Result<Response<BoxBody<Bytes, std::io::Error>>, std::io::Error> {
    match reply {
        Reply::Delayed(_, inner) => respond(*inner),
        Reply::Drop => Err(std::io::Error::other("dropped on purpose")),
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::builder().status(status);
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            Ok(resp
                .body(
                    Full::new(Bytes::from(body))
                        .map_err(|e: Infallible| match e {})
                        .boxed(),
                )
                .unwrap())
        }
        Reply::Live(rx) => {
            let body = futures::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk))), rx))
            });
            Ok(Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(BodyExt::boxed(StreamBody::new(body)))
                .unwrap())
        }
        Reply::Stream { chunks, stay_open } => {
            let head = futures::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from(c)))),
            );
            let body = if stay_open {
                BodyExt::boxed(StreamBody::new(head.chain(futures::stream::pending())))
            } else {
                BodyExt::boxed(StreamBody::new(head))
            };
            Ok(Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(body)
                .unwrap())
        }
    }
}

/// A client configuration with fast retries.
fn fast(url: String) -> RemoteConfig {
    let mut c = RemoteConfig::new(url, "access");
    c.max_retries = Some(5);
    c.backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    c.watch_backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    c
}

fn empty_read() -> Reply {
    ok(wire::snapshot_read_output(vec![vec![]]).encode_to_vec())
}

fn committed(v: u64) -> Reply {
    ok(
        wire::atomic_write_output(kv_traits::CommitResult::Committed(
            Versionstamp::from_version(v),
        ))
        .encode_to_vec(),
    )
}

fn default_handler(r: &Req) -> Reply {
    match r.path.as_str() {
        "/" => metadata(3, "data-token", Duration::from_secs(3600), None),
        "/v2/snapshot_read" => empty_read(),
        "/v2/atomic_write" => committed(r.n as u64),
        _ => status(404, "Resource not found."),
    }
}

fn get_range() -> Vec<ReadRange> {
    vec![ReadRange::single(b"\x02a\x00")]
}

#[tokio::test]
async fn headers_and_h2c_by_default() {
    let fake = Fake::start(Proto::Auto, default_handler).await;
    let db = RemoteDatabase::open_with(fast(fake.url())).await.unwrap();
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    let meta = &fake.requests("/")[0];
    assert_eq!(
        meta.version,
        Version::HTTP_2,
        "h2c prior knowledge by default"
    );
    assert_eq!(meta.headers["authorization"], "Bearer access");
    assert_eq!(meta.headers["content-type"], "application/json");
    assert_eq!(
        meta.body,
        Bytes::from_static(br#"{"supportedVersions":[1,2,3]}"#)
    );
    let read = &fake.requests("/v2/snapshot_read")[0];
    assert_eq!(read.version, Version::HTTP_2);
    assert_eq!(read.headers["authorization"], "Bearer data-token");
    assert_eq!(read.headers["x-denokv-version"], "3");
    assert_eq!(
        read.headers["x-denokv-database-id"],
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(read.headers["content-type"], "application/x-protobuf");
    // The exact bytes Deno sends for get(["a"]).
    assert_eq!(
        read.body.as_ref(),
        [
            0x0a, 0x0d, 0x0a, 0x03, 0x02, 0x61, 0x00, 0x12, 0x04, 0x02, 0x61, 0x00, 0x00, 0x18,
            0x01
        ]
    );
}

#[tokio::test]
async fn http_version_selection() {
    // An HTTP/1.1-only server: Auto falls back, Http2Only fails, Http1Only works.
    let h1 = Fake::start(Proto::Http1, default_handler).await;
    let db = RemoteDatabase::open_with(fast(h1.url())).await.unwrap();
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(
        h1.requests("/v2/snapshot_read")[0].version,
        Version::HTTP_11
    );
    let mut c = fast(h1.url());
    c.http_version = HttpVersionPolicy::Http2Only;
    c.max_retries = Some(0);
    assert!(RemoteDatabase::open_with(c).await.is_err());
    let mut c = fast(h1.url());
    c.http_version = HttpVersionPolicy::Http1Only;
    RemoteDatabase::open_with(c).await.unwrap();

    // An h2c-only server works with Auto and Http2Only.
    let h2 = Fake::start(Proto::Http2, default_handler).await;
    let db = RemoteDatabase::open_with(fast(h2.url())).await.unwrap();
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    let mut c = fast(h2.url());
    c.http_version = HttpVersionPolicy::Http2Only;
    RemoteDatabase::open_with(c).await.unwrap();
    assert!(h2
        .requests("/")
        .iter()
        .all(|r| r.version == Version::HTTP_2));
}

#[tokio::test]
async fn reads_retry_5xx_and_dropped_connections() {
    let fake = Fake::start(Proto::Auto, |r| match (r.path.as_str(), r.n) {
        ("/", 1) => status(503, "starting up"),
        ("/v2/snapshot_read", 1) => status(503, "busy"),
        ("/v2/snapshot_read", 2) => Reply::Drop,
        ("/v2/snapshot_read", 3) => status(500, "oops"),
        _ => default_handler(r),
    })
    .await;
    let db = RemoteDatabase::open_with(fast(fake.url())).await.unwrap();
    assert_eq!(fake.count("/"), 2, "metadata retried after a 503");
    let out = db
        .snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(out, vec![vec![]]);
    assert_eq!(fake.count("/v2/snapshot_read"), 4);
}

#[tokio::test]
async fn reads_give_up_after_max_retries() {
    let fake = Fake::start(Proto::Auto, |r| match r.path.as_str() {
        "/v2/snapshot_read" => status(503, "always busy"),
        _ => default_handler(r),
    })
    .await;
    let mut c = fast(fake.url());
    c.max_retries = Some(3);
    let db = RemoteDatabase::open_with(c).await.unwrap();
    let err = db
        .snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        KvError::Remote {
            status: 503,
            message: "always busy".into()
        }
    );
    assert!(!err.is_client_error());
    assert_eq!(fake.count("/v2/snapshot_read"), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let fake = Fake::start(Proto::Auto, |r| match r.path.as_str() {
        "/v2/snapshot_read" => status(
            400,
            "The read range limit of the snapshot read request is invalid.",
        ),
        "/v2/atomic_write" => status(413, "too big"),
        _ => default_handler(r),
    })
    .await;
    let db = RemoteDatabase::open_with(fast(fake.url())).await.unwrap();
    let err = db
        .snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap_err();
    assert!(err.is_client_error());
    assert_eq!(
        err,
        KvError::Remote {
            status: 400,
            message: "The read range limit of the snapshot read request is invalid.".into()
        }
    );
    let kv = Kv::from_database(db);
    let err = kv.set(&key!["a"], 1).await.unwrap_err();
    assert!(err.is_client_error(), "{err:?}");
    assert_eq!(fake.count("/v2/snapshot_read"), 1);
    assert_eq!(fake.count("/v2/atomic_write"), 1);

    // A 401 at the metadata exchange fails open at once.
    let denied = Fake::start(Proto::Auto, |_| status(401, "Invalid access token.")).await;
    let err = RemoteDatabase::open_with(fast(denied.url()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        KvError::Remote {
            status: 401,
            message: "Invalid access token.".into()
        }
    );
    assert_eq!(denied.count("/"), 1);
}

#[tokio::test]
async fn writes_with_unknown_outcome_are_not_retried() {
    for policy in [HttpVersionPolicy::Auto, HttpVersionPolicy::Http1Only] {
        let fake = Fake::start(Proto::Auto, |r| match (r.path.as_str(), r.n) {
            ("/v2/atomic_write", 1) => status(503, "maybe"),
            ("/v2/atomic_write", 2) => Reply::Drop,
            ("/v2/atomic_write", 3) => ok(vec![0xff, 0xff]), // garbage answer
            _ => default_handler(r),
        })
        .await;
        let mut c = fast(fake.url());
        c.http_version = policy;
        let kv = Kv::open_remote_with(c).await.unwrap();
        for n in 1..=3 {
            let err = kv.set(&key!["a"], 1).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    kv_connect_client::Error::Kv(KvError::UnknownOutcome(_))
                ),
                "attempt {n}: {err:?}"
            );
            assert!(!err.is_client_error());
            assert_eq!(fake.count("/v2/atomic_write"), n, "no resend");
        }
        // The fourth write commits.
        assert_eq!(
            kv.set(&key!["a"], 1).await.unwrap(),
            Versionstamp::from_version(4)
        );
    }
}

#[tokio::test]
async fn writes_are_retried_when_the_connection_is_refused() {
    let first = Fake::start(Proto::Auto, default_handler).await;
    let addr = first.addr;
    let mut c = fast(first.url());
    // Enough retries (at most 100 ms apart) to outlast the restart below by far, however
    // late the loaded machine runs it.
    c.max_retries = Some(300);
    c.backoff = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(100),
    };
    let kv = Kv::open_remote_with(c).await.unwrap();
    first.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The server comes back on the same port a little later.
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        Fake::serve(listener, Proto::Auto, Arc::new(default_handler))
    });
    let vs = kv.set(&key!["a"], "after restart").await.unwrap();
    let second = restarted.await.unwrap();
    assert_eq!(vs, Versionstamp::from_version(1));
    assert_eq!(
        second.count("/v2/atomic_write"),
        1,
        "committed exactly once"
    );
    assert_eq!(first.count("/v2/atomic_write"), 0);

    // If it never comes back, the error is a transport error, not an unknown outcome.
    second.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = fast(format!("http://{addr}"));
    c.max_retries = Some(2);
    let err = RemoteDatabase::open_with(c).await.unwrap_err();
    assert!(matches!(err, KvError::Transport(_)), "{err:?}");
}

fn watch_frame(vs: Option<u64>) -> Vec<u8> {
    let entry = vs.map(|v| KvEntry {
        key: b"\x02a\x00".to_vec(),
        value: KvValue::U64(v),
        versionstamp: Versionstamp::from_version(v),
    });
    wire::encode_watch_frame(&wire::watch_output(vec![WatchKeyOutput::Changed(entry)]))
}

#[tokio::test]
async fn watch_reconnects_and_suppresses_duplicates() {
    let fake = Fake::start(Proto::Auto, |r| match (r.path.as_str(), r.n) {
        // First connection: a keep-alive, the initial snapshot, then the stream ends.
        ("/v2/watch", 1) => Reply::Stream {
            chunks: vec![vec![0, 0, 0, 0], watch_frame(None)],
            stay_open: false,
        },
        // Second: a 503 (retried).
        ("/v2/watch", 2) => status(503, "restarting"),
        // Third: the same snapshot again (suppressed), then a change, split across chunks; then
        // silence, which the idle timeout turns into a reconnect.
        ("/v2/watch", 3) => {
            let f = watch_frame(Some(5));
            let (a, b) = f.split_at(3);
            Reply::Stream {
                chunks: vec![watch_frame(None), a.to_vec(), b.to_vec()],
                stay_open: true,
            }
        }
        // Fourth: unchanged snapshot (suppressed), then a new change.
        ("/v2/watch", _) => Reply::Stream {
            chunks: vec![watch_frame(Some(5)), watch_frame(Some(6))],
            stay_open: true,
        },
        _ => default_handler(r),
    })
    .await;
    let mut c = fast(fake.url());
    c.watch_idle_timeout = Duration::from_millis(500);
    let db = RemoteDatabase::open_with(c).await.unwrap();
    let mut stream = db.watch(vec![b"\x02a\x00".to_vec()]).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert_eq!(next().await, vec![WatchKeyOutput::Changed(None)]);
    let n = next().await;
    assert!(
        matches!(&n[..], [WatchKeyOutput::Changed(Some(e))] if e.versionstamp == Versionstamp::from_version(5)),
        "{n:?}"
    );
    let n = next().await;
    assert!(
        matches!(&n[..], [WatchKeyOutput::Changed(Some(e))] if e.versionstamp == Versionstamp::from_version(6)),
        "{n:?}"
    );
    assert_eq!(fake.count("/v2/watch"), 4);
    let w = &fake.requests("/v2/watch")[0];
    assert_eq!(w.body.as_ref(), [0x0a, 0x05, 0x0a, 0x03, 0x02, 0x61, 0x00]);
}

#[tokio::test]
async fn watch_errors() {
    // 4xx on the watch request is returned from watch() itself.
    let fake = Fake::start(Proto::Auto, |r| match r.path.as_str() {
        "/v2/watch" => status(400, "Too many keys."),
        _ => default_handler(r),
    })
    .await;
    let db = RemoteDatabase::open_with(fast(fake.url())).await.unwrap();
    let err = db.watch(vec![b"\x02a\x00".to_vec()]).await.err().unwrap();
    assert_eq!(
        err,
        KvError::Remote {
            status: 400,
            message: "Too many keys.".into()
        }
    );

    // Protocol 2 has no watch.
    let v2 = Fake::start(Proto::Auto, |r| match r.path.as_str() {
        "/" => metadata(2, "t", Duration::from_secs(3600), None),
        _ => default_handler(r),
    })
    .await;
    let db = RemoteDatabase::open_with(fast(v2.url())).await.unwrap();
    assert_eq!(db.protocol_version(), 2);
    assert!(db
        .watch(vec![b"\x02a\x00".to_vec()])
        .await
        .err()
        .unwrap()
        .is_client_error());
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(
        v2.requests("/v2/snapshot_read")[0].headers["x-denokv-version"],
        "2"
    );
}

#[tokio::test]
async fn metadata_is_refreshed() {
    // Background refresh once the metadata is older than refresh_interval.
    let fake = Fake::start(Proto::Auto, |r| match r.path.as_str() {
        "/" => metadata(3, &format!("tok-{}", r.n), Duration::from_secs(3600), None),
        _ => default_handler(r),
    })
    .await;
    let mut c = fast(fake.url());
    c.refresh_interval = Duration::from_millis(300);
    let opened_at = Instant::now();
    let db = RemoteDatabase::open_with(c).await.unwrap();
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    let first_read_fresh = opened_at.elapsed() < Duration::from_millis(300);
    tokio::time::sleep(Duration::from_millis(350)).await;
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap(); // starts a refresh
                   // The refresh runs in the background: read until a call carries its token (the deadline
                   // only bounds a hang).
    let deadline = Instant::now() + Duration::from_secs(30);
    let auth = loop {
        db.snapshot_read(get_range(), Consistency::Strong)
            .await
            .unwrap();
        let auth: Vec<String> = fake
            .requests("/v2/snapshot_read")
            .iter()
            .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
            .collect();
        if auth.iter().any(|a| a != "Bearer tok-1") {
            break auth;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh within 30 s: {auth:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The calls used the exchanged tokens in order: tok-1 for the first read (and the one
    // that started the refresh, unless the first read was already late enough to start it),
    // then tok-2; a later token only if a loaded machine let another interval pass.
    let numbers: Vec<usize> = auth
        .iter()
        .map(|a| a.strip_prefix("Bearer tok-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers[0], 1, "{auth:?}");
    if first_read_fresh {
        assert_eq!(numbers[1], 1, "{auth:?}");
    }
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{auth:?}");
    assert!(numbers.contains(&2), "{auth:?}");
    // One exchange per token used, plus at most one background refresh still in flight.
    let last = *numbers.last().unwrap();
    assert!(
        (last..=last + 1).contains(&fake.count("/")),
        "{} exchanges for {auth:?}",
        fake.count("/")
    );

    // A token about to expire is refreshed before the call.
    let short = Fake::start(Proto::Auto, |r| match r.path.as_str() {
        "/" => metadata(3, &format!("short-{}", r.n), Duration::from_secs(30), None),
        _ => default_handler(r),
    })
    .await;
    let opened_at = Instant::now();
    let db = RemoteDatabase::open_with(fast(short.url())).await.unwrap();
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    // Within a second of the exchange a short-lived token is not refreshed again (checked
    // when the read certainly came within that second; a loaded machine may be slower).
    if opened_at.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            short.count("/"),
            1,
            "no refresh storm right after an exchange"
        );
    }
    let exchanges_before = short.count("/");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    db.snapshot_read(get_range(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(short.count("/"), exchanges_before + 1);
    assert_eq!(
        short.requests("/v2/snapshot_read")[1].headers["authorization"],
        format!("Bearer short-{}", exchanges_before + 1).as_str()
    );
}

#[tokio::test]
async fn queue_extension_wire_behaviour() {
    let lease24 = QueueLease {
        id: [9; 16],
        deadline_ms: 123_456,
    };
    let fake = Fake::start(Proto::Auto, move |r| match (r.path.as_str(), r.n) {
        ("/", _) => metadata(3, "t", Duration::from_secs(3600), Some("other, queue-v1")),
        ("/v2/queue/dequeue", 1) => ok(DequeueResponse::default().encode_to_vec()),
        ("/v2/queue/dequeue", 2) => Reply::Drop, // dequeue is retried
        ("/v2/queue/dequeue", 3) => ok(DequeueResponse {
            lease: vec![1, 2, 3, 4, 5],
            payload: vec![0xff, 0x0f, 0x22, 0x02, b'h', b'i'],
            attempt: 2,
            lease_deadline_ms: 99,
        }
        .encode_to_vec()),
        ("/v2/queue/dequeue", _) => ok(DequeueResponse {
            lease: lease24.to_bytes().to_vec(),
            payload: vec![0xff, 0x0f, 0x49, 0x02],
            attempt: 1,
            lease_deadline_ms: 123_456,
        }
        .encode_to_vec()),
        ("/v2/queue/finish", 1) => ok(vec![]),
        ("/v2/queue/finish", 2) => status(409, "The queue lease is unknown or has expired."),
        ("/v2/queue/finish", 3) => status(503, "unavailable"),
        ("/v2/queue/finish", _) => ok(vec![]),
        _ => default_handler(r),
    })
    .await;
    let db = RemoteDatabase::open_with(fast(fake.url())).await.unwrap();
    assert!(db.supports_queues());
    assert_eq!(db.dequeue(Duration::from_secs(60)).await.unwrap(), None);
    assert_eq!(
        DequeueRequest::decode(fake.requests("/v2/queue/dequeue")[0].body.as_ref())
            .unwrap()
            .wait_ms,
        30_000
    );

    let msg = db
        .dequeue(Duration::from_millis(100))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(fake.count("/v2/queue/dequeue"), 3);
    assert_eq!(msg.attempt, 2);
    assert_eq!(msg.payload, vec![0xff, 0x0f, 0x22, 0x02, b'h', b'i']);
    assert_eq!(
        DequeueRequest::decode(fake.requests("/v2/queue/dequeue")[2].body.as_ref())
            .unwrap()
            .wait_ms,
        100
    );
    // The opaque token goes back as received.
    db.finish(msg.lease, true).await.unwrap();
    let f = FinishRequest::decode(fake.requests("/v2/queue/finish")[0].body.as_ref()).unwrap();
    assert_eq!(
        f,
        FinishRequest {
            lease: vec![1, 2, 3, 4, 5],
            success: true
        }
    );
    // 409 → LeaseNotFound, not retried.
    assert_eq!(
        db.finish(msg.lease, false).await,
        Err(KvError::LeaseNotFound)
    );
    assert_eq!(fake.count("/v2/queue/finish"), 2);

    // A 24-byte lease decodes as a QueueLease; a 5xx on finish is an unknown outcome.
    let msg = db
        .dequeue(Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.lease, lease24);
    let err = db.finish(msg.lease, false).await.unwrap_err();
    assert!(matches!(err, KvError::UnknownOutcome(_)), "{err:?}");
    assert_eq!(fake.count("/v2/queue/finish"), 3);
    db.finish(msg.lease, false).await.unwrap();
    let f = FinishRequest::decode(fake.requests("/v2/queue/finish")[3].body.as_ref()).unwrap();
    assert_eq!(
        f,
        FinishRequest {
            lease: lease24.to_bytes().to_vec(),
            success: false
        }
    );

    // Without the extension: a clear error, and no request is sent.
    let plain = Fake::start(Proto::Auto, default_handler).await;
    let db = RemoteDatabase::open_with(fast(plain.url())).await.unwrap();
    assert!(!db.supports_queues());
    let err = db.dequeue(Duration::from_millis(10)).await.unwrap_err();
    assert!(
        err.to_string().contains("does not support remote queues"),
        "{err}"
    );
    assert_eq!(plain.count("/v2/queue/dequeue"), 0);
}

#[tokio::test]
async fn listen_queue_over_the_extension() {
    // One message whose handler fails, then one that succeeds; finish reports both outcomes.
    let fake = Fake::start(Proto::Auto, |r| match (r.path.as_str(), r.n) {
        ("/", _) => metadata(3, "t", Duration::from_secs(3600), Some("queue-v1")),
        ("/v2/queue/dequeue", n @ (1 | 2)) => ok(DequeueResponse {
            lease: vec![n as u8; 3],
            payload: kv_traits::v8::serialize(&kv_traits::v8::V8Value::String(format!("m{n}"))),
            attempt: 1,
            lease_deadline_ms: 0,
        }
        .encode_to_vec()),
        ("/v2/queue/dequeue", _) => {
            std::thread::sleep(Duration::from_millis(20));
            ok(DequeueResponse::default().encode_to_vec())
        }
        ("/v2/queue/finish", _) => ok(vec![]),
        _ => default_handler(r),
    })
    .await;
    let kv = Kv::open_remote_with(fast(fake.url())).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let listener = tokio::spawn(async move {
        kv.listen_queue(move |d| {
            let seen = seen2.clone();
            async move {
                let s = d.value.as_str().unwrap().to_string();
                seen.lock().unwrap().push(s.clone());
                if s == "m1" {
                    Err("first fails")
                } else {
                    Ok(())
                }
            }
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if fake.count("/v2/queue/finish") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listener.abort();
    assert_eq!(*seen.lock().unwrap(), ["m1", "m2"]);
    let finishes: HashMap<Vec<u8>, bool> = fake
        .requests("/v2/queue/finish")
        .iter()
        .map(|r| {
            let f = FinishRequest::decode(r.body.as_ref()).unwrap();
            (f.lease, f.success)
        })
        .collect();
    assert_eq!(finishes.get(&vec![1u8; 3]), Some(&false));
    assert_eq!(finishes.get(&vec![2u8; 3]), Some(&true));
}

#[tokio::test]
async fn close_ends_long_polls_and_watches() {
    let fake = Fake::start(Proto::Auto, |r| match r.path.as_str() {
        "/" => metadata(3, "t", Duration::from_secs(3600), Some("queue-v1")),
        "/v2/queue/dequeue" => Reply::Delayed(Duration::from_secs(20), Box::new(ok(vec![]))),
        "/v2/watch" => Reply::Stream {
            chunks: vec![watch_frame(None)],
            stay_open: true,
        },
        _ => default_handler(r),
    })
    .await;
    let db = RemoteDatabase::open_with(fast(fake.url())).await.unwrap();
    let kv = Kv::from_database(db.clone());
    let mut watch = kv.watch(&[key!["a"]]).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first[0].value, None);
    let listener = {
        let kv = kv.clone();
        tokio::spawn(async move { kv.listen_queue(|_d| async { Ok::<(), String>(()) }).await })
    };
    // Wait for the listener's long poll to reach the server (not a fixed delay).
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.count("/v2/queue/dequeue") == 0 {
        assert!(Instant::now() < deadline, "no dequeue within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.count("/v2/queue/dequeue"), 1, "a long poll is pending");
    kv.close().await.unwrap();
    // The pending long poll answers only after 20 s: ending well before is a pass.
    let r = tokio::time::timeout(Duration::from_secs(15), listener)
        .await
        .expect("listener ends on close")
        .unwrap();
    assert_eq!(r, Ok(()));
    let end = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("watch ends on close");
    assert!(end.is_none());
    assert_eq!(
        db.snapshot_read(get_range(), Consistency::Strong).await,
        Err(KvError::Closed)
    );
}

/// A watch frame for the keys `a`, `b`, `c`: `Some(None)` = changed and absent, `Some(Some(v))`
/// = changed to the entry of versionstamp `v`, `None` = unchanged.
fn frame3(outs: [Option<Option<u64>>; 3]) -> Vec<u8> {
    wire::encode_watch_frame(&wire::watch_output(
        outs.iter().zip(KEYS3).map(|(o, k)| out3(k, *o)).collect(),
    ))
}

const KEYS3: [&[u8]; 3] = [b"\x02a\x00", b"\x02b\x00", b"\x02c\x00"];

fn out3(key: &[u8], o: Option<Option<u64>>) -> WatchKeyOutput {
    match o {
        None => WatchKeyOutput::Unchanged,
        Some(vs) => WatchKeyOutput::Changed(vs.map(|v| KvEntry {
            key: key.to_vec(),
            value: KvValue::U64(v),
            versionstamp: Versionstamp::from_version(v),
        })),
    }
}

/// A fake whose first `/watch` response is fed through the returned sender.
async fn live_watch_server(proto: Proto) -> (Fake, tokio::sync::mpsc::UnboundedSender<Vec<u8>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let rx = Mutex::new(Some(rx));
    let fake = Fake::start(proto, move |r| match r.path.as_str() {
        "/v2/watch" => match rx.lock().unwrap().take() {
            Some(rx) => Reply::Live(rx),
            None => status(500, "only one watch connection in this test"),
        },
        _ => default_handler(r),
    })
    .await;
    (fake, tx)
}

async fn next_within(
    stream: &mut kv_traits::WatchStream,
    ms: u64,
) -> Option<Result<Vec<WatchKeyOutput>, KvError>> {
    tokio::time::timeout(Duration::from_millis(ms), stream.next())
        .await
        .ok()
        .flatten()
}

/// A watcher that does not poll during a burst of 200 frames gets one notification with the
/// merged latest state, and nothing after it.
async fn slow_watcher_case(proto: Proto) {
    let (fake, tx) = live_watch_server(proto).await;
    let mut c = fast(fake.url());
    c.http_version = match proto {
        Proto::Http1 => HttpVersionPolicy::Http1Only,
        _ => HttpVersionPolicy::Http2Only,
    };
    let db = RemoteDatabase::open_with(c).await.unwrap();
    let mut stream = db
        .watch(KEYS3.iter().map(|k| k.to_vec()).collect())
        .await
        .unwrap();
    tx.send(frame3([Some(Some(1)), Some(None), Some(Some(2))]))
        .unwrap();
    let first = next_within(&mut stream, 30_000).await.unwrap().unwrap();
    assert_eq!(
        first,
        vec![
            out3(KEYS3[0], Some(Some(1))),
            out3(KEYS3[1], Some(None)),
            out3(KEYS3[2], Some(Some(2)))
        ]
    );
    // A burst the consumer does not read: `a` changes in every frame, `b` once in the
    // middle, `c` never (reported unchanged, or as a full snapshot with the same
    // versionstamp); keep-alives and a frame split across chunks in between.
    for i in 0..200u64 {
        let b = (i == 100).then_some(Some(500));
        let c = (i % 2 == 0).then_some(Some(2));
        let f = frame3([Some(Some(10 + i)), b, c]);
        if i % 50 == 0 {
            tx.send(vec![0, 0, 0, 0]).unwrap();
            let (x, y) = f.split_at(5);
            tx.send(x.to_vec()).unwrap();
            tx.send(y.to_vec()).unwrap();
        } else {
            tx.send(f).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = next_within(&mut stream, 30_000).await.unwrap().unwrap();
    assert_eq!(
        n,
        vec![
            out3(KEYS3[0], Some(Some(209))),
            out3(KEYS3[1], Some(Some(500))),
            WatchKeyOutput::Unchanged,
        ],
        "{proto:?}: the first notification after the burst is the merged latest state"
    );
    assert!(
        next_within(&mut stream, 300).await.is_none(),
        "{proto:?}: nothing follows the merged state"
    );
    // A consumer that is waiting still sees each later change on its own.
    tx.send(frame3([None, Some(None), None])).unwrap();
    let n = next_within(&mut stream, 30_000).await.unwrap().unwrap();
    assert_eq!(
        n,
        vec![
            WatchKeyOutput::Unchanged,
            out3(KEYS3[1], Some(None)),
            WatchKeyOutput::Unchanged
        ]
    );
    assert_eq!(fake.count("/v2/watch"), 1, "{proto:?}: no reconnect");
}

#[tokio::test]
async fn slow_watcher_gets_one_merged_notification() {
    slow_watcher_case(Proto::Http2).await;
    // HTTP/1.1 hands the body over one chunk at a time from the connection task; on a
    // current-thread runtime one yield lets it pass on everything already received.
    slow_watcher_case(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_gets_one_merged_notification_multi_thread() {
    slow_watcher_case(Proto::Http2).await;
}

#[tokio::test]
async fn merged_state_comes_before_a_fatal_frame() {
    let (_fake, tx) = live_watch_server(Proto::Auto).await;
    let db = RemoteDatabase::open_with(fast(_fake.url())).await.unwrap();
    let mut stream = db
        .watch(KEYS3.iter().map(|k| k.to_vec()).collect())
        .await
        .unwrap();
    tx.send(frame3([Some(Some(1)), Some(None), Some(Some(2))]))
        .unwrap();
    next_within(&mut stream, 30_000).await.unwrap().unwrap();
    tx.send(frame3([Some(Some(3)), None, None])).unwrap();
    tx.send(frame3([Some(Some(4)), None, None])).unwrap();
    // A frame with the wrong number of keys is a protocol error.
    tx.send(watch_frame(Some(9))).unwrap();
    tx.send(frame3([Some(Some(5)), None, None])).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = next_within(&mut stream, 30_000).await.unwrap().unwrap();
    assert_eq!(
        n,
        vec![
            out3(KEYS3[0], Some(Some(4))),
            WatchKeyOutput::Unchanged,
            WatchKeyOutput::Unchanged
        ]
    );
    let err = next_within(&mut stream, 30_000).await.unwrap().unwrap_err();
    assert!(matches!(err, KvError::Transport(_)), "{err:?}");
    assert!(
        next_within(&mut stream, 1000).await.is_none(),
        "the stream ends"
    );
}
