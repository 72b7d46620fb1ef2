//! The state shared by a [`Backup`](super::Backup) handle and its tasks: the status, the
//! last error, the wake-up signal and the stop flag.
//!
//! Every change goes through [`Shared::update`], which publishes a fresh [`BackupStatus`]
//! snapshot to subscribers; the lock is never held across an `await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kv_traits::Versionstamp;
use tokio::sync::{watch, Notify};

use super::{BackupError, BackupStatus};

/// The status with what is needed to compute its lag and the flush target.
pub(super) struct StatusState {
    pub(super) status: BackupStatus,
    /// Commits seen and not shipped yet, with when they were first seen (oldest first;
    /// coalesced when long).
    pub(super) unshipped: VecDeque<(Versionstamp, Instant)>,
    /// A flush waits for this versionstamp: ship without waiting for the interval.
    pub(super) urgent_target: Option<Versionstamp>,
    /// The error behind `status.last_error`, kept typed for [`BackupError`]'s sources.
    pub(super) last_error: Option<Arc<BackupError>>,
}

/// Most commit timings kept for the lag estimate.
const MAX_LAG_SAMPLES: usize = 4096;

impl StatusState {
    /// A fresh state around `status`.
    pub(super) fn new(status: BackupStatus) -> Self {
        StatusState {
            status,
            unshipped: VecDeque::new(),
            urgent_target: None,
            last_error: None,
        }
    }

    /// Records the error of a failed attempt (shown in the status until the next success).
    pub(super) fn set_error(&mut self, e: Arc<BackupError>) {
        self.status.last_error = Some(e.to_string());
        self.last_error = Some(e);
    }

    /// Clears the last error after a success.
    pub(super) fn clear_error(&mut self) {
        self.status.last_error = None;
        self.last_error = None;
    }

    pub(super) fn note_commit(&mut self, vs: Versionstamp) {
        if vs <= self.status.committed {
            return;
        }
        self.status.committed = vs;
        if vs <= self.status.shipped_through {
            return;
        }
        if self.unshipped.len() >= MAX_LAG_SAMPLES {
            // Keep the oldest timings: extend the newest sample instead of adding one.
            if let Some(last) = self.unshipped.back_mut() {
                last.0 = vs;
            }
        } else {
            self.unshipped.push_back((vs, Instant::now()));
        }
    }

    pub(super) fn prune(&mut self) {
        let shipped = self.status.shipped_through;
        while self.unshipped.front().is_some_and(|(vs, _)| *vs <= shipped) {
            self.unshipped.pop_front();
        }
    }

    pub(super) fn snapshot(&self) -> BackupStatus {
        let mut s = self.status.clone();
        s.pending_commits_estimate = s
            .committed
            .version()
            .saturating_sub(s.shipped_through.version());
        s.lag_ms = match self.unshipped.front() {
            Some((_, seen)) if s.committed > s.shipped_through => {
                u64::try_from(seen.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        s
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<StatusState>,
    /// Sends a status snapshot after every change.
    pub(super) tx: watch::Sender<BackupStatus>,
    /// Wakes the shipper (flush, shutdown).
    pub(super) wake: Notify,
    /// Set by [`super::Backup::shutdown`].
    pub(super) stop: AtomicBool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, StatusState> {
        // A poisoned lock only means a panic elsewhere; the status data stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut StatusState)) {
        let snap = {
            let mut st = self.lock();
            f(&mut st);
            st.prune();
            st.snapshot()
        };
        self.tx.send_replace(snap);
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
