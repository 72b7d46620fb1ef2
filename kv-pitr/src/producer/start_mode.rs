//! How a producer starts on its prefix: [`inspect_prefix`] decides between a fresh initial
//! snapshot and resuming after the last shipped segment ([`StartMode`]).
//!
//! Contract: a prefix is used only if it is empty or holds a backup of ours (our manifest,
//! or the [`InitMarker`] of an initial snapshot in progress); anything else is
//! [`BackupError::ForeignPrefix`]. A backup interrupted between its `differential` marker and
//! its manifest is completed here (the manifest is written from the marker); a missing
//! `differential` marker next to a manifest is rewritten from the manifest. Nothing else is
//! written or deleted here: leftovers of an interrupted initial snapshot are removed by the
//! shipper when it starts over.

use kv_traits::Versionstamp;

use super::{BackupConfig, BackupError, INITIAL_SNAPSHOT_MONOSEQ};
use crate::format::{self, BackupManifest, FormatError};
use crate::store::BackupStore;

/// How the shipping task begins.
pub(super) enum StartMode {
    /// Take an initial snapshot (after deleting leftovers of an interrupted one of ours).
    Fresh,
    /// Continue after the last shipped segment.
    Resume {
        shipped_through: Versionstamp,
        next_monoseq: u64,
    },
}

/// Progress marker of an initial snapshot (also marks the prefix as ours), stored as JSON at
/// [`super::init_marker_path`].
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct InitMarker {
    pub(super) producer: String,
    pub(super) created_at_ms: u64,
    pub(super) snapshot_start: String,
}

impl InitMarker {
    /// Reads the marker; `None` if there is none.
    async fn read(store: &BackupStore) -> Result<Option<InitMarker>, BackupError> {
        let path = super::init_marker_path(store.prefix());
        match store.get(&path).await? {
            Some(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| bad_json(&path, e)),
            None => Ok(None),
        }
    }

    /// Writes the marker.
    pub(super) async fn write(&self, store: &BackupStore) -> Result<(), BackupError> {
        let path = super::init_marker_path(store.prefix());
        let body = serde_json::to_vec(self).map_err(|e| bad_json(&path, e))?;
        store.put(&path, body.into()).await?;
        Ok(())
    }
}

/// The `producer` text of our manifests.
pub(super) fn producer_name() -> String {
    format!("kv-pitr {}", env!("CARGO_PKG_VERSION"))
}

fn bad_json(path: &object_store::path::Path, e: serde_json::Error) -> BackupError {
    BackupError::Format {
        object: path.to_string(),
        source: FormatError::Manifest(e),
    }
}

/// Reads the prefix and decides how to start (see the module docs).
pub(super) async fn inspect_prefix(config: &BackupConfig) -> Result<StartMode, BackupError> {
    let store = BackupStore::new(config.store.clone(), config.prefix.clone());
    let prefix = &config.prefix;
    let manifest_path = format::manifest_path(prefix);
    let manifest = match store.read_manifest().await? {
        Some(m) => m,
        None => match InitMarker::read(&store).await? {
            None => {
                // Any object at all under the prefix (the first one listed is enough).
                if let Some(found) = store.any_object().await? {
                    return Err(BackupError::ForeignPrefix {
                        prefix: prefix.to_string(),
                        found: found.to_string(),
                    });
                }
                return Ok(StartMode::Fresh);
            }
            Some(marker) => {
                let Some(dv) = store.read_differential().await? else {
                    // An initial snapshot of ours was interrupted: start over.
                    return Ok(StartMode::Fresh);
                };
                // Interrupted between `differential` and the manifest: finish it.
                let manifest = BackupManifest {
                    format: BackupManifest::FORMAT,
                    producer: marker.producer,
                    created_at_ms: marker.created_at_ms,
                    initial_snapshot_monoseq: INITIAL_SNAPSHOT_MONOSEQ,
                    snapshot_start: marker.snapshot_start,
                    snapshot_end: dv.to_string(),
                };
                store.write_manifest(&manifest).await?;
                manifest
            }
        },
    };
    if manifest.format != BackupManifest::FORMAT {
        return Err(BackupError::UnsupportedManifest(manifest.format));
    }
    let snapshot_end: Versionstamp =
        manifest
            .snapshot_end
            .parse()
            .map_err(|_| BackupError::Format {
                object: manifest_path.to_string(),
                source: FormatError::BadDifferential(manifest.snapshot_end.clone()),
            })?;
    let diff_path = format::differential_path(prefix);
    if store.get(&diff_path).await?.is_none() {
        tracing::warn!(path = %diff_path, "differential marker missing; rewriting it from the manifest");
        store.write_differential(&snapshot_end).await?;
    }
    let logs = store.list_logs(None).await?;
    let (shipped_through, next_monoseq) = match logs.last().map(|o| o.key) {
        Some(last) => {
            if last.format_version != format::FORMAT_VERSION {
                return Err(BackupError::ForeignPrefix {
                    prefix: prefix.to_string(),
                    found: format::log_path(prefix, &last).to_string(),
                });
            }
            (
                snapshot_end.max(format::vs10_of(&last.last_vs12)),
                last.monoseq + 1,
            )
        }
        None => (snapshot_end, 1),
    };
    Ok(StartMode::Resume {
        shipped_through,
        next_monoseq,
    })
}
