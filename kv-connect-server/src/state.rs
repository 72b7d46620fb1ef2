//! What every request handler shares: the database, the authorization policy and the server
//! settings resolved from [`ServerConfig`], plus facts about the connection a request came on.
//!
//! # Contract
//!
//! - One [`AppState`] serves one database: in single-database mode one is built per served
//!   listener (and per in-process request); with many databases the registry builds one per
//!   open database from the listener's [`StateTemplate`]. Handlers only read it.
//! - [`Front`] is what the router starts from: the single database's state, or the registry.
//! - The shutdown flag turns `true` once, when the server stops or the database is deleted;
//!   long-lived responses (`/watch` streams, dequeue long polls) end then ([`stopped`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::access::Access;
use crate::config::{HealthReport, ReplicaSettings, ServerConfig};
use crate::http2::Http2Settings;
use crate::limits::Limiter;
use crate::metrics::{DatabaseLabel, Metrics, DEFAULT_DATABASE};
use crate::registry::{DbName, Registry};
use crate::tokens::TokenStore;

/// What the handlers share: the database and the server settings.
pub(crate) struct AppState<D> {
    pub db: Arc<D>,
    pub access: Arc<Access>,
    /// The database's name; `None` for the single database served at `/`.
    pub database: Option<DbName>,
    /// Path of its data-path endpoint: `/v2`, or `/db/<name>/v2`.
    pub data_path: String,
    pub database_id: Uuid,
    pub max_body_size: usize,
    pub watch_keepalive: Duration,
    /// Becomes `true` when the server shuts down; watch streams end then.
    pub shutdown: watch::Receiver<bool>,
    /// Set when serving as a read replica.
    pub replica: Option<ReplicaSettings>,
    /// Extra `/healthz` lines.
    pub health_report: Option<HealthReport>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// The abuse limits' state.
    pub limiter: Arc<Limiter>,
    /// The `database` label of this state's database in metrics (`default` for the single
    /// database).
    pub database_name: DatabaseLabel,
    /// The database of the `eventual` endpoint, if any (never on a read replica).
    pub eventual: Option<Arc<dyn kv_traits::Database>>,
    /// The encoded frames of this database's watched key sets.
    pub watch_frames: crate::routes::watch_frames::SharedFrames,
}

/// The settings every database's [`AppState`] of one listener shares.
#[derive(Clone)]
pub(crate) struct StateTemplate {
    pub access: Arc<Access>,
    pub max_body_size: usize,
    pub watch_keepalive: Duration,
    /// HTTP/2 settings of every connection.
    pub http2: Http2Settings,
    pub replica: Option<ReplicaSettings>,
    pub health_report: Option<HealthReport>,
    pub limiter: Arc<Limiter>,
    /// The web console's settings; `None` when it is off.
    pub console: Option<crate::console::ConsoleConfig>,
    /// The database of the single database's `eventual` endpoint, if any (never on a read
    /// replica).
    pub eventual: Option<Arc<dyn kv_traits::Database>>,
}

impl StateTemplate {
    /// The settings of `config` (reading scoped tokens from its token file, if any), counting
    /// in `limiter`'s metrics.
    pub fn new(config: &ServerConfig, limiter: &Arc<Limiter>) -> StateTemplate {
        let store = config
            .token_file
            .as_ref()
            .map(|path| Arc::new(TokenStore::new(path)));
        StateTemplate {
            access: Arc::new(Access::new(config.token_authority(), store)),
            max_body_size: config.max_body_size,
            watch_keepalive: config.watch_keepalive,
            http2: config.http2,
            replica: config.replica.clone(),
            health_report: config.health_report.clone(),
            limiter: limiter.clone(),
            console: config.console.clone(),
            eventual: config.eventual.clone().filter(|_| config.replica.is_none()),
        }
    }

    /// The state serving `db`, named `database` (`None` = the single database at `/`),
    /// stopping when `shutdown` turns `true`.
    pub fn state<D>(
        &self,
        db: Arc<D>,
        database: Option<DbName>,
        database_id: Uuid,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<AppState<D>> {
        let data_path = match &database {
            None => crate::routes::metadata::DATA_PATH_PREFIX.to_string(),
            Some(name) => format!(
                "{}/{name}{}",
                crate::router::DATABASES_PREFIX,
                crate::routes::metadata::DATA_PATH_PREFIX
            ),
        };
        let database_is_single = database.is_none();
        let database_name = match &database {
            None => DatabaseLabel::new(DEFAULT_DATABASE),
            Some(name) => DatabaseLabel::new(name.as_str()),
        };
        Arc::new(AppState {
            db,
            access: self.access.clone(),
            database,
            data_path,
            database_id,
            max_body_size: self.max_body_size,
            watch_keepalive: self.watch_keepalive,
            replica: self.replica.clone(),
            health_report: self.health_report.clone(),
            metrics: self.limiter.metrics().clone(),
            limiter: self.limiter.clone(),
            database_name,
            // The eventual endpoint (a read replica's view) belongs to the single database.
            eventual: if database_is_single {
                self.eventual.clone()
            } else {
                None
            },
            shutdown,
            watch_frames: Default::default(),
        })
    }
}

/// Where the router finds the database of a request.
pub(crate) enum Databases<D> {
    /// One database, served at `/`.
    Single(Arc<AppState<D>>),
    /// Many, served at `/db/<name>`.
    Many(Arc<Registry<D>>),
}

/// What the router starts from.
pub(crate) struct Front<D> {
    pub template: StateTemplate,
    pub databases: Databases<D>,
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
