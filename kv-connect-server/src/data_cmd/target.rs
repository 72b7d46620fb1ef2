//! Where the data commands read and write: a database file opened in this process (the
//! engine flags of `serve`), or a server reached over KV Connect (`--url`).

use kv_connect_client::RemoteDatabase;
use kv_traits::{Database, KvError};

use super::DataError;
use crate::{open_db, DbArgs};

/// An open database.
pub(crate) enum Target {
    /// Opened in this process.
    Local(kv_db::Db),
    /// Reached over KV Connect.
    Remote(RemoteDatabase),
}

impl Target {
    /// Connects to `url` with `token`, or opens the database `db` names.
    pub(crate) async fn open(
        url: Option<&str>,
        token: Option<&str>,
        db: &DbArgs,
    ) -> Result<Target, DataError> {
        match url {
            Some(url) => {
                let token = token.filter(|t| !t.is_empty()).ok_or(DataError::NoToken)?;
                let remote = RemoteDatabase::open(url, token).await.map_err(|source| {
                    DataError::Connect {
                        url: url.to_owned(),
                        source,
                    }
                })?;
                Ok(Target::Remote(remote))
            }
            None => Ok(Target::Local(
                open_db(db, kv_db::DbConfig::default())
                    .await
                    .map_err(|e| DataError::Open(Box::new(e)))?,
            )),
        }
    }

    /// The database behind either kind.
    pub(crate) fn db(&self) -> &dyn Database {
        match self {
            Target::Local(db) => db,
            Target::Remote(db) => db,
        }
    }

    /// Closes it (flushes and releases a local file).
    pub(crate) async fn close(self) -> Result<(), KvError> {
        self.db().close().await
    }
}
