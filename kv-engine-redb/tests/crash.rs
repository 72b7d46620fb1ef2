//! Crash safety through the whole stack (`kv_db::Db` over a redb file, durable default): the
//! shared SIGKILL crash test of `kv_conformance::crash` (a child process writes until killed;
//! after each of 5 rounds every acknowledged write and queue message must be there, no write
//! partially applied, versionstamps still increasing).

use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::BackendError;

fn open(path: &std::path::Path) -> Result<RedbBackend, BackendError> {
    RedbBackend::open(path, RedbOptions::default())
}

kv_conformance::crash_tests!(open);
