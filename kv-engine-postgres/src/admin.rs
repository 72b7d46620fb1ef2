//! [`StoreAdmin`]: whole-store operations of restores, on one connection of its own.
//!
//! Contract:
//!
//! - A restore builds the store in a staging schema ([`staging_schema`] of the target) through
//!   an ordinary [`crate::PostgresBackend`], then calls [`StoreAdmin::replace_store`]. A
//!   staging schema left by a killed restore is dropped by the next one
//!   ([`StoreAdmin::drop_schema`]); the target is never written before the swap.
//! - [`StoreAdmin::replace_store`] runs in ONE PostgreSQL transaction: it takes the target's
//!   writer lock (waiting for a running write transaction), refuses when a read-write backend
//!   serves the target (see below) unless forced, checks that the staging schema holds a store
//!   of this format and that the target holds one or none of the store's tables (anything else
//!   is refused untouched), drops the target's three tables, moves the staging tables into the
//!   target schema (`ALTER TABLE ... SET SCHEMA`: their indexes and constraints move with
//!   them), drops the staging schema, sends the target's commit notification and commits.
//!   Statements name tables by schema-qualified name, so the moved tables are the store from
//!   the next statement on. Other objects of the target schema (e.g. in `public`) are kept.
//!   A failure or a kill before `COMMIT` changes nothing.
//! - **Live servers.** Every read-write backend holds the store's serving lock shared on its
//!   listening connection (see `notify.rs`); `replace_store` tries it exclusively and, when
//!   some session holds it, fails with [`AdminError::Served`] naming how many, without
//!   changing anything: stop those servers first. With `force`, the swap goes ahead: those
//!   servers then read and write the restored store from their next transaction, but what
//!   they cached (watches, queue state) is stale: restart them. Read-only backends (replicas
//!   on a hot standby) hold no lock and are not detected.

use kv_traits::BackendError;
use tokio_postgres::Client;

use crate::error::pg_err;
use crate::options::{ConnectSpec, PostgresOptions};
use crate::schema::{check_read_only, present_tables, quote_ident, Names, TABLES};
use crate::tls;

/// Suffix of the staging schema of a restore.
pub const STAGING_SUFFIX: &str = "_pitr_restore";

/// PostgreSQL's longest identifier, in bytes (longer ones are silently truncated).
const MAX_IDENT: usize = 63;

/// A failed [`StoreAdmin`] operation.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Read-write backends serve the target store (the swap was not done).
    #[error(
        "schema {schema:?} is being served by {sessions} read-write server connection(s) \
         (kv-engine-postgres serving locks in pg_locks): stop those servers before replacing \
         their database"
    )]
    Served {
        /// The target schema.
        schema: String,
        /// Sessions holding its serving lock.
        sessions: i64,
    },
    /// Connecting or a statement failed (nothing was changed).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The staging schema a restore to `schema` builds in: `<schema>_pitr_restore`, or, when that
/// would be longer than PostgreSQL allows, `kv_pitr_restore_<hash of schema>`.
pub fn staging_schema(schema: &str) -> String {
    if schema.len() + STAGING_SUFFIX.len() <= MAX_IDENT {
        format!("{schema}{STAGING_SUFFIX}")
    } else {
        let (a, b) = crate::schema::serving_key(schema);
        format!("kv_pitr_restore_{:08x}{:08x}", a as u32, b as u32)
    }
}

/// One connection for whole-store operations (see the module docs).
pub struct StoreAdmin {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StoreAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StoreAdmin {
    /// Connects to `url` as [`crate::PostgresBackend::connect`] does (only `connect_timeout`
    /// and `statement_timeout` of `options` matter).
    pub async fn connect(url: &str, options: &PostgresOptions) -> Result<Self, BackendError> {
        let spec = ConnectSpec::parse(url, options)?;
        let what = format!("connecting to {}", spec.target());
        let (client, task) = match tls::connector(spec.ssl, spec.root_cert.as_deref())? {
            Some(tls) => {
                let (client, conn) = spec
                    .config
                    .connect(tls)
                    .await
                    .map_err(|e| pg_err(&what, e))?;
                (client, tokio::spawn(drive(conn)))
            }
            None => {
                let (client, conn) = spec
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| pg_err(&what, e))?;
                (client, tokio::spawn(drive(conn)))
            }
        };
        Ok(StoreAdmin { client, task })
    }

    /// `schema`, or the connection's current schema (where a backend without
    /// `PostgresOptions::schema` keeps its store).
    pub async fn resolve_schema(&self, schema: Option<&str>) -> Result<String, BackendError> {
        if let Some(s) = schema {
            return Ok(s.to_string());
        }
        self.client
            .query_one("SELECT current_schema()::text", &[])
            .await
            .map_err(|e| pg_err("finding the current schema", e))?
            .get::<_, Option<String>>(0)
            .ok_or_else(|| {
                BackendError::Io(
                    "the user has no current schema (its search_path names no existing schema): \
                     name the schema"
                        .into(),
                )
            })
    }

    /// Whether any of the store's tables exist in `schema`.
    pub async fn has_store(&self, schema: &str) -> Result<bool, BackendError> {
        let present =
            present_tables(&self.client, &Names::new(schema), "looking for the store").await?;
        Ok(!present.is_empty())
    }

    /// Whether `schema` exists at all.
    pub async fn schema_exists(&self, schema: &str) -> Result<bool, BackendError> {
        Ok(self
            .client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(|e| pg_err("looking for the schema", e))?
            .is_some())
    }

    /// Sessions holding the serving lock of the store in `schema` (read-write backends
    /// serving it).
    pub async fn serving_sessions(&self, schema: &str) -> Result<i64, BackendError> {
        let (a, b) = crate::schema::serving_key(schema);
        // pg_locks shows the two-int4 form as classid = first key, objid = second, objsubid 2.
        self.client
            .query_one(
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND classid = $1::int4::oid AND objid = $2::int4::oid \
                 AND objsubid = 2 AND granted",
                &[&a, &b],
            )
            .await
            .map(|r| r.get(0))
            .map_err(|e| pg_err("counting the servers of the store", e))
    }

    /// Fails with [`AdminError::Served`] when read-write backends serve `schema`, waiting up
    /// to `grace` for sessions that are closing (a backend this process just closed releases
    /// its lock when its connection has ended). Restores check this before they start, so a
    /// served target is refused before the work, not after; the swap checks again.
    pub async fn check_not_served(
        &self,
        schema: &str,
        grace: std::time::Duration,
    ) -> Result<(), AdminError> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let sessions = self.serving_sessions(schema).await?;
            if sessions == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AdminError::Served {
                    schema: schema.to_string(),
                    sessions,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Drops `schema` with everything in it (`DROP SCHEMA IF EXISTS ... CASCADE`): only for
    /// a restore's own staging schema.
    pub async fn drop_schema(&self, schema: &str) -> Result<(), BackendError> {
        self.client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(schema)
            ))
            .await
            .map_err(|e| pg_err("dropping the staging schema", e))
    }

    /// Replaces the store in `target` by the one in `staging`, in one transaction (see the
    /// module docs); `force` replaces it even while servers serve it.
    pub async fn replace_store(
        &self,
        staging: &str,
        target: &str,
        force: bool,
    ) -> Result<(), AdminError> {
        let what = "replacing the store";
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(|e| pg_err(what, e))?;
        let result = self.swap(staging, target, force).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self
            .client
            .batch_execute(end)
            .await
            .map_err(|e| pg_err(what, e));
        result?;
        ended?;
        tracing::info!(%staging, %target, "restored store swapped in");
        Ok(())
    }

    async fn swap(&self, staging: &str, target: &str, force: bool) -> Result<(), AdminError> {
        let what = "replacing the store";
        let to = Names::new(target);
        let from = Names::new(staging);
        self.client
            .batch_execute(&format!("SELECT pg_advisory_xact_lock({})", to.lock_key))
            .await
            .map_err(|e| pg_err("replacing the store (waiting for the writer lock)", e))?;
        let (a, b) = to.serving_key;
        let free: bool = self
            .client
            .query_one("SELECT pg_try_advisory_xact_lock($1, $2)", &[&a, &b])
            .await
            .map_err(|e| pg_err(what, e))?
            .get(0);
        if !free {
            let sessions = self.serving_sessions(target).await?;
            if !force {
                return Err(AdminError::Served {
                    schema: target.to_string(),
                    sessions,
                });
            }
            tracing::warn!(%target, sessions, "replacing a store that servers are serving (forced): restart them");
        }
        if !check_read_only(&self.client, &from).await? {
            return Err(BackendError::Corrupt(
                format!("the staging schema {staging:?} holds no store").into(),
            )
            .into());
        }
        // Refuses a target of a newer format or holding foreign tables (nothing changed).
        check_read_only(&self.client, &to).await?;
        let s = quote_ident(target);
        let f = quote_ident(staging);
        let mut sql = format!("CREATE SCHEMA IF NOT EXISTS {s};");
        for t in TABLES {
            sql.push_str(&format!("DROP TABLE IF EXISTS {s}.{t};"));
        }
        for t in TABLES {
            sql.push_str(&format!("ALTER TABLE {f}.{t} SET SCHEMA {s};"));
        }
        sql.push_str(&format!("DROP SCHEMA {f} CASCADE; NOTIFY {};", to.channel));
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_err(what, e))?;
        Ok(())
    }
}

async fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "the admin connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_fit_and_differ_from_the_target() {
        assert_eq!(staging_schema("kv"), "kv_pitr_restore");
        let long = "x".repeat(60);
        let st = staging_schema(&long);
        assert!(st.len() <= MAX_IDENT, "{st}");
        assert_ne!(st, staging_schema(&"y".repeat(60)));
    }
}
