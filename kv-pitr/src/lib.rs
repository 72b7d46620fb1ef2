//! Continuous backup of a Deno KV database to object storage, point-in-time recovery and read
//! replicas, in the continuous-backup layout that Deno Deploy writes (snapshot ranges, mutation
//! log segments and a `differential` marker), so the reference time machine
//! (`denokv pitr` / `--sync-from-s3`) can consume our backups and we can restore Deploy's.
//!
//! - [`format`](mod@format): object names, the protobuf messages, the `differential` marker, our manifest
//!   and a CRC-32C integrity trailer on every snapshot range and log segment.
//! - [`store`]: [`store::BackupStore`], the one access layer to a backup's objects (listing
//!   with the naming scheme, fetching with checksum checks, writing, deleting) and its
//!   [`store::StoreError`]; [`url`](mod@url) turns a location (`s3://…`, `file://…`, a folder)
//!   into a store and prefix.
//! - [`producer`]: [`Backup`] ships every committed write of a [`kv_db::Db`] (any engine,
//!   opened with `DbConfig { change_log: true, .. }`) to an [`object_store::ObjectStore`]
//!   (S3 and S3-compatible stores, local filesystem, memory). Writes never wait for the store:
//!   they are durable in the database's change log first, and shipped in the background.
//! - [`consumer`]: [`BackupReader`] lists and verifies the objects of a backup; the log
//!   walker (segments in order, gap detection, transactions) is internal to the crate.
//! - [`restore`](mod@restore): point-in-time [`restore()`](fn@restore) into an empty database.
//! - [`log_index`]: small objects naming each log segment's commits and time, so listing
//!   recovery points does not download the segments (older backups: read the segments).
//! - [`compact`]: deleting the log segments before a checkpoint (`pitr compact`, and the
//!   producer itself with [`BackupConfig::retention`]), losing
//!   the recovery points before it.
//! - [`staged_restore`]: all-or-nothing restores through a staging area swapped in when
//!   complete; [`file_restore`] (file databases: a temporary file beside the target) and
//!   `pg_restore` (feature `postgres`: a staging schema, refused while servers serve the
//!   target) are its staging areas.
//! - `follower` (internal): [`restore::catch_up`] moves a restored copy forward along the log.
//! - [`replica`]: read [`Replica`]s that follow a backup.
//! - Checkpoints: with [`BackupConfig::checkpoint_interval`] set, the producer also writes
//!   periodic full snapshots under `checkpoints/`; [`restore()`](fn@restore) and [`Replica`]s
//!   then start from the newest checkpoint at or before their target and download only the log
//!   after it, so their time is bounded by the checkpoint interval instead of the backup's age
//!   (every point since the differential stays restorable from the initial snapshot and the
//!   log; a damaged checkpoint is an error, see [`BackupReader::with_checkpoints`]).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kv_db::{Db, DbConfig};
//! use kv_engine_memory::MemoryBackend;
//! use kv_pitr::{restore, Backup, BackupConfig, BackupReader, RestoreTarget};
//! use kv_traits::{AtomicWrite, Database, KvValue, Mutation};
//! use object_store::{memory::InMemory, path::Path, ObjectStore};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
//! let config = DbConfig { change_log: true, ..Default::default() };
//! let db = Db::open(MemoryBackend::new(), config).await.unwrap();
//! let backup = Backup::start(db.clone(), BackupConfig::new(store.clone(), Path::from("backups/app")))
//!     .await
//!     .unwrap();
//!
//! let write = AtomicWrite {
//!     mutations: vec![Mutation::set(b"\x02a\x00".to_vec(), KvValue::U64(1))],
//!     ..Default::default()
//! };
//! let committed = db.atomic_write(write).await.unwrap().versionstamp().unwrap();
//! // Normally shipping happens within `flush_interval`; flush() waits for it.
//! assert!(backup.flush(Duration::from_secs(10)).await.unwrap() >= committed);
//! backup.shutdown().await.unwrap();
//!
//! // Restore the latest point into a new database.
//! let copy = Db::open(MemoryBackend::new(), DbConfig::default()).await.unwrap();
//! let reader = BackupReader::new(store, Path::from("backups/app"));
//! let outcome = restore(&reader, &copy, RestoreTarget::Latest, |_| {}).await.unwrap();
//! assert_eq!(outcome.versionstamp, committed);
//! # });
//! ```
//!
//! For a local-filesystem store, build it with
//! `LocalFileSystem::new_with_prefix(dir)?.with_fsync(true)` so that uploaded objects survive
//! a power failure (they are written to a temporary file and renamed into place either way).

#![warn(missing_docs)]

pub mod compact;
pub mod consumer;
pub mod file_restore;
pub(crate) mod follower;
pub mod format;
pub mod log_index;
#[cfg(feature = "postgres")]
pub mod pg_restore;
pub mod producer;
pub mod replica;
pub mod restore;
pub mod staged_restore;
pub mod store;
pub mod url;
pub(crate) mod walker;

pub use consumer::BackupReader;
pub use producer::{Backup, BackupConfig, BackupError, BackupStatus};
pub use restore::{restore, Replica, RestoreTarget};
