//! The raw `Backend` contract of the shared suite (`kv_conformance::backend`: snapshots,
//! read-your-writes, rollback, scan order and limits, one writer, close, reopen) on database
//! files with the durable default options, plus the engine's optional promise that `close`
//! waits for the open write transaction.

use kv_conformance::harness::FileFactory;
use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::BackendError;

fn open(path: &std::path::Path) -> Result<SqliteBackend, BackendError> {
    SqliteBackend::open(path, SqliteOptions::default())
}

kv_conformance::backend_contract_tests!(
    FileFactory::temporary(open).unwrap(),
    optional: [close_waits_for_the_open_write],
);
