//! `kv-bench`: a load generator for any KV Connect server (ours, the reference `denokv`, or
//! anything else that speaks the protocol of `Deno.openKv("http://…")`).
//!
//! It performs the metadata exchange, opens `--connections` TCP connections (h2c with prior
//! knowledge by default, like Deno; default one per client) and runs `--clients` concurrent
//! tasks, each issuing one [`Workload`] operation after another: a warm-up (not measured), then
//! the measurement for `--duration-secs` (or `--max-ops` operations). It prints throughput, HDR
//! latency percentiles, error and conflict counts, and can write the [`Report`] as JSON.
//!
//! Every result is checked: a read must find what was seeded, a write must commit, a list must
//! return every key; the bank workload audits the total balance while transfers run, and the
//! sum workload compares the hot key's growth with the committed sums. Only loopback `http://`
//! targets are accepted.
//!
//! ```no_run
//! use clap::Parser;
//!
//! # async fn demo() -> Result<(), kv_bench::BenchError> {
//! let opts = kv_bench::Options::parse_from([
//!     "kv-bench", "--url", "http://127.0.0.1:4512", "--access-token", "secret",
//!     "--workload", "bank", "--clients", "16", "--duration-secs", "5",
//! ]);
//! let report = kv_bench::run(&opts).await?;
//! println!("{}", report.text());
//! assert!(report.checks.passed());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod ledger;
pub mod link;
pub mod queue;
pub mod report;
pub mod server_stats;
mod watch;
mod watch_seq;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

pub use client::{ClientError, HttpMode};
pub use report::{Checks, LatencySummary, Report, Tally};
pub use workload::Workload;

use ledger::Monotonic;
use link::Link;
use workload::{Ctx, OpError};

/// Command-line options of `kv-bench` (also the library's configuration).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "kv-bench", version, about, long_about = None)]
pub struct Options {
    /// Database URL (the metadata endpoint), e.g. `http://127.0.0.1:4512`. Loopback only.
    /// Repeat it (or separate URLs with commas) to spread the connections over several servers
    /// of one database, round-robin; setup and the final checks go through the first.
    #[arg(long, env = "KV_BENCH_URL", required = true, value_delimiter = ',')]
    pub url: Vec<String>,
    /// Access token of the server.
    #[arg(long, env = "DENO_KV_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: String,
    /// Workload to run.
    #[arg(long, value_enum, default_value_t = Workload::Set)]
    pub workload: Workload,
    /// Concurrent client tasks, each issuing one operation at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub clients: u64,
    /// TCP connections the clients share (client `i` uses connection `i % N`); 0 = one per
    /// client. HTTP/1.1 connections carry one request at a time.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub connections: u64,
    /// HTTP version.
    #[arg(long, value_enum, default_value_t = HttpMode::H2)]
    pub http: HttpMode,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Warm-up seconds (same workload, not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Stop the measurement after this many operations even if time is left.
    #[arg(long)]
    pub max_ops: Option<u64>,
    /// Size of the seeded keyspace (`get`, `list`, `mixed`) and of the written one (`set`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub keys: u64,
    /// Bytes per value written by `set` and seeded for `get`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub value_size: u64,
    /// Sets per `set` atomic write (random keys).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub mutations: u64,
    /// Keys read by one `list` operation (the first ones of the seeded keys, paged).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub list_keys: u64,
    /// Entries per `list` page (one snapshot read); servers allow at most 1000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub page_size: u64,
    /// Fraction of gets in `mixed` (the rest are sets).
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Accounts of the bank workload (an audit reads them all in one range).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=workload::MAX_ACCOUNTS))]
    pub accounts: u64,
    /// Starting balance of every account.
    #[arg(long, default_value_t = 1_000_000)]
    pub initial_balance: u64,
    /// Largest amount moved by one transfer.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_transfer: u64,
    /// Milliseconds between two audits of the bank's total balance.
    #[arg(long, default_value_t = 200)]
    pub audit_interval_ms: u64,
    /// Conflicts after which a transfer gives up and counts as an error.
    #[arg(long, default_value_t = 10_000)]
    pub max_conflicts: u64,
    /// First key part of every key the tool reads or writes.
    #[arg(long, default_value = "kvbench")]
    pub prefix: String,
    /// Do not (re)write the seeded keys before a read workload.
    #[arg(long)]
    pub no_seed: bool,
    /// Only write the seeded keys (`--keys` of them), then exit.
    #[arg(long)]
    pub seed_only: bool,
    /// Time limit of one request, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub request_timeout_secs: f64,
    /// How long a read (or a write that was not sent yet) keeps retrying while its server is
    /// unreachable (killed, restarting), in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub retry_secs: f64,
    /// Seed of the random choices (keys, accounts, amounts).
    #[arg(long, default_value_t = 1)]
    pub rng_seed: u64,
    /// Watch: concurrent watch streams (watcher `w` watches key `w % --watch-keys` on
    /// connection `w % --connections`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub watchers: u64,
    /// Watch: distinct watched keys (1 = every watcher on one hot key).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub watch_keys: u64,
    /// Watch: milliseconds between the starts of two writes (each sets `--mutations` watched
    /// keys, round-robin).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_interval_ms: u64,
    /// Watch, queue: pid of the server (same machine), whose RSS and CPU time the report
    /// records.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Queue: messages to enqueue (and to expect when delivering).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,
    /// Queue: requested delays, `DELAY_MS:WEIGHT,…` (e.g. 90 % immediate, 5 % 1 s, 5 % 30 s).
    #[arg(long, default_value = "0:90,1000:5,30000:5")]
    pub delay_mix: String,
    /// Queue: concurrent listeners (dequeue, then finish).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub listeners: u64,
    /// Queue: messages per enqueuing atomic write.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub enqueue_batch: u64,
    /// Queue: enqueue at most this many messages per second overall (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub enqueue_rate: u64,
    /// Queue: which phases to run.
    #[arg(long, value_enum, default_value_t = queue::QueuePhase::Both)]
    pub queue_phase: queue::QueuePhase,
    /// Queue: stop delivering after this many seconds without a delivery.
    #[arg(long, default_value_t = 30.0)]
    pub idle_secs: f64,
    /// Label carried into the report (e.g. the server's name).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON to this file (`-` for stdout; the text then goes to stderr).
    #[arg(long)]
    pub json: Option<String>,
}

/// Why a run could not take place.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range or inconsistent.
    #[error("invalid options: {0}")]
    Options(String),
    /// Connecting or the metadata exchange failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Preparing the data (seeding, resetting accounts, reading the sum key) failed.
    #[error("preparing the data failed: {0}")]
    Setup(String),
}

fn duration(name: &str, secs: f64) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(secs).map_err(|e| BenchError::Options(format!("{name}: {e}")))
}

struct Prepared {
    ctx: Arc<Ctx>,
    /// Connection `j` goes to server `j % servers`.
    conns: Vec<Arc<Link>>,
}

async fn prepare(opts: &Options) -> Result<Prepared, BenchError> {
    if !(0.0..=1.0).contains(&opts.read_ratio) {
        return Err(BenchError::Options(format!(
            "--read-ratio {} is not within 0..=1",
            opts.read_ratio
        )));
    }
    if opts.workload == Workload::List && opts.list_keys > opts.keys {
        return Err(BenchError::Options(format!(
            "--list-keys {} exceeds the seeded --keys {}",
            opts.list_keys, opts.keys
        )));
    }
    let timeout = duration("--request-timeout-secs", opts.request_timeout_secs)?;
    let retry = duration("--retry-secs", opts.retry_secs)?;
    let n = if opts.connections == 0 {
        opts.clients
    } else {
        opts.connections
    };
    let mut conns = Vec::new();
    for j in 0..n {
        let url = &opts.url[(j % opts.url.len() as u64) as usize];
        conns.push(Link::open(url, &opts.access_token, opts.http, timeout, retry).await?);
    }
    let keys =
        workload::Keys::new(&opts.prefix, opts.keys, opts.accounts).map_err(BenchError::Setup)?;
    let value = (0..opts.value_size).map(|i| (i % 251) as u8).collect();
    // A fresh record namespace per run: the accounts are reset, the old records are not.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64 & ((1 << 52) - 1));
    let records = workload::key_with(
        &keys.records_root,
        &[kv_traits::key::KeyPart::Float(run_id as f64)],
    )
    .map_err(BenchError::Setup)?;
    let ctx = Arc::new(Ctx {
        records,
        next_transfer: AtomicU64::new(0),
        ledger: std::sync::Mutex::new(ledger::Ledger::default()),
        keys,
        value,
        mutations: opts.mutations as usize,
        list_keys: opts.list_keys,
        page_size: opts.page_size,
        read_ratio: opts.read_ratio,
        initial_balance: opts.initial_balance,
        max_transfer: opts.max_transfer,
        max_conflicts: opts.max_conflicts.max(1),
    });
    Ok(Prepared { ctx, conns })
}

/// Writes the seeded keys (what `--seed-only` does).
pub async fn seed(opts: &Options) -> Result<(), BenchError> {
    let p = prepare(opts).await?;
    workload::seed(&p.ctx, &p.conns[0])
        .await
        .map_err(BenchError::Setup)
}

/// Runs the clients until `deadline` or until `max_ops` operations were started.
async fn phase(
    workload: Workload,
    ctx: &Arc<Ctx>,
    conns: &[Arc<Link>],
    clients: u64,
    duration: Duration,
    max_ops: u64,
    seed: u64,
) -> (Tally, Duration) {
    let start = Instant::now();
    let deadline = start + duration;
    let started = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..clients {
        let conn = conns[(t % conns.len() as u64) as usize].clone();
        let ctx = ctx.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9).wrapping_add(t));
            let mut tally = Tally::default();
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max_ops {
                let t0 = Instant::now();
                match workload::op(workload, &ctx, &conn, &mut rng).await {
                    Ok((kind, conflicts)) => {
                        tally.ok(kind, t0.elapsed());
                        tally.conflicts += conflicts;
                    }
                    Err(OpError::Failed(e)) => tally.error(e),
                    Err(OpError::Unknown(e)) => tally.unknown_outcome(e),
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            Err(e) => total.error(format!("client task failed: {e}")),
        }
    }
    (total, start.elapsed())
}

/// Audits the bank's total every `interval` until `stop`, reading through each server in turn;
/// returns the audits' findings.
async fn auditor(
    ctx: Arc<Ctx>,
    servers: Vec<Arc<Link>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> (Checks, Tally, Monotonic) {
    let mut checks = Checks::default();
    let mut tally = Tally::default();
    let mut seen = Monotonic::default();
    let expected = ctx
        .initial_balance
        .wrapping_mul(ctx.keys.accounts.len() as u64);
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let link = &servers[turn % servers.len()];
        turn += 1;
        let t0 = Instant::now();
        match workload::bank_total(&ctx, link, &mut seen).await {
            Ok(found) => {
                tally
                    .by_kind
                    .entry("audit")
                    .or_default()
                    .record(t0.elapsed());
                checks.bank_audits += 1;
                let problem = match found {
                    Ok(total) if total == expected => None,
                    Ok(total) => Some(format!("total balance {total}, expected {expected}")),
                    Err(e) => Some(e),
                };
                if let Some(p) = problem {
                    checks.bank_violations += 1;
                    if checks.details.len() < 5 {
                        checks.details.push(p);
                    }
                }
            }
            Err(e) => tally.error(format!("audit: {e}")),
        }
        tokio::time::sleep(interval).await;
    }
    (checks, tally, seen)
}

/// Reads the final accounts and records until two scans agree (an unknown-outcome write may
/// still be landing right after the clients stopped), then verifies them against the ledger.
async fn verify_bank(ctx: &Ctx, link: &Link) -> Result<ledger::Verdict, BenchError> {
    let setup = BenchError::Setup;
    let mut previous = None;
    for _ in 0..10 {
        let accounts = workload::bank_accounts(ctx, link).await.map_err(setup)?;
        let records = workload::bank_records(ctx, link).await.map_err(setup)?;
        let scan = (accounts, records);
        if previous.as_ref() == Some(&scan) {
            break;
        }
        previous = Some(scan);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let Some((accounts, records)) = previous else {
        return Err(BenchError::Setup("no final scan".into()));
    };
    let accounts = accounts.map_err(|e| BenchError::Setup(format!("final scan: {e}")))?;
    let ledger = match ctx.ledger.lock() {
        Ok(l) => l.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    Ok(ledger::verify(
        ctx.initial_balance,
        &accounts.balances,
        &records,
        &ledger,
    ))
}

/// Prepares the data, runs the warm-up and the measurement, checks the results.
pub async fn run(opts: &Options) -> Result<Report, BenchError> {
    if opts.workload == Workload::Watch {
        return watch::run(opts).await;
    }
    if opts.workload == Workload::Queue {
        return queue::run(opts).await;
    }
    let warmup = duration("--warmup-secs", opts.warmup_secs)?;
    let measure = duration("--duration-secs", opts.duration_secs)?;
    let p = prepare(opts).await?;
    let (ctx, conns) = (p.ctx, p.conns);
    let setup = |e: String| BenchError::Setup(e);
    if opts.workload.needs_seed() && !opts.no_seed {
        workload::seed(&ctx, &conns[0]).await.map_err(setup)?;
    }
    let sum_before = if opts.workload == Workload::Sum {
        Some(workload::read_sum(&ctx, &conns[0]).await.map_err(setup)?)
    } else {
        None
    };
    let audit = if opts.workload == Workload::Bank {
        workload::reset_accounts(&ctx, &conns[0])
            .await
            .map_err(setup)?;
        let stop = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_millis(opts.audit_interval_ms);
        let servers = conns.iter().take(opts.url.len()).cloned().collect();
        let handle = tokio::spawn(auditor(ctx.clone(), servers, interval, stop.clone()));
        Some((stop, handle))
    } else {
        None
    };

    let w = opts.workload;
    let (warm, _) = phase(
        w,
        &ctx,
        &conns,
        opts.clients,
        warmup,
        u64::MAX,
        opts.rng_seed,
    )
    .await;
    let max_ops = opts.max_ops.unwrap_or(u64::MAX);
    let seed2 = opts.rng_seed.wrapping_add(1);
    let (mut tally, elapsed) = phase(w, &ctx, &conns, opts.clients, measure, max_ops, seed2).await;

    let mut checks = Checks::default();
    if let Some((stop, handle)) = audit {
        stop.store(true, Ordering::Relaxed);
        match handle.await {
            Ok((c, t, seen)) => {
                checks = c;
                tally.merge(t);
                checks.auditor_reads = seen.reads;
                checks.auditor_advanced = seen.advanced;
                checks.auditor_violations = seen.violations;
                checks.details.extend(seen.details);
            }
            Err(e) => tally.error(format!("auditor failed: {e}")),
        }
        // One last audit once every transfer has finished.
        let expected = ctx
            .initial_balance
            .wrapping_mul(ctx.keys.accounts.len() as u64);
        let mut seen = Monotonic::default();
        match workload::bank_total(&ctx, &conns[0], &mut seen)
            .await
            .map_err(setup)?
        {
            Ok(total) if total == expected => checks.bank_audits += 1,
            found => {
                checks.bank_audits += 1;
                checks.bank_violations += 1;
                checks
                    .details
                    .push(format!("final audit: {found:?}, expected Ok({expected})"));
            }
        }
        let verdict = verify_bank(&ctx, &conns[0]).await?;
        checks.details.extend(verdict.violations.iter().cloned());
        checks.bank_ledger = Some(verdict);
    }
    if let Some(before) = sum_before {
        let after = workload::read_sum(&ctx, &conns[0]).await.map_err(setup)?;
        let committed = warm.all.count() + tally.all.count();
        // A failed sum may still have been applied (its outcome is unknown).
        let unknown = warm.errors + tally.errors + warm.unknown + tally.unknown;
        let grown = after.wrapping_sub(before);
        let ok = (committed..=committed + unknown).contains(&grown);
        if !ok {
            checks.details.push(format!(
                "sum key grew by {grown} ({before} -> {after}) but {committed} sums committed ({unknown} unknown)"
            ));
        }
        checks.sum_ok = Some(ok);
    }
    for s in &warm.samples {
        tally.note(format!("(warm-up) {s}"));
    }

    let mut params = BTreeMap::new();
    let mut param = |k: &str, v: serde_json::Value| {
        params.insert(k.to_owned(), v);
    };
    param("keys", opts.keys.into());
    param("value_size", opts.value_size.into());
    param("warmup_secs", opts.warmup_secs.into());
    param("warmup_ops", warm.all.count().into());
    param("warmup_errors", warm.errors.into());
    match w {
        Workload::Set => param("mutations", opts.mutations.into()),
        Workload::List => {
            param("list_keys", opts.list_keys.into());
            param("page_size", opts.page_size.into());
        }
        Workload::Mixed => {
            param("read_ratio", opts.read_ratio.into());
            param("mutations", opts.mutations.into());
        }
        Workload::Bank => {
            param("accounts", opts.accounts.into());
            param("initial_balance", opts.initial_balance.into());
            param("audit_interval_ms", opts.audit_interval_ms.into());
        }
        Workload::Get | Workload::Sum | Workload::Watch | Workload::Queue => {}
    }
    let version = conns[0].version().await;
    Ok(Report::new(
        opts.label.clone(),
        opts.url.join(","),
        w.name().to_owned(),
        opts.clients,
        conns.len() as u64,
        opts.http,
        version,
        elapsed,
        tally,
        checks,
        params,
    ))
}
