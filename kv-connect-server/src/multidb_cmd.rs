//! `serve --data-dir DIR`: every database under a data directory, each at `/db/<name>`, opened
//! with the server's `--engine` (and, with `--backup-to`, backed up to `<backup-to>/<name>/`).
//!
//! The layout is [`kv_connect_server::datadir`]'s; this module adds the engines: an sqlite or
//! redb database keeps its file in its directory, a memory one nothing, a postgres one the
//! schema `kv_<name>_<first 8 hex digits of its id>` of `--database-url` (dropped when the
//! database is deleted; the id part keeps a database created again under a deleted one's name
//! apart from any leftover).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kv_connect_server::datadir::DataDir;
use kv_connect_server::registry::{
    DatabaseInfo, DatabaseProvider, DbName, OpenedDatabase, RegistryError,
};

use crate::{open_db, DbArgs, Engine};

/// The databases of a data directory, opened with one engine.
pub(crate) struct DataDirProvider {
    pub dir: DataDir,
    pub db_args: DbArgs,
    pub db_config: kv_db::DbConfig,
    #[cfg(feature = "pitr")]
    pub backup: Option<crate::pitr_cmd::ServeBackupArgs>,
}

/// The engine's name as recorded in `database.json`.
pub(crate) fn engine_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "sqlite",
        Engine::Redb => "redb",
        Engine::Memory => "memory",
        Engine::Postgres => "postgres",
    }
}

/// The engine arguments of database `name` of `dir` (`info` is its record), from the server's.
pub(crate) fn database_args(
    dir: &DataDir,
    server: &DbArgs,
    name: &DbName,
    info: &DatabaseInfo,
) -> DbArgs {
    let mut args = server.clone();
    args.path = dir.engine_file(name, engine_name(args.engine));
    #[cfg(feature = "postgres")]
    {
        let id = info.database_id.simple().to_string();
        args.postgres.database_schema = Some(format!("kv_{name}_{}", &id[..8]));
    }
    #[cfg(not(feature = "postgres"))]
    let _ = info;
    args
}

impl DataDirProvider {
    /// The engine arguments of database `info`.
    fn args_for(&self, name: &DbName, info: &DatabaseInfo) -> DbArgs {
        database_args(&self.dir, &self.db_args, name, info)
    }

    async fn open_named(&self, name: &DbName) -> Result<OpenedDatabase<kv_db::Db>, RegistryError> {
        let info = self
            .dir
            .info(name)?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        let engine = engine_name(self.db_args.engine);
        if info.engine != engine {
            return Err(RegistryError::EngineMismatch {
                name: name.to_string(),
                created_with: info.engine,
                serving: engine.to_string(),
            });
        }
        let args = self.args_for(name, &info);
        // The engine's own error keeps its type (and so its status); anything else (e.g. the
        // backup failing to start) is the provider's.
        let failed = |e: crate::MainError| match e {
            crate::MainError::Open { source, .. } => RegistryError::Database {
                name: name.to_string(),
                source,
            },
            other => RegistryError::Provider(other.to_string()),
        };
        #[cfg(feature = "pitr")]
        if let Some(backup) = self.backup.as_ref().filter(|b| b.backup_to.is_some()) {
            let base = backup.backup_to.as_deref().unwrap_or_default();
            let url = format!("{}/{name}/", base.trim_end_matches('/'));
            let (db, companion, report, gauges) =
                crate::pitr_cmd::open_with_backup(&args, self.db_config.clone(), backup, &url)
                    .await
                    .map_err(failed)?;
            let mut backup_args = backup.clone();
            backup_args.backup_to = Some(url);
            let console_backup =
                crate::console_cmd::backup_report(&backup_args, &companion).map_err(failed)?;
            let on_close: kv_connect_server::registry::CloseHook =
                Box::new(move || companion.stop().boxed());
            let mut opened = OpenedDatabase::new(db, info.database_id);
            opened.on_close = Some(on_close);
            opened.health_report = Some(report);
            opened.metrics_report = Some(gauges);
            opened.console_backup = console_backup;
            return Ok(opened);
        }
        let db = open_db(&args, self.db_config.clone())
            .await
            .map_err(failed)?;
        Ok(OpenedDatabase::new(db, info.database_id))
    }
}

impl DatabaseProvider<kv_db::Db> for DataDirProvider {
    fn list(&self) -> Result<Vec<DatabaseInfo>, RegistryError> {
        self.dir.list()
    }

    fn info(&self, name: &DbName) -> Result<Option<DatabaseInfo>, RegistryError> {
        self.dir.info(name)
    }

    fn create(&self, name: &DbName) -> BoxFuture<'_, Result<DatabaseInfo, RegistryError>> {
        let result = self.dir.create(name, engine_name(self.db_args.engine));
        async move { result }.boxed()
    }

    fn open<'a>(
        &'a self,
        name: &'a DbName,
    ) -> BoxFuture<'a, Result<OpenedDatabase<kv_db::Db>, RegistryError>> {
        self.open_named(name).boxed()
    }

    fn destroy<'a>(&'a self, name: &'a DbName) -> BoxFuture<'a, Result<(), RegistryError>> {
        async move {
            #[cfg(feature = "postgres")]
            if self.db_args.engine == Engine::Postgres {
                if let Some(info) = self.dir.info(name)? {
                    drop_schema(&self.args_for(name, &info)).await?;
                }
            }
            self.dir.remove(name)
        }
        .boxed()
    }
}

/// Drops the PostgreSQL schema of a deleted database (`args` name it).
#[cfg(feature = "postgres")]
pub(crate) async fn drop_schema(args: &DbArgs) -> Result<(), RegistryError> {
    let backend = crate::connect_postgres(args)
        .await
        .map_err(|e| RegistryError::Provider(e.to_string()))?;
    backend
        .drop_schema()
        .await
        .map_err(|e| RegistryError::Provider(format!("dropping the database's schema: {e}")))
}

/// The token file of `--data-dir DIR`, or, in single-database mode, beside `--path`.
pub(crate) fn token_file(data_dir: Option<&PathBuf>, path: &std::path::Path) -> PathBuf {
    match data_dir {
        Some(dir) => DataDir::new(dir).token_file(),
        None => {
            let mut p = path.as_os_str().to_owned();
            p.push(".tokens.json");
            PathBuf::from(p)
        }
    }
}

/// Keeps the provider's lock on the directory alive as long as the server.
pub(crate) fn lock(dir: &DataDir) -> Result<Arc<std::fs::File>, RegistryError> {
    dir.lock_for_server().map(Arc::new)
}
