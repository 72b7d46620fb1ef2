//! All-or-nothing restores of file databases (SQLite, redb): build the restored database in
//! a temporary file beside the target and swap it in only when it is complete.
//!
//! Contract of [`restore_file`]:
//!
//! - The target path must not exist, or hold an empty database (no data, never committed);
//!   it is never opened for writing.
//! - The restore streams into `<target>.pitr-restore` (same directory, so the final rename
//!   stays on one file system), opened with the caller's `open` function: memory is bounded
//!   as in [`restore`](crate::restore::restore), whatever the size of the backup.
//! - Only when the restore is complete and verified (the database is at the restored
//!   point) and closed are its files flushed to disk (`fsync`), renamed over the target's
//!   (companions such as SQLite's `-wal` first, the main file last) and the directory flushed.
//! - A failure before that removes the temporary files and leaves the target as it was (or
//!   absent). A crash or kill leaves the target untouched too; the stale temporary files are
//!   removed by the next [`restore_file`] to the same target.
//! - The memory engine has no file to swap: restore into it with
//!   [`restore`](crate::restore::restore) (an error there deletes what was written).

use std::future::Future;
use std::path::{Path, PathBuf};

use kv_db::Db;
use kv_traits::{Database, KvError};

use crate::consumer::BackupReader;
use crate::restore::{check_empty, RestoreError, RestoreOutcome, RestoreProgress, RestoreTarget};
use crate::staged_restore::{restore_staged, StagedRestoreError, Staging};

/// Suffixes of the files a database engine may keep beside its main file.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Suffix of the temporary database a restore builds.
pub const TEMP_SUFFIX: &str = ".pitr-restore";

/// A failed file restore.
#[derive(Debug, thiserror::Error)]
pub enum FileRestoreError {
    /// The restore itself failed (the target is untouched).
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Opening a database failed.
    #[error("{what} {path}: {source}")]
    Open {
        /// What was being done.
        what: &'static str,
        /// The database file.
        path: PathBuf,
        /// The cause (the caller's `open` error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Closing a database failed.
    #[error("{what} {path}: {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: KvError,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The main file and its possible companions.
fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    for suffix in COMPANIONS {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        files.push(name.into());
    }
    files
}

/// The temporary database a restore to `target` builds.
pub fn temp_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push(TEMP_SUFFIX);
    name.into()
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileRestoreError {
    let path = path.to_path_buf();
    move |source| FileRestoreError::Io { what, path, source }
}

/// Removes the database at `path` with its companion files, if there are any.
pub fn remove_database(path: &Path) -> Result<(), FileRestoreError> {
    remove_all(&files_of(path))
}

fn remove_all(files: &[PathBuf]) -> Result<(), FileRestoreError> {
    for f in files {
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", f)(e)),
        }
    }
    Ok(())
}

/// Restores `target` of the backup into a new database file at `path` through a temporary
/// file, all or nothing (see the module contract). `open` opens (creating it if needed) a
/// database at the path it is given. The flow (leftovers discarded, restore, close, swap or
/// discard) is [`restore_staged`]'s, with `FileStaging` as the staging area.
pub async fn restore_file<F, Fut, E>(
    reader: &BackupReader,
    path: &Path,
    open: F,
    target: RestoreTarget,
    progress: impl FnMut(RestoreProgress),
) -> Result<RestoreOutcome, FileRestoreError>
where
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = Result<Db, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let staging = FileStaging {
        tmp: temp_path(path),
        target: path.to_path_buf(),
        open,
    };
    if path.exists() {
        let existing = staging.open_at("cannot open the target", path).await?;
        let empty = check_empty(&existing).await;
        existing
            .close()
            .await
            .map_err(|source| FileRestoreError::Db {
                what: "cannot close the target",
                path: path.to_path_buf(),
                source,
            })?;
        empty?;
    }
    restore_staged(reader, &staging, target, progress)
        .await
        .map_err(|e| match e {
            StagedRestoreError::Restore(e) => FileRestoreError::Restore(e),
            StagedRestoreError::Staging { source, .. } => source,
            StagedRestoreError::Close(source) => FileRestoreError::Db {
                what: "cannot close the temporary database",
                path: staging.tmp.clone(),
                source,
            },
        })
}

/// The staging area of a file restore: the temporary database `tmp` beside `target`.
struct FileStaging<F> {
    tmp: PathBuf,
    target: PathBuf,
    /// The caller's `open`.
    open: F,
}

impl<F, Fut, E> FileStaging<F>
where
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = Result<Db, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    async fn open_at(&self, what: &'static str, p: &Path) -> Result<Db, FileRestoreError> {
        (self.open)(p.to_path_buf())
            .await
            .map_err(|source| FileRestoreError::Open {
                what,
                path: p.to_path_buf(),
                source: Box::new(source),
            })
    }
}

impl<F, Fut, E> Staging for FileStaging<F>
where
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = Result<Db, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    type Error = FileRestoreError;

    async fn discard(&self) -> Result<(), FileRestoreError> {
        remove_database(&self.tmp)
    }

    async fn open_fresh(&self) -> Result<Db, FileRestoreError> {
        self.open_at("cannot create the temporary database", &self.tmp)
            .await
    }

    async fn swap_in(&self) -> Result<(), FileRestoreError> {
        swap_in(&self.tmp, &self.target)
    }
}

/// Flushes the files of the closed database at `from`, renames them over those of `to`
/// (companions first, the main file last: a stale SQLite WAL must never meet the new main
/// file) and flushes the directory.
pub fn swap_in(from: &Path, to: &Path) -> Result<(), FileRestoreError> {
    let from_files = files_of(from);
    let to_files = files_of(to);
    for f in &from_files {
        if f.exists() {
            std::fs::File::open(f)
                .and_then(|file| file.sync_all())
                .map_err(io("cannot flush", f))?;
        }
    }
    for (src, dst) in from_files.iter().zip(&to_files).skip(1) {
        if src.exists() {
            std::fs::rename(src, dst).map_err(io("cannot move into place", src))?;
        } else {
            remove_all(std::slice::from_ref(dst))?;
        }
    }
    std::fs::rename(from, to).map_err(io("cannot move into place", from))?;
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot flush the directory", &dir))?;
    Ok(())
}
