//! Fault injection for tests and fuzzers, written once.
//!
//! - [`backend`]: [`FaultyBackend`], a decorator over any [`kv_traits::Backend`] that fails a
//!   commit before it reaches the engine or after the engine committed, fails a `put`, delays
//!   commits and `begin_write`, and counts calls; faults are armed on a shared [`Faults`] handle.
//! - [`browser`]: Debian's Chromium and `playwright-core`, installed by
//!   `scripts/install-browser.sh`, for tests that drive a real browser.
//! - [`clients`]: the real KV clients (Deno, `@deno/kv` on Node) installed by
//!   `scripts/install-test-clients.sh`.
//! - [`postgres`]: the PostgreSQL server of the tests (`KV_TEST_POSTGRES_URL`, else a throwaway
//!   cluster started by `scripts/start-postgres-test-server.sh`) and fresh schema names.
//! - [`s3`]: the S3-compatible server of the tests (moto, started by
//!   `scripts/start-s3-test-server.sh`) and fresh buckets on it.
//! - [`shared`]: [`SharedStore`], one in-process store opened by several databases as if each
//!   were a server process on one networked database (tests of the shared-store semantics).
//! - `storage` (cargo feature `redb`): `FaultyStorage`, a decorator over any redb
//!   `StorageBackend` whose writes, resizes and syncs fail on demand (by switch, or from the
//!   n-th call on, tearing the first failing write), and `MemoryStorage`, an in-memory redb
//!   storage whose bytes can be copied to simulate a crash.
//!
//! ```
//! use kv_engine_memory::MemoryBackend;
//! use kv_test_support::{Fault, FaultyBackend};
//! use kv_traits::{Backend, BackendError};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let backend = FaultyBackend::new(MemoryBackend::new());
//! let faults = backend.faults().clone(); // keeps working after `backend` moves into a Db
//! faults.fail_next(Fault::CommitAfter);
//! let mut w = backend.begin_write().await.unwrap();
//! w.put(b"k", b"v").await.unwrap();
//! assert!(matches!(w.commit().await, Err(BackendError::Io(_))));
//! // The engine has the write although the caller saw an error.
//! let mut r = backend.begin_read().await.unwrap();
//! assert_eq!(r.get(b"k").await.unwrap(), Some(b"v".to_vec()));
//! assert_eq!(faults.calls().committed, 1);
//! # });
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod browser;
pub mod clients;
pub mod postgres;
pub mod s3;
pub mod script;
pub mod shared;
#[cfg(feature = "redb")]
pub mod storage;

pub use backend::{Calls, Fault, Faults, FaultyBackend};
pub use shared::{SharedHandle, SharedStore};
