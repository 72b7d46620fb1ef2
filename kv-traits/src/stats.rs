//! What a [`Database`](crate::Database) reports about its own work, for a metrics exporter.
//!
//! # Contract
//!
//! - [`Database::stats`](crate::Database::stats) returns a [`DatabaseStats`] snapshot, or `None`
//!   when the implementation keeps no statistics (the default; e.g. a remote proxy).
//! - Taking a snapshot is cheap (atomic loads, no I/O) and never fails, so an exporter may call
//!   it on every scrape.
//! - Counters (`*_total`) only grow for the life of the opened database; gauges are the current
//!   value. A snapshot is not atomic across fields: each field is read on its own.
//! - The types are plain data with no exporter format in them: the server turns them into
//!   Prometheus metrics (names and units in its `metrics` module).

/// A histogram as observed so far: bucket upper bounds with the number of observations at or
/// below each, plus the count and sum of all observations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count of observations <= bound)`, bounds ascending. The
    /// implicit `+Inf` bucket is [`count`](Self::count).
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of all observed values.
    pub sum: f64,
}

/// Queue state of a database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting for delivery (including those whose ready time is in the future).
    pub ready: u64,
    /// Messages leased to a listener (being delivered).
    pub leased: u64,
    /// Messages that used up their retries and were written to their `keys_if_undelivered`.
    pub dead_lettered_total: u64,
    /// Messages that used up their retries and had no `keys_if_undelivered` (dropped).
    pub dropped_total: u64,
}

/// A snapshot of a database's work counters (see the module contract).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatabaseStats {
    /// Backend transactions committed by the writer (each is one group-commit batch that
    /// changed something, and one fsync on durable engines).
    pub commits_total: u64,
    /// Logical operations (atomic writes, dequeues, finishes, maintenance passes, ...) per
    /// committed batch.
    pub batch_size: HistogramSnapshot,
    /// Seconds each backend commit took (on durable engines: the fsync).
    pub commit_seconds: HistogramSnapshot,
    /// Atomic writes committed (checks held and every mutation applied).
    pub writes_committed_total: u64,
    /// Atomic writes whose checks failed (nothing applied).
    pub writes_check_failed_total: u64,
    /// Watch streams currently open on the database.
    pub watches_open: u64,
    /// Queue state.
    pub queue: QueueStats,
    /// Expiry sweep passes that ran (each is part of a maintenance commit).
    pub expiry_sweeps_total: u64,
    /// Expired keys the sweep deleted.
    pub expired_keys_deleted_total: u64,
}
