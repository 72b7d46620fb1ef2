//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::Backend;

pub fn open(path: &Path) -> RedbBackend {
    RedbBackend::open(path, RedbOptions::default()).unwrap()
}

pub fn temp() -> (tempfile::TempDir, RedbBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir.path().join("kv.redb"));
    (dir, backend)
}

pub async fn put_all(backend: &RedbBackend, pairs: &[(&[u8], &[u8])]) {
    let mut txn = backend.begin_write().await.unwrap();
    for (k, v) in pairs {
        txn.put(k, v).await.unwrap();
    }
    txn.commit().await.unwrap();
}
