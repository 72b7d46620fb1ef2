//! The `queue` workload: deep queues through the queue extension `queue-v1`
//! (`docs/queue-extension.md`).
//!
//! Contract:
//! - Enqueue phase: `--clients` tasks enqueue `--messages` messages, `--enqueue-batch` per atomic
//!   write, at most `--enqueue-rate` messages per second when set. Message `i` asks for the delay picked for it from `--delay-mix` (a deterministic
//!   function of `i`, so every run with the same flags asks for the same delays) and carries a
//!   `--value-size`-byte payload `"kvbq" ‖ i u64 LE ‖ requested ready time ms u64 LE ‖ delay ms
//!   u32 LE ‖ padding`: a listener needs nothing else to check it.
//! - Delivery phase: `--listeners` tasks dequeue (long polls of 1 s) and finish every message
//!   with success. It ends when every message id below `--messages` was delivered, after
//!   `--max-ops` deliveries, or when nothing was delivered for `--idle-secs`. Transport errors
//!   (a server being restarted under the benchmark) are retried, never fatal.
//! - `--queue-phase both` runs listeners while the enqueuers run (lateness under a steady load);
//!   `enqueue` and `deliver` run one phase each, so a server can be restarted between or during
//!   them by a driving script (`benches/queue.sh`).
//! - Measured: enqueue and delivery throughput; lateness (delivered-at minus requested ready
//!   time, both on this machine's clock) for immediate and delayed messages; duplicates
//!   (at-least-once), redeliveries (`attempt > 1`), deliveries before the requested time
//!   (`early`, a violation), messages never delivered (`lost`, a violation when their enqueue
//!   was acknowledged in this run, or in a deliver-only run whenever delivery went idle); the
//!   longest pause between two deliveries and when it began; deliveries per second; with
//!   `--server-pid`, the server's CPU per message of each phase and its peak RSS.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_proto::{pb, queue_pb};
use serde::Serialize;

use crate::link::{Link, WriteError};
use crate::report::{Checks, Latencies, LatencySummary, Report, Tally};
use crate::server_stats::{self, Sample};
use crate::{duration, BenchError, Options};

/// Which phases a run performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueuePhase {
    /// Enqueue only.
    Enqueue,
    /// Deliver only (the messages of an earlier enqueue run).
    Deliver,
    /// Listeners run while the enqueuers run.
    Both,
}

/// Payload tag of this workload's messages.
const MAGIC: &[u8; 4] = b"kvbq";
/// Bytes of the payload before the padding.
const HEADER: usize = 24;
/// Long-poll time of one dequeue.
const DEQUEUE_WAIT_MS: u32 = 1000;
/// Seconds of the per-second delivery timeline kept at most.
const TIMELINE_SECS: usize = 7200;

/// A `--delay-mix`: `delay_ms:weight` pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct DelayMix(Vec<(u32, u64)>);

impl DelayMix {
    /// Parses `"0:90,1000:5,30000:5"` (weights need not add up to 100; at least one > 0).
    pub fn parse(s: &str) -> Result<DelayMix, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, w) = part
                .split_once(':')
                .ok_or_else(|| format!("--delay-mix: {part:?} is not DELAY_MS:WEIGHT"))?;
            let d = d
                .trim()
                .parse::<u32>()
                .map_err(|e| format!("--delay-mix: delay {d:?}: {e}"))?;
            let w = w
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("--delay-mix: weight {w:?}: {e}"))?;
            out.push((d, w));
        }
        if out.iter().map(|&(_, w)| w).sum::<u64>() == 0 {
            return Err(format!("--delay-mix {s:?}: no positive weight"));
        }
        Ok(DelayMix(out))
    }

    /// The delay of message `id` (a fixed hash of the id picks by weight).
    pub fn delay_of(&self, id: u64) -> u32 {
        let total: u64 = self.0.iter().map(|&(_, w)| w).sum();
        // SplitMix64 finaliser: ids in sequence spread evenly over the weights.
        let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let mut pick = z % total.max(1);
        for &(d, w) in &self.0 {
            if pick < w {
                return d;
            }
            pick -= w;
        }
        0
    }
}

/// What a message says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Message number.
    pub id: u64,
    /// Requested ready time, ms since the Unix epoch.
    pub ready_ms: u64,
    /// Requested delay, ms.
    pub delay_ms: u32,
}

impl Tag {
    /// The payload of `--value-size` bytes (at least the header).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(size.max(HEADER));
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&self.id.to_le_bytes());
        v.extend_from_slice(&self.ready_ms.to_le_bytes());
        v.extend_from_slice(&self.delay_ms.to_le_bytes());
        while v.len() < size {
            v.push((v.len() % 251) as u8);
        }
        v
    }

    /// Inverse of [`Tag::encode`]; `None` for a payload this workload did not write.
    pub fn decode(b: &[u8]) -> Option<Tag> {
        if b.len() < HEADER || &b[..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| b.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
        Some(Tag {
            id: u64_at(4)?,
            ready_ms: u64_at(12)?,
            delay_ms: u32::from_le_bytes(b.get(20..24)?.try_into().ok()?),
        })
    }
}

/// One bit per message id.
struct Bitmap(Vec<AtomicU64>);

impl Bitmap {
    fn new(n: u64) -> Bitmap {
        Bitmap((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }
    /// Sets bit `i`; true if it was clear. Ids out of range count as already set.
    fn set(&self, i: u64) -> bool {
        let Some(word) = self.0.get((i / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (i % 64);
        word.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1u64 << (i % 64)) != 0)
    }
}

fn now_ms() -> u64 {
    kv_traits::clock::now_ms()
}

/// Results of the enqueue phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnqueueResult {
    /// Messages asked for.
    pub messages: u64,
    /// Messages whose write was acknowledged.
    pub acked: u64,
    /// Messages per atomic write.
    pub batch: u64,
    /// Pacing, messages per second (0: none).
    pub rate: u64,
    /// Concurrent enqueuers.
    pub clients: u64,
    /// Seconds of the phase.
    pub secs: f64,
    /// Acknowledged messages per second.
    pub msgs_per_sec: f64,
    /// Server CPU ms per acknowledged message (with `--server-pid`).
    pub server_cpu_ms_per_msg: Option<f64>,
    /// Server RSS at the end of the phase, KiB.
    pub server_rss_kib: Option<u64>,
}

/// Results of the delivery phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliverResult {
    /// Concurrent listeners.
    pub listeners: u64,
    /// Deliveries (dequeues that returned a message of this workload).
    pub deliveries: u64,
    /// Distinct message ids delivered.
    pub unique: u64,
    /// Deliveries of an id already delivered (at-least-once).
    pub duplicates: u64,
    /// Deliveries with `attempt > 1`.
    pub redeliveries: u64,
    /// Deliveries before the requested ready time (must be 0).
    pub early: u64,
    /// Deliveries of payloads this workload did not write.
    pub foreign: u64,
    /// Finishes refused with 409 (the lease had expired).
    pub finish_conflicts: u64,
    /// Finishes without a definite answer.
    pub finish_unknown: u64,
    /// Message ids expected but never delivered.
    pub lost: u64,
    /// Seconds from the start of the phase to the first delivery.
    pub first_delivery_s: f64,
    /// Seconds from the first to the last delivery.
    pub secs: f64,
    /// Distinct messages per second over `secs`.
    pub msgs_per_sec: f64,
    /// Longest pause between two deliveries, ms, and when it began (s after the phase began).
    pub max_gap_ms: u64,
    /// See `max_gap_ms`.
    pub max_gap_at_s: f64,
    /// Lateness of messages with no delay.
    pub lateness_immediate: LatencySummary,
    /// Lateness of delayed messages.
    pub lateness_delayed: LatencySummary,
    /// Server CPU ms per delivery (with `--server-pid`).
    pub server_cpu_ms_per_msg: Option<f64>,
    /// Deliveries in each second of the phase.
    pub per_second: Vec<u64>,
}

/// The queue part of the JSON report (`params.queue`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueResult {
    /// The phases run.
    pub phase: Option<QueuePhase>,
    /// The delay mix, as given.
    pub delay_mix: String,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// Enqueue results.
    pub enqueue: Option<EnqueueResult>,
    /// Delivery results.
    pub deliver: Option<DeliverResult>,
    /// Largest server RSS sampled during the run, KiB.
    pub server_peak_rss_kib: Option<u64>,
}

/// State the listeners share.
struct Deliveries {
    start: Instant,
    expected: u64,
    seen: Bitmap,
    unique: AtomicU64,
    total: AtomicU64,
    duplicates: AtomicU64,
    redeliveries: AtomicU64,
    early: AtomicU64,
    foreign: AtomicU64,
    finish_conflicts: AtomicU64,
    finish_unknown: AtomicU64,
    /// ms after `start` of the latest delivery, plus one (0: none yet).
    last: AtomicU64,
    first: AtomicU64,
    gap: Mutex<(u64, u64)>,
    per_second: Vec<AtomicU64>,
    lateness: Mutex<(Latencies, Latencies)>,
    stop: AtomicBool,
    max_deliveries: u64,
}

impl Deliveries {
    fn record(&self, tag: Tag, attempt: u32, at_ms: u64, tally: &mut (Latencies, Latencies)) {
        let since = self.start.elapsed().as_millis() as u64 + 1;
        let prev = self.last.swap(since, Ordering::AcqRel);
        let _ = self
            .first
            .compare_exchange(0, since, Ordering::AcqRel, Ordering::Relaxed);
        if prev > 0 && since > prev {
            if let Ok(mut g) = self.gap.lock() {
                if since - prev > g.0 {
                    *g = (since - prev, prev);
                }
            }
        }
        if let Some(c) = self.per_second.get((since / 1000) as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        if attempt > 1 {
            self.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
        if at_ms < tag.ready_ms {
            self.early.fetch_add(1, Ordering::Relaxed);
        }
        let late = Duration::from_millis(at_ms.saturating_sub(tag.ready_ms));
        if tag.delay_ms == 0 {
            tally.0.record(late);
        } else {
            tally.1.record(late);
        }
        if self.seen.set(tag.id) {
            let u = self.unique.fetch_add(1, Ordering::Relaxed) + 1;
            if u >= self.expected {
                self.stop.store(true, Ordering::Relaxed);
            }
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        if n >= self.max_deliveries {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

async fn listener(link: Arc<Link>, d: Arc<Deliveries>, idle: Duration) -> Tally {
    let mut tally = Tally::default();
    let mut lateness = (Latencies::default(), Latencies::default());
    let req = queue_pb::DequeueRequest {
        wait_ms: DEQUEUE_WAIT_MS,
    };
    while !d.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let m = match link.dequeue(&req).await {
            Ok(m) => m,
            Err(e) => {
                tally.error(format!("dequeue: {e}"));
                tokio::time::sleep(crate::link::RETRY_PAUSE).await;
                continue;
            }
        };
        let at_ms = now_ms();
        if m.lease.is_empty() {
            let last = d.last.load(Ordering::Acquire);
            let quiet = d
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(last));
            if quiet >= idle {
                d.stop.store(true, Ordering::Relaxed);
            }
            continue;
        }
        tally.ok("dequeue", t0.elapsed());
        match Tag::decode(&m.payload) {
            Some(tag) => d.record(tag, m.attempt, at_ms, &mut lateness),
            None => {
                d.foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
        let t1 = Instant::now();
        let fin = queue_pb::FinishRequest {
            lease: m.lease,
            success: true,
        };
        match link.finish(&fin).await {
            Ok(()) => tally.ok("finish", t1.elapsed()),
            Err(WriteError::Unknown(crate::ClientError::Status { status, .. }))
                if status == http::StatusCode::CONFLICT =>
            {
                d.finish_conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                d.finish_unknown.fetch_add(1, Ordering::Relaxed);
                tally.unknown_outcome(format!("finish: {e}"));
            }
        }
    }
    if let Ok(mut l) = d.lateness.lock() {
        l.0.merge(&lateness.0);
        l.1.merge(&lateness.1);
    }
    tally
}

struct Enqueuers {
    start: Instant,
    /// Messages per second overall (0: as fast as the server takes them).
    rate: u64,
    next: AtomicU64,
    acked: Bitmap,
    acked_count: AtomicU64,
}

async fn enqueuer(
    link: Arc<Link>,
    e: Arc<Enqueuers>,
    messages: u64,
    batch: u64,
    mix: Arc<DelayMix>,
    size: usize,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let first = e.next.fetch_add(batch, Ordering::Relaxed);
        if first >= messages {
            return tally;
        }
        let last = (first + batch).min(messages);
        if e.rate > 0 {
            let due = e.start + Duration::from_secs_f64(first as f64 / e.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let now = now_ms();
        let enqueues = (first..last)
            .map(|id| {
                let delay_ms = mix.delay_of(id);
                let ready_ms = now + u64::from(delay_ms);
                pb::Enqueue {
                    payload: Tag {
                        id,
                        ready_ms,
                        delay_ms,
                    }
                    .encode(size),
                    deadline_ms: ready_ms as i64,
                    keys_if_undelivered: vec![],
                    backoff_schedule: vec![],
                }
            })
            .collect();
        let req = pb::AtomicWrite {
            checks: vec![],
            mutations: vec![],
            enqueues,
        };
        let t0 = Instant::now();
        match crate::workload::commit(&link, &req).await {
            Ok(()) => {
                tally.ok("enqueue", t0.elapsed());
                for id in first..last {
                    e.acked.set(id);
                }
                e.acked_count.fetch_add(last - first, Ordering::Relaxed);
            }
            Err(msg) => tally.unknown_outcome(format!("enqueue: {msg}")),
        }
    }
}

/// Samples the server every 500 ms until `stop`; returns the peak RSS.
async fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> Option<u64> {
    let mut peak = None;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(s) = server_stats::sample(pid) {
            peak = Some(peak.unwrap_or(0).max(s.rss_kib));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    peak
}

fn sample(pid: Option<u32>, tally: &mut Tally) -> Option<Sample> {
    match server_stats::sample(pid?) {
        Ok(s) => Some(s),
        Err(e) => {
            tally.note(format!("server stats: {e}"));
            None
        }
    }
}

fn cpu_ms_per(before: Option<Sample>, after: Option<Sample>, n: u64) -> Option<f64> {
    let (b, a) = (before?, after?);
    (n > 0).then(|| a.cpu.saturating_sub(b.cpu).as_secs_f64() * 1000.0 / n as f64)
}

/// Runs the `queue` workload (see the module docs).
pub(crate) async fn run(opts: &Options) -> Result<Report, BenchError> {
    let timeout = duration("--request-timeout-secs", opts.request_timeout_secs)?;
    let retry = duration("--retry-secs", opts.retry_secs)?;
    let idle = duration("--idle-secs", opts.idle_secs)?;
    if timeout <= Duration::from_millis(u64::from(DEQUEUE_WAIT_MS) + 1000) {
        return Err(BenchError::Options(
            "--request-timeout-secs must exceed the 1 s dequeue long poll by a second".into(),
        ));
    }
    let mix = Arc::new(DelayMix::parse(&opts.delay_mix).map_err(BenchError::Options)?);
    let size = opts.value_size as usize;
    let phase = opts.queue_phase;
    let n = opts.clients.max(opts.listeners).max(1);
    let conns = if opts.connections == 0 {
        n
    } else {
        opts.connections
    };
    let mut links = Vec::new();
    for j in 0..conns {
        let url = &opts.url[(j % opts.url.len() as u64) as usize];
        links.push(Link::open(url, &opts.access_token, opts.http, timeout, retry).await?);
    }
    let link = |i: u64| links[(i % links.len() as u64) as usize].clone();

    let mut tally = Tally::default();
    let started = Instant::now();
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = opts
        .server_pid
        .map(|pid| tokio::spawn(rss_sampler(pid, stop_sampler.clone())));

    let deliveries = Arc::new(Deliveries {
        start: Instant::now(),
        expected: opts.messages,
        seen: Bitmap::new(opts.messages),
        unique: AtomicU64::new(0),
        total: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        redeliveries: AtomicU64::new(0),
        early: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        finish_conflicts: AtomicU64::new(0),
        finish_unknown: AtomicU64::new(0),
        last: AtomicU64::new(0),
        first: AtomicU64::new(0),
        gap: Mutex::new((0, 0)),
        per_second: (0..TIMELINE_SECS).map(|_| AtomicU64::new(0)).collect(),
        lateness: Mutex::new((Latencies::default(), Latencies::default())),
        stop: AtomicBool::new(false),
        max_deliveries: opts.max_ops.unwrap_or(u64::MAX),
    });
    let deliver_before = sample(opts.server_pid, &mut tally);
    let listeners: Vec<_> = if phase == QueuePhase::Enqueue {
        Vec::new()
    } else {
        (0..opts.listeners)
            .map(|i| tokio::spawn(listener(link(i), deliveries.clone(), idle)))
            .collect()
    };

    let mut enqueue_result = None;
    let enq = Arc::new(Enqueuers {
        start: Instant::now(),
        rate: opts.enqueue_rate,
        next: AtomicU64::new(0),
        acked: Bitmap::new(opts.messages),
        acked_count: AtomicU64::new(0),
    });
    if phase != QueuePhase::Deliver {
        let before = sample(opts.server_pid, &mut tally);
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..opts.clients)
            .map(|i| {
                tokio::spawn(enqueuer(
                    link(i),
                    enq.clone(),
                    opts.messages,
                    opts.enqueue_batch,
                    mix.clone(),
                    size,
                ))
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(t) => tally.merge(t),
                Err(e) => tally.error(format!("enqueuer failed: {e}")),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let after = sample(opts.server_pid, &mut tally);
        let acked = enq.acked_count.load(Ordering::Relaxed);
        enqueue_result = Some(EnqueueResult {
            messages: opts.messages,
            acked,
            batch: opts.enqueue_batch,
            rate: opts.enqueue_rate,
            clients: opts.clients,
            secs,
            msgs_per_sec: acked as f64 / secs.max(1e-9),
            server_cpu_ms_per_msg: if phase == QueuePhase::Enqueue {
                cpu_ms_per(before, after, acked)
            } else {
                None
            },
            server_rss_kib: after.map(|s| s.rss_kib),
        });
    }

    let mut deliver_result = None;
    let mut checks = Checks::default();
    if phase != QueuePhase::Enqueue {
        for l in listeners {
            match l.await {
                Ok(t) => tally.merge(t),
                Err(e) => tally.error(format!("listener failed: {e}")),
            }
        }
        let after = sample(opts.server_pid, &mut tally);
        let d = &deliveries;
        let unique = d.unique.load(Ordering::Relaxed);
        let total = d.total.load(Ordering::Relaxed);
        let first = d.first.load(Ordering::Relaxed);
        let last = d.last.load(Ordering::Relaxed);
        let secs = last.saturating_sub(first) as f64 / 1000.0;
        let lost = if opts.max_ops.is_some() {
            0
        } else if phase == QueuePhase::Both {
            (0..opts.messages)
                .filter(|&i| enq.acked.get(i) && !d.seen.get(i))
                .count() as u64
        } else {
            opts.messages - unique
        };
        let (gap, gap_at) = d.gap.lock().map(|g| *g).unwrap_or((0, 0));
        let (imm, del) = d
            .lateness
            .lock()
            .map(|l| (l.0.summary(), l.1.summary()))
            .unwrap_or_default();
        let used = ((last / 1000) as usize + 1).min(TIMELINE_SECS);
        let early = d.early.load(Ordering::Relaxed);
        if early > 0 {
            checks
                .details
                .push(format!("{early} deliveries before their requested time"));
        }
        if lost > 0 {
            checks.details.push(format!(
                "{lost} messages never delivered (idle for {:?})",
                idle
            ));
        }
        checks.queue_ok = Some(early == 0 && lost == 0);
        deliver_result = Some(DeliverResult {
            listeners: opts.listeners,
            deliveries: total,
            unique,
            duplicates: d.duplicates.load(Ordering::Relaxed),
            redeliveries: d.redeliveries.load(Ordering::Relaxed),
            early,
            foreign: d.foreign.load(Ordering::Relaxed),
            finish_conflicts: d.finish_conflicts.load(Ordering::Relaxed),
            finish_unknown: d.finish_unknown.load(Ordering::Relaxed),
            lost,
            first_delivery_s: first.saturating_sub(1) as f64 / 1000.0,
            secs,
            msgs_per_sec: unique as f64 / secs.max(1e-9),
            max_gap_ms: gap,
            max_gap_at_s: gap_at as f64 / 1000.0,
            lateness_immediate: imm,
            lateness_delayed: del,
            server_cpu_ms_per_msg: if phase == QueuePhase::Deliver {
                cpu_ms_per(deliver_before, after, total)
            } else {
                None
            },
            per_second: d.per_second[..used]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        });
    }
    stop_sampler.store(true, Ordering::Relaxed);
    let peak = match sampler {
        Some(s) => s.await.ok().flatten(),
        None => None,
    };
    if phase == QueuePhase::Both {
        if let (Some(e), Some(d), (Some(b), Some(a))) = (
            enqueue_result.as_mut(),
            deliver_result.as_mut(),
            (deliver_before, sample(opts.server_pid, &mut tally)),
        ) {
            // Both phases overlap: one CPU figure for an enqueue plus its delivery.
            let per = cpu_ms_per(Some(b), Some(a), e.acked);
            e.server_cpu_ms_per_msg = per;
            d.server_cpu_ms_per_msg = per;
        }
    }
    let result = QueueResult {
        phase: Some(phase),
        delay_mix: opts.delay_mix.clone(),
        payload_bytes: opts.value_size,
        enqueue: enqueue_result,
        deliver: deliver_result,
        server_peak_rss_kib: peak,
    };
    let mut params = BTreeMap::new();
    params.insert(
        "queue".to_owned(),
        serde_json::to_value(&result).unwrap_or_default(),
    );
    let version = links[0].version().await;
    let mut report = Report::new(
        opts.label.clone(),
        opts.url.join(","),
        "queue".to_owned(),
        opts.clients,
        links.len() as u64,
        opts.http,
        version,
        started.elapsed(),
        tally,
        checks,
        params,
    );
    report.extra = Some(summary(&result));
    Ok(report)
}

/// The queue lines of the printed report.
fn summary(r: &QueueResult) -> String {
    let mut out = Vec::new();
    if let Some(e) = &r.enqueue {
        out.push(format!(
            "enqueue: {}/{} acked in {:.2} s = {:.0} msg/s (batch {}, clients {}), server cpu {} ms/msg, rss {} KiB",
            e.acked,
            e.messages,
            e.secs,
            e.msgs_per_sec,
            e.batch,
            e.clients,
            opt(e.server_cpu_ms_per_msg),
            e.server_rss_kib.map_or("-".into(), |v| v.to_string()),
        ));
    }
    if let Some(d) = &r.deliver {
        out.push(format!(
            "deliver: {} unique in {:.2} s = {:.0} msg/s ({} listeners), duplicates {} redeliveries {} early {} lost {} foreign {} finish 409 {} unknown {}, max gap {} ms at {:.1} s, server cpu {} ms/msg",
            d.unique,
            d.secs,
            d.msgs_per_sec,
            d.listeners,
            d.duplicates,
            d.redeliveries,
            d.early,
            d.lost,
            d.foreign,
            d.finish_conflicts,
            d.finish_unknown,
            d.max_gap_ms,
            d.max_gap_at_s,
            opt(d.server_cpu_ms_per_msg),
        ));
        for (name, l) in [
            ("immediate", &d.lateness_immediate),
            ("delayed", &d.lateness_delayed),
        ] {
            out.push(format!(
                "lateness {name}: {} msgs, p50 {:.1} p99 {:.1} max {:.1} ms",
                l.count, l.p50_ms, l.p99_ms, l.max_ms
            ));
        }
    }
    if let Some(p) = r.server_peak_rss_kib {
        out.push(format!("server peak rss {p} KiB"));
    }
    out.join("\n  ")
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_foreign_payloads_are_refused() {
        let t = Tag {
            id: 12345,
            ready_ms: 1_700_000_000_000,
            delay_ms: 5000,
        };
        let p = t.encode(100);
        assert_eq!(p.len(), 100);
        assert_eq!(Tag::decode(&p), Some(t));
        assert_eq!(Tag::decode(&t.encode(0)), Some(t));
        assert_eq!(Tag::decode(&p[..23]), None);
        assert_eq!(Tag::decode(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxx"), None);
    }

    #[test]
    fn delay_mix_parses_and_picks_by_weight() {
        let m = DelayMix::parse("0:90, 1000:5,30000:5").unwrap();
        let picks: Vec<u32> = (0..100_000).map(|i| m.delay_of(i)).collect();
        let zero = picks.iter().filter(|&&d| d == 0).count();
        let long = picks.iter().filter(|&&d| d == 30000).count();
        assert!((88_000..92_000).contains(&zero), "{zero}");
        assert!((4_000..6_000).contains(&long), "{long}");
        assert_eq!(m.delay_of(77), m.delay_of(77));
        assert!(DelayMix::parse("0:0").is_err());
        assert!(DelayMix::parse("5").is_err());
        assert!(DelayMix::parse("a:1").is_err());
        assert_eq!(DelayMix::parse("7:1").unwrap().delay_of(3), 7);
    }

    #[test]
    fn bitmap_counts_first_sets_only() {
        let b = Bitmap::new(130);
        assert!(b.set(129));
        assert!(!b.set(129));
        assert!(b.get(129));
        assert!(!b.get(128));
        assert!(!b.set(500));
    }
}
