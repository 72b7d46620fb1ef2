//! The shared conformance suite of the Deno KV database.
//!
//! Every storage engine, and any third-party [`kv_traits::Backend`] or [`kv_traits::Database`],
//! runs the same public tests, so they all behave as the spec (`semantics.md`) says:
//!
//! - one module per feature area — [`read`], [`write`](mod@write), [`sum`], [`expiry`], [`watch`],
//!   [`queue`], [`limits`], [`persistence`], [`background`] — each made of `pub async fn` tests
//!   taking what they need: a `&dyn Database` (so they also run against a remote database), a
//!   [`harness::ClockedDb`] (a [`kv_db::Db`] with a [`kv_traits::ManualClock`]), a
//!   [`kv_db::Db`] on the system clock, or a [`harness::ReopenableBackend`];
//! - entry points that run everything, each test on a fresh database, collecting every failure:
//!   [`harness::run_backend_suite`] and [`harness::run_database_suite`];
//! - [`model`]: a proptest state-machine test comparing random operation sequences against an
//!   independent model;
//! - [`backend_conformance_tests!`], which generates an engine's tests in one line;
//! - [`backend`](mod@backend): the raw storage contract of [`kv_traits::Backend`] (snapshots,
//!   read-your-writes, rollback, bytewise scans, one writer, close, reopen), with its runner
//!   [`contract::run_backend_contract`] and the macro [`backend_contract_tests!`];
//! - [`crash`]: the SIGKILL crash test for file engines ([`crash_tests!`]), built on
//!   [`child`], the primitive that re-runs a test of the current binary as a child process.
//!
//! # Writing your own engine
//!
//! An engine crate adds `kv-conformance` (and `kv-traits`) as dev-dependencies and three small
//! test files; `open` is its "open the store at this path" function (in-memory engines use
//! [`harness::SharedInstanceFactory`] instead of [`harness::FileFactory`] and skip the crash
//! test):
//!
//! ```no_run
//! # mod my_engine { pub struct MyBackend;
//! # #[async_trait::async_trait] impl kv_traits::Backend for MyBackend {
//! #   async fn begin_read(&self) -> Result<Box<dyn kv_traits::ReadTxn>, kv_traits::BackendError> { todo!() }
//! #   async fn begin_write(&self) -> Result<Box<dyn kv_traits::WriteTxn>, kv_traits::BackendError> { todo!() } }
//! # impl MyBackend { pub fn open(_: &std::path::Path) -> Result<Self, kv_traits::BackendError> { Ok(MyBackend) } } }
//! # mod contract {
//! # use super::my_engine::MyBackend;
//! # fn open(path: &std::path::Path) -> Result<MyBackend, kv_traits::BackendError> { MyBackend::open(path) }
//! // tests/contract.rs: the raw Backend contract, each test on a fresh file; the reopen tests
//! // reopen it. `optional` lists promises beyond the trait the engine makes.
//! kv_conformance::backend_contract_tests!(
//!     kv_conformance::FileFactory::temporary(open).unwrap(),
//!     optional: [close_waits_for_the_open_write],
//! );
//! # }
//! # mod conformance {
//! # use super::my_engine::MyBackend;
//! # fn open(path: &std::path::Path) -> Result<MyBackend, kv_traits::BackendError> { MyBackend::open(path) }
//! // tests/conformance.rs: the Deno KV semantics over the engine, and the model test.
//! kv_conformance::backend_conformance_tests!(kv_conformance::FileFactory::temporary(open).unwrap());
//! # }
//! # mod crash {
//! # use super::my_engine::MyBackend;
//! # fn open(path: &std::path::Path) -> Result<MyBackend, kv_traits::BackendError> { MyBackend::open(path) }
//! // tests/crash.rs: SIGKILL a child process writing through a `Db`, reopen, check every
//! // acknowledged write and message (5 rounds; `crash_tests!(open, CrashConfig { .. })` to tune).
//! kv_conformance::crash_tests!(open);
//! # }
//! # fn main() {}
//! ```
//!
//! Engine-specific behaviour (file format, durability options, fault injection) stays in the
//! engine's own tests. The sections below show the same pieces spelled out.
//!
//! # Adopting the suite in an engine
//!
//! Add `kv-conformance` as a dev-dependency and create `tests/conformance.rs`:
//!
//! ```no_run
//! // tests/conformance.rs of an engine crate.
//! use kv_traits::BackendError;
//! # mod my_engine { pub struct MyBackend; impl MyBackend { pub fn new() -> Self { MyBackend } }
//! # #[async_trait::async_trait] impl kv_traits::Backend for MyBackend {
//! #   async fn begin_read(&self) -> Result<Box<dyn kv_traits::ReadTxn>, kv_traits::BackendError> { todo!() }
//! #   async fn begin_write(&self) -> Result<Box<dyn kv_traits::WriteTxn>, kv_traits::BackendError> { todo!() } } }
//! use my_engine::MyBackend;
//!
//! // Generates `conformance_suite` (every test, each on a fresh backend) and
//! // `conformance_model` (the state-machine test, 64 cases).
//! kv_conformance::backend_conformance_tests!(|| async { Ok::<_, BackendError>(MyBackend::new()) });
//! # fn main() {}
//! ```
//!
//! An engine whose data survives a restart should also run the [`persistence`] tests, which
//! close a store and open it again. A file-based engine gets them from
//! [`harness::FileFactory`] (each backend is a new path in a directory the test keeps alive):
//!
//! ```no_run
//! # mod my_engine { pub struct MyBackend;
//! # #[async_trait::async_trait] impl kv_traits::Backend for MyBackend {
//! #   async fn begin_read(&self) -> Result<Box<dyn kv_traits::ReadTxn>, kv_traits::BackendError> { todo!() }
//! #   async fn begin_write(&self) -> Result<Box<dyn kv_traits::WriteTxn>, kv_traits::BackendError> { todo!() } }
//! # impl MyBackend { pub fn open(_: &std::path::Path) -> Result<Self, kv_traits::BackendError> { Ok(MyBackend) } } }
//! use kv_conformance::harness::{block_on, FileFactory};
//! use kv_conformance::{run_backend_suite, run_model_test, ModelConfig};
//! use my_engine::MyBackend;
//!
//! #[test]
//! fn conformance_suite() {
//!     let dir = std::env::temp_dir().join("my-engine-conformance"); // or a tempfile::TempDir
//!     std::fs::create_dir_all(&dir).unwrap();
//!     block_on(run_backend_suite(&FileFactory::new(&dir, |path| MyBackend::open(path))));
//! }
//!
//! #[test]
//! fn conformance_model() {
//!     let dir = std::env::temp_dir().join("my-engine-model");
//!     std::fs::create_dir_all(&dir).unwrap();
//!     run_model_test(&FileFactory::new(&dir, |path| MyBackend::open(path)), ModelConfig::default());
//! }
//! # fn main() {}
//! ```
//!
//! Other engines implement [`harness::BackendFactory`] themselves, returning from
//! [`harness::BackendFactory::create_reopenable`] a [`harness::ReopenableBackend`] that opens the
//! same store each time. An in-memory engine can wrap its constructor in
//! [`harness::SharedInstanceFactory`] to run the persistence tests against one instance reopened
//! by a new [`kv_db::Db`] (checking the `Db`'s reload logic, not durability).
//!
//! A `Database` that is not built from a `Backend` (a remote client) runs the database-level
//! tests:
//!
//! ```no_run
//! use std::sync::Arc;
//! use kv_traits::{Database, KvError};
//! # async fn connect() -> Result<Arc<dyn Database>, KvError> { todo!() }
//! # async fn example() {
//! kv_conformance::harness::run_database_suite(&|| async { connect().await }).await;
//! # }
//! ```
//!
//! Single tests can be called directly, object_store style:
//!
//! ```no_run
//! # async fn example(db: &kv_db::Db) {
//! kv_conformance::write::failing_mutation_applies_nothing(db).await;
//! # }
//! ```
//!
//! Set `KV_CONFORMANCE_FILTER=<substring>` to run only the matching tests, and
//! `KV_CONFORMANCE_MODEL_CASES=<n>` to change the number of model cases.

#![warn(missing_docs)]

pub mod backend;
pub mod background;
pub mod child;
pub mod contract;
pub mod crash;
pub mod expiry;
pub mod harness;
pub mod limits;
pub mod model;
pub mod persistence;
pub mod queue;
pub mod read;
pub mod sum;
pub mod util;
pub mod watch;
pub mod write;

pub use contract::run_backend_contract;
pub use crash::CrashConfig;
pub use harness::{
    run_backend_suite, run_database_suite, BackendFactory, ClockedDb, DatabaseFactory, FileFactory,
    ReopenableBackend, SharedInstance, SharedInstanceFactory,
};
pub use model::{run_model_test, ModelConfig};
