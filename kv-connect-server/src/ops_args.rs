//! The `serve` flags of metrics and abuse limits, turned into the server's configuration.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::Args;
use kv_connect_server::{RateLimit, ServerConfig, ServerLimits};

/// Metrics and abuse limits (see the README's "Metrics" and "Abuse limits").
#[derive(Args, Debug, Clone)]
pub(crate) struct OpsArgs {
    /// Also serve `GET /metrics` here without authentication (e.g. `10.0.0.5:9090`; keep it
    /// private). On the main port `/metrics` needs `Authorization: Bearer <access token>`.
    #[arg(long, env = "KV_CONNECT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Connections served at once; a connection beyond it is answered 503 (Retry-After: 1) and
    /// closed.
    #[arg(long, env = "KV_CONNECT_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,

    /// Concurrent /watch streams per data-path token; one more gets 429.
    #[arg(long, env = "KV_CONNECT_MAX_WATCHES_PER_TOKEN", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_watches_per_token: u64,

    /// Data-path requests per second per token (token bucket); over it: 429 with Retry-After.
    /// 0 = no limit.
    #[arg(long, env = "KV_CONNECT_RATE_LIMIT", default_value_t = 0)]
    rate_limit_per_token: u32,

    /// Requests a token may send at once after a quiet period (default: the per-second rate).
    #[arg(long, env = "KV_CONNECT_RATE_LIMIT_BURST", default_value_t = 0)]
    rate_limit_burst: u32,

    /// Seconds a client has to send a request head (and a new connection its first one).
    #[arg(long, env = "KV_CONNECT_HEADER_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,

    /// Seconds a client has to send a whole request body; over it: 408.
    #[arg(long, env = "KV_CONNECT_BODY_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout_secs: u64,

    /// Seconds between HTTP/2 keep-alive pings.
    #[arg(long, env = "KV_CONNECT_HTTP2_KEEPALIVE_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    http2_keepalive_interval_secs: u64,

    /// Seconds an HTTP/2 client has to answer a ping before its connection is closed.
    #[arg(long, env = "KV_CONNECT_HTTP2_KEEPALIVE_TIMEOUT", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    http2_keepalive_timeout_secs: u64,
}

impl OpsArgs {
    /// Sets the metrics address and the limits of `config`.
    pub(crate) fn apply(&self, config: &mut ServerConfig) {
        config.metrics_addr = self.metrics_addr;
        let rate_per_token =
            NonZeroU32::new(self.rate_limit_per_token).map(|per_second| RateLimit {
                per_second,
                burst: NonZeroU32::new(self.rate_limit_burst).unwrap_or(per_second),
            });
        config.limits = ServerLimits {
            max_connections: self.max_connections as usize,
            max_watches_per_token: self.max_watches_per_token as usize,
            rate_per_token,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            http2_keepalive_interval: Duration::from_secs(self.http2_keepalive_interval_secs),
            http2_keepalive_timeout: Duration::from_secs(self.http2_keepalive_timeout_secs),
        };
    }
}
