//! Helpers for servers with many databases and scoped tokens: the binary on a fresh data
//! directory, the admin API, the CLI, and a data-path client for `/db/<name>` URLs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::{post, send, spawn, Kv, Proc, Proto, Resp, BIN, TOKEN};

/// A fresh directory under the cargo test tmpdir (removed by [`DirServer`] on drop).
pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "multidb-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kv-connect-server --data-dir DIR` (sqlite unless `extra` says otherwise) on a free port,
/// with the test access token; the directory is removed on drop.
pub struct DirServer {
    pub proc: Option<Proc>,
    pub dir: PathBuf,
}

impl DirServer {
    pub fn start(tag: &str, extra: &[&str]) -> DirServer {
        let dir = fresh_dir(tag);
        let data = dir.join("data");
        let mut args = vec![
            "--data-dir",
            data.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ];
        if !extra.contains(&"--engine") {
            args.extend(["--engine", "sqlite"]);
        }
        args.extend_from_slice(extra);
        DirServer {
            proc: Some(spawn(&args)),
            dir,
        }
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn url(&self, path: &str) -> String {
        let addr = self.proc.as_ref().expect("server running").addr;
        format!("http://{addr}{path}")
    }

    /// An admin API call with `token`.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> Resp {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(body))
            .unwrap();
        send(Proto::Http1, req).await
    }

    /// Creates database `name` with the access token (asserting 201); its info.
    pub async fn create_db(&self, name: &str) -> serde_json::Value {
        let r = self
            .admin(
                Method::POST,
                "/admin/databases",
                TOKEN,
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Creates a token (asserting 201); returns the secret and its record.
    pub async fn create_token(
        &self,
        name: &str,
        scope: &str,
        database: Option<&str>,
    ) -> (String, serde_json::Value) {
        let r = self
            .admin(
                Method::POST,
                "/admin/tokens",
                TOKEN,
                Some(serde_json::json!({ "name": name, "scope": scope, "database": database })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (
            v["token"].as_str().unwrap().to_string(),
            v["record"].clone(),
        )
    }

    /// SIGTERM and wait (off the runtime).
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            assert!(p.terminate().success());
        }
    }
}

impl Drop for DirServer {
    fn drop(&mut self) {
        drop(self.proc.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the CLI with `args` and `DENO_KV_ACCESS_TOKEN=token`: (success, stdout, stderr).
pub fn cli(args: &[&str], token: &str) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("DENO_KV_ACCESS_TOKEN", token)
        .env("RUST_LOG", "warn")
        .env_remove("KV_CONNECT_URL")
        .env_remove("KV_CONNECT_DATA_DIR")
        .env_remove("KV_CONNECT_PATH")
        .env_remove("KV_CONNECT_ENGINE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The metadata exchange at `url` with `token`: the response.
pub async fn exchange(url: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    post(
        Proto::Http1,
        url,
        &[("authorization", &auth)],
        r#"{"supportedVersions":[2,3]}"#,
    )
    .await
}

/// A data-path client for the database whose metadata URL is `url`, as `token`: the endpoint
/// is resolved against the URL the way the real clients do.
pub async fn connect(url: &str, token: &str) -> Kv {
    let r = exchange(url, token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let endpoint = json["endpoints"][0]["url"].as_str().unwrap();
    assert!(endpoint.starts_with('/'), "{endpoint}");
    let origin = &url[..url[7..].find('/').map_or(url.len(), |i| i + 7)];
    Kv {
        proto: Proto::Http1,
        base: format!("{origin}{endpoint}"),
        token: json["token"].as_str().unwrap().to_string(),
        database_id: json["databaseId"].as_str().unwrap().to_string(),
    }
}

/// Whether `dir` contains any file (recursively).
pub fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                has_files(&p)
            } else {
                true
            }
        })
    })
}
