//! The database's work counters behind [`Database::stats`](kv_traits::Database::stats):
//! atomics and small fixed-bucket histograms, no metrics dependency.
//!
//! Contract:
//! - Recording is a few relaxed atomic adds; nothing here locks, allocates or does I/O, so the
//!   writer can record on every batch. A snapshot ([`Stats::snapshot`]) reads each field on its
//!   own (not atomically across fields).
//! - The writer records a batch's effects ([`BatchStats`]) only after its commit succeeded, so
//!   the counters describe durable work: a failed batch counts nothing.
//! - Queue gauges start from a count of the store at open ([`Stats::add_queue`], taken in the
//!   background for a deep queue: see [`crate::queue::OpenCount`]) and then move with this
//!   process's commits. On a shared store ([`kv_traits::Backend::shared`]) other
//!   processes' queue work is not seen: there they describe this server's view only.
//! - Why not the `metrics` facade: it needs a global recorder, which several databases (and
//!   servers) in one process would share and which tests cannot isolate; plain values let the
//!   exporter (the server) label them per database.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use kv_traits::{DatabaseStats, HistogramSnapshot, QueueStats};

/// Upper bounds of the batch-size histogram (operations per commit).
const BATCH_BOUNDS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Upper bounds of the commit-latency histogram, in seconds (50 µs to 10 s).
const LATENCY_BOUNDS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// A histogram with fixed bucket bounds and atomic counts.
pub(crate) struct AtomicHistogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; one more than `bounds` for `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths of the unit (exact integer adds).
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation of `v` (in the histogram's unit).
    pub(crate) fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let micros = (v.max(0.0) * 1e6).round() as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let inf = self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            count: cumulative + inf,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// What one committed batch did, summed over its applied operations.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchStats {
    pub writes_committed: u64,
    pub writes_check_failed: u64,
    pub queue_ready: i64,
    pub queue_leased: i64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub sweeps: u64,
    pub expired_deleted: u64,
}

impl BatchStats {
    /// Adds `other` to `self`.
    pub(crate) fn add(&mut self, other: &BatchStats) {
        self.writes_committed += other.writes_committed;
        self.writes_check_failed += other.writes_check_failed;
        self.queue_ready += other.queue_ready;
        self.queue_leased += other.queue_leased;
        self.dead_lettered += other.dead_lettered;
        self.dropped += other.dropped;
        self.sweeps += other.sweeps;
        self.expired_deleted += other.expired_deleted;
    }
}

/// The counters of one open database.
pub(crate) struct Stats {
    commits: AtomicU64,
    batch_size: AtomicHistogram,
    commit_seconds: AtomicHistogram,
    writes_committed: AtomicU64,
    writes_check_failed: AtomicU64,
    watches_open: AtomicI64,
    queue_ready: AtomicI64,
    queue_leased: AtomicI64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    sweeps: AtomicU64,
    expired_deleted: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            commits: AtomicU64::new(0),
            batch_size: AtomicHistogram::new(&BATCH_BOUNDS),
            commit_seconds: AtomicHistogram::new(&LATENCY_BOUNDS),
            writes_committed: AtomicU64::new(0),
            writes_check_failed: AtomicU64::new(0),
            watches_open: AtomicI64::new(0),
            queue_ready: AtomicI64::new(0),
            queue_leased: AtomicI64::new(0),
            dead_lettered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
            expired_deleted: AtomicU64::new(0),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn add_signed(gauge: &AtomicI64, n: i64) {
    if n != 0 {
        gauge.fetch_add(n, Ordering::Relaxed);
    }
}

impl Stats {
    /// Records a committed backend transaction of `ops` operations whose commit took
    /// `commit_seconds`, and what its operations did.
    pub(crate) fn record_commit(&self, ops: usize, commit_seconds: f64, batch: &BatchStats) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.batch_size.observe(ops as f64);
        self.commit_seconds.observe(commit_seconds);
        self.record_effects(batch);
    }

    /// Records what a batch did (also one that needed no commit, e.g. a failed check).
    pub(crate) fn record_effects(&self, b: &BatchStats) {
        add(&self.writes_committed, b.writes_committed);
        add(&self.writes_check_failed, b.writes_check_failed);
        add_signed(&self.queue_ready, b.queue_ready);
        add_signed(&self.queue_leased, b.queue_leased);
        add(&self.dead_lettered, b.dead_lettered);
        add(&self.dropped, b.dropped);
        add(&self.sweeps, b.sweeps);
        add(&self.expired_deleted, b.expired_deleted);
    }

    /// Adds the count of the messages stored at open to the queue gauges (which already hold
    /// the changes committed since; see [`crate::queue::OpenCount`]).
    pub(crate) fn add_queue(&self, ready: u64, leased: u64) {
        add_signed(&self.queue_ready, i64::try_from(ready).unwrap_or(i64::MAX));
        add_signed(
            &self.queue_leased,
            i64::try_from(leased).unwrap_or(i64::MAX),
        );
    }

    /// Counts a watch stream as open until the returned guard is dropped.
    pub(crate) fn watch_opened(self: &std::sync::Arc<Self>) -> WatchGuard {
        self.watches_open.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self.clone())
    }

    /// The current values.
    pub(crate) fn snapshot(&self) -> DatabaseStats {
        let gauge = |g: &AtomicI64| g.load(Ordering::Relaxed).max(0) as u64;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DatabaseStats {
            commits_total: load(&self.commits),
            batch_size: self.batch_size.snapshot(),
            commit_seconds: self.commit_seconds.snapshot(),
            writes_committed_total: load(&self.writes_committed),
            writes_check_failed_total: load(&self.writes_check_failed),
            watches_open: gauge(&self.watches_open),
            queue: QueueStats {
                ready: gauge(&self.queue_ready),
                leased: gauge(&self.queue_leased),
                dead_lettered_total: load(&self.dead_lettered),
                dropped_total: load(&self.dropped),
            },
            expiry_sweeps_total: load(&self.sweeps),
            expired_keys_deleted_total: load(&self.expired_deleted),
        }
    }
}

/// Keeps one watch stream counted in [`DatabaseStats::watches_open`].
pub(crate) struct WatchGuard(std::sync::Arc<Stats>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches_open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_is_kept() {
        let h = AtomicHistogram::new(&BATCH_BOUNDS);
        for v in [1.0, 1.0, 3.0, 5000.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.sum, 5005.0);
        assert_eq!(s.buckets[0], (1.0, 2));
        assert_eq!(s.buckets[1], (2.0, 2));
        assert_eq!(s.buckets[2], (4.0, 3));
        assert_eq!(s.buckets.last(), Some(&(1024.0, 3)));
    }

    #[test]
    fn watch_guards_move_the_gauge() {
        let stats = std::sync::Arc::new(Stats::default());
        let a = stats.watch_opened();
        let b = stats.watch_opened();
        assert_eq!(stats.snapshot().watches_open, 2);
        drop(a);
        assert_eq!(stats.snapshot().watches_open, 1);
        drop(b);
        assert_eq!(stats.snapshot().watches_open, 0);
    }

    #[test]
    fn commits_and_effects_add_up() {
        let stats = Stats::default();
        let batch = BatchStats {
            writes_committed: 2,
            queue_ready: -1,
            queue_leased: 1,
            expired_deleted: 5,
            sweeps: 1,
            ..Default::default()
        };
        stats.record_commit(3, 0.002, &batch);
        // The count taken at open may land after commits made since: it adds up the same.
        stats.add_queue(3, 1);
        let s = stats.snapshot();
        assert_eq!(s.commits_total, 1);
        assert_eq!(s.batch_size.count, 1);
        assert_eq!(s.batch_size.buckets[2], (4.0, 1));
        assert_eq!(s.commit_seconds.count, 1);
        assert_eq!(s.writes_committed_total, 2);
        assert_eq!(s.queue.ready, 2);
        assert_eq!(s.queue.leased, 2);
        assert_eq!(s.expired_keys_deleted_total, 5);
        assert_eq!(s.expiry_sweeps_total, 1);
    }
}
