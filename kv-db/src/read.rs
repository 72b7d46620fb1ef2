//! The read side: snapshot reads and watch streams. Reads never go through the writer; each
//! runs on its own backend read transaction.
//!
//! Contract:
//! - A snapshot read answers every range from one read transaction, so all ranges reflect the
//!   same commit. Each range holds `min(limit, live matching keys)` entries in key order (reverse
//!   order when asked). Records that have expired but are not swept yet are skipped, so a range
//!   pages on past them until it has `limit` live entries or the range is exhausted.
//! - A watch stream's first item reports every key (as [`WatchKeyOutput::Changed`], with its
//!   current entry or `None`). After that it waits until a commit touching one of the keys has a
//!   version above the one it last read, re-reads all keys from one snapshot, and yields only if
//!   at least one key's versionstamp differs from what it reported last (unchanged keys are
//!   reported as [`WatchKeyOutput::Unchanged`]). The stream ends when the database closes.
//!   Streams of the same keys woken by the same commit share their re-read
//!   ([`crate::watch_read`]), so a hot key costs one read per commit, not one per watcher.
//! - Requests reaching this module are already validated by [`crate::Db`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use kv_traits::{KvEntry, KvError, ReadRange, ReadTxn, Versionstamp, WatchKeyOutput, WatchStream};

use crate::layout::{self, Record, DATA};
use crate::Inner;

impl Inner {
    /// Reads every range from one snapshot.
    pub(crate) async fn snapshot_read(
        &self,
        ranges: &[ReadRange],
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        let mut txn = self.backend.begin_read().await?;
        let now = self.config.clock.now_ms();
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            out.push(read_range(&mut *txn, r, now).await?);
        }
        Ok(out)
    }

    /// A stream of changes to `keys`.
    pub(crate) fn watch_stream(self: &Arc<Self>, keys: Vec<Vec<u8>>) -> WatchStream {
        let receivers = keys.iter().map(|k| self.hub.subscribe(k)).collect();
        let mut shutdown = self.shutdown.subscribe();
        let state = WatchState {
            inner: self.clone(),
            set: self.watch_reads.join(keys),
            receivers,
            // Registered once for the stream's life, not again at every notification.
            shutdown: Box::pin(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            }),
            last: None,
            _open: self.stats.watch_opened(),
        };
        futures::stream::unfold(state, |mut s| async move {
            s.next().await.map(|item| (item, s))
        })
        .boxed()
    }

    /// Reads the watched keys and the commit version they reflect, from one snapshot.
    async fn read_watched(&self, keys: &[Vec<u8>]) -> Result<(u64, Vec<Option<KvEntry>>), KvError> {
        let mut txn = self.backend.begin_read().await?;
        let version = match txn.get(layout::META_VERSION).await? {
            Some(b) => layout::decode_u64(&b)?,
            None => 0,
        };
        let now = self.config.clock.now_ms();
        let mut entries = Vec::with_capacity(keys.len());
        for k in keys {
            let entry = match txn.get(&layout::prefixed(DATA, k)).await? {
                Some(b) => {
                    let rec = Record::decode_owned(b)?;
                    (!rec.is_expired(now)).then(|| KvEntry {
                        key: k.clone(),
                        value: rec.value,
                        versionstamp: rec.versionstamp,
                    })
                }
                None => None,
            };
            entries.push(entry);
        }
        Ok((version, entries))
    }
}

/// Reads up to `limit` live entries of one range.
async fn read_range(
    txn: &mut dyn ReadTxn,
    r: &ReadRange,
    now: u64,
) -> Result<Vec<KvEntry>, KvError> {
    let mut out = Vec::new();
    if r.start >= r.end {
        return Ok(out);
    }
    let limit = r.limit as usize;
    let mut start = layout::prefixed(DATA, &r.start);
    let mut end = layout::prefixed(DATA, &r.end);
    loop {
        let want = limit - out.len();
        let page = txn.scan(&start, &end, want, r.reverse).await?;
        let n = page.len();
        let last = page.last().map(|(k, _)| k.clone());
        for (mut k, v) in page {
            let rec = Record::decode_owned(v)?;
            if !rec.is_expired(now) {
                k.remove(0); // the DATA prefix
                out.push(KvEntry {
                    key: k,
                    value: rec.value,
                    versionstamp: rec.versionstamp,
                });
            }
        }
        if out.len() >= limit || n < want {
            return Ok(out);
        }
        let Some(last) = last else { return Ok(out) };
        if r.reverse {
            end = last;
        } else {
            start = last;
            start.push(0);
        }
    }
}

/// One watch stream's state between notifications.
struct WatchState {
    inner: Arc<Inner>,
    /// The watched keys, shared with the other streams of the same keys.
    set: Arc<crate::watch_read::KeySet>,
    receivers: Vec<tokio::sync::watch::Receiver<u64>>,
    /// Ready once the database closes (then never polled again: the stream ends).
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// Version read last time and what each key held then; `None` before the first notification.
    last: Option<(u64, Vec<Option<Versionstamp>>)>,
    /// Counts the stream in the database's open watches while it lives.
    _open: crate::stats::WatchGuard,
}

impl WatchState {
    async fn next(&mut self) -> Option<Result<Vec<WatchKeyOutput>, KvError>> {
        loop {
            if let Some((version, _)) = &self.last {
                let v = *version;
                let changed = async {
                    match self.receivers.as_mut_slice() {
                        // Nothing can ever change: wait for the database to close.
                        [] => std::future::pending::<()>().await,
                        [rx] => {
                            let _ = rx.wait_for(move |x| *x > v).await;
                        }
                        many => {
                            let waits = many
                                .iter_mut()
                                .map(|rx| Box::pin(rx.wait_for(move |x| *x > v)));
                            let _ = futures::future::select_all(waits).await;
                        }
                    }
                };
                // Changes first: when one is ready the shutdown signal is not polled at all (a
                // stream woken by commits without end still ends: `closed` is checked below).
                tokio::select! {
                    biased;
                    _ = changed => {}
                    _ = &mut self.shutdown => return None,
                }
            }
            if self.inner.closed.load(Ordering::Acquire) {
                return None;
            }
            let read = match self.last {
                // The first read is private: it must begin after the subscription.
                None => self.inner.read_watched(self.set.keys()).await.map(Arc::new),
                Some(_) => {
                    let need = self.receivers.iter().map(|rx| *rx.borrow()).max();
                    let (inner, keys) = (&self.inner, self.set.keys());
                    self.set
                        .read(need.unwrap_or(0), || inner.read_watched(keys))
                        .await
                }
            };
            let snapshot = match read {
                Ok(snapshot) => snapshot,
                Err(e) => return Some(Err(e)),
            };
            let (version, entries) = (snapshot.0, &snapshot.1);
            // Only the entries reported as changed are copied out of the shared snapshot, and
            // the versionstamps reported last are updated in place.
            match &mut self.last {
                None => {
                    self.last = Some((version, entries.iter().map(stamp).collect()));
                    return Some(Ok(entries
                        .iter()
                        .cloned()
                        .map(WatchKeyOutput::Changed)
                        .collect()));
                }
                Some((last_version, prev)) => {
                    *last_version = version;
                    let mut any = false;
                    let out: Vec<WatchKeyOutput> = entries
                        .iter()
                        .zip(prev.iter_mut())
                        .map(|(e, p)| {
                            let s = stamp(e);
                            if s == *p {
                                WatchKeyOutput::Unchanged
                            } else {
                                *p = s;
                                any = true;
                                WatchKeyOutput::Changed(e.clone())
                            }
                        })
                        .collect();
                    if any {
                        return Some(Ok(out));
                    }
                }
            }
        }
    }
}

/// The versionstamp an entry shows (`None` = absent).
fn stamp(e: &Option<KvEntry>) -> Option<Versionstamp> {
    e.as_ref().map(|e| e.versionstamp)
}
