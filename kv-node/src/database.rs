//! [`KvDatabase`]: one open database, its operations as promises, and its closed state.
//!
//! Contract: every method first checks that the database is open (else `BadResource`), then
//! forwards to the `kv_traits::Database`, which validates the request against its limits and
//! applies nothing on error. `close` is idempotent on this side (the JavaScript half reports
//! the second call); it wakes pending dequeues (they resolve with nothing) and ends watches.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kv_traits::{CommitResult, Consistency, Database, QueueLease};
use napi::bindgen_prelude::Buffer;
use tokio::sync::watch;

use crate::convert::{
    atomic_write, pack_entries, read_range, versionstamp_hex, AtomicWriteIn, CommitOut,
    QueueMessageOut, ReadRangeIn,
};
use crate::error::{NodeError, NodeResult};
use crate::watch::WatchHandle;

/// An open database.
#[napi]
pub struct KvDatabase {
    db: Arc<dyn Database>,
    /// `true` once closed; watchers and dequeues wait on it.
    closed: Arc<watch::Sender<bool>>,
}

impl KvDatabase {
    pub(crate) fn new(db: Arc<dyn Database>) -> Self {
        KvDatabase {
            db,
            closed: Arc::new(watch::Sender::new(false)),
        }
    }

    fn open_db(&self) -> NodeResult<Arc<dyn Database>> {
        if *self.closed.borrow() {
            return Err(NodeError::Closed);
        }
        Ok(self.db.clone())
    }
}

/// Resolves when `closed` turns true (or its sender is gone).
pub(crate) async fn closed_signal(mut closed: watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

#[napi]
impl KvDatabase {
    /// Reads every range from one snapshot: one packed buffer of entries per range (see
    /// `convert::pack_entries`).
    #[napi]
    pub async fn snapshot_read(
        &self,
        ranges: Vec<ReadRangeIn>,
        eventual: bool,
    ) -> napi::Result<Vec<Buffer>> {
        let db = self.open_db()?;
        let ranges = ranges.into_iter().map(read_range).collect();
        let consistency = if eventual {
            Consistency::Eventual
        } else {
            Consistency::Strong
        };
        let out = db
            .snapshot_read(ranges, consistency)
            .await
            .map_err(NodeError::from)?;
        Ok(out.into_iter().map(pack_entries).collect())
    }

    /// Commits an atomic write.
    #[napi]
    pub async fn atomic_write(&self, write: AtomicWriteIn) -> napi::Result<CommitOut> {
        let db = self.open_db()?;
        let write = atomic_write(write)?;
        Ok(
            match db.atomic_write(write).await.map_err(NodeError::from)? {
                CommitResult::Committed(v) => CommitOut {
                    ok: true,
                    versionstamp: Some(versionstamp_hex(&v)),
                },
                CommitResult::CheckFailed(_) => CommitOut {
                    ok: false,
                    versionstamp: None,
                },
            },
        )
    }

    /// Waits up to `wait_ms` for a queue message; nothing if none came or the database closed.
    #[napi]
    pub async fn dequeue(&self, wait_ms: u32) -> napi::Result<Option<QueueMessageOut>> {
        let db = self.open_db()?;
        let closed = closed_signal(self.closed.subscribe());
        let dequeue = db.dequeue(Duration::from_millis(u64::from(wait_ms)));
        let msg = tokio::select! {
            r = dequeue => r.map_err(NodeError::from)?,
            _ = closed => None,
        };
        Ok(msg.map(|m| QueueMessageOut {
            lease: m.lease.to_bytes().to_vec().into(),
            payload: m.payload.into(),
            attempt: m.attempt,
        }))
    }

    /// Ends a delivery: success removes the message, failure schedules a retry.
    #[napi]
    pub async fn finish(&self, lease: Buffer, success: bool) -> napi::Result<()> {
        let db = self.open_db()?;
        let lease = QueueLease::from_bytes(&lease)
            .ok_or_else(|| NodeError::InvalidArgument("malformed queue lease".into()))?;
        db.finish(lease, success).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// Starts watching keys (encoded).
    #[napi]
    pub async fn watch(&self, keys: Vec<Buffer>) -> napi::Result<WatchHandle> {
        let db = self.open_db()?;
        let stream = db
            .watch(keys.into_iter().map(Into::into).collect())
            .await
            .map_err(NodeError::from)?;
        Ok(WatchHandle::new(stream, self.closed.subscribe()))
    }

    /// Whether `close` was called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Closes the database: later calls fail with `BadResource`; pending dequeues resolve with
    /// nothing and watches end. Resolves once the storage is closed.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        if self.closed.send_replace(true) {
            return Ok(());
        }
        // A close that fails leaves nothing to do for the caller; report it anyway.
        self.db.close().map(|r| r.map_err(NodeError::from)).await?;
        Ok(())
    }
}
