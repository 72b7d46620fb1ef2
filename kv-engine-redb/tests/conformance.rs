//! The shared kv-conformance suite and its state-machine test, on redb files with the default
//! (durable) options.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use kv_conformance::harness::{block_on, run_backend_suite, BackendFactory, ReopenableBackend};
use kv_conformance::model::{run_model_test, ModelConfig};
use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::{Backend, BackendError};

/// Every backend is a new file in one temporary directory.
struct RedbFiles {
    dir: tempfile::TempDir,
    next: AtomicU64,
}

impl RedbFiles {
    fn new() -> Self {
        RedbFiles {
            dir: tempfile::tempdir().unwrap(),
            next: AtomicU64::new(0),
        }
    }

    fn fresh_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("db-{n}.redb"))
    }
}

fn options() -> RedbOptions {
    RedbOptions {
        cache_size: Some(8 << 20),
        ..RedbOptions::default()
    }
}

/// One file, opened again by each `open`.
struct RedbFile(PathBuf);

#[async_trait]
impl ReopenableBackend for RedbFile {
    async fn open(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(RedbBackend::open(&self.0, options())?))
    }
}

#[async_trait]
impl BackendFactory for RedbFiles {
    async fn create(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(RedbBackend::open(self.fresh_path(), options())?))
    }

    async fn create_reopenable(&self) -> Result<Option<Box<dyn ReopenableBackend>>, BackendError> {
        Ok(Some(Box::new(RedbFile(self.fresh_path()))))
    }
}

#[test]
fn conformance_suite() {
    block_on(run_backend_suite(&RedbFiles::new()));
}

#[test]
fn conformance_model() {
    run_model_test(&RedbFiles::new(), ModelConfig::default());
}
