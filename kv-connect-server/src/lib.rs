//! A KV Connect server: serves any [`kv_traits::Database`] to `Deno.openKv("http://…")` and the
//! `@deno/kv` npm client.
//!
//! One port speaks HTTP/1.1 (Node's fetch) and HTTP/2 with prior knowledge (h2c, what Deno
//! uses), detected per connection; with TLS, ALPN offers `h2` and `http/1.1`.
//!
//! Routes:
//!
//! | route | what |
//! |---|---|
//! | `POST /` | metadata exchange: protocol versions 1, 2, 3 (highest common wins); answers the database id, one `strong` endpoint (`/v2`, absolute for v1), a data-path token and its expiry |
//! | `POST /v2/snapshot_read` | `SnapshotRead` → `SnapshotReadOutput` (`application/x-protobuf`) |
//! | `POST /v2/atomic_write` | `AtomicWrite` → `AtomicWriteOutput` (`application/x-protobuf`); enqueues are accepted and stored |
//! | `POST /v2/watch` | `Watch` → endless `application/octet-stream` of `u32 LE length ‖ WatchOutput` frames, keep-alive every 5 s; every frame is a full snapshot (all keys `changed`, in request order) |
//! | `GET /healthz` | 200 `ok` |
//!
//! Data-path tokens are stateless HMACs of their expiry under a key derived from the access
//! token ([`auth`]), so they survive restarts and stay valid until their own expiry. Data-path
//! requests must carry `x-denokv-version: 2|3` with `x-denokv-database-id`, or (protocol v1) no
//! version header and `x-transaction-domain-id`; the id must be this database's (stable across
//! restarts: derived from the access token unless configured). Errors are plain text; request
//! problems are 4xx (clients don't retry them), transient failures 5xx ([`error`]).
//!
//! # Embedding
//!
//! ```no_run
//! use kv_connect_server::{KvConnectServer, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = kv_engine_memory::MemoryBackend::new();
//! let db = kv_db::Db::open(backend, kv_db::DbConfig::default()).await?;
//! let server = KvConnectServer::new(db, ServerConfig::new("my-secret-token"))
//!     .bind("127.0.0.1:4512".parse()?)
//!     .await?;
//! println!("listening on http://{}", server.local_addr());
//! server.serve().await?; // until SIGINT/SIGTERM, then closes the database
//! # Ok(()) }
//! ```
//!
//! See `examples/embedded.rs` for a complete program.

#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod metadata;
mod server;
mod service;
pub mod tls;

pub use error::{kv_error_status, ApiError};
pub use server::{
    shutdown_signal, BoundServer, HealthReport, KvConnectServer, ReplicaSettings, ServeError,
    ServerConfig,
};
pub use service::{ResponseBody, OCTET_STREAM, PROTOBUF};
