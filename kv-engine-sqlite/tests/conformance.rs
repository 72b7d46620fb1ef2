//! The shared kv-conformance suite (every test on a fresh database file, plus the persistence
//! tests that close and reopen a file) and its model-based state-machine test, run against
//! [`SqliteBackend`] with the durable default options.

use kv_conformance::harness::{block_on, run_backend_suite, FileFactory};
use kv_conformance::model::{run_model_test, ModelConfig};
use kv_engine_sqlite::{SqliteBackend, SqliteOptions};

fn open(path: &std::path::Path) -> Result<SqliteBackend, kv_traits::BackendError> {
    SqliteBackend::open(path, SqliteOptions::default())
}

#[test]
fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    block_on(run_backend_suite(&FileFactory::new(dir.path(), open)));
}

#[test]
fn conformance_model() {
    let dir = tempfile::tempdir().unwrap();
    run_model_test(&FileFactory::new(dir.path(), open), ModelConfig::default());
}
