//! How the suite gets databases: factories for backends and databases, the manual-clock
//! harness, the runner that executes every test on a fresh database and collects failures, and
//! the [`crate::backend_conformance_tests!`] macro. (The backend contract's runner is
//! [`crate::contract`].)

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use kv_db::{Db, DbConfig};
use kv_traits::{
    Backend, BackendError, Clock, Database, KvError, Limits, ManualClock, ReadTxn, WriteTxn,
};

/// Creates fresh backends for the suite. Implemented for every closure
/// `Fn() -> impl Future<Output = Result<impl Backend, BackendError>>`.
#[async_trait]
pub trait BackendFactory: Send + Sync {
    /// A new, empty backend.
    async fn create(&self) -> Result<Arc<dyn Backend>, BackendError>;

    /// For engines whose data survives a reopen: a new, empty store that can be opened, closed
    /// and opened again. `None` (the default) skips the persistence tests.
    async fn create_reopenable(&self) -> Result<Option<Box<dyn ReopenableBackend>>, BackendError> {
        Ok(None)
    }
}

#[async_trait]
impl<F, Fut, B> BackendFactory for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<B, BackendError>> + Send,
    B: Backend,
{
    async fn create(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(self().await?))
    }
}

/// One store that can be opened again after it was closed (a file, a directory, a server).
///
/// The persistence tests call [`ReopenableBackend::open`], use the backend through a
/// [`Db`], close the `Db` (which closes the backend) and open it again.
#[async_trait]
pub trait ReopenableBackend: Send + Sync {
    /// Opens the store; the first call creates it empty.
    async fn open(&self) -> Result<Arc<dyn Backend>, BackendError>;
}

#[async_trait]
impl<F, Fut, B> ReopenableBackend for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<B, BackendError>> + Send,
    B: Backend,
{
    async fn open(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(self().await?))
    }
}

/// A [`ReopenableBackend`] for engines without durable storage: every `open` returns the same
/// instance, and `close` is ignored so the instance survives the [`Db`] being closed. This
/// checks that a [`Db`] reloads its state (version counter, queue) from the backend, not that the
/// engine persists anything.
pub struct SharedInstance(Arc<dyn Backend>);

impl SharedInstance {
    /// Wraps one backend instance.
    pub fn new(backend: impl Backend) -> Self {
        SharedInstance(Arc::new(backend))
    }
}

struct IgnoreClose(Arc<dyn Backend>);

#[async_trait]
impl Backend for IgnoreClose {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        self.0.begin_read().await
    }
    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        self.0.begin_write().await
    }
    async fn close(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[async_trait]
impl ReopenableBackend for SharedInstance {
    async fn open(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(IgnoreClose(self.0.clone())))
    }
}

/// A [`BackendFactory`] for in-memory engines: `create` calls the closure, and
/// `create_reopenable` wraps a fresh instance in a [`SharedInstance`], so the persistence tests
/// also run (checking the [`Db`]'s reload logic).
pub struct SharedInstanceFactory<F>(pub F);

#[async_trait]
impl<F, Fut, B> BackendFactory for SharedInstanceFactory<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<B, BackendError>> + Send,
    B: Backend,
{
    async fn create(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new((self.0)().await?))
    }
    async fn create_reopenable(&self) -> Result<Option<Box<dyn ReopenableBackend>>, BackendError> {
        Ok(Some(Box::new(SharedInstance::new((self.0)().await?))))
    }
}

/// A [`BackendFactory`] for file-based engines: every backend is a new file (or directory)
/// `<dir>/db-<n>` opened with `open`, and the persistence tests reopen the same path.
///
/// ```no_run
/// # struct MyBackend;
/// # #[async_trait::async_trait] impl kv_traits::Backend for MyBackend {
/// #   async fn begin_read(&self) -> Result<Box<dyn kv_traits::ReadTxn>, kv_traits::BackendError> { todo!() }
/// #   async fn begin_write(&self) -> Result<Box<dyn kv_traits::WriteTxn>, kv_traits::BackendError> { todo!() } }
/// # impl MyBackend { fn open(_: &std::path::Path) -> Result<Self, kv_traits::BackendError> { Ok(MyBackend) } }
/// # let dir = std::env::temp_dir();
/// // `dir` is a temporary directory kept alive for the whole test.
/// let factory = kv_conformance::harness::FileFactory::new(&dir, |path| MyBackend::open(path));
/// kv_conformance::harness::block_on(kv_conformance::run_backend_suite(&factory));
/// ```
pub struct FileFactory<F> {
    dir: std::path::PathBuf,
    next: std::sync::atomic::AtomicU64,
    open: Arc<F>,
    /// The temporary directory `dir` is, when the factory made it; removed with the factory.
    _temp: Option<tempfile::TempDir>,
}

impl<F> FileFactory<F> {
    /// Backends under `dir` (which must exist), opened with `open`.
    pub fn new<B>(dir: impl AsRef<std::path::Path>, open: F) -> Self
    where
        F: Fn(&std::path::Path) -> Result<B, BackendError>,
    {
        FileFactory {
            dir: dir.as_ref().to_path_buf(),
            next: std::sync::atomic::AtomicU64::new(0),
            open: Arc::new(open),
            _temp: None,
        }
    }

    /// Backends in a new temporary directory that lives as long as the factory (so a test can
    /// write `FileFactory::temporary(open)?` in one expression, as the macros take it).
    pub fn temporary<B>(open: F) -> std::io::Result<Self>
    where
        F: Fn(&std::path::Path) -> Result<B, BackendError>,
    {
        let temp = tempfile::Builder::new()
            .prefix("kv-conformance-")
            .tempdir()?;
        let mut factory = Self::new(temp.path(), open);
        factory._temp = Some(temp);
        Ok(factory)
    }

    fn fresh_path(&self) -> std::path::PathBuf {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("db-{n}"))
    }
}

struct FileStore<F> {
    path: std::path::PathBuf,
    open: Arc<F>,
}

#[async_trait]
impl<F, B> ReopenableBackend for FileStore<F>
where
    F: Fn(&std::path::Path) -> Result<B, BackendError> + Send + Sync + 'static,
    B: Backend,
{
    async fn open(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new((self.open)(&self.path)?))
    }
}

#[async_trait]
impl<F, B> BackendFactory for FileFactory<F>
where
    F: Fn(&std::path::Path) -> Result<B, BackendError> + Send + Sync + 'static,
    B: Backend,
{
    async fn create(&self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new((self.open)(&self.fresh_path())?))
    }
    async fn create_reopenable(&self) -> Result<Option<Box<dyn ReopenableBackend>>, BackendError> {
        Ok(Some(Box::new(FileStore {
            path: self.fresh_path(),
            open: self.open.clone(),
        })))
    }
}

/// Creates fresh databases for [`run_database_suite`]. Implemented for every closure
/// `Fn() -> impl Future<Output = Result<Arc<dyn Database>, KvError>>`.
#[async_trait]
pub trait DatabaseFactory: Send + Sync {
    /// A new, empty database.
    async fn create(&self) -> Result<Arc<dyn Database>, KvError>;
}

#[async_trait]
impl<F, Fut> DatabaseFactory for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<Arc<dyn Database>, KvError>> + Send,
{
    async fn create(&self) -> Result<Arc<dyn Database>, KvError> {
        self().await
    }
}

/// A [`Db`] whose time is a [`ManualClock`] and whose background tasks are off: tests move the
/// clock and call [`ClockedDb::maintain`] themselves.
pub struct ClockedDb {
    /// The database.
    pub db: Db,
    /// Its clock.
    pub clock: Arc<ManualClock>,
}

impl ClockedDb {
    /// Where the manual clock starts (2023-11-14T22:13:20Z).
    pub const START_MS: u64 = 1_700_000_000_000;
    /// The queue lease the harness configures, in ms.
    pub const LEASE_MS: u64 = 10_000;

    /// The configuration the suite uses with `clock`.
    pub fn config(clock: Arc<ManualClock>) -> DbConfig {
        DbConfig {
            limits: Limits::default(),
            clock: clock as Arc<dyn Clock>,
            background_tasks: false,
            queue_lease: Duration::from_millis(Self::LEASE_MS),
            read_only: false,
            ..DbConfig::default()
        }
    }

    /// Opens a database on `backend` with a new clock at [`ClockedDb::START_MS`].
    pub async fn open(backend: impl Backend) -> Result<Self, KvError> {
        Self::open_with_clock(backend, Arc::new(ManualClock::new(Self::START_MS))).await
    }

    /// Opens a database on `backend` with an existing clock (for reopen tests).
    pub async fn open_with_clock(
        backend: impl Backend,
        clock: Arc<ManualClock>,
    ) -> Result<Self, KvError> {
        let db = Db::open(backend, Self::config(clock.clone())).await?;
        Ok(ClockedDb { db, clock })
    }

    /// The database as a trait object.
    pub fn database(&self) -> &dyn Database {
        &self.db
    }

    /// The clock's reading.
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }

    /// Runs one maintenance pass, panicking on error; returns the number of expired keys deleted.
    pub async fn maintain(&self) -> usize {
        self.db
            .run_maintenance()
            .await
            .unwrap_or_else(|e| panic!("run_maintenance failed: {e}"))
    }
}

/// A test that needs only the [`Database`] operations.
pub type DatabaseTest = for<'a> fn(&'a dyn Database) -> BoxFuture<'a, ()>;
/// A test that needs a [`Db`] with a manual clock.
pub type ClockedTest = for<'a> fn(&'a ClockedDb) -> BoxFuture<'a, ()>;
/// A test of a [`Db`] running its background tasks on the system clock.
pub type BackgroundTest = for<'a> fn(&'a Db) -> BoxFuture<'a, ()>;
/// A test that closes and reopens a store.
pub type PersistenceTest = for<'a> fn(&'a dyn ReopenableBackend) -> BoxFuture<'a, ()>;

macro_rules! test_list {
    ($arg:ty => $($m:ident :: $f:ident),* $(,)?) => {
        vec![$({
            fn run<'a>(x: &'a $arg) -> BoxFuture<'a, ()> {
                Box::pin(crate::$m::$f(x))
            }
            (concat!(stringify!($m), "::", stringify!($f)), run as for<'a> fn(&'a $arg) -> BoxFuture<'a, ()>)
        }),*]
    };
}

/// Every test that runs against any [`Database`] (embedded or remote), by name.
pub fn database_tests() -> Vec<(&'static str, DatabaseTest)> {
    test_list![dyn Database =>
        read::empty_database_reads_nothing,
        read::exact_min_of_limit_and_matches,
        read::end_is_exclusive,
        read::reverse_returns_highest_first,
        read::start_not_below_end_is_empty,
        read::bytewise_order_with_00_and_ff,
        read::several_ranges_one_output_each_in_order,
        read::ranges_share_one_snapshot,
        read::single_key_and_prefix_ranges,
        read::values_of_every_encoding_round_trip,
        read::eventual_consistency_reads_the_same,
        write::versionstamps_strictly_increase,
        write::one_versionstamp_per_write_shared_by_all_mutations,
        write::empty_and_check_only_writes_commit,
        write::check_for_absence,
        write::check_current_versionstamp,
        write::failed_check_applies_nothing,
        write::failed_check_reports_its_index,
        write::check_on_unmutated_key,
        write::set_replaces_value_and_expiry,
        write::delete_removes_key,
        write::delete_absent_key_is_ok,
        write::mutations_apply_in_order,
        write::sum_u64_wraps,
        write::min_max_u64,
        write::min_max_reject_non_u64,
        write::versionstamped_key,
        write::versionstamped_key_collision_last_wins,
        write::versionstamped_key_honours_expiry,
        write::failing_mutation_applies_nothing,
        write::failing_write_consumes_no_state,
        write::concurrent_check_and_set_is_serializable,
        write::concurrent_writes_get_distinct_versionstamps,
        write::concurrent_failures_are_isolated,
        read::large_range_pages,
        sum::u64_operand_on_absent_key,
        sum::u64_operand_wraps,
        sum::u64_operand_on_non_u64_value_fails,
        sum::u64_operand_ignores_bounds,
        sum::bytes_operand_is_rejected,
        sum::invalid_v8_operand_is_rejected,
        sum::absent_key_stores_operand_without_bounds,
        sum::absent_key_number_is_stored_as_double,
        sum::bigint_exact_sum,
        sum::bigint_bounds_fail_or_clamp,
        sum::number_sum_and_bounds,
        sum::number_nan_never_out_of_range,
        sum::bounds_of_other_kind_are_rejected,
        sum::number_with_bigint_fails,
        sum::kvu64_with_bigint_compatibility,
        sum::kvu64_with_bigint_outside_rule_fails,
        sum::sum_on_non_number_value_fails,
        sum::empty_bounds_are_no_bounds,
        sum::accepts_v8_versions_13_to_16,
        sum::out_of_range_fails_whole_write,
        expiry::past_expiry_is_hidden_from_reads,
        expiry::limit_counts_only_live_entries,
        expiry::expired_key_is_absent_for_checks,
        expiry::future_expiry_is_visible,
        expiry::expired_set_is_absent_for_later_mutations,
        watch::first_notification_reports_every_key,
        watch::write_produces_notification,
        watch::one_write_one_notification,
        watch::unchanged_keys_are_never_wrong,
        watch::delete_reports_absent,
        watch::slow_watcher_gets_latest_state,
        watch::unrelated_writes_change_nothing,
        watch::too_many_keys_fails,
        watch::dropped_watch_does_not_disturb_writes,
        watch::notifications_never_go_backwards,
        limits::key_size,
        limits::empty_keys,
        limits::value_size,
        limits::read_ranges_and_entries,
        limits::range_limit_zero,
        limits::too_many_checks,
        limits::too_many_mutations,
        limits::total_size,
        limits::watch_keys,
        limits::queue_limits,
        limits::limit_errors_apply_nothing,
        limits::u64_values_are_eight_bytes,
    ]
}

/// Every test that needs a [`ClockedDb`], by name.
pub fn clocked_tests() -> Vec<(&'static str, ClockedTest)> {
    test_list![ClockedDb =>
        expiry::hidden_once_time_passes,
        expiry::maintenance_deletes_with_new_versionstamp,
        expiry::maintenance_notifies_watchers,
        expiry::maintenance_keeps_live_keys,
        expiry::set_without_expiry_clears_it,
        expiry::sum_on_expired_key_treats_it_as_absent,
        expiry::sum_min_max_clear_expiry,
        expiry::maintenance_sweeps_everything_due,
        queue::immediate_delivery,
        queue::delayed_delivery_waits_for_clock,
        queue::deadline_order,
        queue::dequeue_times_out_when_empty,
        queue::enqueue_is_atomic_with_checks,
        queue::finish_success_removes,
        queue::failure_retries_along_schedule,
        queue::default_schedule,
        queue::empty_schedule_dead_letters_at_once,
        queue::dead_letter_without_keys_drops,
        queue::lease_expiry_redelivers,
        queue::stale_lease_is_rejected,
        queue::each_delivery_gets_its_own_lease,
        queue::stale_lease_after_immediate_redelivery,
        queue::closed_database_rejects_calls,
    ]
}

/// Every background (real-time) test, by name.
pub fn background_tests() -> Vec<(&'static str, BackgroundTest)> {
    test_list![Db =>
        background::expired_keys_are_swept_automatically,
        background::waiting_listener_wakes_when_message_is_due,
        background::unfinished_delivery_is_redelivered,
    ]
}

/// Every persistence test, by name.
pub fn persistence_tests() -> Vec<(&'static str, PersistenceTest)> {
    test_list![dyn ReopenableBackend =>
        persistence::data_survives_reopen,
        persistence::versionstamps_increase_after_reopen,
        persistence::queue_survives_reopen,
        persistence::leased_message_redelivered_after_reopen,
        persistence::expiry_survives_reopen,
        persistence::read_only_database_rejects_writes,
        persistence::lease_survives_reopen,
    ]
}

/// How long one test may run before it counts as failed (hung).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of a suite run.
#[derive(Debug, Default)]
pub struct SuiteReport {
    /// Names of the tests that passed.
    pub passed: Vec<String>,
    /// Names and failure messages of the tests that failed.
    pub failed: Vec<(String, String)>,
}

impl SuiteReport {
    /// Panics listing every failed test, if any.
    pub fn assert_ok(&self) {
        if !self.failed.is_empty() {
            let list: Vec<String> = self
                .failed
                .iter()
                .map(|(n, m)| format!("  {n}: {m}"))
                .collect();
            panic!(
                "{} of {} conformance tests failed:\n{}",
                self.failed.len(),
                self.failed.len() + self.passed.len(),
                list.join("\n")
            );
        }
    }
}

pub(crate) fn selected(name: &str) -> bool {
    match std::env::var("KV_CONFORMANCE_FILTER") {
        Ok(f) if !f.is_empty() => name.contains(&f),
        _ => true,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panicked".to_string()
    }
}

pub(crate) async fn run_one(report: &mut SuiteReport, name: &str, fut: impl Future<Output = ()>) {
    let outcome = tokio::time::timeout(TEST_TIMEOUT, AssertUnwindSafe(fut).catch_unwind()).await;
    match outcome {
        Ok(Ok(())) => report.passed.push(name.to_string()),
        Ok(Err(p)) => report.failed.push((name.to_string(), panic_message(&*p))),
        Err(_) => report.failed.push((
            name.to_string(),
            format!("timed out after {TEST_TIMEOUT:?}"),
        )),
    }
}

/// Runs the [`database_tests`] against databases from `factory`, each on a fresh one, and
/// returns the report. Set `KV_CONFORMANCE_FILTER` to run only tests whose name contains it.
pub async fn database_suite_report(factory: &dyn DatabaseFactory) -> SuiteReport {
    let mut report = SuiteReport::default();
    for (name, test) in database_tests() {
        if !selected(name) {
            continue;
        }
        let fut = async {
            let db = factory
                .create()
                .await
                .unwrap_or_else(|e| panic!("creating the database failed: {e}"));
            test(&*db).await;
            let _ = db.close().await;
        };
        run_one(&mut report, name, fut).await;
    }
    report
}

/// Runs every [`Database`]-level test against fresh databases from `factory` and panics listing
/// all failures. For a remote database (KV Connect client) or any other `Database`.
pub async fn run_database_suite(factory: &dyn DatabaseFactory) {
    database_suite_report(factory).await.assert_ok();
}

/// Runs the whole suite over backends from `factory`: the database tests and the manual-clock
/// tests each on a fresh [`ClockedDb`], the background tests on a fresh [`Db`] with the system
/// clock, and the persistence tests when the factory supports reopening. Returns the report.
pub async fn backend_suite_report(factory: &dyn BackendFactory) -> SuiteReport {
    let mut report = SuiteReport::default();
    for (name, test) in database_tests() {
        if !selected(name) {
            continue;
        }
        let fut = async {
            let h = fresh_clocked(factory).await;
            test(&h.db).await;
            let _ = h.db.close().await;
        };
        run_one(&mut report, name, fut).await;
    }
    for (name, test) in clocked_tests() {
        if !selected(name) {
            continue;
        }
        let fut = async {
            let h = fresh_clocked(factory).await;
            test(&h).await;
            let _ = h.db.close().await;
        };
        run_one(&mut report, name, fut).await;
    }
    for (name, test) in background_tests() {
        if !selected(name) {
            continue;
        }
        let fut = async {
            let backend = factory
                .create()
                .await
                .unwrap_or_else(|e| panic!("creating the backend failed: {e}"));
            let db = Db::open(backend, crate::background::background_config())
                .await
                .unwrap_or_else(|e| panic!("Db::open failed: {e}"));
            test(&db).await;
            let _ = db.close().await;
        };
        run_one(&mut report, name, fut).await;
    }
    for (name, test) in persistence_tests() {
        if !selected(name) {
            continue;
        }
        let store = match factory.create_reopenable().await {
            Ok(Some(store)) => store,
            Ok(None) => continue,
            Err(e) => {
                report.failed.push((
                    name.to_string(),
                    format!("creating a reopenable store failed: {e}"),
                ));
                continue;
            }
        };
        run_one(&mut report, name, test(&*store)).await;
    }
    report
}

/// Runs the whole suite (see [`backend_suite_report`]) and panics listing all failures.
pub async fn run_backend_suite(factory: &dyn BackendFactory) {
    backend_suite_report(factory).await.assert_ok();
}

async fn fresh_clocked(factory: &dyn BackendFactory) -> ClockedDb {
    let backend = factory
        .create()
        .await
        .unwrap_or_else(|e| panic!("creating the backend failed: {e}"));
    ClockedDb::open(backend)
        .await
        .unwrap_or_else(|e| panic!("Db::open failed: {e}"))
}

/// Runs `fut` to completion on a new multi-threaded Tokio runtime (two workers, timers on).
/// For plain `#[test]` functions; must not be called from inside a runtime.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a Tokio runtime: {e}"))
        .block_on(fut)
}

/// Generates an engine's conformance tests: `conformance_suite` (the whole suite, see
/// [`run_backend_suite`]) and `conformance_model` (the state-machine test with
/// [`crate::model::ModelConfig::default`]).
///
/// The argument is an expression whose value implements [`BackendFactory`], evaluated in each
/// test, for example `|| async { Ok::<_, kv_traits::BackendError>(MyBackend::new()) }` or
/// `SharedInstanceFactory(...)`. Plain `#[test]` functions are generated, so the engine does not
/// need Tokio as a dev-dependency.
#[macro_export]
macro_rules! backend_conformance_tests {
    ($factory:expr) => {
        #[test]
        fn conformance_suite() {
            let factory = $factory;
            $crate::harness::block_on($crate::harness::run_backend_suite(&factory));
        }

        #[test]
        fn conformance_model() {
            let factory = $factory;
            $crate::model::run_model_test(&factory, $crate::model::ModelConfig::default());
        }
    };
}
