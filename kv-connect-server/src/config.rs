//! What a [`KvConnectServer`](crate::KvConnectServer) is configured with: [`ServerConfig`] and
//! its parts.
//!
//! # Contract
//!
//! - The configuration is HTTP- and protocol-level only. Request limits are not here: the
//!   database owns them ([`kv_traits::Database::limits`]) and enforces them itself; the server
//!   neither copies nor re-checks them.
//! - Every field has a default ([`ServerConfig::new`]); only the access token is required, and
//!   binding refuses an empty one.
//! - The advertised database id is a pure function of the configuration
//!   ([`ServerConfig::resolved_database_id`]), so it is stable across restarts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use uuid::Uuid;

use crate::auth::TokenAuthority;
use crate::http2::Http2Settings;
use crate::limits::ServerLimits;
use crate::metrics::MetricsReport;

/// Settings of a [`KvConnectServer`](crate::KvConnectServer).
#[derive(Clone)]
pub struct ServerConfig {
    /// The access token clients present in the metadata exchange (`DENO_KV_ACCESS_TOKEN`).
    pub access_token: String,
    /// The database id advertised and checked on the data path. `None` derives a stable id from
    /// the access token, so it survives restarts (clients keep sending the id they were given).
    pub database_id: Option<Uuid>,
    /// Lifetime of data-path tokens (and so of `expiresAt`). Default 1 hour.
    pub token_ttl: Duration,
    /// Largest accepted data-path request body; larger ones get 413. Default 1 MiB (the
    /// largest valid atomic write under the default limits is about 820 kB). Binding warns when
    /// it is below the database's `max_total_mutation_size`.
    pub max_body_size: usize,
    /// Interval of keep-alive frames on `/watch` streams. Default 5 s.
    pub watch_keepalive: Duration,
    /// HTTP/2 settings (concurrent streams per connection, per-stream send buffer).
    pub http2: Http2Settings,
    /// How long shutdown waits for in-flight requests before closing the database anyway.
    /// Default 30 s.
    pub shutdown_timeout: Duration,
    /// TLS settings; `None` serves plaintext (HTTP/1.1 and h2c prior knowledge).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve as a read-only replica: the metadata advertises this server as an `eventual`
    /// endpoint and writes and queue calls get a 400 that says so.
    pub replica: Option<ReplicaSettings>,
    /// Extra lines for `GET /healthz` after `ok` (e.g. backup lag), computed per request.
    pub health_report: Option<HealthReport>,
    /// Serve the web console at `/console` (admin: the access token); `None` (the default)
    /// answers 404 there. See [`crate::console`].
    pub console: Option<crate::console::ConsoleConfig>,
    /// The scoped-token file ([`crate::tokens`]), re-read when it changes; `None` = only the
    /// access token is accepted.
    pub token_file: Option<std::path::PathBuf>,
    /// Abuse limits: connections, watch streams and request rate per token, read timeouts.
    pub limits: ServerLimits,
    /// Also serve `GET /metrics` on this address, without authentication (for a Prometheus on
    /// a private network). On the main port `/metrics` needs the access token.
    pub metrics_addr: Option<SocketAddr>,
    /// Extra per-database gauges for `/metrics` (e.g. backup lag), computed per scrape.
    pub metrics_report: Option<MetricsReport>,
    /// A second view of the same database for eventual reads, e.g. through a PostgreSQL read
    /// replica: the metadata then advertises the `eventual` endpoint
    /// [`EVENTUAL_DATA_PATH_PREFIX`](crate::metadata::EVENTUAL_DATA_PATH_PREFIX) before the
    /// `strong` one, whose snapshot reads this database answers (with
    /// `read_is_strongly_consistent = false`). Writes and queue calls sent there get a 400;
    /// watches there are served by the primary database like on the strong endpoint. It is
    /// closed with the server. Ignored on a read replica ([`ServerConfig::replica`]).
    pub eventual: Option<Arc<dyn kv_traits::Database>>,
}

/// Produces extra `/healthz` lines (`name: value`), e.g. how far a backup lags behind.
pub type HealthReport = Arc<dyn Fn() -> String + Send + Sync>;

/// How a read replica presents itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// What the replica follows (for messages), e.g. `s3://bucket/prefix/`.
    pub source: String,
    /// Absolute URL of the primary's data path (e.g. `http://primary:4512/v2`), advertised as
    /// the `strong` endpoint; it must accept the same tokens (same access token). `None`
    /// advertises this server for strong reads too (clients require a strong endpoint), which
    /// then see the replica's, possibly stale, state.
    pub primary_data_url: Option<String>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("access_token", &"<redacted>")
            .field("database_id", &self.database_id)
            .field("token_ttl", &self.token_ttl)
            .field("max_body_size", &self.max_body_size)
            .field("watch_keepalive", &self.watch_keepalive)
            .field("http2", &self.http2)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls", &self.tls.is_some())
            .field("replica", &self.replica)
            .field("health_report", &self.health_report.is_some())
            .field("console", &self.console.is_some())
            .field("token_file", &self.token_file)
            .field("limits", &self.limits)
            .field("metrics_addr", &self.metrics_addr)
            .field("metrics_report", &self.metrics_report.is_some())
            .field("eventual", &self.eventual.is_some())
            .finish()
    }
}

impl ServerConfig {
    /// Default settings with the given access token.
    pub fn new(access_token: impl Into<String>) -> Self {
        ServerConfig {
            access_token: access_token.into(),
            database_id: None,
            token_ttl: Duration::from_secs(3600),
            max_body_size: 1024 * 1024,
            watch_keepalive: Duration::from_secs(5),
            http2: Http2Settings::default(),
            shutdown_timeout: Duration::from_secs(30),
            tls: None,
            replica: None,
            health_report: None,
            console: None,
            token_file: None,
            limits: ServerLimits::default(),
            metrics_addr: None,
            metrics_report: None,
            eventual: None,
        }
    }

    /// The token authority of this configuration (access token and token lifetime).
    pub(crate) fn token_authority(&self) -> TokenAuthority {
        TokenAuthority::new(&self.access_token, self.token_ttl)
    }

    /// The database id to advertise: the configured one, else one derived from the access
    /// token.
    pub(crate) fn resolved_database_id(&self) -> Uuid {
        self.database_id.unwrap_or_else(|| {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&self.token_authority().derive("database id")[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_database_id_depends_on_the_access_token_only() {
        let a = ServerConfig::new("one");
        let mut a2 = ServerConfig::new("one");
        a2.token_ttl = Duration::from_secs(60);
        let b = ServerConfig::new("two");
        assert_eq!(a.resolved_database_id(), a2.resolved_database_id());
        assert_ne!(a.resolved_database_id(), b.resolved_database_id());
        let fixed = Uuid::from_u128(7);
        let c = ServerConfig {
            database_id: Some(fixed),
            ..ServerConfig::new("one")
        };
        assert_eq!(c.resolved_database_id(), fixed);
    }

    #[test]
    fn debug_output_redacts_the_access_token() {
        let text = format!("{:?}", ServerConfig::new("very-secret"));
        assert!(!text.contains("very-secret"), "{text}");
    }
}
