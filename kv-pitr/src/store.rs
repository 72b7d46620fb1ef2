//! Access to the objects of one backup: the only code that talks to the [`ObjectStore`].
//!
//! A [`BackupStore`] is an object store and the prefix of one backup in it. Under the prefix
//! the layout is (names built by [`format`](mod@crate::format)):
//!
//! - `differential`: the first consistent versionstamp, as text;
//! - `kv-pitr.json`: our manifest ([`BackupManifest`]; absent in Deno Deploy's backups);
//! - `snapshots/{version}_{monoseq}_{seq}.bin`: ranges of a full snapshot;
//! - `logs/{version}_{monoseq}_{first}_{last}.bin`: log segments;
//! - `checkpoints/{monoseq:016x}/checkpoint.json` and `…/snapshots/*.bin`: checkpoints;
//! - producer bookkeeping (`kv-pitr.init.json`), written through [`BackupStore::put`].
//!
//! What it guarantees:
//!
//! - **Listings** are sorted by key order (the order of the names, which is the log order for
//!   segments) and hold only well-named objects: an object in `snapshots/` or `logs/` that is
//!   not a `.bin` sitting directly in the folder with a parseable name is a
//!   [`StoreError::ForeignObject`], never skipped.
//! - **Fetches** decode and check every object before returning it: the CRC-32C trailer when
//!   the object has one, the protobuf, and for log segments that the first and last entries
//!   are the ones the name announces. A damaged object is a [`StoreError::Corrupt`] naming it.
//! - **Writes** are single `put`s (atomic per object in every `object_store` backend); deletes
//!   of objects that are already gone succeed.
//! - Every error names the object (or listed folder) and keeps the underlying error as its
//!   [`source`](std::error::Error::source). The reader and the producer map [`StoreError`]
//!   into their own error types variant by variant.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use kv_traits::Versionstamp;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::format::{
    self, BackupManifest, CheckpointManifest, ExportEntry, FormatError, LogSegment, LogSegmentKey,
    SnapshotRangeKey,
};

/// A failure to list, read or write an object of a backup.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An object the backup needs does not exist.
    #[error("backup object {object} is missing")]
    Missing {
        /// Full path of the object.
        object: String,
    },
    /// The object store failed (network, permissions, …).
    #[error("object store request for {object} failed: {source}")]
    Access {
        /// Full path of the object or listed folder.
        object: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object's bytes are damaged or do not match its name.
    #[error("backup object {object} is corrupt: {source}")]
    Corrupt {
        /// Full path of the object.
        object: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// An object under a backup folder whose name is not a backup object name.
    #[error("unexpected object {object} in the backup (not a backup object name): {source}")]
    ForeignObject {
        /// Full path of the object.
        object: String,
        /// Why the name was rejected.
        #[source]
        source: FormatError,
    },
}

impl StoreError {
    fn access(path: &Path, source: object_store::Error) -> Self {
        StoreError::Access {
            object: path.to_string(),
            source,
        }
    }

    fn corrupt(path: &Path, source: FormatError) -> Self {
        StoreError::Corrupt {
            object: path.to_string(),
            source,
        }
    }

    fn foreign(meta: &ObjectMeta, reason: &'static str) -> Self {
        StoreError::ForeignObject {
            object: meta.location.to_string(),
            source: FormatError::BadObjectName {
                name: meta.location.filename().unwrap_or_default().to_string(),
                reason,
            },
        }
    }
}

/// One listed log segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogObject {
    /// The segment's name.
    pub key: LogSegmentKey,
    /// Size in bytes.
    pub size: u64,
    /// When the store last modified it.
    pub last_modified: DateTime<Utc>,
}

/// The objects listed in one checkpoint folder.
#[derive(Debug, Default)]
pub struct CheckpointListing {
    /// Whether `checkpoint.json` is there (the checkpoint is complete).
    pub has_manifest: bool,
    /// Its range objects, in name order.
    pub ranges: Vec<SnapshotRangeKey>,
    /// The first object that is neither the manifest nor a well-named range.
    pub foreign: Option<StoreError>,
}

/// Reads `path`; `None` if it does not exist.
async fn get_optional(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>, StoreError> {
    let res = match store.get(path).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    match res {
        Ok(b) => Ok(Some(b)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(StoreError::access(path, source)),
    }
}

/// Lists everything under `dir` (recursively), after `offset` if given, sorted by path.
async fn list_sorted(
    store: &dyn ObjectStore,
    dir: &Path,
    offset: Option<&Path>,
) -> Result<Vec<ObjectMeta>, StoreError> {
    let listing = match offset {
        Some(o) => store.list_with_offset(Some(dir), o),
        None => store.list(Some(dir)),
    };
    let mut metas: Vec<ObjectMeta> = listing
        .try_collect()
        .await
        .map_err(|source| StoreError::access(dir, source))?;
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(metas)
}

/// Deletes `path`; an object that is already gone is not an error.
async fn delete_if_exists(store: &dyn ObjectStore, path: &Path) -> Result<(), StoreError> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(StoreError::access(path, source)),
    }
}

/// The name of a listed object without `.bin`, if it sits directly under `dir`.
fn object_name<'a>(dir: &Path, meta: &'a ObjectMeta) -> Result<&'a str, StoreError> {
    if meta.location.parts().count() != dir.parts().count() + 1 {
        return Err(StoreError::foreign(
            meta,
            "objects must sit directly in the folder",
        ));
    }
    let name = meta.location.filename().unwrap_or_default();
    name.strip_suffix(format::OBJECT_EXTENSION)
        .ok_or_else(|| StoreError::foreign(meta, "the name does not end in .bin"))
}

/// The snapshot range key named by a listed object directly under `dir`.
fn range_key(dir: &Path, meta: &ObjectMeta) -> Result<SnapshotRangeKey, StoreError> {
    let name = object_name(dir, meta)?;
    SnapshotRangeKey::parse(name).map_err(|source| StoreError::ForeignObject {
        object: meta.location.to_string(),
        source,
    })
}

/// Lists the checkpoint folders under `prefix` (see [`BackupStore::list_checkpoints`]).
pub(crate) async fn list_checkpoint_folders(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<BTreeMap<u64, CheckpointListing>, StoreError> {
    let mut dirs: BTreeMap<u64, CheckpointListing> = BTreeMap::new();
    for meta in list_sorted(store, &format::checkpoints_dir(prefix), None).await? {
        let Some(m) = format::checkpoint_monoseq_of(prefix, &meta.location) else {
            tracing::debug!(object = %meta.location, "ignoring an object outside any checkpoint folder");
            continue;
        };
        let entry = dirs.entry(m).or_default();
        if meta.location == format::checkpoint_manifest_path(prefix, m) {
            entry.has_manifest = true;
            continue;
        }
        let ranges_dir = format::checkpoint_dir(prefix, m).join(format::SNAPSHOTS);
        let parsed = if meta.location.prefix_matches(&ranges_dir) {
            range_key(&ranges_dir, &meta)
        } else {
            Err(StoreError::foreign(
                &meta,
                "a checkpoint folder holds only checkpoint.json and snapshots/",
            ))
        };
        match parsed {
            Ok(key) => entry.ranges.push(key),
            Err(e) => {
                entry.foreign.get_or_insert(e);
            }
        }
    }
    for listing in dirs.values_mut() {
        listing.ranges.sort();
    }
    Ok(dirs)
}

/// Reads and decodes the manifest of checkpoint `monoseq`; `None` if it does not exist.
pub(crate) async fn read_checkpoint_manifest(
    store: &dyn ObjectStore,
    prefix: &Path,
    monoseq: u64,
) -> Result<Option<CheckpointManifest>, StoreError> {
    let path = format::checkpoint_manifest_path(prefix, monoseq);
    match get_optional(store, &path).await? {
        Some(body) => CheckpointManifest::from_bytes(&body)
            .map(Some)
            .map_err(|source| StoreError::corrupt(&path, source)),
        None => Ok(None),
    }
}

/// An object store and the prefix of one backup in it.
///
/// Cloning is cheap (the store is shared).
#[derive(Clone, Debug)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl BackupStore {
    /// The backup under `prefix` (`Path::default()` for the store's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        BackupStore { store, prefix }
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The backup prefix.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `{store}/{prefix}`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.store, self.prefix)
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>, StoreError> {
        get_optional(&*self.store, path).await
    }

    /// Reads an object that must exist.
    pub async fn get_required(&self, path: &Path) -> Result<Bytes, StoreError> {
        self.get(path).await?.ok_or_else(|| StoreError::Missing {
            object: path.to_string(),
        })
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &Path) -> Result<bool, StoreError> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StoreError::access(path, source)),
        }
    }

    /// Writes an object (replacing any object of that name).
    pub async fn put(&self, path: &Path, body: Bytes) -> Result<(), StoreError> {
        self.store
            .put(path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|source| StoreError::access(path, source))
    }

    /// Deletes an object; one that is already gone is not an error.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        delete_if_exists(&*self.store, path).await
    }

    /// Every object under `dir` (recursively), sorted by path.
    pub async fn list_paths(&self, dir: &Path) -> Result<Vec<Path>, StoreError> {
        Ok(list_sorted(&*self.store, dir, None)
            .await?
            .into_iter()
            .map(|m| m.location)
            .collect())
    }

    /// Some object under the prefix, if there is any at all.
    pub async fn any_object(&self) -> Result<Option<Path>, StoreError> {
        self.store
            .list(Some(&self.prefix))
            .try_next()
            .await
            .map(|m| m.map(|m| m.location))
            .map_err(|source| StoreError::access(&self.prefix, source))
    }

    /// The differential versionstamp, or `None` if the marker does not exist.
    pub async fn read_differential(&self) -> Result<Option<Versionstamp>, StoreError> {
        let path = format::differential_path(&self.prefix);
        match self.get(&path).await? {
            Some(body) => format::decode_differential(&body)
                .map(Some)
                .map_err(|source| StoreError::corrupt(&path, source)),
            None => Ok(None),
        }
    }

    /// Writes the differential marker.
    pub async fn write_differential(&self, vs: &Versionstamp) -> Result<(), StoreError> {
        self.put(
            &format::differential_path(&self.prefix),
            format::encode_differential(vs),
        )
        .await
    }

    /// Our manifest, decoded (its format number is not checked); `None` if absent.
    pub async fn read_manifest(&self) -> Result<Option<BackupManifest>, StoreError> {
        let path = format::manifest_path(&self.prefix);
        match self.get(&path).await? {
            Some(body) => BackupManifest::from_bytes(&body)
                .map(Some)
                .map_err(|source| StoreError::corrupt(&path, source)),
            None => Ok(None),
        }
    }

    /// Writes our manifest.
    pub async fn write_manifest(&self, manifest: &BackupManifest) -> Result<(), StoreError> {
        let path = format::manifest_path(&self.prefix);
        let body = manifest
            .to_bytes()
            .map_err(|source| StoreError::corrupt(&path, source))?;
        self.put(&path, body).await
    }

    /// All snapshot ranges under `snapshots/`, in name order.
    pub async fn list_snapshot_ranges(&self) -> Result<Vec<SnapshotRangeKey>, StoreError> {
        let dir = format::snapshots_dir(&self.prefix);
        let mut out = Vec::new();
        for meta in list_sorted(&*self.store, &dir, None).await? {
            out.push(range_key(&dir, &meta)?);
        }
        out.sort();
        Ok(out)
    }

    /// Log segments after `after` (all if `None`), in log order. Not checked for gaps (see
    /// [`BackupReader::logs_after`](crate::consumer::BackupReader::logs_after)).
    pub async fn list_logs(
        &self,
        after: Option<&LogSegmentKey>,
    ) -> Result<Vec<LogObject>, StoreError> {
        let dir = format::logs_dir(&self.prefix);
        let offset = after.map(|k| format::log_path(&self.prefix, k));
        let mut out = Vec::new();
        for meta in list_sorted(&*self.store, &dir, offset.as_ref()).await? {
            let name = object_name(&dir, &meta)?;
            let key = LogSegmentKey::parse(name).map_err(|source| StoreError::ForeignObject {
                object: meta.location.to_string(),
                source,
            })?;
            if after.is_some_and(|a| key <= *a) {
                continue;
            }
            out.push(LogObject {
                key,
                size: meta.size,
                last_modified: meta.last_modified,
            });
        }
        out.sort_by_key(|o| o.key);
        Ok(out)
    }

    /// The checkpoint folders under `checkpoints/` by `monoseq`, with what each holds
    /// (objects outside any checkpoint folder are ignored).
    pub async fn list_checkpoints(&self) -> Result<BTreeMap<u64, CheckpointListing>, StoreError> {
        list_checkpoint_folders(&*self.store, &self.prefix).await
    }

    /// The manifest of checkpoint `monoseq`, decoded (its format number is not checked);
    /// `None` if it does not exist.
    pub async fn read_checkpoint_manifest(
        &self,
        monoseq: u64,
    ) -> Result<Option<CheckpointManifest>, StoreError> {
        read_checkpoint_manifest(&*self.store, &self.prefix, monoseq).await
    }

    /// Writes the manifest of a checkpoint (which completes it).
    pub async fn write_checkpoint_manifest(
        &self,
        manifest: &CheckpointManifest,
    ) -> Result<(), StoreError> {
        let path = format::checkpoint_manifest_path(&self.prefix, manifest.monoseq);
        let body = manifest
            .to_bytes()
            .map_err(|source| StoreError::corrupt(&path, source))?;
        self.put(&path, body).await
    }

    /// Deletes every object of checkpoint `monoseq`, its manifest first (so it stops being
    /// used before its ranges disappear).
    pub async fn delete_checkpoint(&self, monoseq: u64) -> Result<(), StoreError> {
        self.delete(&format::checkpoint_manifest_path(&self.prefix, monoseq))
            .await?;
        for p in self
            .list_paths(&format::checkpoint_dir(&self.prefix, monoseq))
            .await?
        {
            self.delete(&p).await?;
        }
        Ok(())
    }

    /// Downloads and decodes the snapshot range object at `path` (checksum verified when
    /// present).
    async fn fetch_range_at(&self, path: Path) -> Result<Vec<ExportEntry>, StoreError> {
        let body = self.get_required(&path).await?;
        format::decode_snapshot_range(&body).map_err(|source| StoreError::corrupt(&path, source))
    }

    /// Downloads and decodes one range of the initial snapshot.
    pub async fn fetch_snapshot_range(
        &self,
        key: &SnapshotRangeKey,
    ) -> Result<Vec<ExportEntry>, StoreError> {
        self.fetch_range_at(format::snapshot_path(&self.prefix, key))
            .await
    }

    /// Downloads and decodes one range of a checkpoint.
    pub async fn fetch_checkpoint_range(
        &self,
        key: &SnapshotRangeKey,
    ) -> Result<Vec<ExportEntry>, StoreError> {
        self.fetch_range_at(format::checkpoint_snapshot_path(&self.prefix, key))
            .await
    }

    /// Writes one range of the initial snapshot.
    pub async fn put_snapshot_range(
        &self,
        key: &SnapshotRangeKey,
        entries: &[ExportEntry],
    ) -> Result<(), StoreError> {
        self.put(
            &format::snapshot_path(&self.prefix, key),
            format::encode_snapshot_range(entries),
        )
        .await
    }

    /// Writes one range of a checkpoint.
    pub async fn put_checkpoint_range(
        &self,
        key: &SnapshotRangeKey,
        entries: &[ExportEntry],
    ) -> Result<(), StoreError> {
        self.put(
            &format::checkpoint_snapshot_path(&self.prefix, key),
            format::encode_snapshot_range(entries),
        )
        .await
    }

    /// Downloads and decodes one log segment (checksum verified when present) and checks
    /// that its first and last entries are the ones its name announces.
    pub async fn fetch_log(&self, key: &LogSegmentKey) -> Result<LogSegment, StoreError> {
        let path = format::log_path(&self.prefix, key);
        let body = self.get_required(&path).await?;
        let seg = format::decode_log_segment(&body)
            .map_err(|source| StoreError::corrupt(&path, source))?;
        format::check_segment_matches_key(&seg, key)
            .map_err(|source| StoreError::corrupt(&path, source))?;
        Ok(seg)
    }

    /// Writes an encoded log segment.
    pub async fn put_log(&self, key: &LogSegmentKey, body: Bytes) -> Result<(), StoreError> {
        self.put(&format::log_path(&self.prefix, key), body).await
    }
}
