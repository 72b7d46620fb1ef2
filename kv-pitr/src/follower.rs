//! Moving a restored copy of a backup forward along the backup's log.
//!
//! A [`Follower`] holds a database that is a restored copy of a backup (made by
//! [`restore`](crate::restore::restore), a [`Replica`](crate::replica::Replica) or an earlier
//! [`catch_up`], and written to only by imports since) and applies the backup's later log
//! transactions to it.
//!
//! Contract:
//!
//! - Only whole transactions are applied, each batch of them in one import that also moves
//!   the database's versionstamp to the last applied commit: the database is always at a
//!   recovery point of the backup.
//! - Only the log after the database's point is read, and checked for gaps
//!   (by the log walker); segments before it may be gone.
//! - If the backup under the prefix is replaced (its differential point changes), following
//!   stops with [`RestoreError::BackupReplaced`].
//! - Moving backwards is not supported ([`RestoreError::Backwards`]).

use std::collections::BTreeMap;

use futures::StreamExt;
use kv_db::{Db, ExportEntry, ImportOp};
use kv_traits::KvError;

use crate::consumer::{BackupLayout, BackupReader, LogObject, RecoveryPoint, Transaction};
use crate::format;
use crate::restore::{point_of, RestoreError, RestoreOutcome, RestoreTarget, Stopper};
use crate::walker::LogWalker;

/// Applies log transactions to a database that holds a restored copy of the backup.
pub(crate) struct Follower {
    pub(crate) reader: BackupReader,
    pub(crate) db: Db,
    pub(crate) layout: BackupLayout,
    pub(crate) walker: LogWalker,
    pub(crate) applied: RecoveryPoint,
    pub(crate) transactions: u64,
    /// Segments already listed and checked that come next (when resuming, the segments
    /// before them may be gone, so listing after the walker's cursor would not work).
    pub(crate) backlog: Vec<LogObject>,
}

/// The import operations of whole transactions (each key once, with its final state).
fn txn_ops(txns: Vec<Transaction>) -> Vec<ImportOp> {
    let mut ops: BTreeMap<Vec<u8>, ImportOp> = BTreeMap::new();
    for txn in txns {
        for e in txn.entries {
            let op = match e.value {
                Some(value) => ImportOp::Put(ExportEntry {
                    key: e.key.clone(),
                    value,
                    versionstamp: format::vs10_of(&e.vs12),
                    expire_at_ms: e.expire_at_ms,
                }),
                None => ImportOp::Delete(e.key.clone()),
            };
            ops.insert(e.key, op);
        }
    }
    ops.into_values().collect()
}

impl Follower {
    /// Resumes on a database that already holds a copy of the backup at some recovery point.
    pub(crate) async fn resume(reader: &BackupReader, db: &Db) -> Result<Follower, RestoreError> {
        // Only a database that has held nothing but imports since its restore is a copy; its
        // point keeps all 10 bytes (a Deploy point can have a non-zero batch index).
        let Some(current) = db.imported_through().await? else {
            return Err(RestoreError::NotACopy {
                versionstamp: db.current_versionstamp().await?,
                reason: "it was written to after it was restored (or never restored from a backup)"
                    .into(),
            });
        };
        let layout = reader.restore_layout().await?;
        if current < layout.differential {
            return Err(RestoreError::NotACopy {
                versionstamp: current,
                reason: format!(
                    "it is before the backup's first consistent point {}",
                    layout.differential
                ),
            });
        }
        let boundary = format::boundary_of(&current);
        // The segment that ends with the current point, or holds it.
        let mut timestamp_ms = 0;
        if current != layout.differential {
            let holder = layout
                .logs
                .iter()
                .find(|o| o.key.first_vs12 <= boundary && boundary <= o.key.last_vs12);
            let found = match holder {
                Some(o) => {
                    let seg = reader.fetch_log(&o.key).await?;
                    timestamp_ms = seg.timestamp_ms;
                    seg.entries.iter().any(|e| e.vs12 == boundary)
                }
                None => false,
            };
            if !found {
                return Err(RestoreError::NotACopy {
                    versionstamp: current,
                    reason: "its versionstamp is not a recovery point of the backup".into(),
                });
            }
        }
        // Only the segments after the current point are needed (and checked).
        let (before, backlog) = reader.split_logs(&layout, Some(boundary))?;
        let last_before = before.last().map(|o| o.key);
        let walker = LogWalker::resume(&layout, last_before, current, Vec::new());
        Ok(Follower {
            reader: reader.clone(),
            db: db.clone(),
            layout,
            walker,
            applied: RecoveryPoint {
                versionstamp: current,
                timestamp_ms,
            },
            transactions: 0,
            backlog,
        })
    }

    /// Lists segments after the cursor and applies their complete transactions (those the
    /// stopper includes, if any). Returns whether the stopper stopped it.
    pub(crate) async fn poll(&mut self, stopper: Option<&Stopper>) -> Result<bool, RestoreError> {
        // Fails with `Closed` once the database is closed, which ends a replica.
        self.db.current_versionstamp().await?;
        // A backup that was deleted and started again under the same prefix has a new
        // differential point and restarts its segment numbers: this copy cannot follow it.
        let dv = self.reader.differential().await?;
        if dv != Some(self.layout.differential) {
            return Err(RestoreError::BackupReplaced {
                prefix: self.reader.prefix().to_string(),
                was: self.layout.differential,
                now: dv,
            });
        }
        let cursor = self.walker.cursor;
        self.backlog.retain(|o| cursor.is_none_or(|c| o.key > c));
        let mut logs = self.backlog.clone();
        let after = logs.last().map(|o| o.key).or(cursor);
        logs.extend(
            self.reader
                .logs_after(&self.layout.kind, after.as_ref())
                .await?,
        );
        if logs.is_empty() {
            return Ok(false);
        }
        let mut segments = self.reader.fetch_logs(logs.iter().map(|o| o.key).collect());
        while let Some(item) = segments.next().await {
            let (key, seg) = item?;
            let before = self.walker.clone();
            let txns = self.walker.push(&key, seg);
            let mut take = Vec::with_capacity(txns.len());
            let mut stopped = false;
            for txn in txns {
                if stopper.is_some_and(|s| !s.includes(&point_of(&txn))) {
                    stopped = true;
                    break;
                }
                take.push(txn);
            }
            if let Some(last) = take.last() {
                let point = RecoveryPoint {
                    versionstamp: last.versionstamp,
                    timestamp_ms: last.timestamp_ms,
                };
                let n = take.len() as u64;
                if let Err(e) = self
                    .db
                    .import(txn_ops(take), Some(point.versionstamp))
                    .await
                {
                    self.walker = before;
                    return Err(e.into());
                }
                self.applied = point;
                self.transactions += n;
            }
            if stopped {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Moves a database that holds a restored copy of this backup (made by [`restore`](crate::restore::restore), a
/// [`Replica`](crate::replica::Replica) or an earlier `catch_up`, and not written to since) forward to `target`,
/// applying whole transactions. Returns the point reached. Moving backwards is an error
/// ([`RestoreError::Backwards`]).
pub async fn catch_up(
    reader: &BackupReader,
    db: &Db,
    target: RestoreTarget,
) -> Result<RestoreOutcome, RestoreError> {
    let mut f = Follower::resume(reader, db).await?;
    let current = f.applied.versionstamp;
    let backwards = match target {
        RestoreTarget::Latest => false,
        RestoreTarget::Versionstamp(v) => v < current,
        RestoreTarget::Time(t) => f.applied.timestamp_ms > 0 && t < f.applied.timestamp_ms,
    };
    if backwards {
        return Err(RestoreError::Backwards {
            current,
            target: target.to_string(),
        });
    }
    let stopper = Stopper { target };
    let stopped = f.poll(Some(&stopper)).await?;
    if !stopped {
        stopper.check_latest(&f.applied)?;
    }
    Ok(RestoreOutcome {
        versionstamp: f.applied.versionstamp,
        timestamp_ms: f.applied.timestamp_ms,
        keys: count_keys(db).await?,
        transactions: f.transactions,
        checkpoint: None,
    })
}

/// Counts the raw entries of a database, a page at a time.
async fn count_keys(db: &Db) -> Result<usize, KvError> {
    const PAGE: usize = 10_000;
    let mut start: Vec<u8> = Vec::new();
    let mut n = 0;
    loop {
        let (page, _) = db.export_range(&start, &[0xff], PAGE).await?;
        n += page.len();
        match page.last() {
            Some(last) if page.len() == PAGE => {
                start = last.key.clone();
                start.push(0);
            }
            _ => return Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;
    use kv_traits::Versionstamp;

    #[test]
    fn ops_keep_last_state_per_key() {
        let e = |v: u64, i: u16, key: &[u8], val: Option<u64>| format::LogEntry {
            vs12: format::vs12(&Versionstamp::from_version(v), i),
            key: key.to_vec(),
            value: val.map(kv_traits::KvValue::U64),
            expire_at_ms: None,
        };
        let ops = txn_ops(vec![
            Transaction {
                versionstamp: Versionstamp::from_version(1),
                timestamp_ms: 0,
                entries: vec![e(1, 0, b"a", Some(1)), e(1, 0xffff, b"b", Some(2))],
            },
            Transaction {
                versionstamp: Versionstamp::from_version(2),
                timestamp_ms: 0,
                entries: vec![e(2, 0xffff, b"a", None)],
            },
        ]);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0], ImportOp::Delete(b"a".to_vec()));
        assert!(
            matches!(&ops[1], ImportOp::Put(p) if p.versionstamp == Versionstamp::from_version(1))
        );
    }
}
