//! Scoped tokens: named, optionally expiring secrets with a scope, per database, kept in a
//! JSON file that holds only their SHA-256 hashes.
//!
//! # Contract
//!
//! - A token is `kvt_<id>_<secret>`: `id` is 16 hex digits (public, names the token in data-path
//!   tokens and in `revoke`), `secret` 64 hex digits (256 random bits). It is shown once, at
//!   creation; the file keeps `sha256(token)` only. A plain SHA-256 is appropriate because the
//!   tokens are long uniformly random secrets: nothing can be guessed or brute-forced from the
//!   hash, so a slow password hash would only cost CPU on every metadata exchange. Comparisons
//!   are constant-time.
//! - Scopes ([`Scope`]): `read` (snapshot reads, watch), `write` (also atomic writes and
//!   enqueue), `queue` (dequeue and finish of the `queue-v1` extension), `admin` (everything,
//!   including database and token management). A token belongs to one database, or to every
//!   database (`database: None`; the only database in single-database mode).
//! - Every change (create, revoke, dropping a database's tokens) is a read-modify-write of the
//!   whole file under an advisory lock on `<file>.lock` (so the CLI and a running server never
//!   lose each other's updates), written to a temporary file, fsynced and renamed over the old
//!   one: readers see the old or the new file, never a partial one.
//! - Readers ([`TokenStore::snapshot`]) `stat` the file on every call and re-read it when its
//!   modification time, length or inode changed: a change made by another process (the CLI on
//!   the data directory) takes effect on the next request, without a restart. A missing file is
//!   an empty store. A file that cannot be parsed keeps the last good contents in effect (an
//!   error is logged); our writers never produce one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every scoped token.
pub const TOKEN_PREFIX: &str = "kvt_";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Snapshot reads and watch.
    Read,
    /// Reads, watch, atomic writes and enqueue.
    Write,
    /// Dequeue and finish of the queue extension.
    Queue,
    /// Everything, including database and token management.
    Admin,
}

impl Scope {
    /// Whether a token of this scope may do what `needed` stands for.
    pub fn allows(self, needed: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Write => matches!(needed, Scope::Read | Scope::Write),
            Scope::Read => needed == Scope::Read,
            Scope::Queue => needed == Scope::Queue,
        }
    }

    /// The lowercase name (`read`, `write`, `queue`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Queue => "queue",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Scope, TokenError> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "queue" => Ok(Scope::Queue),
            "admin" => Ok(Scope::Admin),
            other => Err(TokenError::Invalid(format!(
                "unknown scope {other:?}: expected read, write, queue or admin"
            ))),
        }
    }
}

/// One stored token (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id: 16 hex digits, part of the token.
    pub id: String,
    /// Human-readable name, unique per database.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// The database it belongs to; `None` = every database.
    pub database: Option<String>,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Expiry, Unix milliseconds; `None` = never.
    pub expires_at_ms: Option<u64>,
}

impl TokenRecord {
    /// Whether the token has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at_ms.is_some_and(|e| unix_ms(now) >= e)
    }

    /// Whether the token may be used for `database` (`None` = the single database).
    pub fn covers(&self, database: Option<&str>) -> bool {
        match &self.database {
            None => true,
            Some(own) => Some(own.as_str()) == database,
        }
    }
}

/// The file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile {
    /// Format version, 1.
    pub version: u32,
    /// Every live token (revoked ones are removed).
    pub tokens: Vec<TokenRecord>,
}

/// What to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Name, unique per database: 1–64 characters of `A-Z a-z 0-9 _ - .`.
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Database, or `None` for every database.
    pub database: Option<String>,
    /// Expiry, if any.
    pub expires_at: Option<SystemTime>,
}

/// Errors of the token store.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request is invalid (bad name, scope, duplicate ...).
    #[error("{0}")]
    Invalid(String),
    /// No such token.
    #[error("no token {0:?}")]
    NotFound(String),
    /// The token file cannot be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The token file is not valid JSON of the expected shape.
    #[error("token file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Identifies a version of the file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp_of(meta: &fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    }
}

struct Cached {
    stamp: Option<Stamp>,
    file: Arc<TokenFile>,
}

/// The token file of a server or data directory (see the module contract).
pub struct TokenStore {
    path: PathBuf,
    cached: RwLock<Cached>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The id part of a `kvt_<id>_<secret>` token, if it has that shape.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && secret.len() == 64).then_some(id)
}

fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl TokenStore {
    /// The store kept in `path` (read lazily; a missing file is an empty store).
    pub fn new(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore {
            path: path.into(),
            cached: RwLock::new(Cached {
                stamp: None,
                file: Arc::new(TokenFile::default()),
            }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents, re-read if the file changed since the last call.
    pub fn snapshot(&self) -> Arc<TokenFile> {
        let stamp = fs::metadata(&self.path).ok().map(|m| stamp_of(&m));
        {
            let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
            if cached.stamp == stamp {
                return cached.file.clone();
            }
        }
        let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
        match self.read_file() {
            Ok(file) => {
                cached.file = Arc::new(file);
                cached.stamp = stamp;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload the token file; the last good contents stay in effect");
                // Do not log again for the same version of the file.
                cached.stamp = stamp;
            }
        }
        cached.file.clone()
    }

    fn read_file(&self) -> Result<TokenFile, TokenError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| TokenError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile {
                version: 1,
                tokens: Vec::new(),
            }),
            Err(source) => Err(TokenError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn io(&self, source: std::io::Error) -> TokenError {
        TokenError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `change` on the freshly read file under the lock and writes the result atomically.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let lock_path = with_suffix(&self.path, ".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let mut file = self.read_file()?;
        file.version = 1;
        let out = change(&mut file)?;
        let json = serde_json::to_vec_pretty(&file).map_err(|source| TokenError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let tmp = with_suffix(&self.path, &format!(".tmp-{}", std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        drop(lock);
        Ok(out)
    }

    /// Creates a token at `now`; returns the token (shown once) and its record.
    pub fn create(
        &self,
        new: NewToken,
        now: SystemTime,
    ) -> Result<(String, TokenRecord), TokenError> {
        if !valid_token_name(&new.name) {
            return Err(TokenError::Invalid(format!(
                "invalid token name {:?}: use 1-64 characters of A-Z, a-z, 0-9, '_', '-', '.'",
                new.name
            )));
        }
        if new.expires_at.is_some_and(|e| e <= now) {
            return Err(TokenError::Invalid(
                "the expiry must be in the future".into(),
            ));
        }
        let mut rng = rand::rng();
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}_{}", hex::encode(id), hex::encode(secret));
        let record = TokenRecord {
            id: hex::encode(id),
            name: new.name,
            scope: new.scope,
            database: new.database,
            sha256: sha256_hex(&token),
            created_at_ms: unix_ms(now),
            expires_at_ms: new.expires_at.map(unix_ms),
        };
        let stored = record.clone();
        self.modify(move |file| {
            if file
                .tokens
                .iter()
                .any(|t| t.name == stored.name && t.database == stored.database)
            {
                return Err(TokenError::Invalid(format!(
                    "a token named {:?} already exists for {}",
                    stored.name,
                    describe_database(stored.database.as_deref())
                )));
            }
            file.tokens.push(stored);
            Ok(())
        })?;
        Ok((token, record))
    }

    /// Revokes (removes) the token with id or name `which`, limited to `database` if given
    /// (`Some(None)` = only tokens for every database).
    pub fn revoke(
        &self,
        which: &str,
        database: Option<Option<&str>>,
    ) -> Result<TokenRecord, TokenError> {
        self.modify(|file| {
            let matches = |t: &TokenRecord| {
                (t.id == which || t.name == which)
                    && database.is_none_or(|db| t.database.as_deref() == db)
            };
            let found: Vec<usize> = (0..file.tokens.len())
                .filter(|&i| matches(&file.tokens[i]))
                .collect();
            match found.as_slice() {
                [] => Err(TokenError::NotFound(which.to_string())),
                [i] => Ok(file.tokens.remove(*i)),
                _ => Err(TokenError::Invalid(format!(
                    "{which:?} names several tokens (one per database): give the database or the token id"
                ))),
            }
        })
    }

    /// Removes every token of `database` (when it is deleted); returns how many.
    pub fn remove_database(&self, database: &str) -> Result<usize, TokenError> {
        self.modify(|file| {
            let before = file.tokens.len();
            file.tokens
                .retain(|t| t.database.as_deref() != Some(database));
            Ok(before - file.tokens.len())
        })
    }

    /// The stored record of `token` if it is a token of this store (constant-time hash
    /// comparison). Expiry and database are the caller's to check.
    pub fn find(&self, token: &str) -> Option<TokenRecord> {
        let id = token_id(token)?;
        let file = self.snapshot();
        let record = file.tokens.iter().find(|t| t.id == id)?;
        let hash = sha256_hex(token);
        bool::from(hash.as_bytes().ct_eq(record.sha256.as_bytes())).then(|| record.clone())
    }

    /// The current record with id `id`, if the token still exists.
    pub fn by_id(&self, id: &str) -> Option<TokenRecord> {
        self.snapshot().tokens.iter().find(|t| t.id == id).cloned()
    }
}

/// `database "x"` or `every database`, for messages.
pub(crate) fn describe_database(database: Option<&str>) -> String {
    match database {
        Some(db) => format!("database {db:?}"),
        None => "every database".to_string(),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp_file(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kv-tokens-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir.join("tokens.json")
    }

    fn new(name: &str, scope: Scope, db: Option<&str>) -> NewToken {
        NewToken {
            name: name.into(),
            scope,
            database: db.map(str::to_string),
            expires_at: None,
        }
    }

    #[test]
    fn scopes_nest_as_documented() {
        assert!(Scope::Write.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Write));
        assert!(!Scope::Write.allows(Scope::Queue));
        assert!(!Scope::Queue.allows(Scope::Read));
        assert!(Scope::Admin.allows(Scope::Queue));
        assert!(!Scope::Write.allows(Scope::Admin));
    }

    #[test]
    fn create_find_revoke_and_only_hashes_on_disk() {
        let path = temp_file("crud");
        let store = TokenStore::new(&path);
        let now = SystemTime::now();
        let (token, rec) = store
            .create(new("ci", Scope::Read, Some("app")), now)
            .unwrap();
        assert_eq!(token_id(&token), Some(rec.id.as_str()));
        let on_disk = fs::read_to_string(&path).unwrap();
        assert!(!on_disk.contains(&token[20..]), "{on_disk}");
        assert!(on_disk.contains(&rec.sha256));
        // Another store (another process) sees it; a tampered secret does not match.
        let other = TokenStore::new(&path);
        assert_eq!(other.find(&token), Some(rec.clone()));
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('0') { '1' } else { '0' });
        assert_eq!(other.find(&forged), None);
        // Duplicate names per database are refused; the same name elsewhere is fine.
        assert!(store
            .create(new("ci", Scope::Write, Some("app")), now)
            .is_err());
        store.create(new("ci", Scope::Write, None), now).unwrap();
        // A name shared by two databases needs the database to revoke.
        assert!(matches!(
            store.revoke("ci", None),
            Err(TokenError::Invalid(_))
        ));
        store.revoke("ci", Some(Some("app"))).unwrap();
        assert_eq!(other.find(&token), None);
        assert!(matches!(
            store.revoke(&rec.id, None),
            Err(TokenError::NotFound(_))
        ));
        assert_eq!(store.remove_database("app").unwrap(), 0);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn expiry_and_validation() {
        let path = temp_file("expiry");
        let store = TokenStore::new(&path);
        let now = SystemTime::now();
        let mut t = new("short", Scope::Read, None);
        t.expires_at = Some(now + Duration::from_secs(10));
        let (_, rec) = store.create(t, now).unwrap();
        assert!(!rec.expired(now));
        assert!(rec.expired(now + Duration::from_secs(11)));
        for bad in ["", "a b", "../x", &"x".repeat(65)] {
            assert!(store.create(new(bad, Scope::Read, None), now).is_err());
        }
        let mut past = new("past", Scope::Read, None);
        past.expires_at = Some(now - Duration::from_secs(1));
        assert!(store.create(past, now).is_err());
        assert!("root".parse::<Scope>().is_err());
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
