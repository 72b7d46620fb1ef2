//! Watch fan-out: committed writes bump a per-key version signal; watchers re-read their keys
//! from a snapshot whenever a signal passes the version they last read.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Per-key "latest committed version" signals, created on demand by watchers.
#[derive(Default)]
pub struct WatchHub {
    keys: Mutex<HashMap<Vec<u8>, watch::Sender<u64>>>,
}

impl WatchHub {
    /// Subscribes to `key`; the receiver's value is the version of the latest commit that
    /// changed the key (0 if none seen since the subscription began).
    pub fn subscribe(&self, key: &[u8]) -> watch::Receiver<u64> {
        let mut keys = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        keys.retain(|_, s| s.receiver_count() > 0);
        match keys.get(key) {
            Some(s) => s.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                keys.insert(key.to_vec(), tx);
                rx
            }
        }
    }

    /// Records that every watched key may have changed by `version` (a follower that lost
    /// track of other processes' commits): every watcher re-reads.
    pub fn notify_all(&self, version: u64) {
        let map = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        for s in map.values() {
            raise(s, version);
        }
    }

    /// Records that `keys` changed in the commit with `version`.
    pub fn notify<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>, version: u64) {
        let map = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.is_empty() {
            return;
        }
        for k in keys {
            if let Some(s) = map.get(k) {
                raise(s, version);
            }
        }
    }
}

/// Moves a key's signal up to `version` (never down), waking its watchers if it moved.
fn raise(signal: &watch::Sender<u64>, version: u64) {
    signal.send_if_modified(|v| {
        if version > *v {
            *v = version;
            true
        } else {
            false
        }
    });
}
