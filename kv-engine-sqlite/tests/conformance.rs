//! The shared kv-conformance suite (every test on a fresh database file, plus the persistence
//! tests that close and reopen a file) and its model-based state-machine test, run against
//! [`SqliteBackend`] with the durable default options.

use kv_conformance::harness::FileFactory;
use kv_engine_sqlite::{SqliteBackend, SqliteOptions};

fn open(path: &std::path::Path) -> Result<SqliteBackend, kv_traits::BackendError> {
    SqliteBackend::open(path, SqliteOptions::default())
}

kv_conformance::backend_conformance_tests!(FileFactory::temporary(open).unwrap());
