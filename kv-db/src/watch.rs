//! Watch fan-out: committed writes bump a per-key version signal; watchers re-read their keys
//! from a snapshot whenever a signal passes the version they last read.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Per-key "latest committed version" signals, created on demand by watchers.
#[derive(Default)]
pub struct WatchHub {
    keys: Mutex<Signals>,
}

/// The signals, and when to next drop those nobody watches any more.
#[derive(Default)]
struct Signals {
    map: HashMap<Vec<u8>, watch::Sender<u64>>,
    /// Sweep when the map grows to this size: sweeping on every subscription made opening
    /// `n` watches of distinct keys cost O(n²).
    sweep_at: usize,
}

impl WatchHub {
    /// Subscribes to `key`; the receiver's value is the version of the latest commit that
    /// changed the key (0 if none seen since the subscription began).
    pub fn subscribe(&self, key: &[u8]) -> watch::Receiver<u64> {
        let mut keys = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = keys.map.get(key) {
            return s.subscribe();
        }
        if keys.map.len() >= keys.sweep_at {
            keys.map.retain(|_, s| s.receiver_count() > 0);
            keys.sweep_at = (keys.map.len() * 2).max(64);
        }
        let (tx, rx) = watch::channel(0);
        keys.map.insert(key.to_vec(), tx);
        rx
    }

    /// Records that every watched key may have changed by `version` (a follower that lost
    /// track of other processes' commits): every watcher re-reads.
    pub fn notify_all(&self, version: u64) {
        let map = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        for s in map.map.values() {
            raise(s, version);
        }
    }

    /// Records that `keys` changed in the commit with `version`.
    pub fn notify<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>, version: u64) {
        let map = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.map.is_empty() {
            return;
        }
        for k in keys {
            if let Some(s) = map.map.get(k) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn len(hub: &WatchHub) -> usize {
        hub.keys.lock().unwrap().map.len()
    }

    #[test]
    fn signals_nobody_watches_are_dropped_as_the_map_grows() {
        let hub = WatchHub::default();
        let kept: Vec<_> = (0..100u32)
            .map(|i| hub.subscribe(&i.to_be_bytes()))
            .collect();
        for i in 100..10_000u32 {
            drop(hub.subscribe(&i.to_be_bytes()));
        }
        // At most twice the live signals (plus the sweep's minimum) remain.
        assert!(len(&hub) <= 2 * kept.len() + 64, "{}", len(&hub));
        hub.notify([2u32.to_be_bytes().as_slice()], 7);
        assert_eq!(*kept[2].borrow(), 7);
        assert_eq!(*kept[3].borrow(), 0);
    }

    #[test]
    fn subscribers_of_one_key_share_its_signal() {
        let hub = WatchHub::default();
        let a = hub.subscribe(b"k");
        let b = hub.subscribe(b"k");
        hub.notify([b"k".as_slice()], 3);
        hub.notify([b"k".as_slice()], 2);
        assert_eq!((*a.borrow(), *b.borrow()), (3, 3));
        hub.notify_all(5);
        assert_eq!(*b.borrow(), 5);
        assert_eq!(len(&hub), 1);
    }
}
