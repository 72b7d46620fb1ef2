//! Latency histograms, counters and the printed / JSON report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track exactly, in microseconds (longer ones saturate).
const MAX_LATENCY_US: u64 = 120_000_000;

/// A few distinct error messages are kept as examples.
const MAX_SAMPLES: usize = 5;

/// Latencies of one kind of operation, in microseconds.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // 3 significant digits from 1 µs to 120 s; the bounds are valid constants.
        match Histogram::new_with_bounds(1, MAX_LATENCY_US, 3) {
            Ok(h) => Latencies(h),
            Err(_) => unreachable!("constant histogram bounds are valid"),
        }
    }
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail; ignore the impossible error.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Summary in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Latency percentiles of a set of operations, in milliseconds (HDR histogram, 3 significant
/// digits).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Number of operations.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest operation.
    pub max_ms: f64,
}

/// What one client task (or the whole run, once merged) observed.
#[derive(Default, Clone)]
pub struct Tally {
    /// Latencies of every successful operation.
    pub all: Latencies,
    /// Latencies per operation kind (`get`, `set`, `list`, `transfer`, `sum`, `audit`).
    pub by_kind: BTreeMap<&'static str, Latencies>,
    /// Failed operations (transport errors, non-200 answers, wrong results).
    pub errors: u64,
    /// Atomic writes whose checks failed (bank transfers retry them).
    pub conflicts: u64,
    /// Writes sent without a definite answer (may or may not have been applied; not retried).
    pub unknown: u64,
    /// A few distinct error messages.
    pub samples: Vec<String>,
}

impl Tally {
    /// Records a successful operation of `kind`.
    pub fn ok(&mut self, kind: &'static str, d: Duration) {
        self.all.record(d);
        self.by_kind.entry(kind).or_default().record(d);
    }

    /// Records a failed operation.
    pub fn error(&mut self, msg: String) {
        self.errors += 1;
        self.sample(msg);
    }

    /// Records a write whose outcome is unknown.
    pub fn unknown_outcome(&mut self, msg: String) {
        self.unknown += 1;
        self.sample(msg);
    }

    /// Keeps `msg` as an error example without counting an error.
    pub fn note(&mut self, msg: String) {
        self.sample(msg);
    }

    fn sample(&mut self, msg: String) {
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&msg) {
            self.samples.push(msg);
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Tally) {
        self.all.merge(&other.all);
        for (k, h) in &other.by_kind {
            self.by_kind.entry(k).or_default().merge(h);
        }
        self.errors += other.errors;
        self.conflicts += other.conflicts;
        self.unknown += other.unknown;
        for s in other.samples {
            self.sample(s);
        }
    }
}

/// Correctness checks run alongside or after the load.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Checks {
    /// Bank: audits of the total balance performed (one snapshot read of every account).
    pub bank_audits: u64,
    /// Bank: audits that found a total different from the initial one (a serializability bug).
    pub bank_violations: u64,
    /// Bank: reads of the auditor(s) (each through the next server in turn).
    pub auditor_reads: u64,
    /// Bank: auditor reads that saw a higher versionstamp than the previous one.
    pub auditor_advanced: u64,
    /// Bank: auditor reads that saw time go backwards (a lower versionstamp than an earlier
    /// read, or other balances at the same versionstamp).
    pub auditor_violations: u64,
    /// Bank: the final state verified against the clients' ledger.
    pub bank_ledger: Option<crate::ledger::Verdict>,
    /// Sum: the hot key grew by the number of committed sums (plus at most the failed ones,
    /// whose outcome is unknown). `None` for other workloads.
    pub sum_ok: Option<bool>,
    /// Watch: every watcher saw the last write to its key. `None` for other workloads.
    pub watch_ok: Option<bool>,
    /// Queue: no message delivered before its requested time, none acknowledged and never
    /// delivered. `None` for other workloads and enqueue-only runs.
    pub queue_ok: Option<bool>,
    /// Descriptions of the first violations.
    pub details: Vec<String>,
}

impl Checks {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.bank_violations == 0
            && self.auditor_violations == 0
            && self.bank_ledger.as_ref().is_none_or(|v| v.passed())
            && self.sum_ok != Some(false)
            && self.watch_ok != Some(false)
            && self.queue_ok != Some(false)
    }
}

/// The result of one run, printed and optionally written as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Free-form label (e.g. the server's name in a comparison).
    pub label: Option<String>,
    /// Metadata URL of the server.
    pub url: String,
    /// Workload name.
    pub workload: String,
    /// Concurrent client tasks.
    pub clients: u64,
    /// TCP connections the tasks were spread over.
    pub connections: u64,
    /// HTTP version.
    pub http: crate::client::HttpMode,
    /// Negotiated KV Connect protocol version.
    pub protocol_version: u32,
    /// Measured seconds (after the warm-up).
    pub secs: f64,
    /// Successful operations in the measurement.
    pub ops: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Failed operations.
    pub errors: u64,
    /// Check failures of atomic writes (conflicts).
    pub conflicts: u64,
    /// Writes without a definite answer (may or may not have been applied; never retried).
    pub unknown_outcomes: u64,
    /// Latency of every successful operation.
    pub latency: LatencySummary,
    /// Latency per operation kind.
    pub latency_by_kind: BTreeMap<String, LatencySummary>,
    /// Correctness checks.
    pub checks: Checks,
    /// Examples of errors.
    pub error_samples: Vec<String>,
    /// Workload parameters, for the record.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Workload-specific lines of the printed summary.
    #[serde(skip)]
    pub extra: Option<String>,
}

impl Report {
    /// Builds the report of a measurement that lasted `elapsed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        label: Option<String>,
        url: String,
        workload: String,
        clients: u64,
        connections: u64,
        http: crate::client::HttpMode,
        protocol_version: u32,
        elapsed: Duration,
        tally: Tally,
        checks: Checks,
        params: BTreeMap<String, serde_json::Value>,
    ) -> Report {
        let secs = elapsed.as_secs_f64();
        let ops = tally.all.count();
        Report {
            label,
            url,
            workload,
            clients,
            connections,
            http,
            protocol_version,
            secs,
            ops,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            errors: tally.errors,
            conflicts: tally.conflicts,
            unknown_outcomes: tally.unknown,
            latency: tally.all.summary(),
            latency_by_kind: tally
                .by_kind
                .iter()
                .map(|(k, h)| ((*k).to_owned(), h.summary()))
                .collect(),
            checks,
            error_samples: tally.samples,
            params,
            extra: None,
        }
    }

    /// The human-readable summary (several lines).
    pub fn text(&self) -> String {
        let l = &self.latency;
        let mut out = format!(
            "{} {} clients={} conns={} {:?} v{}: {} ops in {:.2} s = {:.0} ops/s | latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} | errors {} conflicts {} unknown {}",
            self.label.as_deref().unwrap_or("-"),
            self.workload,
            self.clients,
            self.connections,
            self.http,
            self.protocol_version,
            self.ops,
            self.secs,
            self.ops_per_sec,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            self.errors,
            self.conflicts,
            self.unknown_outcomes,
        );
        if self.latency_by_kind.len() > 1 {
            for (k, s) in &self.latency_by_kind {
                out.push_str(&format!(
                    "\n  {k}: {} ops, p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} ms",
                    s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
                ));
            }
        }
        if self.checks.bank_audits > 0 || self.checks.bank_violations > 0 {
            out.push_str(&format!(
                "\n  bank audits {}: violations {}",
                self.checks.bank_audits, self.checks.bank_violations
            ));
            out.push_str(&format!(
                "\n  auditor reads {}: versionstamp advanced {}, went backwards {}",
                self.checks.auditor_reads,
                self.checks.auditor_advanced,
                self.checks.auditor_violations
            ));
        }
        if let Some(v) = &self.checks.bank_ledger {
            out.push_str(&format!(
                "\n  ledger: acknowledged {} unknown {} (applied {}, not applied {}) records {} balance {} accounts {} -> {}",
                v.acknowledged,
                v.unknown,
                v.unknown_applied,
                v.unknown_not_applied,
                v.applied,
                if v.balance_ok { "ok" } else { "CHANGED" },
                if v.accounts_ok { "ok" } else { "MISMATCH" },
                if v.passed() { "PASS" } else { "FAIL" }
            ));
        }
        if let Some(ok) = self.checks.sum_ok {
            out.push_str(&format!(
                "\n  sum check: {}",
                if ok { "ok" } else { "MISMATCH" }
            ));
        }
        if let Some(ok) = self.checks.watch_ok {
            out.push_str(&format!(
                "\n  watch check: {}",
                if ok {
                    "every watcher saw the last write"
                } else {
                    "LOST NOTIFICATIONS"
                }
            ));
        }
        if !self.params.is_empty() && self.workload == "watch" {
            let params: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(&format!("\n  {}", params.join(" ")));
        }
        if let Some(extra) = &self.extra {
            out.push_str(&format!("\n  {extra}"));
        }
        for d in &self.checks.details {
            out.push_str(&format!("\n  VIOLATION: {d}"));
        }
        for s in &self.error_samples {
            out.push_str(&format!("\n  error: {s}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut t = Tally::default();
        for ms in 1..=100u64 {
            t.ok("get", Duration::from_millis(ms));
        }
        let mut other = Tally::default();
        other.ok("set", Duration::from_millis(1000));
        other.error("boom".into());
        other.error("boom".into());
        t.merge(other);
        let s = t.all.summary();
        assert_eq!(s.count, 101);
        assert!((s.p50_ms - 51.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(t.errors, 2);
        assert_eq!(t.samples, vec!["boom".to_owned()]);
        assert_eq!(t.by_kind.len(), 2);
    }
}
