//! The data directory of a server with many databases (`--data-dir DIR`): which databases
//! exist, their ids, where their files go, and the token file.
//!
//! # Contract
//!
//! ```text
//! DIR/tokens.json                       scoped tokens (hashes only), see crate::tokens
//! DIR/.server.lock                      locked by the server serving DIR while it runs
//! DIR/databases/<name>/database.json    {"database_id", "created_at_ms", "engine"}
//! DIR/databases/<name>/data.<engine>    the engine's file (sqlite, redb; none for memory and
//!                                       postgres, whose data lives in schema kv_<name>)
//! ```
//!
//! - A database exists exactly when `databases/<name>/database.json` exists. Creating writes it
//!   into a hidden temporary directory that is then renamed into place; deleting renames the
//!   directory to a hidden name before removing it. Either way another reader sees the database
//!   whole or not at all. Hidden entries (`.…`) are ignored and cleaned up by later deletes.
//! - The database id is random at creation and never changes, so a database deleted and
//!   created again under the same name gets a new id (clients holding the old one must
//!   re-exchange metadata).
//! - Only names accepted by [`DbName`] reach the file system.
//! - One server serves a data directory at a time ([`DataDir::lock_for_server`]); the CLI
//!   creates and deletes databases in the directory directly only when no server holds the
//!   lock ([`DataDir::check_no_server`]), and talks to the server otherwise. The token file can
//!   be changed directly at any time: the server re-reads it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::registry::{DatabaseInfo, DbName, RegistryError};
use crate::tokens::unix_ms;

/// The `database.json` record.
#[derive(Serialize, Deserialize)]
struct Record {
    database_id: Uuid,
    created_at_ms: u64,
    engine: String,
}

/// A data directory (see the module contract).
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryError {
    let what = what.into();
    move |source| RegistryError::Io { what, source }
}

impl DataDir {
    /// The data directory at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The token file.
    pub fn token_file(&self) -> PathBuf {
        self.root.join("tokens.json")
    }

    fn databases(&self) -> PathBuf {
        self.root.join("databases")
    }

    /// The directory of database `name`.
    pub fn database_dir(&self, name: &DbName) -> PathBuf {
        self.databases().join(name.as_str())
    }

    /// The engine file of database `name` for `engine` (`sqlite`, `redb`).
    pub fn engine_file(&self, name: &DbName, engine: &str) -> PathBuf {
        self.database_dir(name).join(format!("data.{engine}"))
    }

    /// The database `name`, if it exists.
    pub fn info(&self, name: &DbName) -> Result<Option<DatabaseInfo>, RegistryError> {
        let path = self.database_dir(name).join("database.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::CorruptRecord {
                name: name.to_string(),
                path: path.clone(),
                source,
            })?;
        Ok(Some(DatabaseInfo {
            name: name.to_string(),
            database_id: record.database_id,
            created_at_ms: record.created_at_ms,
            engine: record.engine,
        }))
    }

    /// Every database, sorted by name.
    pub fn list(&self) -> Result<Vec<DatabaseInfo>, RegistryError> {
        let dir = self.databases();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| DbName::parse(n).ok())
            else {
                continue;
            };
            if let Some(info) = self.info(&name)? {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Records a new database `name` served by `engine`.
    pub fn create(&self, name: &DbName, engine: &str) -> Result<DatabaseInfo, RegistryError> {
        if self.info(name)?.is_some() {
            return Err(RegistryError::AlreadyExists(name.to_string()));
        }
        let dir = self.databases();
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let tmp = dir.join(format!(".new-{name}-{:08x}", rand::random::<u32>()));
        let record = Record {
            database_id: Uuid::new_v4(),
            created_at_ms: unix_ms(SystemTime::now()),
            engine: engine.to_string(),
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| RegistryError::Provider(format!("encoding database.json: {e}")))?;
        let write = || -> std::io::Result<()> {
            fs::create_dir(&tmp)?;
            let file = tmp.join("database.json");
            fs::write(&file, json)?;
            fs::File::open(&file)?.sync_all()?;
            fs::rename(&tmp, self.database_dir(name))
        };
        if let Err(e) = write() {
            let _ = fs::remove_dir_all(&tmp);
            if self.database_dir(name).exists() {
                return Err(RegistryError::AlreadyExists(name.to_string()));
            }
            return Err(io(format!("creating database {name}"))(e));
        }
        Ok(DatabaseInfo {
            name: name.to_string(),
            database_id: record.database_id,
            created_at_ms: record.created_at_ms,
            engine: record.engine,
        })
    }

    /// Removes database `name` and its files (it must be closed).
    pub fn remove(&self, name: &DbName) -> Result<(), RegistryError> {
        let dir = self.database_dir(name);
        if !dir.exists() {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        let doomed = self
            .databases()
            .join(format!(".deleted-{name}-{:08x}", rand::random::<u32>()));
        fs::rename(&dir, &doomed).map_err(io(format!("removing {}", dir.display())))?;
        fs::remove_dir_all(&doomed).map_err(io(format!("removing {}", doomed.display())))?;
        // Leftovers of earlier interrupted creates or deletes.
        if let Ok(entries) = fs::read_dir(self.databases()) {
            for entry in entries.flatten() {
                let hidden = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(".deleted-") || n.starts_with(".new-"));
                if hidden {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }

    fn lock_file(&self) -> Result<fs::File, RegistryError> {
        fs::create_dir_all(&self.root).map_err(io(format!("creating {}", self.root.display())))?;
        let path = self.root.join(".server.lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))
    }

    /// Locks the directory for a server; the lock is held as long as the returned file is.
    pub fn lock_for_server(&self) -> Result<fs::File, RegistryError> {
        let file = self.lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(RegistryError::Provider(format!(
                "another server is serving the data directory {}",
                self.root.display()
            ))),
            Err(fs::TryLockError::Error(e)) => {
                Err(io(format!("locking {}", self.root.display()))(e))
            }
        }
    }

    /// Fails when a server is serving the directory (databases must then be created and
    /// deleted through it).
    pub fn check_no_server(&self) -> Result<(), RegistryError> {
        self.lock_for_server().map(drop).map_err(|e| match e {
            RegistryError::Provider(_) => RegistryError::Provider(format!(
                "a server is serving the data directory {}: create and delete databases through it (--url)",
                self.root.display()
            )),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let root = std::env::temp_dir().join(format!(
            "kv-datadir-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let dd = DataDir::new(&root);
        assert!(dd.list().unwrap().is_empty());
        let a = DbName::parse("a").unwrap();
        let b = DbName::parse("b-2").unwrap();
        let ia = dd.create(&a, "sqlite").unwrap();
        dd.create(&b, "sqlite").unwrap();
        assert!(matches!(
            dd.create(&a, "sqlite"),
            Err(RegistryError::AlreadyExists(_))
        ));
        let names: Vec<String> = dd.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["a", "b-2"]);
        assert_eq!(dd.info(&a).unwrap(), Some(ia.clone()));
        dd.remove(&a).unwrap();
        assert_eq!(dd.info(&a).unwrap(), None);
        assert!(matches!(dd.remove(&a), Err(RegistryError::NotFound(_))));
        let again = dd.create(&a, "sqlite").unwrap();
        assert_ne!(again.database_id, ia.database_id);
        // One server at a time.
        let lock = dd.lock_for_server().unwrap();
        assert!(dd.lock_for_server().is_err());
        assert!(dd.check_no_server().is_err());
        drop(lock);
        dd.check_no_server().unwrap();
        let _ = fs::remove_dir_all(&root);
    }
}
