//! A KV Connect server: serves any [`kv_traits::Database`] to `Deno.openKv("http://…")` and the
//! `@deno/kv` npm client.
//!
//! One port speaks HTTP/1.1 (Node's fetch) and HTTP/2 with prior knowledge (h2c, what Deno
//! uses), detected per connection; with TLS, ALPN offers `h2` and `http/1.1`.
//!
//! Every route (metadata exchange, data path, watch, the `queue-v1` queue extension, health) is
//! listed in one table: the [`router`] module docs. The [`metadata`] docs describe the exchange.
//!
//! Operations: `GET /metrics` exports Prometheus metrics ([`metrics`]); abuse limits bound
//! connections, watch streams and request rate per token, and slow clients ([`limits`]).
//!
//! Request limits belong to the database: it enforces them ([`kv_traits::Database::limits`])
//! and the server forwards its refusals (400 with the database's message).
//!
//! With [`KvConnectServer::with_registry`] one server serves many databases, each at
//! `/db/<name>` ([`registry`], [`datadir`]); scoped tokens ([`tokens`]) with the scopes read,
//! write, queue and admin sit beside the access token, managed through the admin API
//! (`/admin/...`, see the [`router`] table).
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
//!
//! With [`ServerConfig::console`] set, the server also serves a web console at `/console`
//! (browse, edit with versionstamp checks, watch, queue counts, backups, health), signed in
//! with the access token; see [`console`].

#![warn(missing_docs)]

// Dependency order, one way: server (listener, connections) → router (the route table) →
// routes (one module per route family) → state, body, config, error, auth.
mod access;
pub mod auth;
mod body;
mod config;
pub mod console;
pub mod datadir;
pub mod error;
pub mod http2;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod router;
mod routes;
mod server;
mod state;
pub mod tls;
pub mod tokens;

pub use body::{ResponseBody, OCTET_STREAM, PROTOBUF};
pub use config::{HealthReport, ReplicaSettings, ServerConfig};
pub use error::{kv_error_status, ApiError};
pub use limits::{RateLimit, ServerLimits};
pub use metrics::{GaugeSample, MetricsReport, StatsSource};
pub use registry::{DatabaseProvider, DbName, Registry};
pub use routes::metadata;
pub use server::{shutdown_signal, BoundServer, KvConnectServer, ServeError};
