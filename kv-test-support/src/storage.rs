//! [`FaultyStorage`]: a decorator over any redb [`StorageBackend`] whose writes, resizes and
//! syncs fail on demand, and [`MemoryStorage`], an in-memory storage whose bytes a test can copy
//! (what a killed process leaves behind).
//!
//! Contract:
//! - The mutating storage calls are `write`, `set_len` (a resize) and `sync_data`. `len`, `read`,
//!   `close` and the lock calls are always forwarded unchanged and never fail by injection.
//! - Faults are armed on a shared [`DiskFaults`] handle, read at each call. Each mutating call is
//!   counted first, then (a sync) sleeps the configured [`DiskFaults::delay_syncs`] on the calling
//!   thread and, while [`DiskFaults::hold_syncs`] is on, blocks until
//!   [`DiskFaults::release_syncs`] or the hold's cap, then the faults are checked in this order,
//!   and only a call no fault stopped reaches the wrapped storage:
//!   1. switches: [`DiskFaults::fail_writes`] fails every `write` and `set_len`,
//!      [`DiskFaults::fail_syncs`] every `sync_data`, until switched off; nothing lands;
//!   2. the countdown: after [`DiskFaults::fail_from_call`]`(n)`, the n-th mutating call from now
//!      fails and so does every later one, until [`DiskFaults::heal`]. The first failing call
//!      is torn when it is a `write`: the first half of its bytes lands, the rest does not.
//!      Later failing calls land nothing. [`DiskFaults::fired`] tells whether it has fired.
//! - An injected failure is an [`std::io::Error`] whose message starts with `"injected"`:
//!   `injected fsync failure`, `injected write failure`, `injected set_len failure`, or (the
//!   countdown) `injected disk failure`.
//! - [`MemoryStorage`] is a plain growable byte vector: `write` past the end grows it (with
//!   zeros in any gap), `read` past the end fails, syncs do nothing, and every lock is granted.
//!   Clones share the bytes; [`MemoryStorage::image`] copies them.

use std::backtrace::Backtrace;
use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::StorageBackend;

type IoResult<T> = Result<T, std::io::Error>;

/// The countdown of [`DiskFaults::fail_from_call`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Countdown {
    #[default]
    Off,
    /// This many more mutating calls succeed; the one after fails.
    Left(u64),
    Fired,
}

/// What the countdown does to one call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// The first failing call.
    Fire,
    /// A failing call after the first.
    Fail,
}

/// The switch of [`DiskFaults::hold_syncs`].
#[derive(Debug, Default)]
struct Hold {
    on: bool,
    cap: Duration,
    /// Syncs that blocked on a hold so far.
    held: u64,
}

#[derive(Debug, Default)]
struct State {
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
    sync_delay_ms: AtomicU64,
    hold: Mutex<Hold>,
    hold_changed: Condvar,
    countdown: Mutex<Countdown>,
    record_backtrace: AtomicBool,
    backtrace: Mutex<Option<String>>,
    writes: AtomicU64,
    resizes: AtomicU64,
    syncs: AtomicU64,
}

/// The shared switchboard of a [`FaultyStorage`].
#[derive(Clone, Debug, Default)]
pub struct DiskFaults(Arc<State>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DiskFaults {
    /// A switchboard with nothing armed and every count at zero.
    pub fn new() -> DiskFaults {
        DiskFaults::default()
    }

    /// Fails every `write` and `set_len` while `on`.
    pub fn fail_writes(&self, on: bool) {
        self.0.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Fails every `sync_data` while `on`.
    pub fn fail_syncs(&self, on: bool) {
        self.0.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// Fails the `n`-th mutating call from now (1: the next; 0 counts as 1) and every later one;
    /// the first failing `write` is torn. Restarts a countdown that already fired.
    pub fn fail_from_call(&self, n: u64) {
        *lock(&self.0.countdown) = Countdown::Left(n.saturating_sub(1));
        *lock(&self.0.backtrace) = None;
    }

    /// Whether the countdown has fired.
    pub fn fired(&self) -> bool {
        *lock(&self.0.countdown) == Countdown::Fired
    }

    /// Turns both switches and the countdown off (the sync delay stays).
    pub fn heal(&self) {
        self.fail_writes(false);
        self.fail_syncs(false);
        *lock(&self.0.countdown) = Countdown::Off;
    }

    /// Makes each `sync_data` block its thread for `delay` first (a slow disk).
    pub fn delay_syncs(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.0.sync_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// From now on each `sync_data` blocks its thread until [`Self::release_syncs`]; a sync
    /// that waited `cap` ends the hold itself (so a test that never releases cannot hang).
    pub fn hold_syncs(&self, cap: Duration) {
        let mut hold = lock(&self.0.hold);
        hold.on = true;
        hold.cap = cap;
    }

    /// Ends the hold of [`Self::hold_syncs`], waking the blocked syncs. True when the hold was
    /// still on, false when the cap had already ended it (or none was armed).
    pub fn release_syncs(&self) -> bool {
        let was_on = std::mem::replace(&mut lock(&self.0.hold).on, false);
        self.0.hold_changed.notify_all();
        was_on
    }

    /// The `sync_data` calls that have blocked on a hold so far.
    pub fn held_syncs(&self) -> u64 {
        lock(&self.0.hold).held
    }

    fn wait_while_held(&self) {
        let mut hold = lock(&self.0.hold);
        if !hold.on {
            return;
        }
        hold.held += 1;
        let give_up = Instant::now() + hold.cap;
        while hold.on {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                hold.on = false;
                self.0.hold_changed.notify_all();
                break;
            }
            hold = match self.0.hold_changed.wait_timeout(hold, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Records where the countdown fires, for [`Self::fired_at`].
    pub fn record_backtrace(&self, on: bool) {
        self.0.record_backtrace.store(on, Ordering::SeqCst);
    }

    /// The backtrace of the call the countdown failed first (since it was last armed), when
    /// recording was on.
    pub fn fired_at(&self) -> Option<String> {
        lock(&self.0.backtrace).clone()
    }

    /// `write` calls so far.
    pub fn writes(&self) -> u64 {
        self.0.writes.load(Ordering::SeqCst)
    }

    /// `set_len` calls so far.
    pub fn resizes(&self) -> u64 {
        self.0.resizes.load(Ordering::SeqCst)
    }

    /// `sync_data` calls so far.
    pub fn syncs(&self) -> u64 {
        self.0.syncs.load(Ordering::SeqCst)
    }

    fn charge(&self) -> Verdict {
        let mut c = lock(&self.0.countdown);
        match *c {
            Countdown::Off => Verdict::Pass,
            Countdown::Left(0) => {
                *c = Countdown::Fired;
                drop(c);
                if self.0.record_backtrace.load(Ordering::SeqCst) {
                    *lock(&self.0.backtrace) = Some(Backtrace::force_capture().to_string());
                }
                Verdict::Fire
            }
            Countdown::Left(n) => {
                *c = Countdown::Left(n - 1);
                Verdict::Pass
            }
            Countdown::Fired => Verdict::Fail,
        }
    }
}

fn injected(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected {what} failure"))
}

/// A redb storage whose writes, resizes and syncs fail when its [`DiskFaults`] say so.
#[derive(Debug)]
pub struct FaultyStorage<S> {
    inner: S,
    faults: DiskFaults,
}

impl<S: StorageBackend> FaultyStorage<S> {
    /// Wraps `inner`, taking faults from `faults`.
    pub fn new(inner: S, faults: DiskFaults) -> Self {
        FaultyStorage { inner, faults }
    }

    /// The shared switchboard.
    pub fn faults(&self) -> &DiskFaults {
        &self.faults
    }
}

impl FaultyStorage<FileBackend> {
    /// The file at `path` (created if missing), with faults from `faults`.
    pub fn open_file(path: &Path, faults: DiskFaults) -> IoResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(FaultyStorage::new(inner, faults))
    }
}

impl<S: StorageBackend> StorageBackend for FaultyStorage<S> {
    fn len(&self) -> IoResult<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        self.faults.0.resizes.fetch_add(1, Ordering::SeqCst);
        if self.faults.0.fail_writes.load(Ordering::SeqCst) {
            return Err(injected("set_len"));
        }
        if self.faults.charge() != Verdict::Pass {
            return Err(injected("disk"));
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> IoResult<()> {
        self.faults.0.syncs.fetch_add(1, Ordering::SeqCst);
        let delay = self.faults.0.sync_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        self.faults.wait_while_held();
        if self.faults.0.fail_syncs.load(Ordering::SeqCst) {
            return Err(injected("fsync"));
        }
        if self.faults.charge() != Verdict::Pass {
            return Err(injected("disk"));
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.faults.0.writes.fetch_add(1, Ordering::SeqCst);
        if self.faults.0.fail_writes.load(Ordering::SeqCst) {
            return Err(injected("write"));
        }
        match self.faults.charge() {
            Verdict::Pass => self.inner.write(offset, data),
            Verdict::Fire => {
                self.inner.write(offset, &data[..data.len() / 2])?;
                Err(injected("disk"))
            }
            Verdict::Fail => Err(injected("disk")),
        }
    }

    fn close(&self) -> IoResult<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(s, e)
    }

    fn try_lock_shared_range(
        &self,
        s: Bound<u64>,
        e: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }

    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(s, e)
    }

    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(s, e)
    }

    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(s, e)
    }

    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

/// An in-memory redb storage; clones share the bytes.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage(Arc<Mutex<Vec<u8>>>);

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// A storage holding `bytes` (an earlier [`Self::image`]).
    pub fn from_image(bytes: Vec<u8>) -> MemoryStorage {
        MemoryStorage(Arc::new(Mutex::new(bytes)))
    }

    /// A copy of the bytes as they are now.
    pub fn image(&self) -> Vec<u8> {
        lock(&self.0).clone()
    }
}

fn range(offset: u64, len: usize) -> IoResult<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(std::io::Error::other)?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| std::io::Error::other("range overflows"))?;
    Ok(start..end)
}

impl StorageBackend for MemoryStorage {
    fn len(&self) -> IoResult<u64> {
        Ok(lock(&self.0).len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        let data = lock(&self.0);
        let src = data
            .get(range(offset, out.len())?)
            .ok_or_else(|| std::io::Error::other("read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        lock(&self.0).resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> IoResult<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        let r = range(offset, data.len())?;
        let mut disk = lock(&self.0);
        if disk.len() < r.end {
            disk.resize(r.end, 0);
        }
        disk[r].copy_from_slice(data);
        Ok(())
    }

    fn try_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, redb::BackendError> {
        Ok(true)
    }

    fn try_lock_shared_range(
        &self,
        _: Bound<u64>,
        _: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        Ok(true)
    }

    fn lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), redb::BackendError> {
        Ok(())
    }

    fn lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), redb::BackendError> {
        Ok(())
    }

    fn unlock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), redb::BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn message(e: std::io::Error) -> String {
        e.to_string()
    }

    #[test]
    fn memory_storage_grows_reads_and_copies() {
        let m = MemoryStorage::new();
        m.write(4, b"abcd").unwrap();
        assert_eq!(m.len().unwrap(), 8);
        let mut out = [9u8; 8];
        m.read(0, &mut out).unwrap();
        assert_eq!(&out, b"\0\0\0\0abcd");
        assert!(m.read(6, &mut [0u8; 4]).is_err(), "read past the end");
        let image = m.image();
        m.set_len(2).unwrap();
        assert_eq!(m.len().unwrap(), 2);
        let copy = MemoryStorage::from_image(image);
        assert_eq!(copy.len().unwrap(), 8);
        assert!(m
            .clone()
            .try_lock_range(Bound::Unbounded, Bound::Unbounded)
            .unwrap());
    }

    #[test]
    fn switches_fail_their_calls_until_off() {
        let faults = DiskFaults::new();
        let s = FaultyStorage::new(MemoryStorage::new(), faults.clone());
        faults.fail_writes(true);
        assert_eq!(
            message(s.write(0, b"x").unwrap_err()),
            "injected write failure"
        );
        assert_eq!(
            message(s.set_len(10).unwrap_err()),
            "injected set_len failure"
        );
        s.sync_data().unwrap();
        assert_eq!(s.len().unwrap(), 0, "nothing landed");
        faults.fail_writes(false);
        faults.fail_syncs(true);
        s.write(0, b"x").unwrap();
        assert_eq!(
            message(s.sync_data().unwrap_err()),
            "injected fsync failure"
        );
        faults.heal();
        s.sync_data().unwrap();
        assert_eq!(
            (faults.writes(), faults.resizes(), faults.syncs()),
            (2, 1, 3)
        );
        assert!(!faults.fired());
    }

    #[test]
    fn the_countdown_tears_the_first_failing_write_and_fails_every_later_call() {
        let faults = DiskFaults::new();
        let disk = MemoryStorage::new();
        let s = FaultyStorage::new(disk.clone(), faults.clone());
        faults.record_backtrace(true);
        faults.fail_from_call(3);
        s.write(0, b"aaaa").unwrap();
        s.sync_data().unwrap();
        assert!(!faults.fired());
        let err = s.write(4, b"bbbb").unwrap_err();
        assert_eq!(message(err), "injected disk failure");
        assert!(faults.fired());
        assert!(faults.fired_at().is_some());
        assert_eq!(disk.image(), b"aaaabb", "torn: half of the write landed");
        assert!(s.write(6, b"cc").is_err());
        assert!(s.set_len(100).is_err());
        assert!(s.sync_data().is_err());
        assert_eq!(disk.image(), b"aaaabb", "later failures land nothing");
        faults.heal();
        s.write(6, b"cc").unwrap();
        assert_eq!(disk.image(), b"aaaabbcc");
    }

    #[test]
    fn a_countdown_firing_on_a_sync_tears_nothing() {
        let faults = DiskFaults::new();
        let disk = MemoryStorage::new();
        let s = FaultyStorage::new(disk.clone(), faults.clone());
        faults.fail_from_call(0);
        assert!(s.sync_data().is_err());
        assert!(faults.fired());
        assert!(faults.fired_at().is_none(), "not recorded unless asked");
        assert!(s.write(0, b"ab").is_err());
        assert!(disk.image().is_empty());
    }

    #[test]
    fn syncs_can_be_slow() {
        let faults = DiskFaults::new();
        let s = FaultyStorage::new(MemoryStorage::new(), faults.clone());
        faults.delay_syncs(Duration::from_millis(30));
        let started = Instant::now();
        s.sync_data().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_file_storage_fails_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let faults = DiskFaults::new();
        let s = FaultyStorage::open_file(&dir.path().join("f"), faults.clone()).unwrap();
        s.write(0, b"abc").unwrap();
        faults.fail_syncs(true);
        assert!(s.sync_data().is_err());
        faults.fail_syncs(false);
        s.sync_data().unwrap();
        let mut out = [0u8; 3];
        s.read(0, &mut out).unwrap();
        assert_eq!(&out, b"abc");
        assert!(std::ptr::eq(s.faults().0.as_ref(), faults.0.as_ref()));
    }

    #[test]
    fn redb_runs_on_it_and_reopens_from_an_image() {
        use redb::{Database, ReadableDatabase, TableDefinition};
        const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");
        let disk = MemoryStorage::new();
        let faults = DiskFaults::new();
        {
            let db = Database::builder()
                .create_with_backend(FaultyStorage::new(disk.clone(), faults.clone()))
                .unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(T)
                .unwrap()
                .insert(&b"k"[..], &b"v"[..])
                .unwrap();
            w.commit().unwrap();
            // The commit's writes fail: the image keeps the last committed state.
            faults.fail_writes(true);
            let w = db.begin_write().unwrap();
            w.open_table(T)
                .unwrap()
                .insert(&b"k"[..], &b"lost"[..])
                .unwrap();
            assert!(w.commit().is_err());
        }
        let db = Database::builder()
            .create_with_backend(MemoryStorage::from_image(disk.image()))
            .unwrap();
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        assert_eq!(t.get(&b"k"[..]).unwrap().unwrap().value(), b"v");
    }
}
