//! The shared kv-conformance suite (every test on a fresh database file, plus the persistence
//! tests that close and reopen a file) and its model-based state-machine test, run against
//! [`SqliteBackend`] with the durable default options.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use kv_conformance::harness::{block_on, run_backend_suite, BackendFactory, ReopenableBackend};
use kv_conformance::model::{run_model_test, ModelConfig};
use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::{Backend, BackendError};

/// Creates each backend in its own file of one temporary directory (removed when the factory
/// is dropped, after the suite).
struct SqliteFactory {
    dir: tempfile::TempDir,
    next: AtomicU64,
    options: SqliteOptions,
}

impl SqliteFactory {
    fn new(options: SqliteOptions) -> Self {
        SqliteFactory {
            dir: tempfile::tempdir().unwrap(),
            next: AtomicU64::new(0),
            options,
        }
    }

    fn fresh_path(&self) -> std::path::PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("db-{n}.sqlite3"))
    }
}

/// One database file, opened again on every `open`.
struct SqliteFile {
    path: std::path::PathBuf,
    options: SqliteOptions,
}

#[async_trait]
impl ReopenableBackend for SqliteFile {
    async fn open(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(SqliteBackend::open(
            &self.path,
            self.options.clone(),
        )?))
    }
}

#[async_trait]
impl BackendFactory for SqliteFactory {
    async fn create(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(SqliteBackend::open(
            self.fresh_path(),
            self.options.clone(),
        )?))
    }

    async fn create_reopenable(&self) -> Result<Option<Box<dyn ReopenableBackend>>, BackendError> {
        Ok(Some(Box::new(SqliteFile {
            path: self.fresh_path(),
            options: self.options.clone(),
        })))
    }
}

#[test]
fn conformance_suite() {
    let factory = SqliteFactory::new(SqliteOptions::default());
    block_on(run_backend_suite(&factory));
}

#[test]
fn conformance_model() {
    let factory = SqliteFactory::new(SqliteOptions::default());
    run_model_test(&factory, ModelConfig::default());
}
