//! Taking turns on a shared store: [`Turns`] is the backup task of a process that shares its
//! database with others. It stands by until this process holds the backup lease
//! ([`super::lease`]), ships during that tenure, and stands by again when the tenure ends.
//!
//! Contract:
//! - The prefix is inspected afresh at the start of every tenure (except the first, when
//!   [`super::Backup::start`] already inspected it while holding the lease), through the same
//!   path as a restart ([`super::prepare`]): a takeover continues after the last segment in the
//!   object store, whoever wrote it, or finishes or restarts an initial snapshot.
//! - Errors inspecting the prefix are retried every lease interval while the lease is held;
//!   errors retrying cannot fix (a foreign prefix, a change-log gap, a backup ahead of the
//!   database) stop the task as they would stop the start of a backup of one process.
//! - The lease is renewed for as long as the task runs. When the task ends (shutdown or a
//!   fatal error) the lease is given up, so another process takes over without waiting for
//!   it to expire; a task that is aborted (the [`super::Backup`] dropped) leaves the lease to
//!   expire.

use std::sync::Arc;

use kv_db::Db;

use super::lease::{BackupLease, Tenure};
use super::shared::Shared;
use super::shipper::{Ended, Shipper};
use super::start_mode::StartMode;
use super::{prepare, BackupConfig, BackupError};
use crate::store::BackupStore;

/// The backup task of a process on a shared store.
pub(super) struct Turns {
    pub(super) db: Db,
    pub(super) store: BackupStore,
    pub(super) config: BackupConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) lease: Arc<BackupLease>,
}

/// Whether an error of [`prepare`] ends the backup rather than being retried.
fn fatal_at_start(e: &BackupError) -> bool {
    e.is_fatal()
        || matches!(
            e,
            BackupError::ForeignPrefix { .. }
                | BackupError::UnsupportedManifest(_)
                | BackupError::BackupAhead { .. }
        )
}

impl Turns {
    /// Keeps the lease and takes turns until shutdown or a fatal error, then gives the lease
    /// up. `first` is the tenure and start mode [`super::Backup::start`] found, if it held the
    /// lease.
    pub(super) async fn run(self, first: Option<(Tenure, StartMode)>) {
        tokio::select! {
            _ = self.lease.clone().keep(self.shared.clone()) => {}
            _ = self.take_turns(first) => {}
        }
        self.lease.release().await;
    }

    async fn take_turns(&self, mut first: Option<(Tenure, StartMode)>) {
        loop {
            let (tenure, mode) = match first.take() {
                Some((tenure, mode)) if tenure.valid() => (tenure, mode),
                _ => {
                    let Some(tenure) = self.lease.wait_held(&self.shared).await else {
                        return;
                    };
                    tracing::info!(prefix = %self.config.prefix, "holding the backup lease; this server ships the backup");
                    match self.inspect(&tenure).await {
                        Inspected::Mode(mode) => (tenure, mode),
                        Inspected::Lost => continue,
                        Inspected::Stop => return,
                    }
                }
            };
            let shipper = Shipper::new(
                self.db.clone(),
                self.store.clone(),
                self.config.clone(),
                self.shared.clone(),
                tenure,
            );
            match shipper.run(mode).await {
                Ended::Done => return,
                Ended::LeaseLost => {
                    self.shared.update(|st| st.status.standby = true);
                    tracing::warn!(prefix = %self.config.prefix, "lost the backup lease; standing by");
                }
            }
        }
    }

    /// Inspects the prefix within `tenure`, retrying what can be retried.
    async fn inspect(&self, tenure: &Tenure) -> Inspected {
        loop {
            if self.shared.stopping() {
                return Inspected::Stop;
            }
            let result = tokio::select! {
                r = prepare(&self.db, &self.config) => r,
                _ = tenure.lost() => return Inspected::Lost,
            };
            match result {
                Ok(mode) => return Inspected::Mode(mode),
                Err(e) => {
                    let fatal = fatal_at_start(&e);
                    tracing::warn!(error = %e, prefix = %self.config.prefix, fatal, "could not take over the backup");
                    let e = Arc::new(e);
                    self.shared.update(|st| {
                        st.set_error(e);
                        st.status.stopped |= fatal;
                    });
                    if fatal {
                        return Inspected::Stop;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.lease.interval()) => {}
                        _ = tenure.lost() => return Inspected::Lost,
                    }
                }
            }
        }
    }
}

/// The outcome of inspecting the prefix at the start of a tenure.
enum Inspected {
    Mode(StartMode),
    Lost,
    Stop,
}
