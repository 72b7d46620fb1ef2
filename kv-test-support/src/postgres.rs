//! The PostgreSQL server of the tests, found in one place for every crate that needs one.
//!
//! Contract:
//! - [`test_url`] is `KV_TEST_POSTGRES_URL` when that is set and not empty. Otherwise the first
//!   call runs `scripts/start-postgres-test-server.sh --exit-with <this process>` (which starts
//!   a throwaway cluster for this checkout, or reuses the running one, and stops it once every
//!   test process that registered has exited) and takes the URL the script prints as
//!   `POSTGRES_URL=`. Later calls return the same URL; the script runs at most once per
//!   process.
//! - [`test_password_url`] is a URL whose user must give a password:
//!   `KV_TEST_POSTGRES_PASSWORD_URL` when set (else [`test_url`]) if the URL came from the
//!   environment, else the script's `POSTGRES_PASSWORD_URL=`.
//! - When no server can be had (the script fails, or prints no URL) both panic with the
//!   script's output: a test that needs PostgreSQL fails loudly rather than passing vacuously.
//! - [`test_replica_url`] is a hot standby streaming from the [`test_url`] server (a read
//!   replica): `KV_TEST_POSTGRES_REPLICA_URL` when that is set (together with
//!   `KV_TEST_POSTGRES_URL`, its primary; its user must be a superuser for tests that pause
//!   replay); otherwise, unless `KV_TEST_POSTGRES_URL` is set (then it panics, asking for the
//!   replica's URL too), the first call runs `scripts/start-postgres-replica-test-server.sh
//!   --exit-with <this process>` (which starts the primary as above and the standby beside
//!   it) and takes its `POSTGRES_REPLICA_URL=`, checking that its `POSTGRES_URL=` is
//!   [`test_url`]'s.
//! - [`fresh_schema`] names a schema no other test (in this process or a concurrent one) uses,
//!   so tests on one server run in parallel. Schemas are never dropped: the cluster is
//!   throwaway.
//!
//! Nothing here links a PostgreSQL client: callers connect with their own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::script::{printed, run_start_script};

/// The URL of the test server (starting it if needed).
pub fn test_url() -> &'static str {
    &urls().0
}

/// A URL of the test server whose user must give its password.
pub fn test_password_url() -> &'static str {
    &urls().1
}

/// The URL of a hot standby of the test server (starting both if needed).
pub fn test_replica_url() -> &'static str {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    match URL.get_or_init(find_replica_url) {
        Ok(u) => u,
        Err(e) => panic!("starting the PostgreSQL replica test server failed:\n{e}"),
    }
}

fn find_replica_url() -> Result<String, String> {
    match (
        non_empty_env("KV_TEST_POSTGRES_URL"),
        non_empty_env("KV_TEST_POSTGRES_REPLICA_URL"),
    ) {
        (Some(_), Some(replica)) => return Ok(replica),
        (Some(_), None) => {
            return Err(
                "KV_TEST_POSTGRES_URL is set: set KV_TEST_POSTGRES_REPLICA_URL to a hot \
                        standby of that server too (or unset both to use the project's \
                        throwaway servers)"
                    .into(),
            )
        }
        (None, Some(_)) => {
            return Err(
                "KV_TEST_POSTGRES_REPLICA_URL is set without KV_TEST_POSTGRES_URL (its \
                        primary)"
                    .into(),
            )
        }
        (None, None) => {}
    }
    let stdout = run_start_script(
        "start-postgres-replica-test-server.sh",
        "the tests of read replicas need a PostgreSQL hot standby (or set \
         KV_TEST_POSTGRES_URL and KV_TEST_POSTGRES_REPLICA_URL)",
    )?;
    let primary = printed(&stdout, "POSTGRES_URL=")?;
    if primary != test_url() {
        return Err(format!(
            "the replica script's primary {primary} is not the test server {}",
            test_url()
        ));
    }
    printed(&stdout, "POSTGRES_REPLICA_URL=")
}

/// A schema name no other test uses: `t_<tag>_<pid>_<n>_<salt>` (lowercase ASCII, digits and
/// underscores when `tag` is).
pub fn fresh_schema(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t_{tag}_{}_{}_{salt:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
    )
}

fn urls() -> &'static (String, String) {
    static URLS: OnceLock<Result<(String, String), String>> = OnceLock::new();
    match URLS.get_or_init(find_urls) {
        Ok(u) => u,
        Err(e) => panic!("starting the PostgreSQL test server failed:\n{e}"),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn find_urls() -> Result<(String, String), String> {
    if let Some(url) = non_empty_env("KV_TEST_POSTGRES_URL") {
        let pw = non_empty_env("KV_TEST_POSTGRES_PASSWORD_URL").unwrap_or_else(|| url.clone());
        return Ok((url, pw));
    }
    let stdout = run_start_script(
        "start-postgres-test-server.sh",
        "the tests need a PostgreSQL server (or set KV_TEST_POSTGRES_URL)",
    )?;
    Ok((
        printed(&stdout, "POSTGRES_URL=")?,
        printed(&stdout, "POSTGRES_PASSWORD_URL=")?,
    ))
}
