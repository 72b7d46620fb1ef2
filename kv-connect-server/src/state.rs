//! What every request handler shares: the database, the token authority and the server settings
//! resolved from [`ServerConfig`], plus facts about the connection a request came on.
//!
//! # Contract
//!
//! - One [`AppState`] is built per served listener (and per in-process request); handlers only
//!   read it.
//! - The shutdown flag turns `true` once, when the server stops; long-lived responses (`/watch`
//!   streams, dequeue long polls) end then ([`stopped`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::auth::TokenAuthority;
use crate::config::{HealthReport, ReplicaSettings, ServerConfig};
use crate::http2::Http2Settings;

/// What the handlers share: the database and the server settings.
pub(crate) struct AppState<D> {
    pub db: Arc<D>,
    pub tokens: TokenAuthority,
    pub database_id: Uuid,
    pub max_body_size: usize,
    pub watch_keepalive: Duration,
    /// HTTP/2 settings of served connections.
    pub http2: Http2Settings,
    /// Becomes `true` when the server shuts down; watch streams end then.
    pub shutdown: watch::Receiver<bool>,
    /// Set when serving as a read replica.
    pub replica: Option<ReplicaSettings>,
    /// Extra `/healthz` lines.
    pub health_report: Option<HealthReport>,
}

impl<D> AppState<D> {
    /// The state of a server for `db` with `config`, stopping when `shutdown` turns `true`.
    pub fn new(db: &Arc<D>, config: &ServerConfig, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(AppState {
            db: db.clone(),
            tokens: config.token_authority(),
            database_id: config.resolved_database_id(),
            max_body_size: config.max_body_size,
            watch_keepalive: config.watch_keepalive,
            http2: config.http2,
            replica: config.replica.clone(),
            health_report: config.health_report.clone(),
            shutdown,
        })
    }
}

/// Facts about the connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnInfo {
    pub tls: bool,
    pub peer: SocketAddr,
}

/// Completes when the shutdown flag becomes `true` (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
