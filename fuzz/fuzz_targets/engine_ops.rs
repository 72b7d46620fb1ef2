//! Random operation sequences against every engine (memory, SQLite and redb on files in a
//! temporary directory, and redb on an in-memory disk whose writes and syncs fail on demand),
//! compared with a `BTreeMap` model, in the style of redb's own fuzzer.
//!
//! Steps: one atomic write or a group of up to four concurrent ones (group commit), with an
//! optional injected fault; a range read; moving the database's manual clock; the expiry sweep;
//! a simulated crash (the engine's files are copied as they are — what a killed process leaves
//! behind — and the database is reopened from the copy without a clean close); a clean close
//! and reopen. Writes use set (also with an expiry), delete, U64 sum/min/max (type errors on
//! byte values) and checks (absent, current, wrong).
//!
//! Faults: a commit that fails before reaching the engine, a commit that fails after the engine
//! committed (fsync error after the write), a failing `put`, or (redb on the faulty disk) a
//! storage write/sync/resize failure from the n-th storage call on (the first failing write is
//! torn: half of it lands).
//!
//! Checked after every step: acknowledged writes are all present with their versionstamps;
//! expired entries are invisible to reads, checks and sums, and the sweep deletes exactly the
//! expired keys (so the expiry index stays consistent with the data through crashes);
//! versionstamps increase, also across reopen; checks and sum/min/max type errors behave as in
//! the model; a write whose commit failed has an unknown outcome, so the database must show
//! either all of it or none of it (for a group, a prefix of the failed writes, each all or
//! nothing) — never part; after a failed commit the database refuses every write until reopened.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_engine_redb::{RedbBackend, RedbDurability, RedbOptions};
use kv_engine_sqlite::{Durability, SqliteBackend, SqliteOptions};
use kv_test_support::storage::{DiskFaults, FaultyStorage, MemoryStorage};
use kv_test_support::{Fault as Injected, Faults, FaultyBackend};
use kv_traits::{
    AtomicWrite, Backend, BackendError, Check, Clock, CommitResult, Consistency, Database, KvEntry,
    KvError, KvValue, ManualClock, Mutation, MutationKind, ReadRange, Versionstamp,
};
use libfuzzer_sys::fuzz_target;

// ---------------------------------------------------------------------------------------------
// Statistics (printed per input when KV_FUZZ_STATS is set, to see what a corpus exercises)
// ---------------------------------------------------------------------------------------------

mod stats {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static INPUTS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    pub static COMMITTED: AtomicU64 = AtomicU64::new(0);
    pub static CHECK_FAILED: AtomicU64 = AtomicU64::new(0);
    pub static TYPE_ERRORS: AtomicU64 = AtomicU64::new(0);
    pub static UNKNOWN_OUTCOMES: AtomicU64 = AtomicU64::new(0);
    pub static RESOLVED_APPLIED: AtomicU64 = AtomicU64::new(0);
    pub static PUT_FAILURES: AtomicU64 = AtomicU64::new(0);
    pub static DISK_FAULTS: AtomicU64 = AtomicU64::new(0);
    pub static REFUSED_POISONED: AtomicU64 = AtomicU64::new(0);
    pub static CRASHES: AtomicU64 = AtomicU64::new(0);
    pub static REOPENS: AtomicU64 = AtomicU64::new(0);
    pub static SWEEPS: AtomicU64 = AtomicU64::new(0);

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn print() {
        if std::env::var_os("KV_FUZZ_STATS").is_none() {
            return;
        }
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "stats: inputs memory/sqlite/redb/faulty-disk {}/{}/{}/{} committed {} check-failed {} \
             type-errors {} unknown-outcome {} (resolved applied {}) put-failures {} \
             disk-faults {} refused-poisoned {} crashes {} clean-reopens {} sweeps {}",
            g(&INPUTS[0]),
            g(&INPUTS[1]),
            g(&INPUTS[2]),
            g(&INPUTS[3]),
            g(&COMMITTED),
            g(&CHECK_FAILED),
            g(&TYPE_ERRORS),
            g(&UNKNOWN_OUTCOMES),
            g(&RESOLVED_APPLIED),
            g(&PUT_FAILURES),
            g(&DISK_FAULTS),
            g(&REFUSED_POISONED),
            g(&CRASHES),
            g(&REOPENS),
            g(&SWEEPS),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    Memory,
    Sqlite,
    Redb,
    /// redb on an in-memory disk with storage-level fault injection.
    RedbFaultyDisk,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Set(u8, u8),
    /// A set that expires `ttl * 10` ms from now (at once when 0).
    SetExpiring(u8, u8, u8),
    /// A larger value (`len * 61` bytes), to grow pages and the log.
    SetBig(u8, u8),
    SetU64(u8, u64),
    Delete(u8),
    Sum(u8, u64),
    Min(u8, u64),
    Max(u8, u64),
    CheckAbsent(u8),
    CheckCurrent(u8),
    /// A check with a versionstamp no commit has.
    CheckWrong(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The commit fails before the engine sees it.
    CommitBefore,
    /// The engine commits, then the commit reports an error (like a failed fsync).
    CommitAfter,
    /// The first `put` of the transaction fails.
    Put,
    /// Storage calls fail from the n-th (mod 24) on; only on the faulty disk.
    Disk(u8),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Write {
        writes: Vec<Vec<Op>>,
        fault: Fault,
    },
    Read {
        reverse: bool,
        limit: u8,
    },
    /// Moves the (manual) clock forward by `n * 5` ms.
    Advance(u8),
    /// Runs the expiry sweep now.
    Maintenance,
    Crash,
    Reopen,
}

#[derive(Arbitrary, Debug)]
struct Input {
    engine: EngineKind,
    steps: Vec<Step>,
}

fn key(k: u8) -> Vec<u8> {
    vec![0x02, b'a' + k % 12, 0x00]
}

// ---------------------------------------------------------------------------------------------
// Fault injection (the decorators live in kv-test-support)
// ---------------------------------------------------------------------------------------------

/// Arms the backend decorator for the next write transaction: one shot of the input's fault.
fn arm(faults: &Faults, fault: Fault) {
    let injected = match fault {
        Fault::CommitBefore => Injected::CommitBefore,
        Fault::CommitAfter => Injected::CommitAfter,
        Fault::Put => Injected::Put,
        Fault::None | Fault::Disk(_) => return,
    };
    faults.fail_next(injected);
}

fn tracing_enabled() -> bool {
    std::env::var_os("KV_FUZZ_TRACE").is_some()
}

// ---------------------------------------------------------------------------------------------
// Engines: open, crash image, reopen
// ---------------------------------------------------------------------------------------------

/// One engine's storage across reopenings.
struct Engine {
    kind: EngineKind,
    /// Temporary directory of the file engines (tmpfs when available, so syncs are cheap).
    dir: Option<tempfile::TempDir>,
    /// Which copy of the files is current (a crash copies them to the next generation).
    generation: u32,
    memory: MemoryBackend,
    /// The faulty disk's bytes as the last crash or close left them.
    disk: Vec<u8>,
    /// The faulty disk's switchboard; a fresh one per open.
    disk_faults: DiskFaults,
    live_disk: Option<MemoryStorage>,
    /// The backend decorator's switchboard; survives reopens.
    faults: Faults,
    /// The database's clock; survives reopens.
    clock: Arc<ManualClock>,
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("kv-fuzz-");
    if shm.is_dir() {
        if let Ok(d) = b.tempdir_in(shm) {
            return d;
        }
    }
    b.tempdir().expect("temporary directory")
}

impl Engine {
    fn new(kind: EngineKind) -> Engine {
        let dir = matches!(kind, EngineKind::Sqlite | EngineKind::Redb).then(scratch_dir);
        Engine {
            kind,
            dir,
            generation: 0,
            memory: MemoryBackend::new(),
            disk: Vec::new(),
            disk_faults: DiskFaults::new(),
            live_disk: None,
            faults: Faults::new(),
            clock: Arc::new(ManualClock::new(1_000_000)),
        }
    }

    fn file(&self, generation: u32) -> PathBuf {
        let dir = self.dir.as_ref().expect("file engine").path();
        match self.kind {
            EngineKind::Sqlite => dir.join(format!("kv{generation}.sqlite3")),
            _ => dir.join(format!("kv{generation}.redb")),
        }
    }

    async fn open(&mut self) -> Result<Db, KvError> {
        self.faults.disarm_all();
        // A fresh switchboard: an abandoned database still writes to its own (old) disk when it
        // is finally dropped, and must not use up the new one's countdown.
        self.disk_faults = DiskFaults::new();
        self.disk_faults.record_backtrace(tracing_enabled());
        let inner: Arc<dyn Backend> = match self.kind {
            EngineKind::Memory => Arc::new(self.memory.clone()),
            EngineKind::Sqlite => {
                let opts = SqliteOptions {
                    durability: Durability::Normal,
                    readers: 1,
                    cache_size_kib: 1024,
                    ..Default::default()
                };
                Arc::new(SqliteBackend::open(self.file(self.generation), opts)?)
            }
            EngineKind::Redb => {
                let opts = RedbOptions {
                    durability: RedbDurability::Immediate,
                    cache_size: Some(4 << 20),
                    ..Default::default()
                };
                Arc::new(RedbBackend::open(self.file(self.generation), opts)?)
            }
            EngineKind::RedbFaultyDisk => {
                let disk = MemoryStorage::from_image(self.disk.clone());
                self.live_disk = Some(disk.clone());
                let opts = RedbOptions {
                    durability: RedbDurability::Immediate,
                    cache_size: Some(4 << 20),
                    ..Default::default()
                };
                let storage = FaultyStorage::new(disk, self.disk_faults.clone());
                Arc::new(RedbBackend::open_with_storage(storage, opts)?)
            }
        };
        let backend = FaultyBackend::with_faults(inner, self.faults.clone());
        // The memory engine must survive a "reopen": its close is not forwarded.
        let backend = if self.kind == EngineKind::Memory {
            backend.keep_inner_open()
        } else {
            backend
        };
        let config = DbConfig {
            background_tasks: false,
            clock: self.clock.clone(),
            ..Default::default()
        };
        Db::open(backend, config).await
    }

    /// Captures what a process killed now leaves on disk; the next [`open`] uses it.
    fn crash_image(&mut self) {
        match self.kind {
            EngineKind::Memory => {}
            EngineKind::Sqlite | EngineKind::Redb => {
                let (from, to) = (self.file(self.generation), self.file(self.generation + 1));
                std::fs::copy(&from, &to).expect("copy database file");
                if self.kind == EngineKind::Sqlite {
                    let wal = |p: &PathBuf| PathBuf::from(format!("{}-wal", p.display()));
                    if wal(&from).exists() {
                        std::fs::copy(wal(&from), wal(&to)).expect("copy log");
                    }
                }
                self.generation += 1;
            }
            EngineKind::RedbFaultyDisk => {
                if let Some(d) = &self.live_disk {
                    self.disk = d.image();
                }
            }
        }
    }

    /// After a clean close: the next [`open`] uses the files as the close left them.
    fn after_close(&mut self) {
        if let (EngineKind::RedbFaultyDisk, Some(d)) = (self.kind, &self.live_disk) {
            self.disk = d.image();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Value, versionstamp and expiry time of one key.
type Entry = (KvValue, Versionstamp, Option<u64>);

/// Every key's entry, expired or not.
type Model = BTreeMap<Vec<u8>, Entry>;

/// Whether an entry with expiry `exp` is visible at `now`.
fn live(exp: Option<u64>, now: u64) -> bool {
    exp.is_none_or(|t| t > now)
}

/// The live entry at `k`.
fn live_get<'a>(m: &'a Model, k: &[u8], now: u64) -> Option<&'a Entry> {
    m.get(k).filter(|e| live(e.2, now))
}

/// Versionstamp placeholder for the i-th write of an unknown-outcome group.
fn wild(i: usize) -> Versionstamp {
    let mut b = [0xfe; 10];
    b[9] = i as u8;
    Versionstamp(b)
}

fn wild_index(vs: &Versionstamp) -> Option<usize> {
    (vs.0[..9] == [0xfe; 9]).then_some(vs.0[9] as usize)
}

enum Outcome {
    CheckFailed(Vec<u32>),
    TypeError,
    Applied(Model),
}

fn value_of(k: u8, op: Op) -> KvValue {
    match op {
        Op::SetBig(_, len) => KvValue::Bytes(vec![k; usize::from(len) * 61]),
        Op::Set(_, v) | Op::SetExpiring(_, v, _) => KvValue::Bytes(vec![v]),
        Op::SetU64(_, v) => KvValue::U64(v),
        _ => KvValue::U64(0),
    }
}

/// Applies one write to the model. Checks of `CheckCurrent` were resolved when the write was
/// built, so they are passed in `checks`.
fn apply(model: &Model, checks: &[Check], ops: &[Op], vs: Versionstamp, now: u64) -> Outcome {
    let failed: Vec<u32> = checks
        .iter()
        .enumerate()
        .filter(|(_, c)| live_get(model, &c.key, now).map(|e| e.1) != c.versionstamp)
        .map(|(i, _)| i as u32)
        .collect();
    if !failed.is_empty() {
        return Outcome::CheckFailed(failed);
    }
    let mut next = model.clone();
    for &op in ops {
        match op {
            Op::Set(k, _) | Op::SetBig(k, _) | Op::SetU64(k, _) => {
                next.insert(key(k), (value_of(k, op), vs, None));
            }
            Op::SetExpiring(k, _, ttl) => {
                let exp = now + u64::from(ttl) * 10;
                next.insert(key(k), (value_of(k, op), vs, Some(exp)));
            }
            Op::Delete(k) => {
                next.remove(&key(k));
            }
            Op::Sum(k, v) | Op::Min(k, v) | Op::Max(k, v) => {
                let new = match (live_get(&next, &key(k), now).map(|e| &e.0), op) {
                    (None, _) => v,
                    (Some(KvValue::U64(old)), Op::Sum(..)) => old.wrapping_add(v),
                    (Some(KvValue::U64(old)), Op::Min(..)) => (*old).min(v),
                    (Some(KvValue::U64(old)), _) => (*old).max(v),
                    (Some(_), _) => return Outcome::TypeError,
                };
                next.insert(key(k), (KvValue::U64(new), vs, None));
            }
            Op::CheckAbsent(_) | Op::CheckCurrent(_) | Op::CheckWrong(_) => {}
        }
    }
    Outcome::Applied(next)
}

/// The atomic write for `ops` against the model's current state, and its checks.
fn build(model: &Model, ops: &[Op], now: u64) -> (AtomicWrite, Vec<Check>) {
    let mut w = AtomicWrite::default();
    for &op in ops {
        match op {
            Op::CheckAbsent(k) => w.checks.push(Check {
                key: key(k),
                versionstamp: None,
            }),
            Op::CheckCurrent(k) => w.checks.push(Check {
                key: key(k),
                versionstamp: live_get(model, &key(k), now).map(|e| e.1),
            }),
            Op::CheckWrong(k) => w.checks.push(Check {
                key: key(k),
                versionstamp: Some(Versionstamp([0xee; 10])),
            }),
            Op::Set(k, _) | Op::SetBig(k, _) | Op::SetU64(k, _) => {
                w.mutations.push(Mutation::set(key(k), value_of(k, op)))
            }
            Op::SetExpiring(k, _, ttl) => {
                let mut m = Mutation::set(key(k), value_of(k, op));
                m.expire_at_ms = Some(now + u64::from(ttl) * 10);
                w.mutations.push(m);
            }
            Op::Delete(k) => w.mutations.push(Mutation::delete(key(k))),
            Op::Sum(k, v) => w.mutations.push(Mutation {
                key: key(k),
                kind: MutationKind::Sum {
                    value: KvValue::U64(v),
                    min: None,
                    max: None,
                    clamp: false,
                },
                expire_at_ms: None,
            }),
            Op::Min(k, v) => w.mutations.push(Mutation {
                key: key(k),
                kind: MutationKind::Min(KvValue::U64(v)),
                expire_at_ms: None,
            }),
            Op::Max(k, v) => w.mutations.push(Mutation {
                key: key(k),
                kind: MutationKind::Max(KvValue::U64(v)),
                expire_at_ms: None,
            }),
        }
    }
    let checks = w.checks.clone();
    (w, checks)
}

/// The harness state: the model, and while a commit has failed (until reopen) the states the
/// database may show instead.
struct State {
    model: Model,
    /// Possible states while the outcome of failed writes is unknown (includes `model`).
    candidates: Vec<Model>,
    /// Greatest versionstamp of an acknowledged commit.
    last: Versionstamp,
    /// A commit failed: every write must be refused until reopen.
    poisoned: bool,
    /// A non-commit failure happened (put fault): the database may or may not refuse writes.
    maybe_poisoned: bool,
    /// A storage fault fired: reads and close may fail too until reopen.
    disk_broken: bool,
    /// The database's clock.
    clock: Arc<ManualClock>,
    /// Several candidates matched at the last reopen, differing only in expired (invisible)
    /// entries: the next expiry sweep's count is not predictable.
    sweep_uncertain: bool,
}

/// Matches observed entries against a model, binding wildcard versionstamps; returns the
/// bindings on success.
fn matches(
    observed: &[KvEntry],
    want: &[(&Vec<u8>, &Entry)],
    last: Versionstamp,
) -> Option<BTreeMap<usize, Versionstamp>> {
    if observed.len() != want.len() {
        return None;
    }
    let mut bound: BTreeMap<usize, Versionstamp> = BTreeMap::new();
    for (e, (k, (v, vs, _))) in observed.iter().zip(want) {
        if &e.key != *k || &e.value != v {
            return None;
        }
        match wild_index(vs) {
            None if e.versionstamp != *vs => return None,
            None => {}
            Some(i) => {
                if e.versionstamp <= last {
                    return None;
                }
                if *bound.entry(i).or_insert(e.versionstamp) != e.versionstamp {
                    return None;
                }
            }
        }
    }
    let stamps: Vec<_> = bound.values().collect();
    if stamps.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    Some(bound)
}

fn window(model: &Model, now: u64, reverse: bool, limit: usize) -> Vec<(&Vec<u8>, &Entry)> {
    let mut want: Vec<_> = model.iter().filter(|(_, e)| live(e.2, now)).collect();
    if reverse {
        want.reverse();
    }
    want.truncate(limit);
    want
}

fn full_range() -> ReadRange {
    ReadRange {
        start: vec![0x02],
        end: vec![0x03],
        limit: 1000,
        reverse: false,
    }
}

impl State {
    /// Checks a read against the model or any candidate.
    fn check_read(&self, observed: &[KvEntry], reverse: bool, limit: usize) {
        let now = self.clock.now_ms();
        let ok = self
            .candidates
            .iter()
            .any(|m| matches(observed, &window(m, now, reverse, limit), self.last).is_some());
        assert!(
            ok,
            "read (reverse={reverse}, limit={limit}) shows a state the model does not allow:\n\
             observed: {observed:?}\nallowed: {:?}",
            self.candidates
        );
    }

    /// After a reopen: the full state must be one candidate; it becomes the model.
    fn resolve(&mut self, observed: &[KvEntry]) {
        let now = self.clock.now_ms();
        let all: Vec<_> = self
            .candidates
            .iter()
            .filter_map(|m| {
                matches(observed, &window(m, now, false, usize::MAX), self.last)
                    .map(|b| (m.clone(), b))
            })
            .collect();
        if all.iter().any(|(m, _)| *m != all[0].0) {
            self.sweep_uncertain = true;
        }
        let found = all.into_iter().next();
        let Some((mut model, bound)) = found else {
            panic!(
                "after reopen the database shows a state the model does not allow:\n\
                 observed: {observed:?}\nallowed: {:?}",
                self.candidates
            );
        };
        for (_, e) in model.iter_mut() {
            if let Some(i) = wild_index(&e.1) {
                // An expired entry of an unknown write is invisible: its stamp stays unbound,
                // and it only matters to the expiry sweep count.
                e.1 = bound.get(&i).copied().unwrap_or(e.1);
            }
        }
        if let Some(max) = bound.values().max() {
            self.last = self.last.max(*max);
        }
        if self.candidates.len() > 1 && model != self.candidates[0] {
            stats::bump(&stats::RESOLVED_APPLIED);
        }
        self.model = model.clone();
        self.candidates = vec![model];
        self.poisoned = false;
        self.maybe_poisoned = false;
        self.disk_broken = false;
    }
}

async fn read_all(db: &Db) -> Result<Vec<KvEntry>, KvError> {
    let mut out = db
        .snapshot_read(vec![full_range()], Consistency::Strong)
        .await?;
    Ok(out.pop().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// The target
// ---------------------------------------------------------------------------------------------

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

async fn write_step(db: &Db, st: &mut State, engine: &Engine, writes: &[Vec<Op>], fault: Fault) {
    let writes: Vec<Vec<Op>> = writes
        .iter()
        .take(4)
        .map(|w| w.iter().take(8).copied().collect())
        .collect();
    if writes.is_empty() {
        return;
    }
    let fault = match (fault, engine.kind) {
        (Fault::Disk(_), k) if k != EngineKind::RedbFaultyDisk => Fault::None,
        (f, _) => f,
    };
    match fault {
        Fault::Disk(n) => engine.disk_faults.fail_from_call(u64::from(n % 24) + 1),
        f => arm(&engine.faults, f),
    }
    // Checks of every write are resolved against the state before the group.
    let now = st.clock.now_ms();
    let built: Vec<(AtomicWrite, Vec<Check>)> = writes
        .iter()
        .map(|ops| build(&st.model, ops, now))
        .collect();
    let results =
        futures::future::join_all(built.iter().map(|(w, _)| db.atomic_write(w.clone()))).await;
    // Leave no fault armed for later steps (a write may have stopped before reaching it).
    engine.faults.disarm_all();
    let fired_disk = matches!(fault, Fault::Disk(_)) && engine.disk_faults.fired();
    if tracing_enabled() {
        if let Some(at) = engine.disk_faults.fired_at().filter(|_| fired_disk) {
            eprintln!("trace: disk fails at\n{at}");
        }
        for r in &results {
            let r = r.as_ref().map_err(|e| e.to_string());
            eprintln!("trace: fault {fault:?} result {r:?}");
        }
    }
    if fired_disk {
        st.disk_broken = true;
        stats::bump(&stats::DISK_FAULTS);
    } else {
        engine.disk_faults.heal();
    }

    // Index of the first write whose commit failed with an unknown outcome.
    let mut unknown_from: Option<usize> = None;
    for (i, (res, ops)) in results.iter().zip(&writes).enumerate() {
        let checks = &built[i].1;
        if unknown_from.is_some() {
            // Part of the failed batch or a later one: refused, or applied with it.
            assert!(
                matches!(res, Err(KvError::Backend(_))),
                "write after a failed commit in the same group: {res:?}"
            );
            continue;
        }
        match res {
            Ok(CommitResult::Committed(vs)) => {
                assert!(!st.poisoned, "a poisoned database committed a write");
                assert!(*vs > st.last, "versionstamp {vs:?} not after {:?}", st.last);
                match apply(&st.model, checks, ops, *vs, now) {
                    Outcome::Applied(m) => st.model = m,
                    Outcome::CheckFailed(f) => panic!("committed a write whose checks {f:?} fail"),
                    Outcome::TypeError => panic!("committed a write the model rejects"),
                }
                st.last = *vs;
                st.maybe_poisoned = false;
                stats::bump(&stats::COMMITTED);
            }
            Ok(CommitResult::CheckFailed(failed)) => {
                assert!(
                    !st.poisoned,
                    "a poisoned database evaluated a check: {failed:?}"
                );
                match apply(&st.model, checks, ops, st.last, now) {
                    Outcome::CheckFailed(f) => {
                        assert_eq!(&f, failed, "failed checks");
                        stats::bump(&stats::CHECK_FAILED);
                    }
                    _ => panic!("db failed checks {failed:?} the model passes"),
                }
            }
            Err(KvError::Backend(e)) => {
                if st.poisoned {
                    assert!(
                        matches!(e, BackendError::Poisoned(_)),
                        "a poisoned database must refuse writes as poisoned: {e}"
                    );
                    stats::bump(&stats::REFUSED_POISONED);
                } else if fault == Fault::Put {
                    // Rolled back: nothing applied; the database may refuse writes from now.
                    st.maybe_poisoned = true;
                    stats::bump(&stats::PUT_FAILURES);
                } else if st.maybe_poisoned && matches!(e, BackendError::Poisoned(_)) {
                    st.poisoned = true;
                } else {
                    assert!(
                        st.disk_broken || matches!(fault, Fault::CommitBefore | Fault::CommitAfter),
                        "storage error without an injected fault: {e}"
                    );
                    unknown_from = Some(i);
                    stats::bump(&stats::UNKNOWN_OUTCOMES);
                }
            }
            Err(e) => {
                assert!(e.is_client_error(), "unexpected error {e}");
                assert!(
                    !st.poisoned,
                    "a poisoned database type-checked a write: {e}"
                );
                assert!(
                    matches!(
                        apply(&st.model, checks, ops, st.last, now),
                        Outcome::TypeError
                    ),
                    "db rejected a write the model accepts: {e}"
                );
                stats::bump(&stats::TYPE_ERRORS);
            }
        }
    }
    if let Some(from) = unknown_from {
        // Candidates: the failed writes from `from` on, each prefix applied in order (a
        // batch is a contiguous run), each write all or nothing with its own versionstamp.
        let mut candidates = vec![st.model.clone()];
        let mut cur = st.model.clone();
        for (j, ((_, checks), ops)) in built.iter().zip(&writes).enumerate().skip(from) {
            if let Outcome::Applied(m) = apply(&cur, checks, ops, wild(j), now) {
                cur = m;
            }
            candidates.push(cur.clone());
        }
        if fault == Fault::CommitBefore {
            // The engine never saw the commit: nothing may appear.
            candidates.truncate(1);
        }
        st.candidates = candidates;
        st.poisoned = true;
        // Must refuse a new write now.
        let probe = AtomicWrite {
            mutations: vec![Mutation::set(key(0), KvValue::U64(7))],
            ..Default::default()
        };
        let res = db.atomic_write(probe).await;
        assert!(
            matches!(res, Err(KvError::Backend(BackendError::Poisoned(_)))),
            "a write after a failed commit was not refused as poisoned: {res:?}"
        );
    }
}

async fn run(input: Input) {
    stats::bump(&stats::INPUTS[input.engine as usize]);
    let mut engine = Engine::new(input.engine);
    let mut db = engine.open().await.expect("open a new database");
    let mut st = State {
        model: Model::new(),
        candidates: vec![Model::new()],
        last: Versionstamp::ZERO,
        poisoned: false,
        maybe_poisoned: false,
        disk_broken: false,
        clock: engine.clock.clone(),
        sweep_uncertain: false,
    };
    for step in input.steps.iter().take(24) {
        match step {
            Step::Write { writes, fault } => {
                write_step(&db, &mut st, &engine, writes, *fault).await;
                if !st.poisoned {
                    // No unknown outcome: the model is the only possible state (even after a
                    // storage fault nobody reported, acknowledged writes must survive).
                    st.candidates = vec![st.model.clone()];
                }
            }
            Step::Read { reverse, limit } => {
                let limit = usize::from((*limit).max(1));
                let range = ReadRange {
                    limit: limit as u32,
                    reverse: *reverse,
                    ..full_range()
                };
                match db.snapshot_read(vec![range], Consistency::Strong).await {
                    Ok(out) => st.check_read(&out[0], *reverse, limit),
                    Err(e) => assert!(st.disk_broken, "read failed: {e}"),
                }
            }
            Step::Advance(n) => st.clock.advance(u64::from(*n) * 5),
            Step::Maintenance => {
                let now = st.clock.now_ms();
                match db.run_maintenance().await {
                    Ok(n) => {
                        assert!(!st.poisoned, "a poisoned database ran the expiry sweep");
                        let due: Vec<Vec<u8>> = st
                            .model
                            .iter()
                            .filter(|(_, e)| !live(e.2, now))
                            .map(|(k, _)| k.clone())
                            .collect();
                        if !st.sweep_uncertain {
                            assert_eq!(n, due.len(), "expired keys swept");
                        }
                        for k in due {
                            st.model.remove(&k);
                        }
                        st.candidates = vec![st.model.clone()];
                        st.sweep_uncertain = false;
                        stats::bump(&stats::SWEEPS);
                    }
                    Err(e) => assert!(
                        st.poisoned || st.maybe_poisoned || st.disk_broken,
                        "the expiry sweep failed: {e}"
                    ),
                }
            }
            Step::Crash => {
                stats::bump(&stats::CRASHES);
                engine.crash_image();
                drop(db);
                db = engine.open().await.expect("reopen after a crash");
                let all = read_all(&db).await.expect("read after reopen");
                st.resolve(&all);
            }
            Step::Reopen => {
                stats::bump(&stats::REOPENS);
                let closed = db.close().await;
                assert!(closed.is_ok() || st.disk_broken, "close failed: {closed:?}");
                engine.after_close();
                drop(db);
                db = engine.open().await.expect("reopen after close");
                let all = read_all(&db).await.expect("read after reopen");
                st.resolve(&all);
            }
        }
    }
    // Every acknowledged write survives a final crash.
    engine.crash_image();
    drop(db);
    let db = engine.open().await.expect("final reopen");
    let all = read_all(&db).await.expect("final read");
    st.resolve(&all);
    db.close().await.expect("final close");
}

fuzz_target!(|input: Input| {
    runtime().block_on(run(input));
    stats::print();
});
