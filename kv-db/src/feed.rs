//! The commit feed of a shared store: how a process learns what other processes committed.
//!
//! Only kept when the backend is [`Backend::shared`] (several servers on one database). Each
//! write transaction that creates versions also stores one feed entry, in the same
//! transaction:
//!
//! | key | value |
//! |---|---|
//! | `07 ‖ last version BE` | `prev version BE ‖ commit ms BE ‖ flags u8 ‖ (u32 BE len ‖ user key)*` |
//!
//! `prev` is the version the transaction started from, so entries chain: a follower that has
//! seen everything through `v` expects the next entry's `prev` to be `v`. `flags` bit 0: the
//! queue changed (an enqueue). The keys are the user keys whose records changed.
//!
//! Every process runs a follower (`follow`) that polls the committed version (and wakes early
//! on the engine's [`Backend::commit_signals`]); when it moved, the follower reads the new feed
//! entries and wakes exactly the watchers of the keys they name, and the queue listeners if a
//! queue changed. It reads nothing else, so its cost is per commit, not per watched key. A gap
//! in the chain (entries trimmed before the follower read them: a process paused for longer
//! than [`RETENTION_MS`]) wakes every watcher and listener instead: they re-read and lose
//! nothing. Maintenance trims entries older than [`RETENTION_MS`] (see `writer::maintenance`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_traits::{Backend, BackendError, ReadTxn, Versionstamp};
use tokio::sync::Notify;

use crate::layout;
use crate::watch::WatchHub;

/// Prefix of the commit feed.
pub const FEED: u8 = 0x07;
/// How long feed entries are kept.
pub const RETENTION_MS: u64 = 5 * 60 * 1000;
/// Most entries a follower reads per backend read.
const PAGE: usize = 256;

/// Flag: the transaction changed a queue.
const QUEUE_CHANGED: u8 = 1;

/// One decoded feed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The version the transaction started from.
    pub prev: u64,
    /// The last version the transaction created.
    pub version: u64,
    /// Commit time (the committing process's clock).
    pub at_ms: u64,
    /// Whether a queue changed.
    pub queue_changed: bool,
    /// The user keys whose records changed.
    pub keys: Vec<Vec<u8>>,
}

/// The key of the entry for a transaction that ended at `version`.
pub fn key(version: u64) -> Vec<u8> {
    layout::timed(FEED, version, &[])
}

/// Encodes the value of an entry.
pub fn encode<'a>(
    prev: u64,
    at_ms: u64,
    queue_changed: bool,
    keys: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.extend_from_slice(&prev.to_be_bytes());
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.push(if queue_changed { QUEUE_CHANGED } else { 0 });
    for k in keys {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
    }
    out
}

/// Decodes an entry from its key and value.
pub fn decode(key: &[u8], value: &[u8]) -> Result<FeedEntry, BackendError> {
    let corrupt = || BackendError::Corrupt("malformed commit feed entry".into());
    let (version, rest) = layout::split_timed(key)?;
    if !rest.is_empty() || value.len() < 17 {
        return Err(corrupt());
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&value[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let (prev, at_ms, flags) = (u64_at(0), u64_at(8), value[16]);
    let mut keys = Vec::new();
    let mut i = 17;
    while i < value.len() {
        if value.len() - i < 4 {
            return Err(corrupt());
        }
        let mut n = [0u8; 4];
        n.copy_from_slice(&value[i..i + 4]);
        let n = u32::from_be_bytes(n) as usize;
        i += 4;
        if value.len() - i < n {
            return Err(corrupt());
        }
        keys.push(value[i..i + n].to_vec());
        i += n;
    }
    Ok(FeedEntry {
        prev,
        version,
        at_ms,
        queue_changed: flags & QUEUE_CHANGED != 0,
        keys,
    })
}

/// Follows the commits of every process (this one's included, harmlessly) until `shutdown`
/// is set: wakes the watchers of the keys each new feed entry names and the queue listeners
/// of entries that changed a queue, and moves `commits` (backup shippers follow it).
pub(crate) async fn follow(
    backend: Arc<dyn Backend>,
    hub: Arc<WatchHub>,
    queue_notify: Arc<Notify>,
    commits: Arc<tokio::sync::watch::Sender<Versionstamp>>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut signals = backend.commit_signals();
    let mut seen = commits.borrow().version();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = next_signal(&mut signals) => {}
            _ = shutdown.changed() => return,
        }
        match catch_up(&*backend, seen, &hub, &queue_notify).await {
            Ok(current) => {
                if current > seen {
                    seen = current;
                    commits.send_if_modified(|c| {
                        if c.version() < current {
                            *c = Versionstamp::from_version(current);
                            true
                        } else {
                            false
                        }
                    });
                }
            }
            Err(BackendError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "following other servers' commits failed"),
        }
    }
}

/// The next push signal; pending forever when the engine has none (or its stream ended).
async fn next_signal(signals: &mut Option<futures::stream::BoxStream<'static, ()>>) {
    match signals {
        Some(s) => {
            if s.next().await.is_none() {
                *signals = None;
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Reads the feed after `seen` up to the committed version and signals what it names; returns
/// the committed version.
async fn catch_up(
    backend: &dyn Backend,
    seen: u64,
    hub: &WatchHub,
    queue_notify: &Notify,
) -> Result<u64, BackendError> {
    let mut txn = backend.begin_read().await?;
    let current = match txn.get(layout::META_VERSION).await? {
        Some(b) => layout::decode_u64(&b)?,
        None => 0,
    };
    if current <= seen {
        return Ok(seen);
    }
    let mut start = key(seen.saturating_add(1));
    let mut end = key(current);
    end.push(0);
    let mut expect = seen;
    let mut gap = false;
    let mut queue = false;
    loop {
        let page = txn.scan(&start, &end, PAGE, false).await?;
        for (k, v) in &page {
            let e = decode(k, v)?;
            gap |= e.prev != expect;
            hub.notify(e.keys.iter().map(Vec::as_slice), e.version);
            queue |= e.queue_changed;
            expect = e.version;
        }
        match page.last() {
            Some((k, _)) if page.len() == PAGE => {
                start = k.clone();
                start.push(0);
            }
            _ => break,
        }
    }
    drop(txn);
    if gap || expect != current {
        tracing::debug!(seen, current, "commit feed has a gap; waking every watcher");
        hub.notify_all(current);
        queue = true;
    }
    if queue {
        queue_notify.notify_waiters();
    }
    Ok(current)
}

/// Whether the oldest feed entry is due for trimming.
pub(crate) async fn trim_due(txn: &mut dyn ReadTxn, now_ms: u64) -> Result<bool, BackendError> {
    let page = txn.scan(&[FEED], &[FEED + 1], 1, false).await?;
    match page.first() {
        Some((k, v)) => expired(k, v, now_ms),
        None => Ok(false),
    }
}

/// Whether the entry `key`/`value` is older than [`RETENTION_MS`] at `now_ms`.
pub(crate) fn expired(key: &[u8], value: &[u8], now_ms: u64) -> Result<bool, BackendError> {
    Ok(decode(key, value)?.at_ms.saturating_add(RETENTION_MS) < now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let keys: Vec<&[u8]> = vec![b"\x02a\x00", b"", b"\x02bb\x00"];
        let v = encode(7, 1234, true, keys.iter().copied());
        let e = decode(&key(9), &v).unwrap();
        assert_eq!(
            e,
            FeedEntry {
                prev: 7,
                version: 9,
                at_ms: 1234,
                queue_changed: true,
                keys: keys.iter().map(|k| k.to_vec()).collect(),
            }
        );
        let v = encode(0, 1, false, std::iter::empty());
        assert!(!decode(&key(1), &v).unwrap().queue_changed);
    }

    #[test]
    fn malformed_entries_are_corrupt_not_panics() {
        let good = encode(1, 2, false, [b"abc".as_slice()].into_iter());
        for cut in 0..good.len() {
            let r = decode(&key(3), &good[..cut]);
            assert!(cut == 17 || r.is_err(), "cut {cut}");
        }
        assert!(decode(b"\x07short", &good).is_err());
    }
}
