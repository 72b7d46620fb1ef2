//! The PostgreSQL server of the tests: `KV_TEST_POSTGRES_URL` when set, else a throwaway
//! cluster started by `scripts/start-postgres-test-server.sh` (reused when running; stopped by
//! the script's watchdog once every test process using it has exited). Each test uses its own
//! fresh schema, so tests run in parallel.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use kv_engine_postgres::{PostgresBackend, PostgresOptions};
use kv_traits::BackendError;

/// The URL of the test server (starting it if needed).
pub fn url() -> &'static str {
    &urls().0
}

/// A URL of the test server whose user must give its password (`KV_TEST_POSTGRES_PASSWORD_URL`,
/// else the started cluster's, else [`url`]).
pub fn password_url() -> &'static str {
    &urls().1
}

fn urls() -> &'static (String, String) {
    static URL: OnceLock<Result<(String, String), String>> = OnceLock::new();
    let res = URL.get_or_init(|| {
        if let Ok(url) = std::env::var("KV_TEST_POSTGRES_URL") {
            if !url.is_empty() {
                let pw = std::env::var("KV_TEST_POSTGRES_PASSWORD_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| url.clone());
                return Ok((url, pw));
            }
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("scripts")
            .join("start-postgres-test-server.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--exit-with")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): the tests need a PostgreSQL server (or set KV_TEST_POSTGRES_URL).\nstdout:\n{stdout}\nstderr:\n{stderr}",
                script.display(),
                out.status
            ));
        }
        let find = |prefix: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::to_string)
                .ok_or_else(|| format!("the script printed no {prefix}; stdout:\n{stdout}"))
        };
        Ok((find("POSTGRES_URL=")?, find("POSTGRES_PASSWORD_URL=")?))
    });
    match res {
        Ok(u) => u,
        Err(e) => panic!("starting the PostgreSQL test server failed:\n{e}"),
    }
}

/// A schema name no other test uses.
pub fn fresh_schema(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t_{tag}_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// Options using `schema`, small pools.
pub fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: Some(schema.to_string()),
        pool_size: 4,
        ..PostgresOptions::default()
    }
}

/// A backend on a fresh schema of the test server.
pub async fn fresh(tag: &str) -> Result<PostgresBackend, BackendError> {
    PostgresBackend::connect(url(), options(&fresh_schema(tag))).await
}

/// A plain tokio-postgres client on the test server (for inspection and sabotage).
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The test server's parsed configuration.
pub fn config() -> tokio_postgres::Config {
    url().parse().unwrap()
}

/// A keyword connection string for `host:port` with the test server's user, password and
/// database, with `extra` appended.
pub fn url_via(host: &str, port: u16, extra: &str) -> String {
    let c = config();
    let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let password = c
        .get_password()
        .map(|p| String::from_utf8_lossy(p).to_string())
        .unwrap_or_default();
    format!(
        "host={} port={port} user={} password={} dbname={} {extra}",
        q(host),
        q(c.get_user().unwrap_or("")),
        q(&password),
        q(c.get_dbname().unwrap_or("")),
    )
}

/// `host`, `port` of the test server (TCP).
pub fn server_addr() -> (String, u16) {
    let c = config();
    let host = match &c.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("the tests need a TCP server, got {other:?}"),
    };
    (host, c.get_ports().first().copied().unwrap_or(5432))
}
