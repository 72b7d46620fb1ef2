//! Writing a full snapshot of the database as range objects: the one routine behind both the
//! initial snapshot (`snapshots/`) and checkpoints (`checkpoints/{monoseq}/snapshots/`).
//!
//! Contract: ranges `seq` = 0, 1, … are written in key order, each holding at most
//! `range_entries` keys, and range 0 always exists (an empty database gives one empty range).
//! Each range is its own consistent read, at a version of at least the database's version
//! when the snapshot started; the returned [`SnapshotUpload::end`] is the largest of those
//! versions, so every state from `end` on is the snapshot plus the log after its start. A
//! failed upload leaves the ranges written so far: the caller starts over (initial snapshot)
//! or deletes them (checkpoint).

use kv_db::Db;
use kv_traits::Versionstamp;

use super::BackupError;
use crate::format::{self, SnapshotRangeKey};
use crate::store::BackupStore;

/// Where the ranges of a snapshot go.
#[derive(Clone, Copy, Debug)]
pub(super) enum SnapshotPlace {
    /// The initial snapshot, under `snapshots/`.
    Initial,
    /// A checkpoint, under `checkpoints/{monoseq}/snapshots/`.
    Checkpoint,
}

/// What a snapshot upload wrote.
#[derive(Clone, Copy, Debug)]
pub(super) struct SnapshotUpload {
    /// The largest version read: states from here on are consistent.
    pub(super) end: Versionstamp,
    /// Range objects written.
    pub(super) ranges: u64,
    /// Keys written.
    pub(super) keys: u64,
}

/// Exports the whole database from version `start` on into range objects of snapshot
/// `monoseq` (see the module docs).
pub(super) async fn upload_snapshot(
    db: &Db,
    store: &BackupStore,
    place: SnapshotPlace,
    monoseq: u64,
    start: Versionstamp,
    range_entries: usize,
) -> Result<SnapshotUpload, BackupError> {
    let limit = range_entries.max(1);
    let mut end = start;
    let mut from: Vec<u8> = Vec::new();
    let mut seq = 0u64;
    let mut keys = 0u64;
    loop {
        let (entries, at) = db.export_range(&from, &[0xff], limit).await?;
        end = end.max(at);
        keys += entries.len() as u64;
        let key = SnapshotRangeKey {
            format_version: format::FORMAT_VERSION,
            monoseq,
            seq,
        };
        match place {
            SnapshotPlace::Initial => store.put_snapshot_range(&key, &entries).await?,
            SnapshotPlace::Checkpoint => store.put_checkpoint_range(&key, &entries).await?,
        }
        seq += 1;
        match entries.last() {
            Some(last) if entries.len() >= limit => {
                from = last.key.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok(SnapshotUpload {
        end,
        ranges: seq,
        keys,
    })
}
