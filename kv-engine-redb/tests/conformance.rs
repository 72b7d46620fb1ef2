//! The shared kv-conformance suite (every test on a fresh file, plus the persistence tests that
//! close and reopen a file) and its state-machine test, on redb files with the default (durable)
//! options.

use kv_conformance::harness::{block_on, run_backend_suite, FileFactory};
use kv_conformance::model::{run_model_test, ModelConfig};
use kv_engine_redb::{RedbBackend, RedbOptions};

fn open(path: &std::path::Path) -> Result<RedbBackend, kv_traits::BackendError> {
    let options = RedbOptions {
        cache_size: Some(8 << 20),
        ..RedbOptions::default()
    };
    RedbBackend::open(path, options)
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
