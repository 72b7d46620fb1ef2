//! A durable [`kv_traits::Backend`] on SQLite (rusqlite with the bundled SQLite).
//!
//! The store is one table, `kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID`, in a file in
//! WAL mode:
//!
//! - **Writes**: one writer connection, held exclusively by the open write transaction
//!   (`BEGIN IMMEDIATE`); `begin_write` waits for the previous one. The semantics layer
//!   (`kv-db`) gathers many logical writes into one transaction (group commit), so a commit costs
//!   one fsync however many writes it carries. The `COMMIT` runs on tokio's blocking pool.
//! - **Reads**: a pool of reader connections. A read transaction pins a WAL snapshot when it
//!   begins and holds it until dropped, so it never waits for writers and never sees a commit
//!   that finished after it began.
//! - **Memory**: each connection has a small page cache ([`SqliteOptions::cache_size_kib`],
//!   [`SqliteOptions::reader_cache_size_kib`], 2 MiB each) and reads the file through a memory
//!   map of up to [`SqliteOptions::mmap_size_mib`] (2 GiB by default): address space backed by
//!   the operating system's page cache, counted in RSS once per connection that touched a page.
//! - **Durability**: [`Durability::Full`] (default, `synchronous=FULL`) survives process
//!   crashes and power loss; [`Durability::Normal`] is an explicit opt-in that may lose the
//!   latest commits on power loss.
//! - **Poisoning**: if a commit fails (for example an fsync or write error), every later
//!   `begin_write` fails with [`kv_traits::BackendError::Poisoned`] carrying the original error;
//!   reads continue. Reopen the database to recover.
//! - **Format**: files carry `PRAGMA application_id` = [`APPLICATION_ID`] and
//!   `PRAGMA user_version` = [`FORMAT_VERSION`]; other applications' files are refused with
//!   [`kv_traits::BackendError::Corrupt`], newer or unknown versions with
//!   [`kv_traits::BackendError::UnsupportedFormat`], both without modifying the file. Format 2
//!   uses [`PAGE_SIZE`] (32 KiB) pages so that values up to 4 KB stay inside the B-tree; a
//!   format-1 file (4 KiB pages) is upgraded when opened ([`SqliteOptions::upgrade_on_open`]).
//! - **The reference's files**: [`denokv::DenokvFile`] reads a database file of the reference
//!   server (`denokv`) read-only, to import its entries into a database of this project.
//! - **Close**: [`kv_traits::Backend::close`] checkpoints and truncates the WAL and closes the
//!   connections; later transactions fail with [`kv_traits::BackendError::Closed`].
//!
//! ```
//! use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
//! use kv_traits::Backend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kv_traits::BackendError> {
//! let dir = tempfile::tempdir().unwrap();
//! let backend = SqliteBackend::open(dir.path().join("kv.sqlite3"), SqliteOptions::default())?;
//!
//! let mut w = backend.begin_write().await?;
//! w.put(b"a", b"1").await?;
//! w.put(b"b", b"2").await?;
//! w.commit().await?;
//!
//! let mut r = backend.begin_read().await?;
//! assert_eq!(r.get(b"a").await?, Some(b"1".to_vec()));
//! let pairs = r.scan(b"a", b"\xff", 10, true).await?;
//! assert_eq!(pairs[0], (b"b".to_vec(), b"2".to_vec()));
//! drop(r);
//! backend.close().await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod backend;
pub mod denokv;
mod error;
mod format;
mod options;

pub use backend::SqliteBackend;
pub use format::{APPLICATION_ID, FORMAT_VERSION, OLDEST_FORMAT_VERSION, PAGE_SIZE};
pub use options::{Durability, SqliteOptions, DEFAULT_MMAP_SIZE_MIB};
