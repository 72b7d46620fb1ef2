//! Load generator for a **running** KV Connect server (ours, `denokv`, or anything speaking the
//! protocol of `Deno.openKv("http://…")`).
//!
//! `concurrency` tokio tasks share `connections` [`RemoteDatabase`] clients (task `i` uses client
//! `i % connections`) and issue one workload operation after another: first for a warm-up
//! period (not measured), then for `--duration-secs` or `--max-ops` operations, whichever comes
//! first. Prints ops/s, latency percentiles and the number of failed operations.
//!
//! ```sh
//! cargo run --release --example load -- --url http://127.0.0.1:4512 --access-token T \
//!     --workload write1 --concurrency 64 --duration-secs 5
//! ```
//!
//! Workloads (keys and values are those of the criterion benchmarks, `kv_benches::key/value`):
//! `get` reads one random key of the 10 000 seeded `["read", i]`; `list100` lists the first 100
//! of them; `write1` / `write10` are atomic writes of 1 / 10 `set`s (100-byte values) cycling over
//! `["write", i]`; `sum` adds `KvU64(1)` to one hot key; `mixed` is 90 % `get`, 10 % `write1`.
//! Every result is checked (a read must find its entries, a write must commit); a wrong result
//! counts as an error. After `sum`, the hot key's total is checked against the committed sums.
//!
//! Only loopback targets are accepted: this tool is for measuring a local server, not for
//! loading somebody else's.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use kv_benches::{key, prefix_key, value, READ_KEYS, READ_PREFIX, WRITE_PREFIX};
use kv_connect_client::{HttpVersionPolicy, RemoteConfig, RemoteDatabase};
use kv_traits::{AtomicWrite, Consistency, Database, KvError, KvValue, Mutation, MutationKind, ReadRange};
use rand::{Rng, SeedableRng};

/// Key parts of the hot key of the `sum` workload.
const SUM_KEY: (&str, u64) = ("counter", 0);
/// Keys cycled over by the write workloads.
const WRITE_KEYS: u64 = 10_000;
/// Mutations per atomic write while seeding (below every server's 1000-mutation limit).
const SEED_BATCH: u64 = 500;

/// The operation mix to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Single-key strong read of a seeded key.
    Get,
    /// Prefix list of 100 seeded entries.
    List100,
    /// Atomic write with 1 `set`.
    Write1,
    /// Atomic write with 10 `set`s.
    Write10,
    /// Atomic write with one `sum(KvU64(1))` on a single hot key.
    Sum,
    /// 90 % `get`, 10 % `write1`.
    Mixed,
}

/// HTTP versions the client may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Http {
    /// h2c with prior knowledge, falling back to HTTP/1.1 (the client's default, like Deno).
    Auto,
    /// HTTP/2 only.
    Http2,
    /// HTTP/1.1 only.
    Http1,
}

/// Load test of a running KV Connect server.
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Database URL (metadata endpoint), e.g. `http://127.0.0.1:4512`. Loopback hosts only.
    #[arg(long, env = "KV_LOAD_URL")]
    url: String,
    /// Access token of the server.
    #[arg(long, env = "DENO_KV_ACCESS_TOKEN", hide_env_values = true)]
    access_token: String,
    /// Workload to run.
    #[arg(long, value_enum, env = "KV_LOAD_WORKLOAD")]
    workload: Workload,
    /// Concurrent tasks issuing operations.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Separate clients (each its own connection pool); tasks are spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    connections: u64,
    /// Measured duration in seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Stop the measurement after this many operations even if time is left.
    #[arg(long, default_value_t = 2_000_000)]
    max_ops: u64,
    /// Warm-up duration in seconds (same workload, not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Do not (re)write the 10 000 `["read", i]` keys before a read workload.
    #[arg(long)]
    no_seed: bool,
    /// HTTP versions to use.
    #[arg(long, value_enum, default_value_t = Http::Auto)]
    http: Http,
    /// Client retries of a failed request (reads; writes only when not sent). 0 shows every
    /// failure as an error.
    #[arg(long, default_value_t = 0)]
    max_retries: u32,
    /// Time limit of one request, in seconds.
    #[arg(long, default_value_t = 10)]
    request_timeout_secs: u64,
    /// Print one extra `RESULT key=value …` line (for scripts).
    #[arg(long)]
    label: Option<String>,
}

/// Why the load test could not run.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("invalid URL {0:?}: {1}")]
    Url(String, String),
    #[error("refusing to load {0}: only loopback targets are allowed")]
    NotLoopback(String),
    #[error("invalid duration: {0}")]
    Duration(String),
    #[error("connecting to the server failed: {0}")]
    Connect(KvError),
    #[error("seeding the read keys failed: {0}")]
    Seed(KvError),
    #[error("reading the sum key failed: {0}")]
    SumCheck(String),
    #[error("starting the tokio runtime failed: {0}")]
    Runtime(std::io::Error),
}

/// Checks that `url` names a loopback host (literal address or a name resolving only to
/// loopback addresses).
fn check_loopback(url: &str) -> Result<(), LoadError> {
    let parsed = url::Url::parse(url).map_err(|e| LoadError::Url(url.to_owned(), e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| LoadError::Url(url.to_owned(), "no host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(80);
    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| LoadError::Url(url.to_owned(), e.to_string()))?
            .map(|a| a.ip())
            .collect(),
    };
    if ips.is_empty() || !ips.iter().all(IpAddr::is_loopback) {
        return Err(LoadError::NotLoopback(url.to_owned()));
    }
    Ok(())
}

fn secs(s: f64) -> Result<Duration, LoadError> {
    Duration::try_from_secs_f64(s).map_err(|e| LoadError::Duration(format!("{s}: {e}")))
}

/// Outcome of one operation that reached a verdict.
type OpResult = Result<(), String>;

fn set_write(first: u64, n: u64) -> AtomicWrite {
    let mutations = (first..first + n)
        .map(|i| Mutation::set(key(WRITE_PREFIX, i % WRITE_KEYS), KvValue::Bytes(value(i))))
        .collect();
    AtomicWrite { mutations, ..Default::default() }
}

fn sum_write() -> AtomicWrite {
    let mutation = Mutation {
        key: key(SUM_KEY.0, SUM_KEY.1),
        kind: MutationKind::Sum { value: KvValue::U64(1), min: None, max: None, clamp: false },
        expire_at_ms: None,
    };
    AtomicWrite { mutations: vec![mutation], ..Default::default() }
}

async fn commit(db: &RemoteDatabase, write: AtomicWrite) -> OpResult {
    let res = db.atomic_write(write).await.map_err(|e| e.to_string())?;
    match res.versionstamp() {
        Some(_) => Ok(()),
        None => Err(format!("write did not commit: {res:?}")),
    }
}

async fn get(db: &RemoteDatabase, rng: &mut rand::rngs::StdRng) -> OpResult {
    let k = key(READ_PREFIX, rng.gen_range(0..READ_KEYS));
    let out = db.snapshot_read(vec![ReadRange::single(&k)], Consistency::Strong).await.map_err(|e| e.to_string())?;
    match out.first().map(Vec::len) {
        Some(1) => Ok(()),
        other => Err(format!("get found {other:?} entries instead of 1 (seeded?)")),
    }
}

/// One operation of `workload`. `counter` numbers the written keys across all tasks.
async fn op(db: &RemoteDatabase, workload: Workload, counter: &AtomicU64, rng: &mut rand::rngs::StdRng) -> OpResult {
    match workload {
        Workload::Get => get(db, rng).await,
        Workload::Mixed if rng.gen_range(0..10) != 0 => get(db, rng).await,
        Workload::List100 => {
            let range = ReadRange::prefix(&prefix_key(READ_PREFIX), 100);
            let out = db.snapshot_read(vec![range], Consistency::Strong).await.map_err(|e| e.to_string())?;
            match out.first().map(Vec::len) {
                Some(100) => Ok(()),
                other => Err(format!("list found {other:?} entries instead of 100 (seeded?)")),
            }
        }
        Workload::Write1 | Workload::Mixed => commit(db, set_write(counter.fetch_add(1, Ordering::Relaxed), 1)).await,
        Workload::Write10 => commit(db, set_write(counter.fetch_add(10, Ordering::Relaxed), 10)).await,
        Workload::Sum => commit(db, sum_write()).await,
    }
}

/// Results of one phase.
#[derive(Default)]
struct Phase {
    /// Latencies of successful operations, microseconds.
    latencies_us: Vec<u64>,
    errors: u64,
    /// A few distinct error messages.
    samples: Vec<String>,
    elapsed: Duration,
}

/// Runs `concurrency` tasks until `duration` has passed or `max_ops` operations were started.
async fn run_phase(
    dbs: &[RemoteDatabase],
    workload: Workload,
    concurrency: u64,
    duration: Duration,
    max_ops: u64,
    counter: &Arc<AtomicU64>,
    seed: u64,
) -> Phase {
    let start = Instant::now();
    let deadline = start + duration;
    let started = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let db = dbs[(t % dbs.len() as u64) as usize].clone();
        let counter = counter.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(t));
            let mut phase = Phase::default();
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max_ops {
                let t0 = Instant::now();
                match op(&db, workload, &counter, &mut rng).await {
                    Ok(()) => phase.latencies_us.push(t0.elapsed().as_micros() as u64),
                    Err(e) => {
                        phase.errors += 1;
                        if phase.samples.len() < 3 && !phase.samples.contains(&e) {
                            phase.samples.push(e);
                        }
                    }
                }
            }
            phase
        }));
    }
    let mut total = Phase::default();
    for task in tasks {
        match task.await {
            Ok(p) => {
                total.latencies_us.extend(p.latencies_us);
                total.errors += p.errors;
                for s in p.samples {
                    if total.samples.len() < 5 && !total.samples.contains(&s) {
                        total.samples.push(s);
                    }
                }
            }
            Err(e) => {
                total.errors += 1;
                total.samples.push(format!("task failed: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Writes the 10 000 `["read", i]` keys (idempotent).
async fn seed(db: &RemoteDatabase) -> Result<(), KvError> {
    let mut first = 0;
    while first < READ_KEYS {
        let last = (first + SEED_BATCH).min(READ_KEYS);
        let mutations = (first..last).map(|i| Mutation::set(key(READ_PREFIX, i), KvValue::Bytes(value(i)))).collect();
        let res = db.atomic_write(AtomicWrite { mutations, ..Default::default() }).await?;
        if res.versionstamp().is_none() {
            return Err(KvError::InvalidRequest(format!("seed write did not commit: {res:?}")));
        }
        first = last;
    }
    Ok(())
}

/// The hot sum key's current value (0 if absent).
async fn read_sum(db: &RemoteDatabase) -> Result<u64, LoadError> {
    let k = key(SUM_KEY.0, SUM_KEY.1);
    let out = db
        .snapshot_read(vec![ReadRange::single(&k)], Consistency::Strong)
        .await
        .map_err(|e| LoadError::SumCheck(e.to_string()))?;
    match out.first().and_then(|r| r.first()).map(|e| &e.value) {
        None => Ok(0),
        Some(KvValue::U64(n)) => Ok(*n),
        Some(other) => Err(LoadError::SumCheck(format!("not a KvU64: {other:?}"))),
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn run(cli: Cli) -> Result<(), LoadError> {
    check_loopback(&cli.url)?;
    let duration = secs(cli.duration_secs)?;
    let warmup = secs(cli.warmup_secs)?;
    let mut config = RemoteConfig::new(cli.url.clone(), cli.access_token.clone());
    config.http_version = match cli.http {
        Http::Auto => HttpVersionPolicy::Auto,
        Http::Http2 => HttpVersionPolicy::Http2Only,
        Http::Http1 => HttpVersionPolicy::Http1Only,
    };
    config.max_retries = Some(cli.max_retries);
    config.request_timeout = Duration::from_secs(cli.request_timeout_secs);
    let mut dbs = Vec::new();
    for _ in 0..cli.connections {
        dbs.push(RemoteDatabase::open_with(config.clone()).await.map_err(LoadError::Connect)?);
    }
    let reads = matches!(cli.workload, Workload::Get | Workload::List100 | Workload::Mixed);
    if reads && !cli.no_seed {
        seed(&dbs[0]).await.map_err(LoadError::Seed)?;
    }
    let sum_before = if cli.workload == Workload::Sum { Some(read_sum(&dbs[0]).await?) } else { None };

    let counter = Arc::new(AtomicU64::new(rand::thread_rng().gen_range(0..WRITE_KEYS)));
    let warm = run_phase(&dbs, cli.workload, cli.concurrency, warmup, u64::MAX, &counter, 1).await;
    let mut phase = run_phase(&dbs, cli.workload, cli.concurrency, duration, cli.max_ops, &counter, 2).await;

    let ok = phase.latencies_us.len() as u64;
    phase.latencies_us.sort_unstable();
    let rate = ok as f64 / phase.elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&phase.latencies_us, 0.50), percentile(&phase.latencies_us, 0.99));
    let max = percentile(&phase.latencies_us, 1.0);
    println!(
        "{:?} c={} conns={} ({} protocol v{}): {ok} ops in {:.2} s = {rate:.0} ops/s, p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms, errors {} (warm-up {} ops, {} errors)",
        cli.workload,
        cli.concurrency,
        cli.connections,
        cli.url,
        dbs[0].protocol_version(),
        phase.elapsed.as_secs_f64(),
        phase.errors,
        warm.latencies_us.len(),
        warm.errors,
    );
    for s in warm.samples.iter().chain(&phase.samples) {
        println!("  error: {s}");
    }
    let mut sum_ok = true;
    if let Some(before) = sum_before {
        let after = read_sum(&dbs[0]).await?;
        let committed = (warm.latencies_us.len() + phase.latencies_us.len()) as u64;
        // Failed sums may have been applied (unknown outcome), so the delta lies in between.
        let expected_max = committed + warm.errors + phase.errors;
        sum_ok = (committed..=expected_max).contains(&after.wrapping_sub(before));
        println!(
            "  sum check: {before} -> {after} (+{}), committed {committed}: {}",
            after.wrapping_sub(before),
            if sum_ok { "ok" } else { "MISMATCH" }
        );
    }
    if let Some(label) = &cli.label {
        println!(
            "RESULT label={label} workload={:?} concurrency={} connections={} ops={ok} secs={:.3} ops_s={rate:.1} p50_ms={p50:.3} p99_ms={p99:.3} errors={} sum_ok={sum_ok}",
            cli.workload,
            cli.concurrency,
            cli.connections,
            phase.elapsed.as_secs_f64(),
            phase.errors,
        );
    }
    for db in &dbs {
        let _ = db.close().await;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {}", LoadError::Runtime(e));
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
