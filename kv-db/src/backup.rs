//! [`Db`]'s surface for backup, restore and read replicas: the change log, raw export and
//! import, and the import marker. The log's format is in [`crate::changes`]; the writer's side
//! (applying imports, trimming) in the writer's `backup` module.
//!
//! Contract:
//! - A commit is in the change log if and only if it committed, from
//!   [`Db::change_log_since`] on, until trimmed; imports are never logged.
//! - An export page comes from one snapshot and reports that snapshot's versionstamp.
//! - Imports bypass validation, checks and the read-only switch: they store history that was
//!   validated when it was first written.

use kv_traits::{BackendError, KvError, Versionstamp};

use crate::changes::{self, ChangeBatch, ExportEntry, ImportOp};
use crate::layout::{self, Record, CHANGE_LOG, DATA};
use crate::writer::{Op, Trimmed};
use crate::Db;

impl Db {
    /// While the database holds only what [`Db::import`] put there (a restored copy or a
    /// replica): the versionstamp the imports reached. `None` once anything else committed
    /// (a write, an expiry sweep, a dead letter), i.e. once the copy has diverged from its
    /// source.
    pub async fn imported_through(&self) -> Result<Option<Versionstamp>, KvError> {
        self.inner.check_open()?;
        let mut txn = self.inner.backend.begin_read().await?;
        match txn.get(layout::META_IMPORTED).await? {
            Some(b) => Ok(Some(Versionstamp::from_slice(&b).ok_or_else(|| {
                BackendError::Corrupt("the import marker is not a versionstamp".into())
            })?)),
            None => Ok(None),
        }
    }

    /// With the change log on: the versionstamp after which it is complete (every commit with a
    /// larger versionstamp is in it until trimmed). It is the database version at the moment
    /// logging was turned on, and is persisted. `None` when the change log is off.
    pub async fn change_log_since(&self) -> Result<Option<Versionstamp>, KvError> {
        self.inner.check_open()?;
        // A database opened without logging (or read-only) does not log, whatever the store
        // remembers from an earlier run.
        if !self.inner.config.change_log || self.inner.config.read_only {
            return Ok(None);
        }
        let mut txn = self.inner.backend.begin_read().await?;
        match txn.get(layout::META_CHANGE_LOG_SINCE).await? {
            Some(b) => Ok(Some(Versionstamp::from_version(layout::decode_u64(&b)?))),
            None => Ok(None),
        }
    }

    /// Up to `max_batches` logged commits with a versionstamp above `after` (`None`: from the
    /// oldest kept), in commit order. A commit is in the log if and only if it committed.
    pub async fn read_changes(
        &self,
        after: Option<Versionstamp>,
        max_batches: usize,
    ) -> Result<Vec<ChangeBatch>, KvError> {
        self.inner.check_open()?;
        let start = match after {
            Some(vs) => match vs.version().checked_add(1) {
                Some(v) => changes::log_key(v),
                None => return Ok(Vec::new()),
            },
            None => vec![CHANGE_LOG],
        };
        let mut txn = self.inner.backend.begin_read().await?;
        let rows = txn
            .scan(&start, &[CHANGE_LOG + 1], max_batches, false)
            .await?;
        rows.iter()
            .map(|(k, v)| changes::decode_batch(k, v).map_err(KvError::from))
            .collect()
    }

    /// Deletes logged commits with a versionstamp up to and including `through` (once a
    /// shipper has stored them safely elsewhere).
    pub async fn trim_changes(&self, through: Versionstamp) -> Result<(), KvError> {
        let through = through.version();
        loop {
            let Trimmed { more } = self.inner.call(|reply| Op::Trim { through, reply }).await?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Raw data entries with `start <= key < end` (encoded user keys), ascending, at most
    /// `limit`, from one consistent snapshot, with that snapshot's versionstamp. Entries that
    /// have expired but are not swept yet are included, with their expiry.
    pub async fn export_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<(Vec<ExportEntry>, Versionstamp), KvError> {
        self.inner.check_open()?;
        let mut txn = self.inner.backend.begin_read().await?;
        let version = match txn.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        let mut out = Vec::new();
        if start < end && limit > 0 {
            let rows = txn
                .scan(
                    &layout::prefixed(DATA, start),
                    &layout::prefixed(DATA, end),
                    limit,
                    false,
                )
                .await?;
            out.reserve(rows.len());
            for (mut k, v) in rows {
                let rec = Record::decode_owned(v)?;
                k.remove(0);
                out.push(ExportEntry {
                    key: k,
                    value: rec.value,
                    versionstamp: rec.versionstamp,
                    expire_at_ms: rec.expire_at_ms,
                });
            }
        }
        Ok((out, Versionstamp::from_version(version)))
    }

    /// Applies `ops` in one commit as they are, without checks or limits (restore and read
    /// replicas); works on a read-only database too. Afterwards the database version is at
    /// least `advance_to`, so later writes get larger versionstamps, and
    /// [`Db::imported_through`] reports `advance_to` (all 10 bytes) while the database holds
    /// nothing but imports. Watchers of the touched keys are notified. Imports are not written
    /// to the change log, which therefore counts as complete only after them.
    pub async fn import(
        &self,
        ops: Vec<ImportOp>,
        advance_to: Option<Versionstamp>,
    ) -> Result<(), KvError> {
        self.inner
            .call(|reply| Op::Import {
                ops,
                advance_to,
                reply,
            })
            .await
    }
}
