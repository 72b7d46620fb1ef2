//! Maintenance passes: the expiry sweep and lease expiry.
//!
//! Contract:
//! - One pass handles at most [`CHUNK`] due expiry-index entries and [`CHUNK`] due leases, and
//!   reports whether more was due, so the caller repeats until nothing is left.
//! - The sweep deletes a record only if its expiry is still the one indexed (a later write may
//!   have changed it); every key deleted in one pass shares one new version, which becomes one
//!   change-log batch. A pass that deletes nothing does not move the version.
//! - Shared stores: entries of the commit feed older than [`feed::RETENTION_MS`] are deleted
//!   (at most [`CHUNK`] per pass) without moving the version.
//! - An expired lease is a failed delivery (see [`super::queue`]); a lease-index entry whose
//!   lease no longer holds is dropped.

use kv_traits::QueueLease;

use super::op::Swept;
use super::overlay::{next_version, ApplyError, Cx};
use super::queue::message_id;
use crate::feed::{self, FEED};
use crate::layout::{self, DATA, EXPIRY, QUEUE_LEASE};

/// Most expired keys, leases or change-log entries handled by one pass.
pub(super) const CHUNK: usize = 1000;

impl Cx<'_> {
    pub(super) async fn apply_maintenance(&mut self) -> Result<Swept, ApplyError> {
        let (expired, more_expired) = self.sweep_expired().await?;
        let more_leases = self.expire_leases().await?;
        let more_feed = self.shared && self.trim_feed().await?;
        Ok(Swept {
            expired,
            more: more_expired || more_leases || more_feed,
        })
    }

    /// Deletes commit-feed entries older than [`feed::RETENTION_MS`]; returns whether more are
    /// due.
    async fn trim_feed(&mut self) -> Result<bool, ApplyError> {
        let entries = self.txn.scan(&[FEED], &[FEED + 1], CHUNK, false).await?;
        let full = entries.len() == CHUNK;
        for (k, v) in entries {
            if !feed::expired(&k, &v, self.now)? {
                return Ok(false);
            }
            self.delete(k);
        }
        Ok(full)
    }

    /// Deletes due expired records; returns how many, and whether more are due.
    async fn sweep_expired(&mut self) -> Result<(usize, bool), ApplyError> {
        let end = layout::timed(EXPIRY, self.now.saturating_add(1), &[]);
        let due = self.txn.scan(&[EXPIRY], &end, CHUNK, false).await?;
        let more = due.len() == CHUNK;
        let sweep_version = next_version(self.version)?;
        let mut deleted = 0;
        for (k, _) in due {
            let (ts, user_key) = layout::split_timed(&k)?;
            let user_key = user_key.to_vec();
            self.delete(k);
            if let Some(rec) = self.record(&user_key).await? {
                if rec.expire_at_ms == Some(ts) {
                    self.delete(layout::prefixed(DATA, &user_key));
                    self.log_change(&user_key, None, None);
                    self.fx.changed.push((user_key, sweep_version));
                    deleted += 1;
                }
            }
        }
        if deleted > 0 {
            self.version = sweep_version;
            self.seal(sweep_version);
        }
        self.fx.stats.sweeps += 1;
        self.fx.stats.expired_deleted += deleted as u64;
        Ok((deleted, more))
    }

    /// Treats due leases as failed deliveries; returns whether more are due.
    async fn expire_leases(&mut self) -> Result<bool, ApplyError> {
        let end = layout::timed(QUEUE_LEASE, self.now.saturating_add(1), &[]);
        let leases = self.txn.scan(&[QUEUE_LEASE], &end, CHUNK, false).await?;
        let more = leases.len() == CHUNK;
        for (k, _) in leases {
            let (deadline, id) = layout::split_timed(&k)?;
            let id = message_id(id)?;
            match self
                .take_running(QueueLease {
                    id,
                    deadline_ms: deadline,
                })
                .await?
            {
                Some(rec) => self.requeue(id, rec).await?,
                None => self.delete(k),
            }
        }
        Ok(more)
    }
}
