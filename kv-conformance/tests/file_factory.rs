//! [`FileFactory`] drives the persistence tests: a fake "file" engine that keeps one in-memory
//! store per path runs the whole suite through it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use kv_conformance::harness::{backend_suite_report, block_on, persistence_tests, FileFactory};
use kv_engine_memory::MemoryBackend;
use kv_traits::{Backend, BackendError, ReadTxn, WriteTxn};

/// The store of a path, surviving `close` like a file would.
struct PathStore(Arc<MemoryBackend>);

#[async_trait]
impl Backend for PathStore {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        self.0.begin_read().await
    }
    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        self.0.begin_write().await
    }
}

fn open(path: &Path) -> Result<PathStore, BackendError> {
    static STORES: OnceLock<Mutex<HashMap<PathBuf, Arc<MemoryBackend>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .map_err(|e| BackendError::Io(e.to_string().into()))?;
    Ok(PathStore(
        stores
            .entry(path.to_path_buf())
            .or_insert_with(|| Arc::new(MemoryBackend::new()))
            .clone(),
    ))
}

#[test]
fn file_factory_runs_the_persistence_tests() {
    let factory = FileFactory::new("/nonexistent/kv-conformance", open);
    let report = block_on(backend_suite_report(&factory));
    report.assert_ok();
    for (name, _) in persistence_tests() {
        assert!(
            report.passed.iter().any(|p| p == name),
            "{name} did not run"
        );
    }
}
