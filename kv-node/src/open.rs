//! Opening a database: which engine or server an `openKv` call names.
//!
//! Contract: `engine` is `memory`, `sqlite`, `redb` (with `path`, created if missing) or
//! `remote` (with `url` and `access_token`; `max_retries` bounds the retries of retryable
//! failures, unbounded like Deno when absent). The JavaScript half decides the engine from
//! `openKv`'s arguments and resolves relative paths. A failure names the path or URL.

use std::sync::Arc;

use kv_connect_client::{RemoteConfig, RemoteDatabase};
use kv_db::{Db, DbConfig};
use kv_traits::{Database, KvError};

use crate::database::KvDatabase;
use crate::error::{NodeError, NodeResult};

/// What to open.
#[napi(object)]
pub struct OpenOptions {
    /// `memory`, `sqlite`, `redb` or `remote`.
    pub engine: String,
    /// The file of `sqlite` and `redb`.
    pub path: Option<String>,
    /// The KV Connect URL of `remote`.
    pub url: Option<String>,
    /// The access token of `remote`.
    pub access_token: Option<String>,
    /// Retries of a retryable remote failure (absent: retry forever, like Deno).
    pub max_retries: Option<u32>,
}

fn required(what: &str, v: Option<String>) -> NodeResult<String> {
    v.ok_or_else(|| NodeError::InvalidArgument(format!("{what} is required")))
}

async fn open_database(o: OpenOptions) -> NodeResult<Arc<dyn Database>> {
    let open_err = |location: &str| {
        let location = location.to_string();
        move |e: KvError| NodeError::Open {
            location: location.clone(),
            source: e,
        }
    };
    let config = DbConfig::default();
    Ok(match o.engine.as_str() {
        "memory" => Arc::new(
            Db::open(kv_engine_memory::MemoryBackend::new(), config)
                .await
                .map_err(open_err("memory"))?,
        ),
        "sqlite" => {
            let path = required("path", o.path)?;
            let backend = kv_engine_sqlite::SqliteBackend::open(
                &path,
                kv_engine_sqlite::SqliteOptions::default(),
            )
            .map_err(|e| open_err(&path)(e.into()))?;
            Arc::new(Db::open(backend, config).await.map_err(open_err(&path))?)
        }
        "redb" => {
            let path = required("path", o.path)?;
            let backend =
                kv_engine_redb::RedbBackend::open(&path, kv_engine_redb::RedbOptions::default())
                    .map_err(|e| open_err(&path)(e.into()))?;
            Arc::new(Db::open(backend, config).await.map_err(open_err(&path))?)
        }
        "remote" => {
            let url = required("url", o.url)?;
            let token = required("accessToken", o.access_token)?;
            let mut config = RemoteConfig::new(url.clone(), token);
            config.max_retries = o.max_retries;
            Arc::new(
                RemoteDatabase::open_with(config)
                    .await
                    .map_err(open_err(&url))?,
            )
        }
        other => {
            return Err(NodeError::InvalidArgument(format!(
                "unknown engine {other:?} (expected memory, sqlite, redb or remote)"
            )))
        }
    })
}

/// Opens a database; see the module docs.
#[napi]
pub async fn open(options: OpenOptions) -> napi::Result<KvDatabase> {
    Ok(KvDatabase::new(open_database(options).await?))
}
