//! A model-based state-machine test: random sequences of atomic writes, snapshot reads, clock
//! advances with maintenance, and queue operations run against a [`ClockedDb`] and against a
//! plain model written here (a `BTreeMap` of key → value, versionstamp and expiry, plus a queue
//! model), comparing after every step.
//!
//! The model cannot predict versionstamps: it records the one each commit returns, checks that
//! they strictly increase, and that entries carry the versionstamp of the commit that last wrote
//! them. Dead-letter writes (whose versionstamp no call returns) are learned from the next scan
//! and checked to be newer than every earlier commit.
//!
//! ```no_run
//! use kv_conformance::model::{run_model_test, ModelConfig};
//! # async fn backend() -> Result<kv_engine_memory::MemoryBackend, kv_traits::BackendError> { todo!() }
//! // In a plain #[test] (not inside a Tokio runtime):
//! run_model_test(&backend, ModelConfig { cases: 16, max_ops: 30 });
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::time::Duration;

use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, Database, Enqueue, KvEntry, KvError, KvValue,
    Mutation, MutationKind, QueueLease, ReadRange, Versionstamp, DEFAULT_BACKOFF_SCHEDULE,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::harness::{BackendFactory, ClockedDb};
use crate::util::{keyspace_end, suffixed_key};

/// How much random testing to do.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// Number of random sequences.
    pub cases: u32,
    /// Maximum operations per sequence.
    pub max_ops: usize,
}

impl Default for ModelConfig {
    /// 64 cases of up to 40 operations, or `KV_CONFORMANCE_MODEL_CASES` cases when set.
    fn default() -> Self {
        let cases = std::env::var("KV_CONFORMANCE_MODEL_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64);
        ModelConfig { cases, max_ops: 40 }
    }
}

/// The keys the operations touch: prefixes of each other, 00 and ff bytes.
const KEYS: &[&[u8]] = &[
    &[0x01],
    &[0x01, 0x00],
    &[0x01, 0x00, 0x00],
    &[0x01, 0xff],
    &[0x02, b'a', 0x00],
    &[0x02, b'b', 0x00],
    &[0xff],
    &[0xff, 0x00],
];

/// Prefixes for versionstamped keys.
const VS_PREFIXES: &[&[u8]] = &[&[0x03], &[0x02, b'a', 0x00]];

/// Range bounds (the last one is replaced by [`keyspace_end`]).
const BOUNDS: &[&[u8]] = &[
    &[],
    &[0x00],
    &[0x01],
    &[0x01, 0x00],
    &[0x01, 0x01],
    &[0x02],
    &[0x02, b'a', 0x00, 0x02],
    &[0x03],
    &[0x03, 0xff],
    &[0xff],
    &[0xff, 0x00],
    &[0xff, 0xff],
    &[],
];

fn bound(i: usize) -> Vec<u8> {
    if i == BOUNDS.len() - 1 {
        keyspace_end()
    } else {
        BOUNDS[i].to_vec()
    }
}

/// A value to store.
#[derive(Clone, Debug)]
pub enum ValOp {
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A `U64`.
    U64(u64),
}

impl ValOp {
    fn value(&self) -> KvValue {
        match self {
            ValOp::Bytes(b) => KvValue::Bytes(b.clone()),
            ValOp::U64(n) => KvValue::U64(*n),
        }
    }
}

/// A check of a write.
#[derive(Clone, Debug)]
pub enum CheckOp {
    /// The key must be absent.
    Absent(usize),
    /// The key must carry its current versionstamp (absent: `None`), so the check passes.
    Current(usize),
    /// The key must carry some earlier commit's versionstamp (usually fails).
    Stale(usize, usize),
}

/// A mutation of a write; `Option<u64>` expiries are delays from now.
#[derive(Clone, Debug)]
pub enum MutOp {
    /// `Set` with an optional expiry delay.
    Set(usize, ValOp, Option<u64>),
    /// `Delete`.
    Delete(usize),
    /// `Sum` with a `U64` operand.
    Sum(usize, u64),
    /// `Min`.
    Min(usize, u64),
    /// `Max`.
    Max(usize, u64),
    /// `SetSuffixVersionstampedKey` on a prefix, with an optional expiry delay.
    VsKey(usize, ValOp, Option<u64>),
}

/// An enqueue of a write.
#[derive(Clone, Debug)]
pub struct EnqOp {
    /// Delay from now.
    pub delay: u64,
    /// Backoff schedule.
    pub schedule: Option<Vec<u32>>,
    /// Number of dead-letter keys (0..=2); the keys are unique to the message.
    pub dead_keys: usize,
}

/// One range of a read.
#[derive(Clone, Debug)]
pub struct RangeOp {
    /// Index into the bound table.
    pub start: usize,
    /// Index into the bound table.
    pub end: usize,
    /// Range limit.
    pub limit: u32,
    /// Direction.
    pub reverse: bool,
}

/// One step of a sequence.
#[derive(Clone, Debug)]
pub enum Op {
    /// An atomic write.
    Write {
        /// Checks.
        checks: Vec<CheckOp>,
        /// Mutations.
        muts: Vec<MutOp>,
        /// Enqueues.
        enqueues: Vec<EnqOp>,
    },
    /// A snapshot read.
    Read(Vec<RangeOp>),
    /// Move the clock forward, then run maintenance.
    Advance(u64),
    /// Dequeue without waiting.
    Dequeue,
    /// Finish one of the leases obtained so far (possibly already finished or expired).
    Finish {
        /// Which lease (modulo the number obtained); `None` for the latest.
        pick: Option<usize>,
        /// Success or failure.
        success: bool,
    },
}

fn key_idx() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

fn val_op() -> impl Strategy<Value = ValOp> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..3).prop_map(ValOp::Bytes),
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()].prop_map(ValOp::U64),
    ]
}

fn expiry() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![3 => Just(None), 1 => prop::sample::select(vec![0u64, 1, 30, 200, 2000]).prop_map(Some)]
}

fn u64_operand() -> impl Strategy<Value = u64> {
    prop_oneof![Just(1u64), Just(u64::MAX), 0..100u64, any::<u64>()]
}

fn mut_op() -> impl Strategy<Value = MutOp> {
    prop_oneof![
        4 => (key_idx(), val_op(), expiry()).prop_map(|(k, v, e)| MutOp::Set(k, v, e)),
        2 => key_idx().prop_map(MutOp::Delete),
        2 => (key_idx(), u64_operand()).prop_map(|(k, n)| MutOp::Sum(k, n)),
        1 => (key_idx(), u64_operand()).prop_map(|(k, n)| MutOp::Min(k, n)),
        1 => (key_idx(), u64_operand()).prop_map(|(k, n)| MutOp::Max(k, n)),
        1 => (0..VS_PREFIXES.len(), val_op(), expiry()).prop_map(|(p, v, e)| MutOp::VsKey(p, v, e)),
    ]
}

fn check_op() -> impl Strategy<Value = CheckOp> {
    prop_oneof![
        1 => key_idx().prop_map(CheckOp::Absent),
        3 => key_idx().prop_map(CheckOp::Current),
        1 => (key_idx(), any::<usize>()).prop_map(|(k, h)| CheckOp::Stale(k, h)),
    ]
}

fn enq_op() -> impl Strategy<Value = EnqOp> {
    (
        prop::sample::select(vec![0u64, 0, 1, 50, 500, 5000]),
        prop_oneof![
            Just(None),
            Just(Some(vec![])),
            Just(Some(vec![10])),
            Just(Some(vec![0, 300]))
        ],
        0..=2usize,
    )
        .prop_map(|(delay, schedule, dead_keys)| EnqOp {
            delay,
            schedule,
            dead_keys,
        })
}

fn range_op() -> impl Strategy<Value = RangeOp> {
    (
        0..BOUNDS.len(),
        0..BOUNDS.len(),
        prop_oneof![1..4u32, Just(1000 / 3)],
        any::<bool>(),
    )
        .prop_map(|(start, end, limit, reverse)| RangeOp {
            start,
            end,
            limit,
            reverse,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            prop::collection::vec(check_op(), 0..3),
            prop::collection::vec(mut_op(), 0..5),
            prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(enq_op(), 1..3)],
        )
            .prop_map(|(checks, muts, enqueues)| Op::Write { checks, muts, enqueues }),
        2 => prop::collection::vec(range_op(), 1..4).prop_map(Op::Read),
        2 => prop::sample::select(vec![0u64, 1, 29, 100, 250, 1000, 5000, 10_001, 60_000]).prop_map(Op::Advance),
        3 => Just(Op::Dequeue),
        3 => (prop_oneof![3 => Just(None), 1 => any::<usize>().prop_map(Some)], prop::bool::weighted(0.5))
            .prop_map(|(pick, success)| Op::Finish { pick, success }),
    ]
}

/// The strategy generating operation sequences of 1 to `max_ops` steps.
pub fn ops(max_ops: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=max_ops.max(1))
}

#[derive(Clone, Debug, PartialEq)]
enum Vs {
    Known(Versionstamp),
    /// Written by a commit whose versionstamp no call returned (dead letter); learned at the next
    /// scan, and must be newer than `floor`.
    Unknown {
        floor: Versionstamp,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    value: KvValue,
    vs: Vs,
    expire_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
enum MsgState {
    Ready(u64),
    Leased(QueueLease),
}

#[derive(Clone, Debug)]
struct Msg {
    payload: Vec<u8>,
    state: MsgState,
    schedule: Vec<u32>,
    dead: Vec<Vec<u8>>,
    deliveries: u32,
    id: Option<[u8; 16]>,
}

/// The reference model.
struct Model {
    now: u64,
    data: BTreeMap<Vec<u8>, Entry>,
    history: Vec<Versionstamp>,
    max_vs: Versionstamp,
    queue: Vec<Msg>,
    next_msg: u32,
    leases: Vec<QueueLease>,
}

fn fail(msg: String) -> Result<(), String> {
    Err(msg)
}

impl Model {
    fn new(now: u64) -> Self {
        Model {
            now,
            data: BTreeMap::new(),
            history: Vec::new(),
            max_vs: Versionstamp::ZERO,
            queue: Vec::new(),
            next_msg: 0,
            leases: Vec::new(),
        }
    }

    fn live(&self, e: &Entry) -> bool {
        e.expire_at.is_none_or(|t| t > self.now)
    }

    fn visible(&self, key: &[u8]) -> Option<&Entry> {
        self.data.get(key).filter(|e| self.live(e))
    }

    fn visible_vs(&self, key: &[u8]) -> Option<Versionstamp> {
        self.visible(key).map(|e| match e.vs {
            Vs::Known(v) => v,
            // Scans after every step resolve unknown versionstamps before the next write.
            Vs::Unknown { floor } => floor,
        })
    }

    fn dead_letter(&mut self, m: &Msg) {
        for k in &m.dead {
            self.data.insert(
                k.clone(),
                Entry {
                    value: KvValue::V8(m.payload.clone()),
                    vs: Vs::Unknown { floor: self.max_vs },
                    expire_at: None,
                },
            );
        }
    }

    /// Applies a failed delivery (listener failure or lease expiry) to message `i`.
    fn fail_delivery(&mut self, i: usize) {
        let mut m = self.queue.remove(i);
        if m.schedule.is_empty() {
            self.dead_letter(&m);
        } else {
            let delay = m.schedule.remove(0);
            m.state = MsgState::Ready(self.now + u64::from(delay));
            self.queue.insert(i, m);
        }
    }

    fn commit_vs(&mut self, vs: Versionstamp, what: &str) -> Result<(), String> {
        if vs <= self.max_vs {
            return fail(format!(
                "{what}: versionstamp {vs} is not greater than the previous {}",
                self.max_vs
            ));
        }
        self.max_vs = vs;
        self.history.push(vs);
        Ok(())
    }
}

/// Expected outcome of applying mutations to the model.
enum Applied {
    Ok(
        BTreeMap<Vec<u8>, Option<(KvValue, Option<u64>)>>,
        Vec<(usize, KvValue, Option<u64>)>,
    ),
    MutationError,
}

fn apply_mutations(model: &Model, muts: &[MutOp]) -> Applied {
    // Key → new state (None = deleted) for fixed keys; versionstamped keys separately.
    let mut changes: BTreeMap<Vec<u8>, Option<(KvValue, Option<u64>)>> = BTreeMap::new();
    let mut vs_keys = Vec::new();
    let current = |changes: &BTreeMap<Vec<u8>, Option<(KvValue, Option<u64>)>>,
                   k: &[u8]|
     -> Option<KvValue> {
        match changes.get(k) {
            // A value set earlier in the same write with an expiry already passed is expired too.
            Some(c) => c
                .as_ref()
                .filter(|(_, exp)| exp.is_none_or(|t| t > model.now))
                .map(|(v, _)| v.clone()),
            None => model.visible(k).map(|e| e.value.clone()),
        }
    };
    for m in muts {
        match m {
            MutOp::Set(k, v, exp) => {
                changes.insert(
                    KEYS[*k].to_vec(),
                    Some((v.value(), exp.map(|d| model.now + d))),
                );
            }
            MutOp::Delete(k) => {
                changes.insert(KEYS[*k].to_vec(), None);
            }
            MutOp::Sum(k, n) | MutOp::Min(k, n) | MutOp::Max(k, n) => {
                let key = KEYS[*k];
                let new = match current(&changes, key) {
                    None => *n,
                    Some(KvValue::U64(old)) => match m {
                        MutOp::Sum(..) => old.wrapping_add(*n),
                        MutOp::Min(..) => old.min(*n),
                        _ => old.max(*n),
                    },
                    Some(_) => return Applied::MutationError,
                };
                changes.insert(key.to_vec(), Some((KvValue::U64(new), None)));
            }
            MutOp::VsKey(p, v, exp) => vs_keys.push((*p, v.value(), exp.map(|d| model.now + d))),
        }
    }
    Applied::Ok(changes, vs_keys)
}

fn to_mutation(model: &Model, m: &MutOp) -> Mutation {
    let exp = |e: &Option<u64>| e.map(|d| model.now + d);
    match m {
        MutOp::Set(k, v, e) => Mutation {
            key: KEYS[*k].to_vec(),
            kind: MutationKind::Set(v.value()),
            expire_at_ms: exp(e),
        },
        MutOp::Delete(k) => Mutation::delete(KEYS[*k].to_vec()),
        MutOp::Sum(k, n) => Mutation {
            key: KEYS[*k].to_vec(),
            kind: MutationKind::Sum {
                value: KvValue::U64(*n),
                min: None,
                max: None,
                clamp: false,
            },
            expire_at_ms: None,
        },
        MutOp::Min(k, n) => Mutation {
            key: KEYS[*k].to_vec(),
            kind: MutationKind::Min(KvValue::U64(*n)),
            expire_at_ms: None,
        },
        MutOp::Max(k, n) => Mutation {
            key: KEYS[*k].to_vec(),
            kind: MutationKind::Max(KvValue::U64(*n)),
            expire_at_ms: None,
        },
        MutOp::VsKey(p, v, e) => Mutation {
            key: VS_PREFIXES[*p].to_vec(),
            kind: MutationKind::SetSuffixVersionstampedKey(v.value()),
            expire_at_ms: exp(e),
        },
    }
}

async fn step_write(
    db: &dyn Database,
    model: &mut Model,
    checks: &[CheckOp],
    muts: &[MutOp],
    enqueues: &[EnqOp],
) -> Result<(), String> {
    let checks: Vec<Check> = checks
        .iter()
        .map(|c| match c {
            CheckOp::Absent(k) => Check {
                key: KEYS[*k].to_vec(),
                versionstamp: None,
            },
            CheckOp::Current(k) => Check {
                key: KEYS[*k].to_vec(),
                versionstamp: model.visible_vs(KEYS[*k]),
            },
            CheckOp::Stale(k, h) => Check {
                key: KEYS[*k].to_vec(),
                versionstamp: if model.history.is_empty() {
                    None
                } else {
                    Some(model.history[h % model.history.len()])
                },
            },
        })
        .collect();
    let failed: Vec<u32> = checks
        .iter()
        .enumerate()
        .filter(|(_, c)| model.visible_vs(&c.key) != c.versionstamp)
        .map(|(i, _)| i as u32)
        .collect();
    let mut msgs = Vec::new();
    let mut enq = Vec::new();
    for e in enqueues {
        let n = model.next_msg;
        model.next_msg += 1;
        let payload = format!("msg{n}").into_bytes();
        let dead: Vec<Vec<u8>> = (0..e.dead_keys)
            .map(|i| vec![0x04, (n >> 8) as u8, n as u8, i as u8])
            .collect();
        enq.push(Enqueue {
            payload: payload.clone(),
            deadline_ms: model.now + e.delay,
            keys_if_undelivered: dead.clone(),
            backoff_schedule: e.schedule.clone(),
        });
        msgs.push(Msg {
            payload,
            state: MsgState::Ready(model.now + e.delay),
            schedule: e
                .schedule
                .clone()
                .unwrap_or_else(|| DEFAULT_BACKOFF_SCHEDULE.to_vec()),
            dead,
            deliveries: 0,
            id: None,
        });
    }
    let write = AtomicWrite {
        checks,
        mutations: muts.iter().map(|m| to_mutation(model, m)).collect(),
        enqueues: enq,
    };
    let result = db.atomic_write(write.clone()).await;
    if !failed.is_empty() {
        return match result {
            Ok(CommitResult::CheckFailed(idx))
                if !idx.is_empty() && idx.iter().all(|i| failed.contains(i)) =>
            {
                Ok(())
            }
            other => fail(format!(
                "write {write:?}: checks {failed:?} should fail, got {other:?}"
            )),
        };
    }
    match apply_mutations(model, muts) {
        Applied::MutationError => match result {
            Err(KvError::Mutation(_)) => Ok(()),
            other => fail(format!(
                "write {write:?}: expected a mutation (type) error, got {other:?}"
            )),
        },
        Applied::Ok(changes, vs_keys) => {
            let vs = match result {
                Ok(CommitResult::Committed(vs)) => vs,
                other => return fail(format!("write {write:?}: expected a commit, got {other:?}")),
            };
            model.commit_vs(vs, "atomic write")?;
            for (k, c) in changes {
                match c {
                    Some((value, expire_at)) => {
                        model.data.insert(
                            k,
                            Entry {
                                value,
                                vs: Vs::Known(vs),
                                expire_at,
                            },
                        );
                    }
                    None => {
                        model.data.remove(&k);
                    }
                }
            }
            for (p, value, expire_at) in vs_keys {
                model.data.insert(
                    suffixed_key(VS_PREFIXES[p], &vs),
                    Entry {
                        value,
                        vs: Vs::Known(vs),
                        expire_at,
                    },
                );
            }
            model.queue.extend(msgs);
            Ok(())
        }
    }
}

fn expected_range(model: &Model, r: &ReadRange) -> Vec<(Vec<u8>, KvValue, Vs)> {
    if r.start >= r.end {
        return vec![];
    }
    let it = model
        .data
        .range::<Vec<u8>, _>((
            Bound::Included(r.start.clone()),
            Bound::Excluded(r.end.clone()),
        ))
        .filter(|(_, e)| model.live(e))
        .map(|(k, e)| (k.clone(), e.value.clone(), e.vs.clone()));
    if r.reverse {
        it.rev().take(r.limit as usize).collect()
    } else {
        it.take(r.limit as usize).collect()
    }
}

/// Compares a read with the model, learning unknown versionstamps.
fn compare(model: &mut Model, r: &ReadRange, got: &[KvEntry], what: &str) -> Result<(), String> {
    let want = expected_range(model, r);
    let mut learned: Option<(Versionstamp, Versionstamp)> = None;
    let mismatch = || {
        let mut s = format!("{what}: range {r:?}\n  expected:\n");
        for (k, v, vs) in &want {
            let _ = writeln!(s, "    {k:02x?} = {v:?} @ {vs:?}");
        }
        s.push_str("  got:\n");
        for e in got {
            let _ = writeln!(s, "    {:02x?} = {:?} @ {}", e.key, e.value, e.versionstamp);
        }
        s
    };
    if got.len() != want.len() {
        return fail(mismatch());
    }
    for (e, (k, v, vs)) in got.iter().zip(&want) {
        if &e.key != k || &e.value != v {
            return fail(mismatch());
        }
        match vs {
            Vs::Known(x) if *x == e.versionstamp => {}
            Vs::Unknown { floor } if e.versionstamp > *floor => {
                learned = Some(learned.map_or((e.versionstamp, *floor), |(m, f)| {
                    (m.max(e.versionstamp), f)
                }));
                if let Some(entry) = model.data.get_mut(k) {
                    entry.vs = Vs::Known(e.versionstamp);
                }
            }
            _ => {
                return fail(format!(
                    "{}  (versionstamp mismatch at {:02x?})",
                    mismatch(),
                    e.key
                ))
            }
        }
    }
    if let Some((max, _)) = learned {
        if max > model.max_vs {
            model.max_vs = max;
            model.history.push(max);
        }
    }
    Ok(())
}

async fn full_scan(db: &dyn Database, model: &mut Model, what: &str) -> Result<(), String> {
    let mut start = Vec::new();
    loop {
        let r = ReadRange {
            start: start.clone(),
            end: keyspace_end(),
            limit: 1000,
            reverse: false,
        };
        let got = db
            .snapshot_read(vec![r.clone()], Consistency::Strong)
            .await
            .map_err(|e| format!("{what}: scan failed: {e}"))?;
        let page = got
            .into_iter()
            .next()
            .ok_or_else(|| format!("{what}: scan returned no output"))?;
        compare(model, &r, &page, &format!("{what} (full scan)"))?;
        if page.len() < 1000 {
            return Ok(());
        }
        if let Some(last) = page.last() {
            start = last.key.clone();
            start.push(0);
        }
    }
}

async fn step(h: &ClockedDb, model: &mut Model, op: &Op) -> Result<(), String> {
    let db = h.database();
    match op {
        Op::Write {
            checks,
            muts,
            enqueues,
        } => step_write(db, model, checks, muts, enqueues).await,
        Op::Read(ranges) => {
            let ranges: Vec<ReadRange> = ranges
                .iter()
                .map(|r| ReadRange {
                    start: bound(r.start),
                    end: bound(r.end),
                    limit: r.limit,
                    reverse: r.reverse,
                })
                .collect();
            let got = db
                .snapshot_read(ranges.clone(), Consistency::Strong)
                .await
                .map_err(|e| format!("read {ranges:?} failed: {e}"))?;
            if got.len() != ranges.len() {
                return fail(format!(
                    "read of {} ranges returned {} outputs",
                    ranges.len(),
                    got.len()
                ));
            }
            for (r, out) in ranges.iter().zip(&got) {
                compare(model, r, out, "snapshot read")?;
            }
            Ok(())
        }
        Op::Advance(ms) => {
            h.advance(*ms);
            model.now += ms;
            let swept =
                h.db.run_maintenance()
                    .await
                    .map_err(|e| format!("run_maintenance failed: {e}"))?;
            let now = model.now;
            let expired: Vec<Vec<u8>> = model
                .data
                .iter()
                .filter(|(_, e)| e.expire_at.is_some_and(|t| t <= now))
                .map(|(k, _)| k.clone())
                .collect();
            if swept != expired.len() {
                return fail(format!(
                    "run_maintenance at t+{} deleted {swept} keys, expected {} ({expired:02x?})",
                    now - ClockedDb::START_MS,
                    expired.len()
                ));
            }
            for k in expired {
                model.data.remove(&k);
            }
            // Lease expiry: requeue as failures, in queue order.
            let mut i = 0;
            while i < model.queue.len() {
                let len = model.queue.len();
                if matches!(model.queue[i].state, MsgState::Leased(l) if l.deadline_ms <= now) {
                    model.fail_delivery(i);
                    if model.queue.len() < len {
                        continue;
                    }
                }
                i += 1;
            }
            Ok(())
        }
        Op::Dequeue => {
            let got = db
                .dequeue(Duration::from_millis(1))
                .await
                .map_err(|e| format!("dequeue failed: {e}"))?;
            let now = model.now;
            let min_ts = model
                .queue
                .iter()
                .filter_map(|m| match m.state {
                    MsgState::Ready(ts) if ts <= now => Some(ts),
                    _ => None,
                })
                .min();
            match (got, min_ts) {
                (None, None) => Ok(()),
                (None, Some(ts)) => fail(format!(
                    "dequeue returned nothing, but a message due at t+{} is ready at t+{}",
                    ts - ClockedDb::START_MS,
                    now - ClockedDb::START_MS
                )),
                (Some(m), None) => fail(format!("dequeue returned {m:?} but no message is ready")),
                (Some(got), Some(ts)) => {
                    let Some(i) = model.queue.iter().position(|m| m.payload == got.payload) else {
                        return fail(format!("dequeue returned an unknown message {got:?}"));
                    };
                    let m = &mut model.queue[i];
                    if m.state != MsgState::Ready(ts) {
                        return fail(format!("dequeue returned {:?} (state {:?}), but the earliest ready deadline is t+{}", String::from_utf8_lossy(&got.payload), m.state, ts - ClockedDb::START_MS));
                    }
                    if got.attempt != m.deliveries + 1 {
                        return fail(format!(
                            "delivery of {:?}: attempt {} expected {}",
                            String::from_utf8_lossy(&got.payload),
                            got.attempt,
                            m.deliveries + 1
                        ));
                    }
                    if got.lease.deadline_ms <= now {
                        return fail(format!("lease {:?} already expired at delivery", got.lease));
                    }
                    if let Some(id) = m.id {
                        if id != got.lease.id {
                            return fail("the message id changed between deliveries".into());
                        }
                    }
                    m.id = Some(got.lease.id);
                    m.deliveries += 1;
                    m.state = MsgState::Leased(got.lease);
                    model.leases.push(got.lease);
                    Ok(())
                }
            }
        }
        Op::Finish { pick, success } => {
            if model.leases.is_empty() {
                return Ok(());
            }
            let lease = match pick {
                Some(p) => model.leases[p % model.leases.len()],
                None => model.leases[model.leases.len() - 1],
            };
            let r = db.finish(lease, *success).await;
            let holder = model
                .queue
                .iter()
                .position(|m| m.state == MsgState::Leased(lease));
            match (holder, r) {
                (None, Err(KvError::LeaseNotFound)) => Ok(()),
                (None, other) => fail(format!(
                    "finish of a dead lease {lease:?}: expected LeaseNotFound, got {other:?}"
                )),
                (Some(i), Ok(())) => {
                    if *success {
                        model.queue.remove(i);
                    } else {
                        model.fail_delivery(i);
                    }
                    Ok(())
                }
                // Expired but not yet reclaimed by maintenance: either answer is acceptable.
                (Some(_), Err(KvError::LeaseNotFound)) if lease.deadline_ms <= model.now => Ok(()),
                (Some(_), other) => fail(format!(
                    "finish({lease:?}, {success}) of a live lease failed: {other:?}"
                )),
            }
        }
    }
}

/// Runs one sequence on a fresh database from `factory`; `Err` describes the first divergence.
pub async fn run_sequence(factory: &dyn BackendFactory, ops: &[Op]) -> Result<(), String> {
    let backend = factory
        .create()
        .await
        .map_err(|e| format!("creating the backend failed: {e}"))?;
    let h = ClockedDb::open(backend)
        .await
        .map_err(|e| format!("Db::open failed: {e}"))?;
    let mut model = Model::new(h.now());
    let mut result = Ok(());
    for (i, op) in ops.iter().enumerate() {
        let what = format!("step {i} ({op:?})");
        if let Err(e) = step(&h, &mut model, op).await {
            result = Err(format!("{what}: {e}"));
            break;
        }
        if let Err(e) = full_scan(h.database(), &mut model, &what).await {
            result = Err(e);
            break;
        }
    }
    let _ = h.db.close().await;
    result
}

/// Runs the state-machine test: `config.cases` random sequences, each on a fresh database, with
/// shrinking to a minimal failing sequence. Panics with it on failure. Call from a plain
/// `#[test]`, not inside a Tokio runtime.
pub fn run_model_test(factory: &dyn BackendFactory, config: ModelConfig) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a Tokio runtime: {e}"));
    let mut runner = TestRunner::new(Config {
        cases: config.cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&ops(config.max_ops), |ops| {
        rt.block_on(run_sequence(factory, &ops))
            .map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!("model test failed: {reason}\nminimal failing sequence: {ops:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}
