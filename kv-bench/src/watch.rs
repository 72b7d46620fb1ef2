//! The `watch` workload: many concurrent watch streams, one writer, and how long each change
//! takes to reach every watcher.
//!
//! Contract:
//! - `--watch-keys` keys `[prefix, "watch", i]` are seeded with sequence number 0; `--watchers`
//!   streams each watch one key (watcher `w` watches key `w % watch-keys`, so 1 key = one hot
//!   key) over `--connections` h2 connections (watcher `w` on connection `w % N`, 0 = one per
//!   watcher). The run fails unless every stream opens and reports sequence 0 first.
//! - A writer on a connection of its own then commits one atomic write every
//!   `--write-interval-ms` (waiting for the previous answer first): `--mutations` keys, taken
//!   round-robin, each set to the write's sequence number (u64 LE, padded to `--value-size`).
//!   Writes of the warm-up are not measured.
//! - Notification latency = from the moment the write was handed to the connection to the
//!   moment a watcher decoded a frame showing that sequence (or a later one: a watcher that
//!   falls behind gets the newest snapshot, and the skipped writes count as `coalesced`). Per
//!   write, `all_notified` is the latency of the last of its expected watchers (recorded for
//!   writes that reached every one of them), and `all_notified_after_ack` the time from the
//!   write's answer (the commit acknowledged) to that last watcher (0 if every watcher was
//!   notified before the answer arrived): the fan-out cost without the commit's own latency.
//! - After the last write the run waits (up to `--request-timeout-secs`) until every watcher has
//!   seen the final value of its key; one that never does fails the `watch_ok` check.
//! - With `--server-pid`, the server's RSS before and after opening the streams and its CPU time
//!   over the measurement are recorded (memory per stream, CPU per notification). kv-bench's
//!   own CPU time over the measurement is always recorded (`client_cpu_us_per_notification`):
//!   it decodes every notification on the same machine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use kv_proto::pb;
use kv_traits::key::KeyPart;
use kv_traits::KvValue;

use crate::client::HttpMode;
use crate::link::Link;
use crate::report::{Checks, Latencies, Report, Tally};
use crate::server_stats::{self, Sample};
use crate::watch_seq::SeqDecoder;
use crate::workload::{self, key_with};
use crate::{duration, BenchError, Options};

/// Latency histograms are sharded to keep watchers from contending on one lock.
const SHARDS: usize = 16;

/// What the writer knows about one write, shared with the watchers.
struct Slot {
    /// Microseconds since the run's epoch when the write was sent; `u64::MAX` = not sent.
    sent_us: AtomicU64,
    measured: AtomicBool,
    /// Watchers of the keys the write changed.
    expected: AtomicU64,
    /// Watchers that saw exactly this write.
    delivered: AtomicU64,
    /// Latency of the slowest of them so far, µs.
    max_us: AtomicU64,
    /// Microseconds since the epoch when the write's answer arrived; `u64::MAX` = not yet.
    acked_us: AtomicU64,
    /// Microseconds since the epoch of the last delivery so far.
    last_us: AtomicU64,
}

struct Shared {
    epoch: Instant,
    slots: Vec<Slot>,
    /// Sequence seen last by each watcher.
    seen: Vec<AtomicU64>,
    notify: Vec<Mutex<Latencies>>,
    stop: AtomicBool,
    /// Deliveries of writes after the one seen before (a watcher that fell behind).
    coalesced: AtomicU64,
    errors: Mutex<Tally>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn error(&self, msg: String) {
        let mut t = match self.errors.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        t.error(msg);
    }

    /// A watcher saw sequence `seq` after `prev` at `now_us`.
    fn delivered(&self, watcher: usize, prev: u64, seq: u64, now_us: u64) {
        if seq > prev + 1 {
            self.coalesced.fetch_add(seq - prev - 1, Ordering::Relaxed);
        }
        let Some(slot) = self.slots.get(seq as usize) else {
            return;
        };
        let sent = slot.sent_us.load(Ordering::Acquire);
        if sent == u64::MAX {
            return;
        }
        let us = now_us.saturating_sub(sent);
        slot.delivered.fetch_add(1, Ordering::Relaxed);
        slot.max_us.fetch_max(us, Ordering::Relaxed);
        slot.last_us.fetch_max(now_us, Ordering::Relaxed);
        if slot.measured.load(Ordering::Relaxed) {
            let mut h = match self.notify[watcher % SHARDS].lock() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            h.record(Duration::from_micros(us));
        }
    }
}

fn value(seq: u64, size: usize) -> KvValue {
    let mut v = seq.to_le_bytes().to_vec();
    v.resize(size.max(8), 0);
    KvValue::Bytes(v)
}

/// Reads from `body` until a frame shows a sequence; `Ok(None)` when the stream ended.
async fn next_seq(
    body: &mut hyper::body::Incoming,
    decoder: &mut SeqDecoder,
) -> Result<Option<u64>, String> {
    loop {
        if let Some(seq) = decoder.next_seq()? {
            return Ok(Some(seq));
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
            }
            Some(Err(e)) => return Err(format!("watch stream failed: {e}")),
            None => return Ok(None),
        }
    }
}

/// One watcher: opens its stream, reports the first frame through `opened`, then records every
/// change until the run stops.
async fn watcher(
    shared: Arc<Shared>,
    link: Arc<Link>,
    w: usize,
    key: Vec<u8>,
    opened: tokio::sync::mpsc::Sender<Result<Duration, String>>,
) {
    let t0 = Instant::now();
    let req = pb::Watch {
        keys: vec![pb::WatchKey { key }],
    };
    let first = async {
        let mut body = link.watch(&req).await.map_err(|e| e.to_string())?;
        let mut decoder = SeqDecoder::default();
        let seq = next_seq(&mut body, &mut decoder)
            .await?
            .ok_or("the watch stream ended before its first frame")?;
        if seq != 0 {
            return Err(format!("first frame shows sequence {seq}, expected 0"));
        }
        Ok::<_, String>((body, decoder))
    };
    let (mut body, mut decoder) = match first.await {
        Ok(x) => {
            let _ = opened.send(Ok(t0.elapsed())).await;
            x
        }
        Err(e) => {
            let _ = opened.send(Err(e)).await;
            return;
        }
    };
    drop(opened);
    let mut prev = 0u64;
    loop {
        let frame = next_seq(&mut body, &mut decoder).await;
        let now = shared.now_us();
        let seq = match frame {
            Ok(Some(seq)) => seq,
            Err(e) => {
                shared.error(format!("watcher {w}: {e}"));
                return;
            }
            Ok(None) => {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.error(format!("watcher {w}: the stream ended"));
                }
                return;
            }
        };
        if seq > prev {
            shared.delivered(w, prev, seq, now);
            prev = seq;
            shared.seen[w].store(seq, Ordering::Release);
        }
    }
}

fn sample(pid: Option<u32>, tally: &mut Tally) -> Option<Sample> {
    let pid = pid?;
    match server_stats::sample(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            tally.note(format!("server stats: {e}"));
            None
        }
    }
}

/// Runs the `watch` workload (see the module docs).
pub(crate) async fn run(opts: &Options) -> Result<Report, BenchError> {
    if opts.http != HttpMode::H2 {
        return Err(BenchError::Options(
            "--workload watch needs --http h2".into(),
        ));
    }
    let timeout = duration("--request-timeout-secs", opts.request_timeout_secs)?;
    let retry = duration("--retry-secs", opts.retry_secs)?;
    let warmup = duration("--warmup-secs", opts.warmup_secs)?;
    let measure = duration("--duration-secs", opts.duration_secs)?;
    let interval = Duration::from_millis(opts.write_interval_ms.max(1));
    let watchers = opts.watchers as usize;
    let nkeys = opts.watch_keys as usize;
    let per_write = (opts.mutations as usize).min(nkeys);
    let nconns = if opts.connections == 0 {
        watchers
    } else {
        opts.connections as usize
    };
    let setup = BenchError::Setup;

    let root = workload::key_with(
        &kv_traits::key::encode_key(&[KeyPart::from(opts.prefix.as_str())])
            .map_err(|e| setup(e.to_string()))?,
        &[KeyPart::from("watch")],
    )
    .map_err(setup)?;
    let keys: Vec<Vec<u8>> = (0..nkeys)
        .map(|i| key_with(&root, &[KeyPart::Float(i as f64)]))
        .collect::<Result<_, _>>()
        .map_err(setup)?;
    let watchers_of = |k: usize| (watchers / nkeys + usize::from(k < watchers % nkeys)) as u64;

    let open = |j: usize| {
        let url = opts.url[j % opts.url.len()].clone();
        async move {
            Link::open(&url, &opts.access_token, opts.http, timeout, retry)
                .await
                .map_err(BenchError::Client)
        }
    };
    let writer = open(0).await?;
    let size = opts.value_size as usize;
    for chunk in keys.chunks(workload::SEED_BATCH) {
        let mutations = chunk
            .iter()
            .map(|k| workload::set(k, value(0, size)))
            .collect();
        let req = pb::AtomicWrite {
            mutations,
            ..Default::default()
        };
        workload::commit(&writer, &req).await.map_err(setup)?;
    }
    let mut conns = Vec::with_capacity(nconns);
    for j in 0..nconns {
        conns.push(open(j).await?);
    }

    let capacity = ((warmup + measure).as_micros() / interval.as_micros()) as usize + 2;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        slots: (0..capacity)
            .map(|_| Slot {
                sent_us: AtomicU64::new(u64::MAX),
                measured: AtomicBool::new(false),
                expected: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                max_us: AtomicU64::new(0),
                acked_us: AtomicU64::new(u64::MAX),
                last_us: AtomicU64::new(0),
            })
            .collect(),
        seen: (0..watchers).map(|_| AtomicU64::new(0)).collect(),
        notify: (0..SHARDS)
            .map(|_| Mutex::new(Latencies::default()))
            .collect(),
        stop: AtomicBool::new(false),
        coalesced: AtomicU64::new(0),
        errors: Mutex::new(Tally::default()),
    });

    let mut tally = Tally::default();
    let before_open = sample(opts.server_pid, &mut tally);
    // Open every stream at once, as a client starting up would.
    let open_start = Instant::now();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(1024);
    let mut tasks = Vec::with_capacity(watchers);
    for w in 0..watchers {
        tasks.push(tokio::spawn(watcher(
            shared.clone(),
            conns[w % nconns].clone(),
            w,
            keys[w % nkeys].clone(),
            opened_tx.clone(),
        )));
    }
    drop(opened_tx);
    let mut open_lat = Latencies::default();
    let mut open_failed = 0u64;
    let opening = async {
        while let Some(r) = opened_rx.recv().await {
            match r {
                Ok(d) => open_lat.record(d),
                Err(e) => {
                    open_failed += 1;
                    tally.error(format!("opening a watch: {e}"));
                }
            }
        }
    };
    let all_open = tokio::time::timeout(timeout + Duration::from_secs(5), opening)
        .await
        .is_ok();
    let open_secs = open_start.elapsed().as_secs_f64();
    if !all_open || open_failed > 0 {
        shared.stop.store(true, Ordering::Relaxed);
        for t in &tasks {
            t.abort();
        }
        return Err(BenchError::Setup(format!(
            "{} of {watchers} watch streams opened within {:?} ({open_failed} failed{}); a server \
             limiting concurrent HTTP/2 streams needs more --connections",
            open_lat.count(),
            timeout + Duration::from_secs(5),
            tally
                .samples
                .first()
                .map(|s| format!(", e.g. {s}"))
                .unwrap_or_default()
        )));
    }
    // Let the server settle (allocations of the streams' first frames) before reading RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_open = sample(opts.server_pid, &mut tally);

    // The writer.
    let mut write_lat = Latencies::default();
    let mut final_seq = vec![0u64; nkeys];
    let mut cursor = 0usize;
    let mut measure_start = None;
    let mut cpu_start = None;
    let mut own_start = None;
    let begin = Instant::now();
    let mut seq = 0u64;
    loop {
        let elapsed = begin.elapsed();
        if elapsed >= warmup + measure || seq as usize + 1 >= capacity {
            break;
        }
        let measured = elapsed >= warmup;
        if measured && measure_start.is_none() {
            measure_start = Some(Instant::now());
            cpu_start = sample(opts.server_pid, &mut tally);
            own_start = sample(Some(std::process::id()), &mut tally);
        }
        seq += 1;
        let slot = &shared.slots[seq as usize];
        let mut mutations = Vec::with_capacity(per_write);
        let mut expected = 0;
        for _ in 0..per_write {
            let k = cursor % nkeys;
            cursor += 1;
            mutations.push(workload::set(&keys[k], value(seq, size)));
            expected += watchers_of(k);
            final_seq[k] = seq;
        }
        slot.expected.store(expected, Ordering::Relaxed);
        slot.measured.store(measured, Ordering::Relaxed);
        let req = pb::AtomicWrite {
            mutations,
            ..Default::default()
        };
        let t0 = Instant::now();
        slot.sent_us.store(shared.now_us(), Ordering::Release);
        match workload::commit(&writer, &req).await {
            Ok(()) => {
                slot.acked_us.store(shared.now_us(), Ordering::Release);
                if measured {
                    write_lat.record(t0.elapsed());
                }
            }
            Err(e) => tally.error(format!("write {seq}: {e}")),
        }
        tokio::time::sleep(interval.saturating_sub(t0.elapsed())).await;
    }
    let elapsed = measure_start.map_or(Duration::ZERO, |s| s.elapsed());
    let cpu_end = sample(opts.server_pid, &mut tally);
    let own_end = sample(Some(std::process::id()), &mut tally);

    // Every watcher must end up at the final value of its key.
    let deadline = Instant::now() + timeout;
    let behind = loop {
        let behind = (0..watchers)
            .filter(|&w| shared.seen[w].load(Ordering::Acquire) < final_seq[w % nkeys])
            .count();
        if behind == 0 || Instant::now() >= deadline {
            break behind;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }

    let mut checks = Checks {
        watch_ok: Some(behind == 0),
        ..Default::default()
    };
    if behind > 0 {
        checks.details.push(format!(
            "{behind} of {watchers} watchers never saw the last write to their key within {timeout:?}"
        ));
    }
    for h in &shared.notify {
        let h = match h.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        tally.all.merge(&h);
        tally.by_kind.entry("notify").or_default().merge(&h);
    }
    let mut all_notified = Latencies::default();
    let mut all_after_ack = Latencies::default();
    let (mut expected, mut delivered) = (0u64, 0u64);
    for slot in &shared.slots {
        if !slot.measured.load(Ordering::Relaxed) {
            continue;
        }
        let e = slot.expected.load(Ordering::Relaxed);
        let d = slot.delivered.load(Ordering::Relaxed);
        expected += e;
        delivered += d;
        if d == e {
            all_notified.record(Duration::from_micros(slot.max_us.load(Ordering::Relaxed)));
            let acked = slot.acked_us.load(Ordering::Acquire);
            if acked != u64::MAX {
                let last = slot.last_us.load(Ordering::Relaxed);
                all_after_ack.record(Duration::from_micros(last.saturating_sub(acked)));
            }
        }
    }
    tally.by_kind.insert("write", write_lat);
    tally.by_kind.insert("all_notified", all_notified);
    tally
        .by_kind
        .insert("all_notified_after_ack", all_after_ack);
    tally.by_kind.insert("open", open_lat);
    let errors = match shared.errors.lock() {
        Ok(t) => t.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    tally.merge(errors);

    let mut params = BTreeMap::new();
    let mut param = |k: &str, v: serde_json::Value| {
        params.insert(k.to_owned(), v);
    };
    param("watchers", (watchers as u64).into());
    param("watch_keys", (nkeys as u64).into());
    param("keys_per_write", (per_write as u64).into());
    param("write_interval_ms", opts.write_interval_ms.into());
    param("value_size", opts.value_size.into());
    param("open_secs", open_secs.into());
    param("deliveries_expected", expected.into());
    param("deliveries_exact", delivered.into());
    param("coalesced", shared.coalesced.load(Ordering::Relaxed).into());
    if let (Some(b), Some(a)) = (before_open, after_open) {
        param("server_rss_kib_before_open", b.rss_kib.into());
        param("server_rss_kib_after_open", a.rss_kib.into());
        let per = (a.rss_kib as f64 - b.rss_kib as f64) / watchers as f64;
        param("server_rss_kib_per_watcher", per.into());
        param(
            "server_cpu_secs_opening",
            (a.cpu - b.cpu).as_secs_f64().into(),
        );
    }
    if let (Some(s), Some(e)) = (cpu_start, cpu_end) {
        let cpu = (e.cpu.saturating_sub(s.cpu)).as_secs_f64();
        param("server_cpu_secs_measured", cpu.into());
        param("server_rss_kib_end", e.rss_kib.into());
        if delivered > 0 {
            param(
                "server_cpu_us_per_notification",
                (cpu * 1e6 / delivered as f64).into(),
            );
        }
    }
    if let (Some(s), Some(e), true) = (own_start, own_end, delivered > 0) {
        let cpu = (e.cpu.saturating_sub(s.cpu)).as_secs_f64();
        param("client_cpu_secs_measured", cpu.into());
        param(
            "client_cpu_us_per_notification",
            (cpu * 1e6 / delivered as f64).into(),
        );
    }
    let version = writer.version().await;
    Ok(Report::new(
        opts.label.clone(),
        opts.url.join(","),
        "watch".to_owned(),
        watchers as u64,
        nconns as u64,
        opts.http,
        version,
        elapsed,
        tally,
        checks,
        params,
    ))
}
