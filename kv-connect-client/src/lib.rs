//! A Deno KV client for Rust.
//!
//! - [`RemoteDatabase`] implements [`kv_traits::Database`] over **KV Connect**, the protocol of
//!   `Deno.openKv("https://…")`: metadata exchange and token refresh, HTTP/2 (h2c prior knowledge
//!   on `http://`, ALPN on `https://` via rustls) with an HTTP/1.1 fallback, retries with
//!   backoff for reads, [`kv_traits::KvError::UnknownOutcome`] for writes whose fate is unknown,
//!   a reconnecting `watch` stream, and remote queues through the `queue-v1` extension.
//! - [`Kv`] is an API in the spirit of `Deno.Kv` that works the same over an embedded database
//!   (any `Database`, e.g. `kv_db::Db`) and a remote URL: `get`, `get_many`, `set`, `delete`,
//!   paging `list` with Deno-compatible cursors, `atomic` operations with checks and
//!   `sum`/`min`/`max`, `watch`, `enqueue` and `listen_queue`. Keys are tuples of typed parts
//!   ([`key!`]) and values ([`Value`]) use the same encodings as JavaScript, so Rust and JS
//!   programs share data.
//!
//! # Features
//!
//! - `remote` (default): [`RemoteDatabase`], [`Kv::open_remote`] and the HTTP/TLS stack under
//!   them (hyper, rustls). A program that only embeds a database turns it off
//!   (`default-features = false`) and keeps the whole [`Kv`] API over
//!   [`Kv::from_database`] without compiling any networking code.
//!
//! ```
//! use futures::TryStreamExt;
//! use kv_connect_client::{key, Kv, ListOptions, Selector, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An embedded database; `Kv::open_remote("http://127.0.0.1:4512", "token").await?` gives the
//! // same API over KV Connect.
//! let db = kv_db::Db::open(kv_engine_memory::MemoryBackend::new(), kv_db::DbConfig::default()).await?;
//! let kv = Kv::from_database(db);
//!
//! kv.set(&key!["users", "ada"], "Ada Lovelace").await?;
//! kv.set(&key!["users", "alan"], "Alan Turing").await?;
//! let ada = kv.get(&key!["users", "ada"]).await?;
//! assert_eq!(ada.value, Some(Value::from("Ada Lovelace")));
//!
//! let users: Vec<_> = kv.list(Selector::prefix(key!["users"]), ListOptions::default())?.try_collect().await?;
//! assert_eq!(users.len(), 2);
//!
//! // Optimistic concurrency: only succeeds if nobody changed the key in between.
//! let result = kv
//!     .atomic()
//!     .check(&key!["users", "ada"], ada.versionstamp)
//!     .set(&key!["users", "ada"], "Augusta Ada King")
//!     .sum(&key!["stats", "renames"], 1u64)
//!     .commit()
//!     .await?;
//! assert!(result.versionstamp().is_some());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
// The crate docs name the `remote` items, which do not exist without the feature.
#![cfg_attr(not(feature = "remote"), allow(rustdoc::broken_intra_doc_links))]

mod backoff;
pub mod error;
pub mod kv;
pub mod list;
pub mod queue;
#[cfg(feature = "remote")]
pub mod remote;
pub mod value;

pub use backoff::Backoff;

pub use error::Error;
pub use kv::{AtomicOperation, EnqueueOptions, EntriesStream, Entry, EntryMaybe, Kv, SumOptions};
pub use kv_traits::key::KeyPart;
pub use kv_traits::{CommitResult, Consistency, KvError, Versionstamp};
pub use list::{ListIterator, ListOptions, Selector};
pub use queue::{Delivery, ListenOptions};
#[cfg(feature = "remote")]
pub use remote::{HttpVersionPolicy, RemoteConfig, RemoteDatabase};
pub use value::{Key, Value};
