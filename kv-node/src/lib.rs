//! Node.js bindings of the Deno KV database: the native half of the npm package in this folder.
//!
//! Contract:
//! - The JavaScript half (`lib/`) owns everything that is JavaScript: argument checks with
//!   Deno's error classes and messages, the key codec, V8 value serialization, cursors, list
//!   paging, watch streams and the queue listener loop. This half receives already encoded
//!   keys and values (bytes) and answers bytes; it never inspects a value.
//! - [`open`] returns a [`KvDatabase`] over an embedded `kv_db::Db` (memory, SQLite or redb
//!   engine) or over the KV Connect client (`kv_connect_client::RemoteDatabase`). Every
//!   operation is an `async` method: it runs on the addon's tokio runtime (napi-rs `tokio_rt`)
//!   and resolves a promise; no call blocks Node's event loop. Several databases can be open
//!   in one process; each is independent.
//! - Nothing here holds a reference on Node's event loop except a pending promise: a process
//!   whose last promise settled exits even if a database was never closed.
//! - Errors reach JavaScript as `Error`s whose message is `"<Class>: <message>"`, where
//!   `<Class>` is the JavaScript error class Deno throws for that failure (see [`error`]); the
//!   JavaScript half rethrows them as that class.
//! - After [`KvDatabase::close`] every operation fails with `BadResource`, pending queue
//!   dequeues resolve with nothing and watch streams end.

#![deny(clippy::all)]

#[macro_use]
extern crate napi_derive;

mod convert;
mod database;
mod error;
mod open;
mod watch;

pub use database::KvDatabase;
pub use open::{open, OpenOptions};
pub use watch::WatchHandle;
