//! The PostgreSQL server of the tests (`kv_test_support::postgres`: `KV_TEST_POSTGRES_URL` when
//! set, else a throwaway cluster started by `scripts/start-postgres-test-server.sh`) and the
//! engine's own helpers on it. Each test uses its own fresh schema, so tests run in parallel.

#![allow(dead_code)]

use kv_engine_postgres::{PostgresBackend, PostgresOptions};
use kv_traits::BackendError;

/// The URL of the test server (starting it if needed), a URL whose user must give its password,
/// and a schema name no other test uses: the workspace's one helper.
#[allow(unused_imports)] // not every test file uses every one
pub use kv_test_support::postgres::{
    fresh_schema, test_password_url as password_url, test_url as url,
};

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
