//! [`PostgresBackend`]: connecting, the pool, and starting transactions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::stream::BoxStream;
use kv_traits::{Backend, BackendError, ReadTxn, WriteTxn};
use tokio::sync::Mutex;

use crate::conn::Conn;
use crate::error::{pg_err, pool_err};
use crate::notify::Listener;
use crate::options::{ConnectSpec, PostgresOptions};
use crate::outcome::{self, Outcome};
use crate::schema::{self, Names};
use crate::tls;
use crate::txn::{PgReadTxn, PgWriteTxn};

/// A [`Backend`] on a PostgreSQL database; see the crate docs.
#[derive(Clone)]
pub struct PostgresBackend {
    shared: Arc<Shared>,
}

/// What the backend and its transactions share.
pub(crate) struct Shared {
    pub pool: Pool,
    pub names: Names,
    /// Where the pool connects, for messages (no password).
    pub target: String,
    closed: AtomicBool,
    /// One write transaction of this process at a time waits for the advisory lock.
    writer: Arc<Mutex<()>>,
    /// Commits so far; every 256th also purges old outcome ids.
    pub commits: AtomicU64,
    pub retention_secs: f64,
    /// Push notifications of commits (`LISTEN`); none on a read-only backend.
    listener: Option<Listener>,
    /// Opened read-only (a replica): `begin_write` fails.
    read_only: bool,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("target", &self.shared.target)
            .field("schema", &self.shared.names.schema)
            .finish()
    }
}

impl PostgresBackend {
    /// Connects to the database at `url` (see [`crate::PostgresOptions`] for the URL's
    /// parameters), and creates the store or checks its format (see the crate docs).
    ///
    /// Errors name the problem (malformed URL, authentication failure, missing database,
    /// unreachable server, ...) and never contain the password.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, BackendError> {
        let spec = ConnectSpec::parse(url, &options)?;
        let target = spec.target();
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = tls::connector(spec.ssl, spec.root_cert.as_deref())?;
        let manager = match tls.clone() {
            Some(tls) => Manager::from_config(spec.config.clone(), tls, manager_config),
            None => {
                Manager::from_config(spec.config.clone(), tokio_postgres::NoTls, manager_config)
            }
        };
        let timeout = Some(options.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(timeout)
            .wait_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| {
                BackendError::Io(format!("cannot create the connection pool: {e}").into())
            })?;
        let client = pool.get().await.map_err(|e| pool_err(&target, e))?;
        let schema = match &options.schema {
            Some(s) => s.clone(),
            None => client
                .query_one("SELECT current_schema()::text", &[])
                .await
                .map_err(|e| pg_err("finding the current schema", e))?
                .get::<_, Option<String>>(0)
                .ok_or_else(|| {
                    BackendError::Io(
                        format!(
                        "user has no current schema on {target} (its search_path names no existing \
                         schema): set PostgresOptions::schema"
                    )
                        .into(),
                    )
                })?,
        };
        let names = Names::new(&schema);
        let opened = if options.read_only {
            open_read_only(&client, &names, &target, options.connect_timeout).await
        } else {
            schema::open(&client, &names).await
        };
        if let Err(e) = opened {
            drop(Object::take(client));
            return Err(e);
        }
        drop(client);
        tracing::debug!(%target, %schema, read_only = options.read_only, "connected to PostgreSQL");
        // A standby cannot LISTEN, and nothing commits through a read-only backend.
        let listener = (!options.read_only).then(|| {
            Listener::spawn(
                spec.config.clone(),
                tls,
                names.channel.clone(),
                names.serving_key,
            )
        });
        Ok(PostgresBackend {
            shared: Arc::new(Shared {
                pool,
                names,
                target,
                closed: AtomicBool::new(false),
                writer: Arc::new(Mutex::new(())),
                commits: AtomicU64::new(0),
                retention_secs: options.outcome_retention.as_secs_f64(),
                listener,
                read_only: options.read_only,
            }),
        })
    }

    /// Drops this store's whole schema (`DROP SCHEMA ... CASCADE`: everything in it, not only
    /// the store's tables) and closes the backend. Meant for schemas that hold nothing but one
    /// store, such as the per-database schemas of a server with many databases; never call it
    /// on a schema shared with other data (e.g. `public`).
    pub async fn drop_schema(self) -> Result<(), BackendError> {
        let sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            crate::schema::quote_ident(&self.shared.names.schema)
        );
        let client = self
            .shared
            .pool
            .get()
            .await
            .map_err(|e| pool_err(&self.shared.target, e))?;
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_err("dropping the schema", e))?;
        drop(client);
        kv_traits::Backend::close(&self).await
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.shared.names.schema
    }

    /// The key of this store's writer lock (`pg_advisory_xact_lock`; for tests).
    #[doc(hidden)]
    pub fn writer_lock_key(&self) -> i64 {
        self.shared.names.lock_key
    }

    /// The qualified name of the outcome table (for tests).
    #[doc(hidden)]
    pub fn outcome_table(&self) -> &str {
        &self.shared.names.outcomes
    }

    /// Resolves the outcome of the transaction that inserted `id` into the outcome table (the
    /// logic a commit runs after losing its connection; public for tests).
    #[doc(hidden)]
    pub async fn resolve_outcome(&self, id: &[u8]) -> Outcome {
        outcome::resolve(&self.shared.pool, &self.shared.names, id).await
    }

    async fn conn(
        &self,
        writer: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<Conn, BackendError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed);
        }
        let obj = self
            .shared
            .pool
            .get()
            .await
            .map_err(|e| pool_err(&self.shared.target, e))?;
        Ok(Conn::new(obj, writer))
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        let mut conn = self.conn(None).await?;
        conn.in_txn = true;
        // `SELECT 1` takes the snapshot now, not at the first read.
        conn.client()?
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
            .await
            .map_err(|e| pg_err("starting a read transaction", e))?;
        Ok(Box::new(PgReadTxn::new(conn, self.shared.clone())))
    }

    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed);
        }
        if self.shared.read_only {
            return Err(BackendError::Io(
                format!(
                    "the PostgreSQL store at {} was opened read-only (a read replica): it takes no \
                     writes",
                    self.shared.target
                )
                .into(),
            ));
        }
        let guard = self.shared.writer.clone().lock_owned().await;
        let mut conn = self.conn(Some(guard)).await?;
        conn.in_txn = true;
        conn.client()?
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
                self.shared.names.lock_key
            ))
            .await
            .map_err(|e| {
                pg_err(
                    "starting a write transaction (waiting for the writer lock)",
                    e,
                )
            })?;
        Ok(Box::new(PgWriteTxn::new(conn, self.shared.clone())))
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.pool.close();
        if let Some(listener) = &self.shared.listener {
            listener.stop();
        }
        Ok(())
    }

    /// Every server process on the database commits to it.
    fn shared(&self) -> bool {
        true
    }

    /// `LISTEN`/`NOTIFY` on the store's channel (see `notify.rs`); `None` when read-only.
    fn commit_signals(&self) -> Option<BoxStream<'static, ()>> {
        self.shared.listener.as_ref().map(Listener::subscribe)
    }
}

/// The read-only open: checks the store without writing, waiting up to `wait` for it to
/// appear (on a replica, the primary may have created it a moment ago).
async fn open_read_only(
    client: &Object,
    names: &Names,
    target: &str,
    wait: std::time::Duration,
) -> Result<(), BackendError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut logged = false;
    loop {
        if schema::check_read_only(client, names).await? {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BackendError::Io(
                format!(
                    "no kv-engine-postgres store in schema {:?} at {target} (waited {wait:?}): a \
                     read-only open never creates one. Open the primary first (it creates the \
                     store), and check that this server replicates it",
                    names.schema
                )
                .into(),
            ));
        }
        if !logged {
            tracing::info!(%target, schema = %names.schema, "waiting for the store to appear (read-only open)");
            logged = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| pg_err("asking whether the server is a standby", e))?
        .get(0);
    if !standby {
        tracing::info!(%target, "the read-only PostgreSQL server is not a standby (it is a primary); reading from it anyway");
    }
    Ok(())
}

/// Turns a resolved outcome into the commit's result.
pub(crate) fn outcome_result(outcome: Outcome, cause: &str) -> Result<(), BackendError> {
    match outcome {
        Outcome::Committed => {
            tracing::warn!(%cause, "connection lost during COMMIT; verified that it committed");
            Ok(())
        }
        Outcome::NotCommitted => Err(BackendError::Conflict(
            format!(
                "connection lost during COMMIT ({cause}); verified that the transaction was NOT \
                 committed (nothing was written)"
            )
            .into(),
        )),
        Outcome::Unknown(why) => Err(BackendError::UnknownOutcome(
            format!(
                "connection lost during COMMIT ({cause}); the outcome is UNKNOWN: the transaction \
                 may or may not have committed (resolving it failed: {why})"
            )
            .into(),
        )),
    }
}
