//! The backend these tests inject faults into: the memory engine behind the shared decorator.
#![allow(dead_code)]

use std::time::Duration;

use kv_engine_memory::MemoryBackend;
use kv_test_support::FaultyBackend;

/// The memory engine behind [`FaultyBackend`], whose `begin_write` takes 2 ms so that concurrent
/// writers pile up behind a slow commit, as they would behind an fsync.
pub fn faulty() -> FaultyBackend<MemoryBackend> {
    let backend = FaultyBackend::new(MemoryBackend::new());
    backend.faults().delay_begin_write(Duration::from_millis(2));
    backend
}
