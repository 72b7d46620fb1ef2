//! The runner of the backend contract ([`crate::backend`]): every case on a fresh backend from
//! the engine's factory and on a runtime of its own (some need a single thread, to catch an
//! engine that blocks instead of awaiting), failures collected into one report, and the
//! [`crate::backend_contract_tests!`] macro an engine calls.

use std::sync::Arc;

use futures::future::BoxFuture;
use kv_traits::Backend;

use crate::harness::{run_one, selected, BackendFactory, ReopenableBackend, SuiteReport};

/// The Tokio runtime a backend contract test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// One thread: a call that blocks it instead of awaiting stalls every task, so waiting
    /// tests also check that the engine waits without blocking.
    CurrentThread,
    /// Two worker threads: spawned tasks call the engine in parallel.
    MultiThread,
}

/// What a backend contract test takes.
#[derive(Clone, Copy)]
pub enum ContractTest {
    /// A fresh backend.
    Backend(for<'a> fn(&'a dyn Backend) -> BoxFuture<'a, ()>),
    /// A fresh backend shared with the tasks the test spawns.
    Shared(fn(Arc<dyn Backend>) -> BoxFuture<'static, ()>),
    /// A fresh store it closes and opens again (skipped when the factory cannot reopen).
    Reopen(for<'a> fn(&'a dyn ReopenableBackend) -> BoxFuture<'a, ()>),
}

/// One test of the [`crate::backend`] contract, with the runtime it needs.
#[derive(Clone, Copy)]
pub struct ContractCase {
    /// `backend::<function>`.
    pub name: &'static str,
    /// The runtime it runs on.
    pub flavor: Flavor,
    /// The test.
    pub test: ContractTest,
}

macro_rules! contract_cases {
    ($($kind:ident $flavor:ident $f:ident),* $(,)?) => {
        vec![$(contract_cases!(@case $kind $flavor $f)),*]
    };
    (@case Backend $flavor:ident $f:ident) => {{
        fn run<'a>(b: &'a dyn Backend) -> BoxFuture<'a, ()> {
            Box::pin(crate::backend::$f(b))
        }
        contract_cases!(@make Backend $flavor $f run)
    }};
    (@case Shared $flavor:ident $f:ident) => {{
        fn run(b: Arc<dyn Backend>) -> BoxFuture<'static, ()> {
            Box::pin(crate::backend::$f(b))
        }
        contract_cases!(@make Shared $flavor $f run)
    }};
    (@case Reopen $flavor:ident $f:ident) => {{
        fn run<'a>(s: &'a dyn ReopenableBackend) -> BoxFuture<'a, ()> {
            Box::pin(crate::backend::$f(s))
        }
        contract_cases!(@make Reopen $flavor $f run)
    }};
    (@make $kind:ident $flavor:ident $f:ident $run:ident) => {
        ContractCase {
            name: concat!("backend::", stringify!($f)),
            flavor: Flavor::$flavor,
            test: ContractTest::$kind($run),
        }
    };
}

/// Every test of the [`crate::backend`] contract, by name: what [`run_backend_contract`] runs.
pub fn backend_contract_cases() -> Vec<ContractCase> {
    contract_cases![
        Backend MultiThread read_your_writes,
        Backend MultiThread snapshot_is_taken_at_begin,
        Shared MultiThread snapshot_holds_while_a_write_commits,
        Backend MultiThread many_snapshots_each_keep_their_state,
        Backend CurrentThread reads_do_not_wait_for_the_writer,
        Backend MultiThread drop_rolls_back_and_frees_the_writer,
        Backend MultiThread scan_is_bytewise_unsigned,
        Backend MultiThread scan_limits_reverse_and_bounds,
        Backend MultiThread empty_and_inverted_ranges,
        Backend MultiThread large_and_empty_values,
        Backend MultiThread random_operations_match_a_model,
        Shared CurrentThread begin_write_waits_for_the_open_write,
        Shared MultiThread concurrent_writers_lose_no_update,
        Backend MultiThread close_refuses_later_calls,
        Shared MultiThread close_during_an_open_write,
        Reopen MultiThread committed_data_survives_reopen,
        Reopen MultiThread data_survives_drop_without_close,
    ]
}

/// The optional tests of the [`crate::backend`] contract (promises beyond the trait that an
/// engine opts into, see [`crate::backend_contract_tests!`]), by name.
pub fn optional_backend_contract_cases() -> Vec<ContractCase> {
    contract_cases![Reopen MultiThread close_waits_for_the_open_write]
}

fn runtime(flavor: Flavor) -> tokio::runtime::Runtime {
    match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    }
    .enable_all()
    .build()
    .unwrap_or_else(|e| panic!("cannot build a Tokio runtime: {e}"))
}

/// Runs `case` on a fresh backend (or store) from `factory`, on a new runtime of the case's
/// flavour, recording the outcome in `report` (nothing when a reopen test has no store).
fn run_contract_case(report: &mut SuiteReport, factory: &dyn BackendFactory, case: &ContractCase) {
    runtime(case.flavor).block_on(async {
        let name = case.name;
        match case.test {
            ContractTest::Backend(test) => {
                let fut = async {
                    let backend = fresh_backend(factory).await;
                    test(&*backend).await;
                    let _ = backend.close().await;
                };
                run_one(report, name, fut).await;
            }
            ContractTest::Shared(test) => {
                let fut = async {
                    let backend = fresh_backend(factory).await;
                    test(backend.clone()).await;
                    let _ = backend.close().await;
                };
                run_one(report, name, fut).await;
            }
            ContractTest::Reopen(test) => match factory.create_reopenable().await {
                Ok(Some(store)) => run_one(report, name, test(&*store)).await,
                Ok(None) => {}
                Err(e) => report.failed.push((
                    name.to_string(),
                    format!("creating a reopenable store failed: {e}"),
                )),
            },
        }
    });
}

async fn fresh_backend(factory: &dyn BackendFactory) -> Arc<dyn Backend> {
    factory
        .create()
        .await
        .unwrap_or_else(|e| panic!("creating the backend failed: {e}"))
}

/// Runs every [`backend_contract_cases`] test against backends from `factory`, each on a fresh
/// backend and its own runtime, and returns the report. The reopen tests run when the factory
/// supports reopening. Blocks: call it from a plain `#[test]`, not inside a runtime.
pub fn backend_contract_report(factory: &dyn BackendFactory) -> SuiteReport {
    let mut report = SuiteReport::default();
    for case in backend_contract_cases() {
        if selected(case.name) {
            run_contract_case(&mut report, factory, &case);
        }
    }
    report
}

/// Runs the whole backend contract (see [`backend_contract_report`]) and panics listing all
/// failures.
pub fn run_backend_contract(factory: &dyn BackendFactory) {
    backend_contract_report(factory).assert_ok();
}

/// Runs the optional contract test `backend::<name>` (see
/// [`optional_backend_contract_cases`]) against `factory` and panics if it fails, does not
/// exist, or could not run (a reopen test with a factory that cannot reopen).
pub fn run_optional_backend_test(factory: &dyn BackendFactory, name: &str) {
    let full = format!("backend::{name}");
    let Some(case) = optional_backend_contract_cases()
        .into_iter()
        .find(|c| c.name == full)
    else {
        panic!("{full} is not an optional backend contract test");
    };
    if !selected(case.name) {
        return;
    }
    let mut report = SuiteReport::default();
    run_contract_case(&mut report, factory, &case);
    report.assert_ok();
    assert_eq!(
        report.passed.len(),
        1,
        "{full} did not run: it needs a factory that can reopen a store"
    );
}

/// Generates an engine's backend contract test: `backend_contract`, running every
/// [`crate::backend`] test (see [`run_backend_contract`]), plus one `#[test]` per optional
/// contract test the engine promises, named after it.
///
/// The first argument is an expression whose value implements [`BackendFactory`] (evaluated
/// in each generated test), for example `SharedInstanceFactory(|| async { ... })` or
/// `FileFactory::temporary(open).unwrap()`; a factory that can reopen stores also runs the
/// reopen tests.
///
/// ```no_run
/// # struct MyBackend;
/// # #[async_trait::async_trait] impl kv_traits::Backend for MyBackend {
/// #   async fn begin_read(&self) -> Result<Box<dyn kv_traits::ReadTxn>, kv_traits::BackendError> { todo!() }
/// #   async fn begin_write(&self) -> Result<Box<dyn kv_traits::WriteTxn>, kv_traits::BackendError> { todo!() } }
/// # fn open(_: &std::path::Path) -> Result<MyBackend, kv_traits::BackendError> { Ok(MyBackend) }
/// use kv_conformance::harness::FileFactory;
///
/// kv_conformance::backend_contract_tests!(
///     FileFactory::temporary(open).unwrap(),
///     optional: [close_waits_for_the_open_write],
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! backend_contract_tests {
    ($factory:expr $(, optional: [$($optional:ident),* $(,)?])? $(,)?) => {
        #[test]
        fn backend_contract() {
            let factory = $factory;
            $crate::contract::run_backend_contract(&factory);
        }

        $($(
            #[test]
            fn $optional() {
                // Fails to compile when the name is not a test of the contract.
                let _ = $crate::backend::$optional;
                let factory = $factory;
                $crate::contract::run_optional_backend_test(&factory, stringify!($optional));
            }
        )*)?
    };
}
