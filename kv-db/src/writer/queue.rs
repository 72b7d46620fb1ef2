//! The queue's state changes: leasing a ready message, ending a delivery, putting back a message
//! nobody received, and retrying or dead-lettering a failed delivery.
//!
//! Contract (keyspace in [`crate::layout`]):
//! - A message is in exactly one of the ready set (`03`, by ready time) or the running set (`04`,
//!   with a lease-index entry `05` at its lease deadline).
//! - A dequeue leases the earliest message that is due. Every delivery gets a lease deadline
//!   later than the previous one of the same message, so a stale lease never matches again.
//! - A finish or release names a lease; it applies only while that exact lease holds, otherwise
//!   the finish is refused with [`KvError::LeaseNotFound`] and the release does nothing.
//! - A failed delivery goes back to the ready set after its next backoff step; with no step left
//!   its payload is written to its dead-letter keys (one commit of its own); with none, it is
//!   dropped.

use kv_traits::{BackendError, KvError, KvValue, QueueLease, QueueMessage, Versionstamp};

use super::op::Dequeued;
use super::overlay::{next_version, ApplyError, Cx};
use crate::layout::{self, QueueRecord, Record, QUEUE_LEASE, QUEUE_READY, QUEUE_RUNNING};

impl Cx<'_> {
    pub(super) async fn apply_dequeue(&mut self, lease_ms: u64) -> Result<Dequeued, ApplyError> {
        let ready_end = layout::timed(QUEUE_READY, self.now.saturating_add(1), &[]);
        let first = self.txn.scan(&[QUEUE_READY], &ready_end, 1, false).await?;
        let Some((key, value)) = first.into_iter().next() else {
            let next = self
                .txn
                .scan(&[QUEUE_READY], &[QUEUE_READY + 1], 1, false)
                .await?;
            let next_ready = match next.first() {
                Some((k, _)) => Some(layout::split_timed(k)?.0),
                None => None,
            };
            return Ok(Dequeued::Empty { next_ready });
        };
        let (_, id_bytes) = layout::split_timed(&key)?;
        let id = message_id(id_bytes)?;
        let mut rec = QueueRecord::decode(&value)?;
        rec.attempts = rec.attempts.saturating_add(1);
        // A ready record keeps its previous lease deadline, so every delivery gets a distinct,
        // later lease even when it is redelivered within the same millisecond.
        rec.lease_deadline_ms = self
            .now
            .saturating_add(lease_ms)
            .max(rec.lease_deadline_ms.saturating_add(1));
        self.delete(key);
        self.put(layout::prefixed(QUEUE_RUNNING, &id), rec.encode());
        self.put(
            layout::timed(QUEUE_LEASE, rec.lease_deadline_ms, &id),
            Vec::new(),
        );
        Ok(Dequeued::Leased(QueueMessage {
            lease: QueueLease {
                id,
                deadline_ms: rec.lease_deadline_ms,
            },
            payload: rec.payload,
            attempt: rec.attempts,
        }))
    }

    pub(super) async fn apply_finish(
        &mut self,
        lease: QueueLease,
        success: bool,
    ) -> Result<(), ApplyError> {
        let Some(rec) = self.take_running(lease).await? else {
            return Err(ApplyError::Op(KvError::LeaseNotFound));
        };
        if !success {
            self.requeue(lease.id, rec).await?;
        }
        Ok(())
    }

    pub(super) async fn apply_release(&mut self, lease: QueueLease) -> Result<(), ApplyError> {
        if let Some(mut rec) = self.take_running(lease).await? {
            rec.attempts = rec.attempts.saturating_sub(1);
            self.put(
                layout::timed(QUEUE_READY, self.now, &lease.id),
                rec.encode(),
            );
            self.fx.queue_changed = true;
        }
        Ok(())
    }

    /// Takes a running message out of the running set; `None` if the lease no longer holds.
    pub(super) async fn take_running(
        &mut self,
        lease: QueueLease,
    ) -> Result<Option<QueueRecord>, BackendError> {
        let running_key = layout::prefixed(QUEUE_RUNNING, &lease.id);
        let Some(bytes) = self.get(&running_key).await? else {
            return Ok(None);
        };
        let rec = QueueRecord::decode(&bytes)?;
        if rec.lease_deadline_ms != lease.deadline_ms {
            return Ok(None);
        }
        self.delete(running_key);
        self.delete(layout::timed(QUEUE_LEASE, lease.deadline_ms, &lease.id));
        Ok(Some(rec))
    }

    /// A failed delivery: retry after the next backoff step, or dead-letter, or drop.
    pub(super) async fn requeue(
        &mut self,
        id: [u8; 16],
        mut rec: QueueRecord,
    ) -> Result<(), BackendError> {
        if !rec.backoff.is_empty() {
            let delay = rec.backoff.remove(0);
            self.put(
                layout::timed(QUEUE_READY, self.now.saturating_add(delay as u64), &id),
                rec.encode(),
            );
            self.fx.queue_changed = true;
        } else if !rec.keys_if_undelivered.is_empty() {
            self.version = next_version(self.version)?;
            let vs = Versionstamp::from_version(self.version);
            for key in &rec.keys_if_undelivered {
                let r = Record {
                    value: KvValue::V8(rec.payload.clone()),
                    versionstamp: vs,
                    expire_at_ms: None,
                };
                self.set_record(key, r).await?;
            }
            self.seal(self.version);
        }
        Ok(())
    }
}

/// A queue message id from the tail of an index key.
pub(super) fn message_id(bytes: &[u8]) -> Result<[u8; 16], BackendError> {
    bytes
        .try_into()
        .map_err(|_| BackendError::Corrupt("queue message id is not 16 bytes".into()))
}
