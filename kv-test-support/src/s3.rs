//! The S3-compatible server of the tests: moto's standalone server on loopback, installed from
//! PyPI and started by `scripts/start-s3-test-server.sh` (once per test process; it stops when
//! the process exits).
//!
//! Contract: [`server`] starts it (or panics with the script's output: tests that need S3 fail
//! rather than pass silently), unless [`skip`] says the user opted out with
//! `KV_PITR_SKIP_S3=1`. [`create_bucket`] makes a fresh, uniquely named bucket. moto accepts
//! any credentials; use `test-access-key` / `test-secret-key` and region `us-east-1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The running S3 server.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
}

/// Whether the S3 tests are skipped (`KV_PITR_SKIP_S3=1`); prints a message when they are.
pub fn skip() -> bool {
    if std::env::var("KV_PITR_SKIP_S3").is_ok_and(|v| v == "1") {
        eprintln!("KV_PITR_SKIP_S3=1: skipping the S3 tests");
        return true;
    }
    false
}

/// The server shared by this test process, started on first use; panics if it cannot start.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    let res = SERVER.get_or_init(|| {
        let stdout = crate::script::run_start_script(
            "start-s3-test-server.sh",
            "the S3 tests need moto's server from PyPI (set KV_PITR_SKIP_S3=1 to skip them)",
        )?;
        let endpoint = crate::script::printed(&stdout, "S3_ENDPOINT=")?;
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("bad endpoint {endpoint}"))?;
        Ok(S3Server { endpoint, port })
    });
    match res {
        Ok(s) => s,
        Err(e) => panic!("starting the S3 test server failed:\n{e}"),
    }
}

/// Creates a new bucket named after `tag`, this process and a counter, with a plain HTTP
/// request (object_store cannot create buckets); panics if the server refuses.
pub fn create_bucket(server: &S3Server, tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let bucket = format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.port
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "creating bucket {bucket} failed:\n{response}"
    );
    bucket
}
