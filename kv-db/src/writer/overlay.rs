//! One operation's view of its batch's transaction: writes are buffered in an overlay that reads
//! through to the transaction, and what the operation did (changed keys, queue activity,
//! change-log post-images) is collected beside it. The batch merges both only if the operation
//! succeeds, so a refused operation leaves nothing behind.
//!
//! The record helpers keep the data records and the expiry index consistent: every data record
//! with an expiry has exactly one expiry-index entry (see [`crate::layout`]).

use std::collections::BTreeMap;

use kv_traits::{BackendError, KvError, KvValue, Versionstamp, WriteTxn};

use crate::changes::{self, KeyChange};
use crate::layout::{self, Record, DATA, EXPIRY};

/// Errors while applying one operation: `Op` discards only that operation, `Fatal` aborts the
/// whole batch (the backend failed, so the transaction's state is unknown).
pub(super) enum ApplyError {
    Op(KvError),
    Fatal(BackendError),
}

impl From<BackendError> for ApplyError {
    fn from(e: BackendError) -> Self {
        ApplyError::Fatal(e)
    }
}

impl From<KvError> for ApplyError {
    fn from(e: KvError) -> Self {
        ApplyError::Op(e)
    }
}

/// The version after `v`, or an error once the 64-bit version space is used up (only a corrupt
/// or hostile store or import can get there).
pub(super) fn next_version(v: u64) -> Result<u64, BackendError> {
    v.checked_add(1).ok_or_else(|| {
        BackendError::Corrupt(
            "the database version is at its maximum; no further commit is possible".into(),
        )
    })
}

/// What one operation did, merged into the batch only if it succeeds.
#[derive(Default)]
pub(super) struct Effects {
    /// User keys changed, with the version of the change.
    pub changed: Vec<(Vec<u8>, u64)>,
    pub queue_changed: bool,
    /// Change-log batches: (version, post-images).
    pub log: Vec<(u64, Vec<KeyChange>)>,
}

/// The context one operation is applied in.
pub(super) struct Cx<'a> {
    pub txn: &'a mut dyn WriteTxn,
    /// Buffered writes (`None`: delete), read through to `txn`.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The database version; an operation that commits something raises it.
    pub version: u64,
    /// The batch's clock reading.
    pub now: u64,
    pub fx: Effects,
    /// Record post-images for the change log.
    pub logging: bool,
    /// Post-images of the logical write being applied.
    pub pending: Vec<KeyChange>,
    /// Where an import left the database.
    pub import_point: Versionstamp,
    /// The store is shared: maintenance also trims the commit feed.
    pub shared: bool,
}

impl<'a> Cx<'a> {
    /// A fresh context at `version`.
    pub fn new(txn: &'a mut dyn WriteTxn, version: u64, now: u64, logging: bool) -> Self {
        Cx {
            txn,
            writes: BTreeMap::new(),
            version,
            now,
            fx: Effects::default(),
            logging,
            pending: Vec::new(),
            import_point: Versionstamp::from_version(version),
            shared: false,
        }
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.txn.get(key).await,
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// The stored record of `user_key`, expired or not.
    pub async fn record(&mut self, user_key: &[u8]) -> Result<Option<Record>, BackendError> {
        match self.get(&layout::prefixed(DATA, user_key)).await? {
            Some(b) => Ok(Some(Record::decode_owned(b)?)),
            None => Ok(None),
        }
    }

    /// The record if present and not expired.
    pub async fn live(&mut self, user_key: &[u8]) -> Result<Option<Record>, BackendError> {
        let now = self.now;
        Ok(self.record(user_key).await?.filter(|r| !r.is_expired(now)))
    }

    /// Stores `rec` under `user_key`, replacing whatever is there.
    pub async fn set_record(&mut self, user_key: &[u8], rec: Record) -> Result<(), BackendError> {
        let old_expiry = self.record(user_key).await?.and_then(|r| r.expire_at_ms);
        self.replace_record(user_key, old_expiry, rec);
        Ok(())
    }

    /// Stores `rec` under `user_key` in place of a record the caller has already read, whose
    /// expiry was `old_expiry`.
    pub fn replace_record(&mut self, user_key: &[u8], old_expiry: Option<u64>, rec: Record) {
        if let Some(t) = old_expiry {
            self.delete(layout::timed(EXPIRY, t, user_key));
        }
        if let Some(t) = rec.expire_at_ms {
            self.put(layout::timed(EXPIRY, t, user_key), Vec::new());
        }
        self.log_change(user_key, Some(&rec.value), rec.expire_at_ms);
        self.put(layout::prefixed(DATA, user_key), rec.encode());
        self.fx
            .changed
            .push((user_key.to_vec(), rec.versionstamp.version()));
    }

    /// Deletes `user_key` if present, as part of the commit with `version`.
    pub async fn delete_record(
        &mut self,
        user_key: &[u8],
        version: u64,
    ) -> Result<(), BackendError> {
        if let Some(old) = self.record(user_key).await? {
            if let Some(t) = old.expire_at_ms {
                self.delete(layout::timed(EXPIRY, t, user_key));
            }
            self.delete(layout::prefixed(DATA, user_key));
            self.fx.changed.push((user_key.to_vec(), version));
            self.log_change(user_key, None, None);
        }
        Ok(())
    }

    /// Records the state of `key` after the logical write being applied, for the change log.
    pub fn log_change(&mut self, key: &[u8], value: Option<&KvValue>, expire_at_ms: Option<u64>) {
        if self.logging {
            self.pending.push(KeyChange {
                key: key.to_vec(),
                value: value.cloned(),
                expire_at_ms,
            });
        }
    }

    /// Ends a logical write at `version`: its post-images become one change-log batch.
    pub fn seal(&mut self, version: u64) {
        if self.logging && !self.pending.is_empty() {
            let changes = changes::dedupe(std::mem::take(&mut self.pending));
            self.fx.log.push((version, changes));
        }
    }

    /// Raises the persisted start of the change log to `version`, if logging was ever on and it
    /// is lower: the log is complete only after commits it does not hold.
    pub async fn raise_change_log_since(&mut self, version: u64) -> Result<(), BackendError> {
        if let Some(b) = self.get(layout::META_CHANGE_LOG_SINCE).await? {
            if layout::decode_u64(&b)? < version {
                self.put(
                    layout::META_CHANGE_LOG_SINCE.to_vec(),
                    layout::encode_u64(version).to_vec(),
                );
            }
        }
        Ok(())
    }
}
