//! The shared kv-conformance suite (every test on a fresh file, plus the persistence tests that
//! close and reopen a file) and its state-machine test, on redb files with the default (durable)
//! options.

use kv_conformance::harness::FileFactory;
use kv_engine_redb::{RedbBackend, RedbOptions};

fn open(path: &std::path::Path) -> Result<RedbBackend, kv_traits::BackendError> {
    let options = RedbOptions {
        cache_size: Some(8 << 20),
        ..RedbOptions::default()
    };
    RedbBackend::open(path, options)
}

kv_conformance::backend_conformance_tests!(FileFactory::temporary(open).unwrap());
