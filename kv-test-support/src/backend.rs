//! [`FaultyBackend`]: a decorator over any [`Backend`] that fails or delays write transactions on
//! demand and counts the calls it forwards.
//!
//! Contract:
//! - With nothing armed, the decorator is transparent: every call is forwarded unchanged to the
//!   wrapped engine, results and errors included (apart from the configured delays).
//! - Faults are armed on a [`Faults`] handle. The handle is shared (cloning it, or asking the
//!   backend for it, gives the same state), so a test can arm faults while a `Db` owns the
//!   backend. A fault is read when the faulty call happens, not when the transaction began.
//! - [`Faults::fail_next`] arms a fault for exactly one call: the first call it applies to
//!   consumes it. [`Faults::fail_always`] arms it until [`Faults::disarm`] or
//!   [`Faults::disarm_all`]. Arming a fault replaces that fault's previous mode.
//! - [`Fault::CommitBefore`]: `commit` returns [`BackendError::Io`] without reaching the engine;
//!   the transaction is dropped, so the engine rolls it back and nothing is durable.
//! - [`Fault::CommitAfter`]: the engine commits, then `commit` returns [`BackendError::Io`]: the
//!   outcome the caller sees is unknown although the data is durable (a failed fsync report).
//!   The fault is consumed even when the engine's own commit fails (whose error is returned).
//!   When both commit faults are armed, `CommitBefore` wins and `CommitAfter` stays armed.
//! - [`Fault::Put`]: `put` returns [`BackendError::Io`] and writes nothing; the transaction stays
//!   usable.
//! - Every injected error message contains `"injected"` ([`Fault::message`]).
//! - Delays: [`Faults::delay_commits`] makes each `commit` sleep before the commit faults are
//!   read (a slow fsync); [`Faults::delay_begin_write`] makes each `begin_write` sleep after the
//!   engine granted the transaction (so concurrent writers pile up, as behind an fsync). Both are
//!   tokio sleeps: the caller's future can be dropped during them.
//! - [`Faults::calls`] counts every call made through the decorator (see [`Calls`]), failed and
//!   injected ones included, except `committed`, which counts only commits the engine accepted.
//! - `close` is forwarded unless the backend was built with [`FaultyBackend::keep_inner_open`]
//!   (so an engine that cannot be reopened, such as the memory engine, survives a "reopen").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use kv_traits::{Backend, BackendError, KvPair, ReadTxn, WriteTxn};

/// A fault [`FaultyBackend`] can inject into a write transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `commit` fails before the engine sees it: nothing is applied.
    CommitBefore,
    /// The engine commits, then `commit` reports an error: applied, but the caller is not told.
    CommitAfter,
    /// `put` fails and stores nothing.
    Put,
}

impl Fault {
    const ALL: [Fault; 3] = [Fault::CommitBefore, Fault::CommitAfter, Fault::Put];

    /// The message of the [`BackendError::Io`] this fault injects.
    pub fn message(self) -> &'static str {
        match self {
            Fault::CommitBefore => "injected commit failure",
            Fault::CommitAfter => "injected fsync failure after commit",
            Fault::Put => "injected write failure",
        }
    }

    fn index(self) -> usize {
        match self {
            Fault::CommitBefore => 0,
            Fault::CommitAfter => 1,
            Fault::Put => 2,
        }
    }
}

/// How long an armed fault stays armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Once,
    Always,
}

/// Counts of the calls made through a [`FaultyBackend`] since its [`Faults`] were created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// `begin_read` calls.
    pub begin_read: u64,
    /// `begin_write` calls.
    pub begin_write: u64,
    /// `put` calls on write transactions, injected failures included.
    pub put: u64,
    /// `delete` calls on write transactions.
    pub delete: u64,
    /// `commit` calls, whatever their outcome.
    pub commit: u64,
    /// Commits the engine accepted (a [`Fault::CommitAfter`] commit counts: the engine has it).
    pub committed: u64,
}

#[derive(Default)]
struct Armed {
    modes: [Option<Mode>; 3],
    commit_delay: Duration,
    begin_write_delay: Duration,
}

#[derive(Default)]
struct Counters {
    begin_read: AtomicU64,
    begin_write: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    commit: AtomicU64,
    committed: AtomicU64,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Armed>,
    counters: Counters,
}

/// The shared switchboard of a [`FaultyBackend`]: arm faults and delays, read call counts.
#[derive(Clone, Default)]
pub struct Faults(Arc<Shared>);

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let armed: Vec<_> = Fault::ALL
            .into_iter()
            .filter_map(|fault| self.lock().modes[fault.index()].map(|m| (fault, m)))
            .collect();
        f.debug_struct("Faults")
            .field("armed", &armed)
            .field("calls", &self.calls())
            .finish()
    }
}

impl Faults {
    /// A switchboard with nothing armed and every count at zero.
    pub fn new() -> Faults {
        Faults::default()
    }

    fn lock(&self) -> MutexGuard<'_, Armed> {
        // A panicking test thread must not hide the switches from the others.
        self.0.armed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms `fault` for the next call it applies to only.
    pub fn fail_next(&self, fault: Fault) {
        self.lock().modes[fault.index()] = Some(Mode::Once);
    }

    /// Arms `fault` for every call it applies to, until disarmed.
    pub fn fail_always(&self, fault: Fault) {
        self.lock().modes[fault.index()] = Some(Mode::Always);
    }

    /// Disarms `fault`.
    pub fn disarm(&self, fault: Fault) {
        self.lock().modes[fault.index()] = None;
    }

    /// Disarms every fault (delays are kept).
    pub fn disarm_all(&self) {
        self.lock().modes = [None; 3];
    }

    /// Whether `fault` is armed (a one-shot fault is no longer armed once it fired).
    pub fn is_armed(&self, fault: Fault) -> bool {
        self.lock().modes[fault.index()].is_some()
    }

    /// Makes each later `commit` sleep `delay` first (zero: no sleep).
    pub fn delay_commits(&self, delay: Duration) {
        self.lock().commit_delay = delay;
    }

    /// Makes each later `begin_write` sleep `delay` once the engine granted it (zero: no sleep).
    pub fn delay_begin_write(&self, delay: Duration) {
        self.lock().begin_write_delay = delay;
    }

    /// The calls counted so far.
    pub fn calls(&self) -> Calls {
        let c = &self.0.counters;
        let get = |n: &AtomicU64| n.load(Ordering::SeqCst);
        Calls {
            begin_read: get(&c.begin_read),
            begin_write: get(&c.begin_write),
            put: get(&c.put),
            delete: get(&c.delete),
            commit: get(&c.commit),
            committed: get(&c.committed),
        }
    }

    /// Whether `fault` fires now; consumes a one-shot fault.
    fn fire(&self, fault: Fault) -> bool {
        let mut armed = self.lock();
        let slot = &mut armed.modes[fault.index()];
        match *slot {
            None => false,
            Some(Mode::Always) => true,
            Some(Mode::Once) => {
                *slot = None;
                true
            }
        }
    }

    fn counters(&self) -> &Counters {
        &self.0.counters
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn injected(fault: Fault) -> BackendError {
    BackendError::Io(fault.message().into())
}

/// Any [`Backend`] whose write transactions fail or stall when its [`Faults`] say so.
#[derive(Clone, Debug)]
pub struct FaultyBackend<B> {
    inner: B,
    faults: Faults,
    forward_close: bool,
}

impl<B: Backend> FaultyBackend<B> {
    /// Wraps `inner` with a fresh switchboard.
    pub fn new(inner: B) -> Self {
        FaultyBackend::with_faults(inner, Faults::new())
    }

    /// Wraps `inner`, taking faults from `faults` (which may outlive this backend and serve the
    /// next one, for a test that reopens).
    pub fn with_faults(inner: B, faults: Faults) -> Self {
        FaultyBackend {
            inner,
            faults,
            forward_close: true,
        }
    }

    /// Does not forward `close` to the wrapped engine.
    pub fn keep_inner_open(mut self) -> Self {
        self.forward_close = false;
        self
    }

    /// The shared switchboard.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

#[async_trait]
impl<B: Backend> Backend for FaultyBackend<B> {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        bump(&self.faults.counters().begin_read);
        self.inner.begin_read().await
    }

    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        bump(&self.faults.counters().begin_write);
        let inner = self.inner.begin_write().await?;
        let delay = self.faults.lock().begin_write_delay;
        pause(delay).await;
        Ok(Box::new(FaultyWrite {
            inner,
            faults: self.faults.clone(),
        }))
    }

    async fn close(&self) -> Result<(), BackendError> {
        if self.forward_close {
            self.inner.close().await
        } else {
            Ok(())
        }
    }
}

/// A write transaction of a [`FaultyBackend`].
struct FaultyWrite {
    inner: Box<dyn WriteTxn>,
    faults: Faults,
}

#[async_trait]
impl ReadTxn for FaultyWrite {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(key).await
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        self.inner.scan(start, end, limit, reverse).await
    }
}

#[async_trait]
impl WriteTxn for FaultyWrite {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        bump(&self.faults.counters().put);
        if self.faults.fire(Fault::Put) {
            return Err(injected(Fault::Put));
        }
        self.inner.put(key, value).await
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        bump(&self.faults.counters().delete);
        self.inner.delete(key).await
    }

    async fn commit(self: Box<Self>) -> Result<(), BackendError> {
        let FaultyWrite { inner, faults } = *self;
        bump(&faults.counters().commit);
        let delay = faults.lock().commit_delay;
        pause(delay).await;
        if faults.fire(Fault::CommitBefore) {
            return Err(injected(Fault::CommitBefore));
        }
        let after = faults.fire(Fault::CommitAfter);
        inner.commit().await?;
        bump(&faults.counters().committed);
        if after {
            return Err(injected(Fault::CommitAfter));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use kv_engine_memory::MemoryBackend;

    use super::*;

    async fn write(b: &impl Backend, key: &[u8]) -> Result<(), BackendError> {
        let mut w = b.begin_write().await?;
        w.put(key, b"v").await?;
        w.commit().await
    }

    async fn has(b: &impl Backend, key: &[u8]) -> bool {
        let mut r = b.begin_read().await.unwrap();
        r.get(key).await.unwrap().is_some()
    }

    fn is_injected(r: Result<(), BackendError>, fault: Fault) -> bool {
        matches!(r, Err(BackendError::Io(m)) if m == fault.message())
    }

    #[tokio::test]
    async fn unarmed_it_forwards_everything_and_counts() {
        let b = FaultyBackend::new(MemoryBackend::new());
        write(&b, b"a").await.unwrap();
        let mut w = b.begin_write().await.unwrap();
        w.delete(b"a").await.unwrap();
        w.put(b"b", b"2").await.unwrap();
        assert_eq!(w.get(b"b").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(w.scan(b"a", b"z", 10, false).await.unwrap().len(), 1);
        w.commit().await.unwrap();
        assert!(!has(&b, b"a").await);
        assert!(has(&b, b"b").await);
        assert_eq!(
            b.faults().calls(),
            Calls {
                begin_read: 2,
                begin_write: 2,
                put: 2,
                delete: 1,
                commit: 2,
                committed: 2,
            }
        );
    }

    #[tokio::test]
    async fn a_commit_failing_before_the_engine_applies_nothing_once() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.faults().fail_next(Fault::CommitBefore);
        assert!(b.faults().is_armed(Fault::CommitBefore));
        assert!(is_injected(write(&b, b"a").await, Fault::CommitBefore));
        assert!(!has(&b, b"a").await);
        assert!(!b.faults().is_armed(Fault::CommitBefore));
        write(&b, b"a").await.unwrap();
        assert!(has(&b, b"a").await);
        let calls = b.faults().calls();
        assert_eq!((calls.commit, calls.committed), (2, 1));
    }

    #[tokio::test]
    async fn a_commit_failing_after_the_engine_is_durable() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.faults().fail_next(Fault::CommitAfter);
        assert!(is_injected(write(&b, b"a").await, Fault::CommitAfter));
        assert!(has(&b, b"a").await, "the engine committed");
        assert_eq!(b.faults().calls().committed, 1);
        write(&b, b"b").await.unwrap();
    }

    #[tokio::test]
    async fn commit_before_wins_over_commit_after() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.faults().fail_next(Fault::CommitBefore);
        b.faults().fail_next(Fault::CommitAfter);
        assert!(is_injected(write(&b, b"a").await, Fault::CommitBefore));
        assert!(b.faults().is_armed(Fault::CommitAfter));
        assert!(is_injected(write(&b, b"a").await, Fault::CommitAfter));
        assert!(has(&b, b"a").await);
    }

    #[tokio::test]
    async fn a_put_fault_fails_one_put_and_stores_nothing() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.faults().fail_next(Fault::Put);
        let mut w = b.begin_write().await.unwrap();
        let err = w.put(b"a", b"1").await.unwrap_err();
        assert!(matches!(err, BackendError::Io(ref m) if m.message().contains("injected")));
        w.put(b"b", b"2").await.unwrap();
        w.commit().await.unwrap();
        assert!(!has(&b, b"a").await);
        assert!(has(&b, b"b").await);
    }

    #[tokio::test]
    async fn a_persistent_fault_holds_until_disarmed() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.faults().fail_always(Fault::CommitBefore);
        for _ in 0..3 {
            assert!(is_injected(write(&b, b"a").await, Fault::CommitBefore));
        }
        b.faults().disarm(Fault::CommitBefore);
        write(&b, b"a").await.unwrap();
        b.faults().fail_always(Fault::Put);
        b.faults().fail_always(Fault::CommitAfter);
        b.faults().disarm_all();
        write(&b, b"b").await.unwrap();
        assert!(has(&b, b"b").await);
    }

    #[tokio::test]
    async fn the_handle_is_shared_with_an_owner() {
        let faults = Faults::new();
        let b: Arc<dyn Backend> = Arc::new(FaultyBackend::with_faults(
            MemoryBackend::new(),
            faults.clone(),
        ));
        // Armed after the transaction began: read at commit time.
        let mut w = b.begin_write().await.unwrap();
        w.put(b"a", b"1").await.unwrap();
        faults.fail_next(Fault::CommitBefore);
        assert!(is_injected(w.commit().await, Fault::CommitBefore));
        assert_eq!(faults.calls().begin_write, 1);
    }

    #[tokio::test]
    async fn delays_hold_commits_and_begin_write() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.faults().delay_commits(Duration::from_millis(60));
        b.faults().delay_begin_write(Duration::from_millis(40));
        let started = Instant::now();
        let w = b.begin_write().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(40));
        w.commit().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        // A caller can give up during the delay; nothing is committed then.
        let mut w = b.begin_write().await.unwrap();
        w.put(b"a", b"1").await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(10), w.commit()).await;
        assert!(gave_up.is_err());
        b.faults().delay_commits(Duration::ZERO);
        b.faults().delay_begin_write(Duration::ZERO);
        assert!(!has(&b, b"a").await);
        assert_eq!(b.faults().calls().committed, 1);
    }

    #[tokio::test]
    async fn close_is_forwarded_unless_kept_open() {
        let memory = MemoryBackend::new();
        let kept = FaultyBackend::new(memory.clone()).keep_inner_open();
        kept.close().await.unwrap();
        write(&memory, b"a").await.unwrap();
        let forwarded = FaultyBackend::new(memory.clone());
        forwarded.close().await.unwrap();
        assert!(matches!(
            write(&memory, b"b").await,
            Err(BackendError::Closed)
        ));
    }
}
