//! The Prometheus metrics of a server: what it counts itself (requests, connections, watch
//! streams, limit refusals) and what it asks its databases for on each scrape
//! ([`kv_traits::Database::stats`] and the optional [`MetricsReport`] gauges, e.g. backup lag).
//!
//! # Contract
//!
//! - One [`Metrics`] per server, with its own registry (no global state: several servers in one
//!   process, as in tests, never mix their numbers). The server is the only place that exports;
//!   databases only hand out plain snapshots.
//! - [`Metrics::render`] produces the OpenMetrics text exposition (`# EOF`-terminated), served
//!   as [`CONTENT_TYPE`] by `GET /metrics` (see [`crate::router`]) and by the optional
//!   `metrics_addr` listener ([`crate::ServerConfig::metrics_addr`]).
//! - Every database metric carries a `database` label. Which databases exist is asked of a
//!   [`StatsSource`] on every scrape; a single-database server reports its one database as
//!   [`DEFAULT_DATABASE`]. A server with many databases plugs in its own registry of
//!   `(name, database)` pairs by implementing [`StatsSource`] (a few lines, see
//!   [`SingleDatabase`]) and passing it to
//!   [`KvConnectServer::stats_source`](crate::KvConnectServer::stats_source).
//! - Label values come from fixed sets (route names, status codes, limit names) or from the
//!   database names, so the number of series stays bounded.
//!
//! The metric names and their meaning are listed in the README ("Metrics").

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use kv_traits::{Database, DatabaseStats, HistogramSnapshot};

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `database` label of a single-database server's database.
pub const DEFAULT_DATABASE: &str = "default";

/// One extra gauge of a database, e.g. how far its backup lags.
#[derive(Clone, Debug, PartialEq)]
pub struct GaugeSample {
    /// Metric name (`kv_...`, base unit in the name).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Current value.
    pub value: f64,
}

/// Produces a database's extra gauges on each scrape (e.g. from a backup shipper's status).
pub type MetricsReport = Arc<dyn Fn() -> Vec<GaugeSample> + Send + Sync>;

/// What is known about one database at a scrape.
#[derive(Clone, Debug, Default)]
pub struct DatabaseSample {
    /// The `database` label.
    pub name: String,
    /// Its work counters, if it keeps any.
    pub stats: Option<DatabaseStats>,
    /// Its extra gauges.
    pub gauges: Vec<GaugeSample>,
}

/// The databases a server reports on (see the module contract).
pub trait StatsSource: Send + Sync + 'static {
    /// One sample per database, each name once.
    fn collect(&self) -> Vec<DatabaseSample>;
}

/// The [`StatsSource`] of a server with one database.
pub struct SingleDatabase<D> {
    name: String,
    db: Arc<D>,
    report: Option<MetricsReport>,
}

impl<D: Database> SingleDatabase<D> {
    /// Reports `db` under `name`, with the gauges of `report`.
    pub fn new(name: impl Into<String>, db: Arc<D>, report: Option<MetricsReport>) -> Self {
        SingleDatabase {
            name: name.into(),
            db,
            report,
        }
    }
}

impl<D: Database> StatsSource for SingleDatabase<D> {
    fn collect(&self) -> Vec<DatabaseSample> {
        vec![DatabaseSample {
            name: self.name.clone(),
            stats: self.db.stats(),
            gauges: self.report.as_ref().map(|r| r()).unwrap_or_default(),
        }]
    }
}

/// A database's name as a label value, shared: labelling a request clones a pointer, not the
/// name.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct DatabaseLabel(Arc<str>);

impl DatabaseLabel {
    /// The label of the database called `name`.
    pub fn new(name: &str) -> Self {
        DatabaseLabel(name.into())
    }
}

impl EncodeLabelValue for DatabaseLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
    database: DatabaseLabel,
}

/// Labels of a request-latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    database: DatabaseLabel,
}

/// Labels of a limit refusal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// Request-latency bucket bounds in seconds (100 µs to 10 s).
const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// What a server counts, and its registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    connections_open: Gauge,
    connections_accepted: Counter,
    watch_streams: Gauge,
    limited: Family<LimitLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    /// A registry reporting the server's own metrics and those of `source`'s databases.
    pub fn new(source: Arc<dyn StatsSource>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kv_http_requests",
            "HTTP requests answered, by route, status and database",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "kv_http_request_duration_seconds",
            "Time to answer a request (for /watch: until the stream starts), by route and database",
            latency.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "kv_connections_open",
            "Client connections being served",
            connections_open.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "kv_connections_accepted",
            "Client connections accepted (including those then refused over the limit)",
            connections_accepted.clone(),
        );
        let watch_streams = Gauge::default();
        registry.register(
            "kv_watch_streams_open",
            "/watch response streams being served",
            watch_streams.clone(),
        );
        let limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "kv_limit_refusals",
            "Requests or connections refused or cut off by an abuse limit, by limit",
            limited.clone(),
        );
        registry.register_collector(Box::new(DatabasesCollector(source)));
        Metrics {
            registry,
            requests,
            latency,
            connections_open,
            connections_accepted,
            watch_streams,
            limited,
        }
    }

    /// Counts an answered request.
    pub(crate) fn request(
        &self,
        route: &'static str,
        status: u16,
        database: &DatabaseLabel,
        secs: f64,
    ) {
        let database = database.clone();
        self.requests
            .get_or_create(&RequestLabels {
                route,
                status,
                database: database.clone(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, database })
            .observe(secs);
    }

    /// Counts a refusal by `limit` (`connections`, `rate`, `watches`, `header_timeout`,
    /// `body_timeout`).
    pub(crate) fn limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Counts an accepted connection.
    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    /// The open-connections gauge.
    pub(crate) fn connections_open(&self) -> &Gauge {
        &self.connections_open
    }

    /// The open-watch-streams gauge.
    pub(crate) fn watch_streams(&self) -> &Gauge {
        &self.watch_streams
    }

    /// The OpenMetrics text exposition of every metric now.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; an encoder bug would end up here.
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// Reports the databases of a [`StatsSource`] on each scrape.
struct DatabasesCollector(Arc<dyn StatsSource>);

impl std::fmt::Debug for DatabasesCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabasesCollector")
    }
}

/// Picks one histogram of a database's statistics.
type HistogramOf = fn(&DatabaseStats) -> &HistogramSnapshot;

/// One value per database name.
type PerDatabase<'a> = Vec<(&'a str, u64)>;

impl Collector for DatabasesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.0.collect();
        let with_stats: Vec<(&str, &DatabaseStats)> = samples
            .iter()
            .filter_map(|s| s.stats.as_ref().map(|st| (s.name.as_str(), st)))
            .collect();
        let counter = |f: fn(&DatabaseStats) -> u64| -> PerDatabase<'_> {
            with_stats.iter().map(|(n, s)| (*n, f(s))).collect()
        };
        let counters: [(&str, &str, PerDatabase<'_>); 7] = [
            (
                "kv_db_commits",
                "Backend transactions committed (group-commit batches; one fsync each on durable engines)",
                counter(|s| s.commits_total),
            ),
            (
                "kv_db_writes_committed",
                "Atomic writes committed",
                counter(|s| s.writes_committed_total),
            ),
            (
                "kv_db_writes_check_failed",
                "Atomic writes refused by a failed check",
                counter(|s| s.writes_check_failed_total),
            ),
            (
                "kv_queue_dead_lettered",
                "Queue messages that used up their retries and were written to keys_if_undelivered",
                counter(|s| s.queue.dead_lettered_total),
            ),
            (
                "kv_queue_dropped",
                "Queue messages that used up their retries without keys_if_undelivered",
                counter(|s| s.queue.dropped_total),
            ),
            (
                "kv_expiry_sweeps",
                "Expiry sweep passes run",
                counter(|s| s.expiry_sweeps_total),
            ),
            (
                "kv_expiry_deleted_keys",
                "Expired keys deleted by the sweep",
                counter(|s| s.expired_keys_deleted_total),
            ),
        ];
        for (name, help, values) in &counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (db, v) in values {
                ConstCounter::new(*v).encode(m.encode_family(&[("database", *db)])?)?;
            }
        }
        let gauges: [(&str, &str, PerDatabase<'_>); 3] = [
            (
                "kv_db_watch_streams",
                "Watch streams open on the database",
                counter(|s| s.watches_open),
            ),
            (
                "kv_queue_ready",
                "Queue messages waiting for delivery (including delayed ones)",
                counter(|s| s.queue.ready),
            ),
            (
                "kv_queue_leased",
                "Queue messages leased to a listener",
                counter(|s| s.queue.leased),
            ),
        ];
        for (name, help, values) in &gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (db, v) in values {
                ConstGauge::new(*v as i64).encode(m.encode_family(&[("database", *db)])?)?;
            }
        }
        let histograms: [(&str, &str, HistogramOf); 2] = [
            (
                "kv_db_commit_batch_size",
                "Operations per committed batch (group commit)",
                |s| &s.batch_size,
            ),
            (
                "kv_db_commit_duration_seconds",
                "Time a backend commit took (on durable engines: the fsync)",
                |s| &s.commit_seconds,
            ),
        ];
        for (name, help, get) in &histograms {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (db, s) in &with_stats {
                let h = get(s);
                m.encode_family(&[("database", *db)])?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
            }
        }
        // Extra gauges, grouped by name in first-seen order.
        let mut names: Vec<(&'static str, &'static str)> = Vec::new();
        for g in samples.iter().flat_map(|s| &s.gauges) {
            if !names.iter().any(|(n, _)| *n == g.name) {
                names.push((g.name, g.help));
            }
        }
        for (name, help) in names {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &samples {
                for g in s.gauges.iter().filter(|g| g.name == name) {
                    ConstGauge::new(g.value)
                        .encode(m.encode_family(&[("database", s.name.as_str())])?)?;
                }
            }
        }
        Ok(())
    }
}
