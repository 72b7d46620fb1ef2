//! Crash safety through the whole stack (`kv_db::Db` over a redb file, durable default): the
//! shared SIGKILL crash test of `kv_conformance::crash` (a child process writes until killed;
//! after each of 5 rounds every acknowledged write and queue message must be there, no write
//! partially applied, versionstamps still increasing). With quick repair (the default), every
//! reopen after a kill must load the recorded allocator state: a full repair fails the test.
//! Run twice: with the default chunk size, and with chunks of 8 bytes, so that most values the
//! child writes are chunked while it is killed.

use std::num::NonZeroUsize;

use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::BackendError;

/// Opens with `options`, failing when the open needed a full repair.
fn open_quickly(path: &std::path::Path, options: RedbOptions) -> Result<RedbBackend, BackendError> {
    let backend = RedbBackend::open(path, options)?;
    if backend.repaired_on_open() {
        return Err(BackendError::Corrupt(
            "the file needed redb's full repair although every commit recorded the allocator state"
                .into(),
        ));
    }
    Ok(backend)
}

fn open(path: &std::path::Path) -> Result<RedbBackend, BackendError> {
    open_quickly(path, RedbOptions::default())
}

kv_conformance::crash_tests!(open);

mod small_chunks {
    use super::*;

    fn open(path: &std::path::Path) -> Result<RedbBackend, BackendError> {
        let options = RedbOptions {
            chunk_size: NonZeroUsize::new(8).unwrap(),
            ..RedbOptions::default()
        };
        open_quickly(path, options)
    }

    kv_conformance::crash_tests!(open);
}
