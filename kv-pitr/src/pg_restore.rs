//! All-or-nothing restores of PostgreSQL stores (feature `postgres`): a
//! [`staged_restore`](crate::staged_restore) whose staging area is a schema.
//!
//! Contract of [`restore_postgres`]:
//!
//! - The target is the store in `options.schema` (default: the connection's current schema).
//!   It must not be served by read-write servers (each holds the store's serving lock, see
//!   `kv_engine_postgres::StoreAdmin`): the restore is refused with
//!   [`PgRestoreError::Served`] before it starts (after a 2 s grace for connections that are
//!   closing, such as a `checkout`'s own), and the swap checks again. Stop the servers first.
//! - Without `replace` the target must hold no store or an empty one (no data, never
//!   committed), checked read-only; with `replace` (`checkout` backwards) its store is
//!   replaced whatever it holds.
//! - The restore streams into the staging schema
//!   [`staging_schema`](kv_engine_postgres::staging_schema) (`<schema>_pitr_restore`),
//!   dropped first if a killed restore left it; only when complete, verified and closed is it
//!   swapped in by one transaction ([`StoreAdmin::replace_store`]). Until then the target is
//!   never written, whatever fails or whoever kills the process; a failure drops the staging
//!   schema again.

use std::time::Duration;

use kv_db::{Db, DbConfig};
use kv_engine_postgres::{
    staging_schema, AdminError, PostgresBackend, PostgresOptions, StoreAdmin,
};
use kv_traits::{BackendError, Database, KvError};

use crate::consumer::BackupReader;
use crate::restore::{check_empty, RestoreError, RestoreOutcome, RestoreProgress, RestoreTarget};
use crate::staged_restore::{restore_staged, StagedRestoreError, Staging};

/// How long a restore waits for serving sessions that are closing before it refuses.
const SERVED_GRACE: Duration = Duration::from_secs(2);

/// A failed PostgreSQL restore (the target is untouched).
#[derive(Debug, thiserror::Error)]
pub enum PgRestoreError {
    /// Read-write servers serve the target schema.
    #[error(transparent)]
    Served(AdminError),
    /// The target is not empty (a restore, not a `checkout`), or the restore failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A staging step or the swap failed.
    #[error(transparent)]
    Staged(#[from] StagedRestoreError<StagingError>),
    /// Connecting or a statement failed.
    #[error("{what}: {source}")]
    Postgres {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: KvError,
    },
}

/// A failed step of the staging schema.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// Opening the staging store failed.
    #[error("schema {schema:?}: {source}")]
    Open {
        /// The staging schema.
        schema: String,
        /// The cause.
        source: KvError,
    },
    /// Dropping the staging schema or the swap failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// The staging schema of one target.
struct PgStaging<'a> {
    admin: StoreAdmin,
    url: &'a str,
    options: PostgresOptions,
    staging: String,
    target: String,
}

impl Staging for PgStaging<'_> {
    type Error = StagingError;

    async fn discard(&self) -> Result<(), StagingError> {
        Ok(self
            .admin
            .drop_schema(&self.staging)
            .await
            .map_err(AdminError::from)?)
    }

    async fn open_fresh(&self) -> Result<Db, StagingError> {
        let open = async {
            let backend = PostgresBackend::connect(self.url, self.options.clone()).await?;
            Db::open(backend, restore_config()).await
        };
        open.await.map_err(|source| StagingError::Open {
            schema: self.staging.clone(),
            source,
        })
    }

    async fn swap_in(&self) -> Result<(), StagingError> {
        Ok(self
            .admin
            .replace_store(&self.staging, &self.target, false)
            .await?)
    }
}

/// A database a restore writes or checks: no background sweeps (it must hold exactly what
/// the backup says).
fn restore_config() -> DbConfig {
    DbConfig {
        background_tasks: false,
        ..Default::default()
    }
}

fn pg(what: &'static str) -> impl FnOnce(BackendError) -> PgRestoreError {
    move |e| PgRestoreError::Postgres {
        what,
        source: e.into(),
    }
}

/// Restores `target` of the backup into the store at `url` / `options.schema`, all or
/// nothing (see the module contract). `replace` replaces a store holding data (`checkout`
/// backwards).
pub async fn restore_postgres(
    reader: &BackupReader,
    url: &str,
    options: PostgresOptions,
    replace: bool,
    target: RestoreTarget,
    progress: impl FnMut(RestoreProgress),
) -> Result<RestoreOutcome, PgRestoreError> {
    let admin = StoreAdmin::connect(url, &options)
        .await
        .map_err(pg("connecting to PostgreSQL"))?;
    let schema = admin
        .resolve_schema(options.schema.as_deref())
        .await
        .map_err(pg("finding the target schema"))?;
    admin
        .check_not_served(&schema, SERVED_GRACE)
        .await
        .map_err(PgRestoreError::Served)?;
    if !replace
        && admin
            .has_store(&schema)
            .await
            .map_err(pg("looking for the target store"))?
    {
        // Read-only: no listener, so this check never counts as a server of the target.
        let check = PostgresOptions {
            schema: Some(schema.clone()),
            read_only: true,
            ..options.clone()
        };
        let existing = async {
            let backend = PostgresBackend::connect(url, check).await?;
            Db::open(
                backend,
                DbConfig {
                    read_only: true,
                    ..restore_config()
                },
            )
            .await
        }
        .await
        .map_err(|source| PgRestoreError::Postgres {
            what: "opening the target store",
            source,
        })?;
        let empty = check_empty(&existing).await;
        existing
            .close()
            .await
            .map_err(|source| PgRestoreError::Postgres {
                what: "closing the target store",
                source,
            })?;
        empty?;
    }
    let staging = staging_schema(&schema);
    let stage = PgStaging {
        admin,
        url,
        options: PostgresOptions {
            schema: Some(staging.clone()),
            read_only: false,
            ..options
        },
        staging,
        target: schema,
    };
    Ok(restore_staged(reader, &stage, target, progress).await?)
}
