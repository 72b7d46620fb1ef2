//! The raw `Backend` contract of the shared suite (`kv_conformance::backend`: snapshots,
//! read-your-writes, rollback, scan order and limits, large values, one writer, close, reopen)
//! on redb files with the default (durable) options, plus the engine's optional promise that
//! `close` waits for the open write transaction.

use kv_conformance::harness::FileFactory;
use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::BackendError;

fn open(path: &std::path::Path) -> Result<RedbBackend, BackendError> {
    RedbBackend::open(path, RedbOptions::default())
}

kv_conformance::backend_contract_tests!(
    FileFactory::temporary(open).unwrap(),
    optional: [close_waits_for_the_open_write],
);
