//! The backup lease: on a shared store ([`Db::is_shared`]) only the process holding the
//! database lease [`LEASE_NAME`] ships, so that several servers started with the same
//! `--backup-to` never upload or trim at the same time.
//!
//! Contract:
//! - [`BackupLease::attempt`] takes or renews the lease for `ttl` (one call to
//!   [`Db::acquire_lease`]); [`BackupLease::keep`] repeats that every `ttl / 3` for the life of
//!   the backup, both to renew it and, while another process holds it, to stand by for it.
//! - Locally the lease counts as held until `ttl - ttl / 3` after the start of the last
//!   successful attempt: a third of the ttl earlier than the database expiry, which leaves room
//!   for an upload in flight and for clock differences. A failed or refused attempt ends the
//!   holding at once.
//! - A [`Tenure`] is one unbroken holding. Holding again after any gap is a new tenure, and
//!   work of an old tenure (a shipper's position, a checkpoint in progress) must not go on in
//!   it: another process may have shipped in between, so a new tenure starts over from what
//!   the object store holds. Uploads race [`Tenure::lost`], so none starts, and none is waited
//!   for, after the holding ended.
//! - Without a lease (a store of one process) a tenure is unconditional and never lost.

use std::sync::Arc;
use std::time::Duration;

use kv_db::{Db, LeaseOwner, LeaseState};
use tokio::sync::watch;
use tokio::time::Instant;

use super::shared::Shared;

/// Name of the database lease that the shipping process holds.
pub const LEASE_NAME: &str = "backup";

/// The local view of the lease.
#[derive(Clone, Copy, Debug)]
struct View {
    /// Counts holdings: raised whenever the lease is held again after a gap.
    generation: u64,
    /// Held (locally) until then; `None`: not held.
    until: Option<Instant>,
}

impl View {
    fn valid(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

/// This process's claim on the backup lease of one database.
pub(super) struct BackupLease {
    db: Db,
    owner: LeaseOwner,
    ttl: Duration,
    view: watch::Sender<View>,
}

impl BackupLease {
    /// A claim for a fresh random owner; nothing is acquired yet.
    pub(super) fn new(db: Db, ttl: Duration) -> Arc<Self> {
        let ttl = ttl.max(Duration::from_millis(3));
        Arc::new(BackupLease {
            db,
            owner: LeaseOwner::random(),
            ttl,
            view: watch::channel(View {
                generation: 0,
                until: None,
            })
            .0,
        })
    }

    /// How often the lease is renewed (and tried for while another process holds it).
    pub(super) fn interval(&self) -> Duration {
        self.ttl / 3
    }

    /// Takes or renews the lease once; returns whether it is held now.
    pub(super) async fn attempt(&self) -> bool {
        let start = Instant::now();
        let until = match self
            .db
            .acquire_lease(LEASE_NAME, self.owner, self.ttl)
            .await
        {
            Ok(LeaseState::Held { .. }) => Some(start + (self.ttl - self.interval())),
            Ok(LeaseState::Taken { owner, .. }) => {
                tracing::trace!(holder = %owner, "another process holds the backup lease");
                None
            }
            Ok(LeaseState::Free) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not take or renew the backup lease");
                None
            }
        };
        self.view.send_modify(|v| {
            // Held again after any moment without it: a new tenure.
            if until.is_some() && !v.valid(Instant::now()) {
                v.generation += 1;
            }
            v.until = until;
        });
        self.view.borrow().valid(Instant::now())
    }

    /// The generation of the holding in progress, if the lease is held now.
    pub(super) fn tenure(self: &Arc<Self>) -> Option<Tenure> {
        let v = *self.view.borrow();
        v.valid(Instant::now()).then(|| Tenure {
            lease: Some(self.clone()),
            generation: v.generation,
        })
    }

    /// Renews or stands by every [`BackupLease::interval`], publishing `standby` in the status;
    /// runs until aborted.
    pub(super) async fn keep(self: Arc<Self>, shared: Arc<Shared>) {
        loop {
            let held = self.attempt().await;
            shared.update(|st| st.status.standby = !held);
            tokio::time::sleep(self.interval()).await;
        }
    }

    /// Waits until the lease is held; `None` once the backup is stopping.
    pub(super) async fn wait_held(self: &Arc<Self>, shared: &Shared) -> Option<Tenure> {
        let mut rx = self.view.subscribe();
        loop {
            if shared.stopping() {
                return None;
            }
            if let Some(t) = self.tenure() {
                return Some(t);
            }
            rx.borrow_and_update();
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(self.interval()) => {}
            }
        }
    }

    /// Gives the lease up (after the shipper stopped), so another process takes over at once.
    pub(super) async fn release(&self) {
        self.view.send_modify(|v| v.until = None);
        match self.db.release_lease(LEASE_NAME, self.owner).await {
            Ok(_) => tracing::debug!("released the backup lease"),
            Err(e) => tracing::debug!(error = %e, "could not release the backup lease"),
        }
    }
}

/// One unbroken holding of the lease (or, without a lease, the whole run).
#[derive(Clone)]
pub(super) struct Tenure {
    lease: Option<Arc<BackupLease>>,
    generation: u64,
}

impl Tenure {
    /// The tenure of a backup that needs no lease: always valid.
    pub(super) fn unconditional() -> Self {
        Tenure {
            lease: None,
            generation: 0,
        }
    }

    /// Whether this holding still lasts.
    pub(super) fn valid(&self) -> bool {
        match &self.lease {
            None => true,
            Some(l) => {
                let v = *l.view.borrow();
                v.generation == self.generation && v.valid(Instant::now())
            }
        }
    }

    /// Resolves once this holding has ended; never without a lease.
    pub(super) async fn lost(&self) {
        let Some(lease) = &self.lease else {
            return std::future::pending().await;
        };
        let mut rx = lease.view.subscribe();
        loop {
            let v = *rx.borrow_and_update();
            if v.generation != self.generation || !v.valid(Instant::now()) {
                return;
            }
            let Some(until) = v.until else { return };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}
