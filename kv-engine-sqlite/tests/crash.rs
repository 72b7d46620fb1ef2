//! Crash safety through the whole stack (`kv_db::Db` over [`SqliteBackend`], durable default):
//! the shared SIGKILL crash test of `kv_conformance::crash` (a child process writes until killed;
//! after each of 5 rounds every acknowledged write and queue message must be there, no write
//! partially applied, versionstamps still increasing).

use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::BackendError;

fn open(path: &std::path::Path) -> Result<SqliteBackend, BackendError> {
    SqliteBackend::open(path, SqliteOptions::default())
}

kv_conformance::crash_tests!(open);
