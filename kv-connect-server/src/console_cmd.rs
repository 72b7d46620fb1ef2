//! `--console`: the binary's settings of the web console ([`kv_connect_server::console`]), with
//! the reports the generic server cannot compute itself: queue counts by a scan from `kv-db`
//! (a shared store only: elsewhere the counters are exact) and, with `--backup-to`, the
//! backup's settings, status and recovery points from `kv-pitr` (per database with
//! `--data-dir`).

use std::sync::Arc;

use kv_connect_server::console::{ConsoleConfig, ConsoleReport};
use serde_json::json;

/// The console settings for `db`, with the backup report if there is one. Its queue counters
/// are exact unless the store is shared with other servers: only then does the console count
/// by scanning the queue.
pub(crate) fn console_config(db: &kv_db::Db, backup: Option<ConsoleReport>) -> ConsoleConfig {
    let shared_store = db.is_shared();
    let db = db.clone();
    let queues: ConsoleReport = Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            let c = db.queue_counts().await.map_err(|e| e.to_string())?;
            Ok(json!({ "ready": c.ready, "delayed": c.delayed, "leased": c.leased }))
        })
    });
    ConsoleConfig {
        queues: shared_store.then_some(queues),
        backup,
        shared_store,
    }
}

/// The console settings of a server with many databases served by `engine`: queue counts
/// from each database's counters, backups from each database's provider.
pub(crate) fn many_console_config(engine: crate::Engine) -> ConsoleConfig {
    ConsoleConfig {
        queues: None,
        backup: None,
        shared_store: engine == crate::Engine::Postgres,
    }
}

/// How many recovery points the backup report lists (newest first).
#[cfg(feature = "pitr")]
const RECOVERY_POINTS_SHOWN: usize = 20;

/// The backup report of a server started with `--backup-to`: where it goes, how it is doing
/// and its newest recovery points (reading them lists and reads every log segment).
#[cfg(feature = "pitr")]
pub(crate) fn backup_report(
    args: &crate::pitr_cmd::ServeBackupArgs,
    companion: &crate::pitr_cmd::Companion,
) -> Result<Option<ConsoleReport>, crate::MainError> {
    use crate::pitr_cmd::{open_store, Companion};
    use crate::MainError;
    use kv_pitr::consumer::BackupReader;

    let (Some(url), Companion::Backup(backup)) = (&args.backup_to, companion) else {
        return Ok(None);
    };
    let (store, prefix) = open_store(url, &args.store, true).map_err(MainError::from)?;
    let reader = Arc::new(BackupReader::new(store, prefix));
    let status = backup.subscribe();
    let url = url.clone();
    let checkpoint_secs = args.backup_checkpoint_secs;
    Ok(Some(Arc::new(move || {
        let reader = reader.clone();
        let s = status.borrow().clone();
        let url = url.clone();
        Box::pin(async move {
            let mut out = json!({
                "to": url,
                "checkpoint_every_secs": checkpoint_secs,
                "initial_snapshot_done": s.initial_snapshot_done,
                "committed": s.committed.to_string(),
                "shipped_through": s.shipped_through.to_string(),
                "lag_ms": s.lag_ms,
                "segments_uploaded": s.segments_uploaded,
                "last_upload_at": s.last_upload_at_ms.map(kv_pitr::consumer::format_time_ms),
                "last_checkpoint": s.last_checkpoint.map(|v| v.to_string()),
                "last_error": s.last_error,
                "standby": s.standby,
            });
            let points = match reader.layout().await {
                Ok(layout) => reader.all_recovery_points(&layout).await,
                Err(e) => Err(e),
            };
            match points {
                Ok(points) => {
                    out["recovery_point_count"] = json!(points.len());
                    out["recovery_points"] = points
                        .iter()
                        .rev()
                        .take(RECOVERY_POINTS_SHOWN)
                        .map(|p| json!({ "versionstamp": p.versionstamp.to_string(), "time": p.time_rfc3339() }))
                        .collect();
                }
                Err(e) => out["recovery_points_error"] = json!(e.to_string()),
            }
            Ok(out)
        })
    })))
}
