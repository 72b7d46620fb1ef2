//! Shared watch frames: the encoded `/watch` frame of one snapshot of a key set, built once and
//! handed (as a reference-counted [`Bytes`]) to every stream watching the same keys.
//!
//! # Contract
//!
//! - [`SharedFrames::join`] returns the [`FrameCell`] of a key set (same keys in the same
//!   order); every stream of those keys on this database gets the same cell. The registry keeps
//!   weak references, swept of dead ones when it has doubled since the last sweep, so a cell
//!   lives as long as a stream holds it. One registry per database: key sets of different
//!   databases never share.
//! - [`FrameCell::frame`] returns the frame of a full snapshot (`u32 LE length ‖ WatchOutput`,
//!   every key `changed = true` with its entry, in key order). It keeps the last frame it built
//!   and the versionstamps it showed; a snapshot with the same versionstamp per key (a key's
//!   versionstamp names the one commit that set its current value, `None` = absent) gets that
//!   frame back without encoding; any other builds, keeps and returns a new one. So a commit
//!   woken `n` streams of one key set costs one encoding, not `n`.
//! - Memory: one frame per live key set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use kv_proto as wire;
use kv_traits::{KvEntry, Versionstamp, WatchKeyOutput};

/// The registry of one database's watched key sets.
#[derive(Default)]
pub(crate) struct SharedFrames {
    sets: Mutex<Sets>,
}

#[derive(Default)]
struct Sets {
    map: HashMap<Vec<Vec<u8>>, Weak<FrameCell>>,
    sweep_at: usize,
}

/// The last frame built for one key set.
#[derive(Default)]
pub(crate) struct FrameCell {
    latest: Mutex<Option<Latest>>,
}

struct Latest {
    stamps: Vec<Option<Versionstamp>>,
    frame: Bytes,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn stamp(e: &Option<KvEntry>) -> Option<Versionstamp> {
    e.as_ref().map(|e| e.versionstamp)
}

impl SharedFrames {
    /// The cell of `keys`.
    pub(crate) fn join(&self, keys: &[Vec<u8>]) -> Arc<FrameCell> {
        let mut sets = lock(&self.sets);
        if let Some(cell) = sets.map.get(keys).and_then(Weak::upgrade) {
            return cell;
        }
        if sets.map.len() >= sets.sweep_at {
            sets.map.retain(|_, c| c.strong_count() > 0);
            sets.sweep_at = (sets.map.len() * 2).max(64);
        }
        let cell = Arc::new(FrameCell::default());
        sets.map.insert(keys.to_vec(), Arc::downgrade(&cell));
        cell
    }
}

impl FrameCell {
    /// The frame of the full snapshot `entries` (see the module contract).
    pub(crate) fn frame(&self, entries: &[Option<KvEntry>]) -> Bytes {
        let mut latest = lock(&self.latest);
        if let Some(l) = latest.as_ref() {
            if l.stamps.len() == entries.len()
                && l.stamps.iter().zip(entries).all(|(s, e)| *s == stamp(e))
            {
                return l.frame.clone();
            }
        }
        let output = wire::watch_output(
            entries
                .iter()
                .map(|e| WatchKeyOutput::Changed(e.clone()))
                .collect(),
        );
        let frame = Bytes::from(wire::encode_watch_frame(&output));
        *latest = Some(Latest {
            stamps: entries.iter().map(stamp).collect(),
            frame: frame.clone(),
        });
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::pb;
    use kv_traits::KvValue;
    use prost::Message;

    fn entry(key: &[u8], value: &[u8], version: u64) -> Option<KvEntry> {
        Some(KvEntry {
            key: key.to_vec(),
            value: KvValue::Bytes(value.to_vec()),
            versionstamp: Versionstamp::from_version(version),
        })
    }

    fn decode(frame: &Bytes) -> pb::WatchOutput {
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, frame.len());
        pb::WatchOutput::decode(&frame[4..]).unwrap()
    }

    #[test]
    fn one_snapshot_is_encoded_once_and_shared() {
        let frames = SharedFrames::default();
        let keys = vec![b"a".to_vec(), b"b".to_vec()];
        let (x, y) = (frames.join(&keys), frames.join(&keys));
        assert!(Arc::ptr_eq(&x, &y));
        let snap = vec![entry(b"a", b"1", 3), None];
        let f1 = x.frame(&snap);
        let f2 = y.frame(&snap);
        // The same buffer, not an equal copy.
        assert_eq!(f1.as_ptr(), f2.as_ptr());
        let out = decode(&f1);
        assert_eq!(
            out,
            wire::watch_output(snap.iter().cloned().map(WatchKeyOutput::Changed).collect())
        );
        assert!(out.keys.iter().all(|k| k.changed));
    }

    #[test]
    fn another_snapshot_gets_its_own_frame() {
        let frames = SharedFrames::default();
        let cell = frames.join(&[b"a".to_vec(), b"b".to_vec()]);
        let old = cell.frame(&[entry(b"a", b"1", 3), entry(b"b", b"2", 3)]);
        // A deleted key, then a newer value: each differs from the kept frame.
        let deleted = cell.frame(&[entry(b"a", b"1", 3), None]);
        assert_ne!(old, deleted);
        assert!(decode(&deleted).keys[1].entry_if_changed.is_none());
        let newer = cell.frame(&[entry(b"a", b"9", 5), None]);
        assert_eq!(
            decode(&newer).keys[0]
                .entry_if_changed
                .as_ref()
                .unwrap()
                .value,
            b"9"
        );
        // A slow stream still showing the old snapshot gets a correct frame of it.
        let again = cell.frame(&[entry(b"a", b"1", 3), entry(b"b", b"2", 3)]);
        assert_eq!(again, old);
    }

    #[test]
    fn key_sets_share_only_when_equal_and_are_forgotten_when_unused() {
        let frames = SharedFrames::default();
        let kept = frames.join(&[b"a".to_vec()]);
        assert!(!Arc::ptr_eq(
            &kept,
            &frames.join(&[b"a".to_vec(), b"b".to_vec()])
        ));
        assert!(!Arc::ptr_eq(&kept, &frames.join(&[b"b".to_vec()])));
        for i in 0..10_000u32 {
            drop(frames.join(&[i.to_be_bytes().to_vec()]));
        }
        assert!(lock(&frames.sets).map.len() <= 2 * 64);
        assert!(Arc::ptr_eq(&kept, &frames.join(&[b"a".to_vec()])));
    }
}
