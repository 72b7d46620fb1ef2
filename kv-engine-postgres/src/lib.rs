//! A [`kv_traits::Backend`] on PostgreSQL, for several server processes sharing one database.
//!
//! [`PostgresBackend::connect`] takes a libpq-style URL (see [`PostgresOptions`] for `sslmode`
//! and `sslrootcert`) and opens a pool of connections (tokio-postgres with deadpool-postgres,
//! TLS by rustls). The store is three tables in one schema (see `schema.rs`: `kv`, `kv_meta`,
//! `kv_outcomes`), created at the first open; a store of an unknown or newer format is refused
//! with [`kv_traits::BackendError::UnsupportedFormat`].
//!
//! - **Reads**: [`kv_traits::Backend::begin_read`] starts a `REPEATABLE READ READ ONLY`
//!   transaction on a pooled connection and takes its snapshot at once: it sees every commit
//!   finished before it began, of any process, and nothing later.
//! - **Writes**: [`kv_traits::Backend::begin_write`] starts a `READ COMMITTED` transaction and
//!   takes a transaction-scoped advisory lock whose key is derived from the schema
//!   (`pg_advisory_xact_lock`). Write transactions of all processes using the store are
//!   therefore serialized: commits are totally ordered, and each write transaction sees every
//!   earlier commit. Within one process a mutex lets only one write transaction wait for the
//!   lock (holding one connection). Puts and deletes are buffered in memory and sent at commit
//!   in one statement, followed by `COMMIT`: two round trips, whatever the size.
//! - **Dropping** a transaction rolls it back; its connection returns to the pool only after
//!   the rollback succeeded, and is otherwise closed (the server then rolls back and releases
//!   the lock).
//! - **Durability** is the server's: a commit returns once PostgreSQL reports it committed
//!   (durable with the default `synchronous_commit = on`).
//! - **Unknown outcome**: if the connection is lost during `COMMIT`, the commit finds out on
//!   another connection whether the transaction committed (each write transaction records a
//!   random id in `kv_outcomes`): `Ok` when it did; [`kv_traits::BackendError::Conflict`]
//!   saying it was verified NOT committed (like every commit error that provably applied
//!   nothing); or [`kv_traits::BackendError::UnknownOutcome`] when that cannot be found out.
//!   `Ok` is returned only when the commit is proven. Neither poisons the engine or `kv-db`'s
//!   `Db` (the next write transaction reads the database's state afresh); a client is told
//!   "unspecified write error" for an unknown outcome and never retries it blindly.
//! - **Shared**: [`kv_traits::Backend::shared`] is `true`, and
//!   [`kv_traits::Backend::commit_signals`] comes from `LISTEN`/`NOTIFY` (every commit
//!   notifies the store's channel in the same round trip as its `COMMIT`; see `notify.rs`).
//! - **Errors**: SQLSTATE `40001`/`40P01` become [`kv_traits::BackendError::Conflict`],
//!   everything else [`kv_traits::BackendError::Io`] with a message naming the problem (never
//!   the password).
//! - **Read replicas**: with [`PostgresOptions::read_only`] the backend reads a hot standby
//!   (or any server) without ever writing: the format check at open only reads (a missing
//!   store is waited for up to the connect timeout, then refused), there is no `LISTEN`
//!   ([`kv_traits::Backend::commit_signals`] is `None`) and `begin_write` fails. Its snapshots
//!   are the standby's: they lag the primary by the replication delay, and PostgreSQL may
//!   cancel a long one that conflicts with replay (SQLSTATE `40001`, a
//!   [`kv_traits::BackendError::Conflict`]).
//! - **Restores** replace a whole store in one transaction through [`StoreAdmin`] (see
//!   `admin.rs`): built in a staging schema, swapped in only when complete; read-write
//!   backends hold a shared serving lock so that a restore can refuse to replace a store
//!   that is being served.
//! - **Close**: [`kv_traits::Backend::close`] closes the pool; later transactions fail with
//!   [`kv_traits::BackendError::Closed`].
//!
//! ```no_run
//! use kv_engine_postgres::{PostgresBackend, PostgresOptions};
//! use kv_traits::Backend;
//!
//! # async fn example() -> Result<(), kv_traits::BackendError> {
//! let backend = PostgresBackend::connect(
//!     "postgres://kv:secret@db.example:5432/kv?sslmode=verify-full",
//!     PostgresOptions::default(),
//! )
//! .await?;
//! let mut w = backend.begin_write().await?;
//! w.put(b"a", b"1").await?;
//! w.commit().await?;
//! let mut r = backend.begin_read().await?;
//! assert_eq!(r.get(b"a").await?, Some(b"1".to_vec()));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
mod backend;
mod conn;
mod error;
mod merge;
mod notify;
mod options;
pub mod outcome;
mod schema;
mod tls;
mod txn;

pub use admin::{staging_schema, AdminError, StoreAdmin, STAGING_SUFFIX};
pub use backend::PostgresBackend;
pub use options::PostgresOptions;
pub use schema::FORMAT_VERSION;
