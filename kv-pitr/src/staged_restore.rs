//! All-or-nothing restores: build the restored store in a staging area (a temporary file for
//! the file engines, [`crate::file_restore`]; a schema for PostgreSQL, `pg_restore`) and swap
//! it in only when it is complete.
//!
//! Contract of [`restore_staged`], whatever the [`Staging`]:
//!
//! - What a previous (killed) restore left in the staging area is discarded first
//!   ([`Staging::discard`]); the restore then streams into a fresh staging database
//!   ([`Staging::open_fresh`]) with [`restore`]: memory is bounded
//!   whatever the size of the backup.
//! - Only when the restore is complete and verified (the staging database is at the restored
//!   point) and closed is [`Staging::swap_in`] called, which replaces the target atomically
//!   (for PostgreSQL: one transaction, see `kv_engine_postgres::StoreAdmin::replace_store`).
//! - A failure before or during the swap discards the staging area and leaves the target as
//!   it was (a failure to discard is logged; the first error is the one returned). A kill leaves
//!   the target untouched too; the staging area is discarded by the next restore to the same
//!   target.
//! - Whether the target may be replaced (empty for a restore, a restored copy for `checkout`
//!   backwards, no live servers) is the caller's and the swap's to check: this module never
//!   opens the target.

use std::future::Future;

use kv_db::Db;
use kv_traits::{Database, KvError};

use crate::consumer::BackupReader;
use crate::restore::{restore, RestoreError, RestoreOutcome, RestoreProgress, RestoreTarget};

/// The staging area of one target, and the atomic swap.
pub trait Staging {
    /// The staging operations' error.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Removes the staging area and what it holds, if it exists.
    fn discard(&self) -> impl Future<Output = Result<(), Self::Error>>;
    /// Creates and opens an empty staging database.
    fn open_fresh(&self) -> impl Future<Output = Result<Db, Self::Error>>;
    /// Replaces the target by the (closed) staging database, atomically.
    fn swap_in(&self) -> impl Future<Output = Result<(), Self::Error>>;
}

/// A failed staged restore.
#[derive(Debug, thiserror::Error)]
pub enum StagedRestoreError<E: std::error::Error + 'static> {
    /// The restore itself failed (the target is untouched).
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A staging operation failed (the target is untouched).
    #[error("{what}: {source}")]
    Staging {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: E,
    },
    /// Closing the staging database failed (the target is untouched).
    #[error("cannot close the staging database: {0}")]
    Close(#[source] KvError),
}

/// Restores `target` of the backup through `staging`, all or nothing (see the module
/// contract).
pub async fn restore_staged<S: Staging>(
    reader: &BackupReader,
    staging: &S,
    target: RestoreTarget,
    progress: impl FnMut(RestoreProgress),
) -> Result<RestoreOutcome, StagedRestoreError<S::Error>> {
    let step = |what| move |source| StagedRestoreError::Staging { what, source };
    staging
        .discard()
        .await
        .map_err(step("cannot remove the leftover staging database"))?;
    let fresh = match staging.open_fresh().await {
        Ok(db) => db,
        Err(e) => {
            discard_after_failure(staging).await;
            return Err(step("cannot create the staging database")(e));
        }
    };
    let outcome = restore(reader, &fresh, target, progress).await;
    let closed = fresh.close().await;
    let result = match (outcome, closed) {
        (Ok(o), Ok(())) => staging
            .swap_in()
            .await
            .map(|()| o)
            .map_err(step("cannot swap the restored database in")),
        (Err(e), _) => Err(e.into()),
        (Ok(_), Err(e)) => Err(StagedRestoreError::Close(e)),
    };
    if result.is_err() {
        discard_after_failure(staging).await;
    }
    result
}

/// Discards the staging area after a failure; a failure to do so only logs (the next
/// restore discards it, and the first error is the one to report).
async fn discard_after_failure<S: Staging>(staging: &S) {
    if let Err(e) = staging.discard().await {
        tracing::warn!(error = %e, "cannot remove the staging database; the next restore will");
    }
}
