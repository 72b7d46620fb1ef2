//! Applying one atomic write: its checks, then its mutations and enqueues under one new
//! versionstamp.
//!
//! Contract:
//! - Checks compare against live records only (an expired, unswept key counts as absent). If any
//!   check fails the write is answered with [`CommitResult::CheckFailed`] listing every failing
//!   check's index, and nothing of it is applied; the version does not move.
//! - Otherwise the write takes the next version; every mutation, the versionstamped keys
//!   included, is stamped with it, in the order given (a later mutation of the same key wins).
//! - SUM, MIN and MAX read the current record once, combine its live value with the operand
//!   (see [`crate::mutate`]) and store the result without expiry. A type error refuses the whole
//!   write.
//! - Each enqueue gets a fresh random id and lands in the ready queue at its deadline.

use kv_traits::key::versionstamped_key;
use kv_traits::{
    AtomicWrite, CommitResult, KvError, KvValue, MutationKind, Versionstamp,
    DEFAULT_BACKOFF_SCHEDULE,
};

use super::overlay::{next_version, ApplyError, Cx};
use crate::layout::{self, QueueRecord, Record, QUEUE_READY};
use crate::mutate;

impl Cx<'_> {
    pub(super) async fn apply_write(
        &mut self,
        w: &AtomicWrite,
    ) -> Result<CommitResult, ApplyError> {
        let mut failed = Vec::new();
        for (i, c) in w.checks.iter().enumerate() {
            let current = self.live(&c.key).await?.map(|r| r.versionstamp);
            if current != c.versionstamp {
                failed.push(i as u32);
            }
        }
        if !failed.is_empty() {
            return Ok(CommitResult::CheckFailed(failed));
        }
        let version = next_version(self.version)?;
        let vs = Versionstamp::from_version(version);
        for m in &w.mutations {
            match &m.kind {
                MutationKind::Set(v) => {
                    let rec = Record {
                        value: v.clone(),
                        versionstamp: vs,
                        expire_at_ms: m.expire_at_ms,
                    };
                    self.set_record(&m.key, rec).await?;
                }
                MutationKind::Delete => self.delete_record(&m.key, version).await?,
                MutationKind::Sum {
                    value,
                    min,
                    max,
                    clamp,
                } => {
                    self.read_modify_write(&m.key, vs, |cur| {
                        mutate::sum(cur, value, min, max, *clamp)
                    })
                    .await?
                }
                MutationKind::Min(v) => {
                    self.read_modify_write(&m.key, vs, |cur| mutate::min_max(cur, v, false))
                        .await?
                }
                MutationKind::Max(v) => {
                    self.read_modify_write(&m.key, vs, |cur| mutate::min_max(cur, v, true))
                        .await?
                }
                MutationKind::SetSuffixVersionstampedKey(v) => {
                    let key = versionstamped_key(&m.key, &vs);
                    let rec = Record {
                        value: v.clone(),
                        versionstamp: vs,
                        expire_at_ms: m.expire_at_ms,
                    };
                    self.set_record(&key, rec).await?;
                }
            }
        }
        for e in &w.enqueues {
            let id: [u8; 16] = rand::random();
            let rec = QueueRecord {
                attempts: 0,
                lease_deadline_ms: 0,
                backoff: e
                    .backoff_schedule
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BACKOFF_SCHEDULE.to_vec()),
                keys_if_undelivered: e.keys_if_undelivered.clone(),
                payload: e.payload.clone(),
            };
            self.put(layout::timed(QUEUE_READY, e.deadline_ms, &id), rec.encode());
            self.fx.queue_changed = true;
        }
        self.version = version;
        self.seal(version);
        Ok(CommitResult::Committed(vs))
    }

    /// Replaces the value of `key` with `combine(live value)`, stamped `vs` and without expiry.
    /// The stored record is read and decoded once, for both the live value and the expiry-index
    /// entry to drop.
    async fn read_modify_write(
        &mut self,
        key: &[u8],
        vs: Versionstamp,
        combine: impl FnOnce(Option<&KvValue>) -> Result<KvValue, KvError>,
    ) -> Result<(), ApplyError> {
        let old = self.record(key).await?;
        let now = self.now;
        let live = old.as_ref().filter(|r| !r.is_expired(now));
        let value = combine(live.map(|r| &r.value))?;
        let old_expiry = old.and_then(|r| r.expire_at_ms);
        self.replace_record(
            key,
            old_expiry,
            Record {
                value,
                versionstamp: vs,
                expire_at_ms: None,
            },
        );
        Ok(())
    }
}
