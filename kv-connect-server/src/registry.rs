//! The database registry of a server with many databases: name → open database.
//!
//! # Contract
//!
//! - Database names ([`DbName`]) are 1–48 characters of `a-z 0-9 _ -`, starting with a letter
//!   or digit: safe as a path component, a URL segment and (prefixed) a PostgreSQL schema name.
//!   Anything else is refused with [`NameError`] (a 400 over HTTP), before any file is touched.
//! - Where databases live is the [`DatabaseProvider`]'s business (the stock binary's provider
//!   keeps each under a data directory, [`crate::datadir`]); the registry only opens, caches,
//!   closes and deletes through it, and stays generic over [`Database`].
//! - A database is opened on its first request and stays open until it is deleted or the
//!   server stops. A database the provider knows but the registry has not opened yet (e.g.
//!   created on disk by the CLI while the server ran) is opened on demand.
//! - Opening, creating and deleting are serialized (one at a time); serving an open database
//!   takes only a short map lookup.
//! - [`Registry::delete`] first makes the name unknown (new requests get 404), then ends the
//!   database's long-lived responses (`/watch` streams, dequeue long polls), waits up to the
//!   drain timeout for in-flight requests (they finish normally; any still running after it
//!   fail with the database's `Closed` error, a 503), closes the database, runs its close hook
//!   (e.g. stops its backup), and only then asks the provider to remove its data.
//! - Stopping the server ends every database's streams, then closes them all.
//! - `GET /healthz` adds the health lines of every open database (e.g. its backup's lag),
//!   prefixed with `<name>.`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kv_traits::{Database, KvError};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::state::{AppState, StateTemplate};

/// A validated database name (see the module contract).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(String);

/// Why a database name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid database name {name:?}: use 1-48 characters of a-z, 0-9, '_' and '-', starting with a letter or digit")]
pub struct NameError {
    /// The refused name (truncated to 100 characters).
    pub name: String,
}

/// Longest database name.
pub const MAX_NAME_LEN: usize = 48;

impl DbName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<DbName, NameError> {
        let ok = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(DbName(name.to_string()))
        } else {
            Err(NameError {
                name: name.chars().take(100).collect(),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DbName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the registry shows of a database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DatabaseInfo {
    /// Its name.
    pub name: String,
    /// The database id advertised in its metadata exchange.
    pub database_id: Uuid,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// The storage engine.
    pub engine: String,
}

/// Runs when an opened database has been closed (e.g. stops its backup).
pub type CloseHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A database the provider opened.
pub struct OpenedDatabase<D> {
    /// The database.
    pub db: D,
    /// The id its metadata exchange advertises.
    pub database_id: Uuid,
    /// Run after the database is closed.
    pub on_close: Option<CloseHook>,
    /// Its `/healthz` lines (e.g. its backup's lag), shown prefixed with `<name>.`.
    pub health_report: Option<crate::HealthReport>,
    /// Its extra `/metrics` gauges (e.g. its backup's lag), labelled with its name.
    pub metrics_report: Option<crate::MetricsReport>,
    /// Its backup as the web console shows it (`/console/api/backup`), if it has one.
    pub console_backup: Option<crate::console::ConsoleReport>,
}

impl<D> OpenedDatabase<D> {
    /// `db`, advertised as `database_id`, with no hook and no reports.
    pub fn new(db: D, database_id: Uuid) -> OpenedDatabase<D> {
        OpenedDatabase {
            db,
            database_id,
            on_close: None,
            health_report: None,
            metrics_report: None,
            console_backup: None,
        }
    }
}

/// Errors of the registry and its provider.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No database of this name.
    #[error("database {0:?} does not exist")]
    NotFound(String),
    /// The name is taken.
    #[error("database {0:?} already exists")]
    AlreadyExists(String),
    /// The server serves a single database.
    #[error("this server serves a single database (start it with --data-dir to serve several)")]
    SingleDatabase,
    /// The server is stopping.
    #[error("the server is shutting down")]
    Stopping,
    /// Opening or closing the database failed.
    #[error("database {name:?}: {source}")]
    Database {
        /// The database.
        name: String,
        /// The cause.
        source: KvError,
    },
    /// The database exists but was created with another storage engine than the server runs:
    /// a server configuration error (the operator must start the server with that engine).
    #[error("database {name:?} was created with the {created_with} engine, but this server runs --engine {serving}")]
    EngineMismatch {
        /// The database.
        name: String,
        /// The engine its record names.
        created_with: String,
        /// The server's engine.
        serving: String,
    },
    /// The provider's record of the database cannot be read back (e.g. a damaged
    /// `database.json`): the operator must repair or remove it.
    #[error("the record of database {name:?} at {path} is corrupt: {source}")]
    CorruptRecord {
        /// The database.
        name: String,
        /// The record's file.
        path: std::path::PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The provider's storage failed (files, directories).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The provider refuses for another reason (e.g. another server holds the data directory,
    /// the database's backup cannot start).
    #[error("{0}")]
    Provider(String),
}

/// Where the databases of a [`Registry`] live: the stock binary keeps them in a data directory.
pub trait DatabaseProvider<D>: Send + Sync + 'static {
    /// Every database, sorted by name.
    fn list(&self) -> Result<Vec<DatabaseInfo>, RegistryError>;
    /// The database `name`, if it exists.
    fn info(&self, name: &DbName) -> Result<Option<DatabaseInfo>, RegistryError>;
    /// Creates an empty database `name` (it does not exist yet).
    fn create(&self, name: &DbName) -> BoxFuture<'_, Result<DatabaseInfo, RegistryError>>;
    /// Opens the existing database `name`.
    fn open<'a>(
        &'a self,
        name: &'a DbName,
    ) -> BoxFuture<'a, Result<OpenedDatabase<D>, RegistryError>>;
    /// Removes the data of `name`, which is closed.
    fn destroy<'a>(&'a self, name: &'a DbName) -> BoxFuture<'a, Result<(), RegistryError>>;
}

struct Entry<D> {
    state: Arc<AppState<D>>,
    health_report: Option<crate::HealthReport>,
    metrics_report: Option<crate::MetricsReport>,
    console_backup: Option<crate::console::ConsoleReport>,
    stop: watch::Sender<bool>,
    on_close: Mutex<Option<CloseHook>>,
}

impl<D: Database> Entry<D> {
    /// Ends streams, waits up to `drain` for in-flight requests, closes the database.
    async fn close(self: Arc<Self>, name: &str, drain: Duration) -> Result<(), RegistryError> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + drain;
        // The entry holds one reference to the state and the state one to the database; every
        // in-flight request or stream holds another.
        while (Arc::strong_count(&self.state) > 1 || Arc::strong_count(&self.state.db) > 1)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.state) > 1 {
            tracing::warn!(
                database = name,
                "in-flight requests did not finish in time; closing anyway"
            );
        }
        let closed = self.state.db.close().await;
        let hook = self
            .on_close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(hook) = hook {
            hook().await;
        }
        closed.map_err(|source| RegistryError::Database {
            name: name.to_string(),
            source,
        })
    }
}

/// Name → open database (see the module contract).
pub struct Registry<D> {
    provider: Box<dyn DatabaseProvider<D>>,
    open: Mutex<HashMap<DbName, Arc<Entry<D>>>>,
    ops: tokio::sync::Mutex<bool>,
    drain: Duration,
}

impl<D: Database> Registry<D> {
    /// A registry over `provider`; deleting a database waits up to `drain` for its in-flight
    /// requests.
    pub fn new(provider: impl DatabaseProvider<D>, drain: Duration) -> Arc<Registry<D>> {
        Arc::new(Registry {
            provider: Box::new(provider),
            open: Mutex::new(HashMap::new()),
            ops: tokio::sync::Mutex::new(false),
            drain,
        })
    }

    fn cached(&self, name: &DbName) -> Option<Arc<AppState<D>>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(name).map(|e| e.state.clone())
    }

    /// The state serving `name`, opening the database if needed.
    pub(crate) async fn state(
        &self,
        name: &DbName,
        template: &StateTemplate,
    ) -> Result<Arc<AppState<D>>, RegistryError> {
        if let Some(state) = self.cached(name) {
            return Ok(state);
        }
        let stopping = self.ops.lock().await;
        if *stopping {
            return Err(RegistryError::Stopping);
        }
        if let Some(state) = self.cached(name) {
            return Ok(state);
        }
        let info = self
            .provider
            .info(name)?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        let opened = self.provider.open(name).await?;
        let (stop, stop_rx) = watch::channel(false);
        let state = template.state(
            Arc::new(opened.db),
            Some(name.clone()),
            opened.database_id,
            stop_rx,
        );
        tracing::info!(database = %name, database_id = %info.database_id, engine = %info.engine, "database open");
        let entry = Arc::new(Entry {
            state: state.clone(),
            health_report: opened.health_report,
            metrics_report: opened.metrics_report,
            console_backup: opened.console_backup,
            stop,
            on_close: Mutex::new(opened.on_close),
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), entry);
        Ok(state)
    }

    /// Every database.
    pub fn list(&self) -> Result<Vec<DatabaseInfo>, RegistryError> {
        self.provider.list()
    }

    /// The database `name`, if it exists.
    pub fn info(&self, name: &DbName) -> Result<Option<DatabaseInfo>, RegistryError> {
        self.provider.info(name)
    }

    /// Creates the database `name` (opened on its first request).
    pub async fn create(&self, name: &DbName) -> Result<DatabaseInfo, RegistryError> {
        let stopping = self.ops.lock().await;
        if *stopping {
            return Err(RegistryError::Stopping);
        }
        if self.provider.info(name)?.is_some() {
            return Err(RegistryError::AlreadyExists(name.to_string()));
        }
        let info = self.provider.create(name).await?;
        tracing::info!(database = %name, database_id = %info.database_id, "database created");
        Ok(info)
    }

    /// Closes and deletes the database `name` (see the module contract).
    pub async fn delete(&self, name: &DbName) -> Result<(), RegistryError> {
        let stopping = self.ops.lock().await;
        if *stopping {
            return Err(RegistryError::Stopping);
        }
        if self.provider.info(name)?.is_none() {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        let entry = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(entry) = entry {
            if let Err(e) = entry.close(name.as_str(), self.drain).await {
                tracing::warn!(database = %name, error = %e, "closing the deleted database failed");
            }
        }
        self.provider.destroy(name).await?;
        tracing::info!(database = %name, "database deleted");
        Ok(())
    }

    /// The console's backup report of the open database `name`, if it has a backup.
    pub(crate) fn console_backup(&self, name: &DbName) -> Option<crate::console::ConsoleReport> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(name).and_then(|e| e.console_backup.clone())
    }

    /// The `/healthz` lines of the open databases, each prefixed with `<name>.`, by name.
    pub(crate) fn health_lines(&self) -> String {
        let reports: Vec<(DbName, crate::HealthReport)> = {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.iter()
                .filter_map(|(name, e)| e.health_report.clone().map(|r| (name.clone(), r)))
                .collect()
        };
        let mut reports = reports;
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::new();
        for (name, report) in reports {
            for line in report().lines() {
                out.push_str(&format!("{name}.{line}\n"));
            }
        }
        out
    }

    /// Ends the long-lived responses of every open database (the first step of shutdown).
    pub(crate) fn end_streams(&self) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for entry in open.values() {
            let _ = entry.stop.send(true);
        }
    }

    /// Closes every database; later requests get [`RegistryError::Stopping`]. Returns the
    /// first close error.
    pub(crate) async fn close_all(&self) -> Result<(), KvError> {
        let mut stopping = self.ops.lock().await;
        *stopping = true;
        let entries: Vec<(DbName, Arc<Entry<D>>)> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let mut first = Ok(());
        for (name, entry) in entries {
            if let Err(RegistryError::Database { source, .. }) =
                entry.close(name.as_str(), Duration::ZERO).await
            {
                tracing::warn!(database = %name, error = %source, "closing a database failed");
                if first.is_ok() {
                    first = Err(source);
                }
            }
        }
        first
    }
}

/// `/metrics` reports every open database under its name, with its extra gauges (e.g. its
/// backup's lag) (a database not opened since the server started has no counters yet and is
/// not listed).
impl<D: Database> crate::metrics::StatsSource for Registry<D> {
    fn collect(&self) -> Vec<crate::metrics::DatabaseSample> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut samples: Vec<_> = open
            .iter()
            .map(|(name, entry)| crate::metrics::DatabaseSample {
                name: name.as_str().to_string(),
                stats: entry.state.db.stats(),
                gauges: entry
                    .metrics_report
                    .as_ref()
                    .map(|r| r())
                    .unwrap_or_default(),
            })
            .collect();
        samples.sort_by(|a, b| a.name.cmp(&b.name));
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "app", "my-app_2", "0", &"x".repeat(48)] {
            assert!(DbName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "App",
            "-x",
            "_x",
            "a/b",
            "..",
            ".",
            "a.b",
            "a b",
            "é",
            "a%2f",
            &"x".repeat(49),
        ] {
            assert!(DbName::parse(bad).is_err(), "{bad}");
        }
    }
}
