//! Backups in the server binary: `serve --backup-to`, `serve --replica-of` and the `pitr`
//! subcommands, on top of the `kv-pitr` crate.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use kv_connect_server::{GaugeSample, ReplicaSettings, ServerConfig};
use kv_pitr::consumer::BackupReader;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{Replica, ReplicaConfig, RestoreTarget};
use kv_traits::Versionstamp;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::{open_db, DbArgs, MainError};

/// Errors of the backup commands, each naming what failed and keeping its cause.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PitrCliError {
    #[error("invalid backup location {url:?}: no such directory")]
    NoSuchDirectory { url: String },
    /// The location's own error names it (boxed: object-store errors are large).
    #[error(transparent)]
    Location(Box<kv_pitr::consumer::StoreUrlError>),
    #[error("invalid --at {value:?}: {source}")]
    At {
        value: String,
        source: kv_traits::versionstamp::InvalidVersionstamp,
    },
    #[error("invalid {what} {value:?}: not an RFC 3339 time: {source}")]
    Time {
        what: &'static str,
        value: String,
        source: chrono::ParseError,
    },
    #[error("invalid {what} {value:?}: before 1970")]
    TimeBeforeEpoch { what: &'static str, value: String },
    #[error("backup: {0}")]
    Backup(#[from] kv_pitr::producer::BackupError),
    #[error("restore: {0}")]
    Restore(#[from] kv_pitr::restore::RestoreError),
    #[error("restore: only a file or postgres database (sqlite, redb, postgres) can be moved backwards in place; restore into a new database instead")]
    MemoryBackwards,
    #[error("restore: {0}")]
    RestoreFile(#[source] kv_pitr::file_restore::FileRestoreError),
    #[cfg(feature = "postgres")]
    #[error("restore: {0}")]
    RestorePostgres(#[source] Box<kv_pitr::pg_restore::PgRestoreError>),
    #[error("replica: {0}")]
    Replica(#[source] kv_pitr::restore::RestoreError),
    #[error("reading the backup: {0}")]
    Read(#[from] kv_pitr::consumer::ConsumerError),
    #[error("closing the database failed: {0}")]
    Close(#[source] kv_traits::KvError),
}

/// Where backups live and how to reach an S3-compatible store.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct StoreArgs {
    /// Endpoint of an S3-compatible store (MinIO, moto, Cloudflare R2, ...) for `s3://` URLs.
    /// Credentials and region come from the usual `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN` and `AWS_REGION` variables.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
}

/// Backup options of `serve`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ServeBackupArgs {
    /// Stream every committed write to a backup at this location: `s3://bucket/prefix/`,
    /// `file:///abs/dir` or a directory path. The backup uses Deno Deploy's continuous-backup
    /// layout; writes never wait for the store, which catches up if it was unreachable.
    #[arg(long, env = "KV_CONNECT_BACKUP_TO", conflicts_with = "replica_of")]
    pub backup_to: Option<String>,

    /// With `--backup-to`: take a full snapshot ("checkpoint") this often, in seconds, when
    /// there were writes since the last one, so restores replay at most this much log.
    /// 0 disables checkpoints (restores then replay the log from the first snapshot).
    #[arg(
        long,
        env = "KV_CONNECT_BACKUP_CHECKPOINT_SECS",
        default_value_t = 3600
    )]
    pub backup_checkpoint_secs: u64,

    /// With `--backup-to`: keep recovery points for this long only (e.g. `7d`, `12h`, `90m`).
    /// After every checkpoint, the log segments and checkpoints that no point of the window
    /// needs are deleted (after a further `--backup-retention-grace`), so backup storage and
    /// restore time stop growing. Needs checkpoints. Unset: keep everything. A compacted backup
    /// can no longer be consumed by the reference `denokv`.
    #[arg(
        long,
        env = "KV_CONNECT_BACKUP_RETENTION",
        requires = "backup_to",
        value_parser = parse_retention
    )]
    pub backup_retention: Option<Duration>,

    /// With `--backup-retention`: keep objects this much longer than the window, so a restore
    /// or a read replica that started within the window can finish reading them.
    #[arg(
        long,
        env = "KV_CONNECT_BACKUP_RETENTION_GRACE",
        default_value = "1h",
        value_parser = humantime::parse_duration
    )]
    pub backup_retention_grace: Duration,

    /// Serve a read-only replica that follows the backup at this location (restored into the
    /// database at `--path` first). Writes get a 400 saying the database is a replica.
    #[arg(long, env = "KV_CONNECT_REPLICA_OF")]
    pub replica_of: Option<String>,

    /// Replica only: the primary's data-path URL (e.g. `http://primary:4512/v2`), advertised as
    /// the `strong` endpoint so clients send writes and strong reads there. It must use the
    /// same access token.
    #[arg(long, env = "KV_CONNECT_PRIMARY_URL", requires = "replica_of")]
    pub primary_url: Option<String>,

    /// Replica only: how often to look for new log segments, in milliseconds.
    #[arg(long, env = "KV_CONNECT_REPLICA_POLL_MS", default_value_t = 1000)]
    pub replica_poll_ms: u64,

    #[command(flatten)]
    pub store: StoreArgs,
}

/// The backup a `pitr` command reads.
#[derive(Args, Debug, Clone)]
pub(crate) struct BackupArgs {
    /// The backup: `s3://bucket/prefix/`, `file:///abs/dir` or a directory path.
    #[arg(long, env = "KV_PITR_FROM")]
    pub from: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl BackupArgs {
    /// A reader of the backup (a local directory must exist).
    fn reader(&self) -> Result<BackupReader, PitrCliError> {
        let (store, prefix) = open_store(&self.from, &self.store, false)?;
        Ok(BackupReader::new(store, prefix)
            .with_concurrency(kv_pitr::url::fetch_concurrency(&self.from)))
    }
}

/// The recovery point a `pitr` command goes to; the latest when neither is given.
#[derive(Args, Debug, Clone)]
pub(crate) struct TargetArgs {
    /// This recovery point (20 hex digits, as `pitr list` prints them).
    #[arg(long, conflicts_with = "time")]
    pub at: Option<String>,
    /// The newest recovery point at or before this time (RFC 3339).
    #[arg(long)]
    pub time: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Result<RestoreTarget, PitrCliError> {
        Ok(match (&self.at, &self.time) {
            (Some(vs), _) => {
                RestoreTarget::Versionstamp(vs.parse::<Versionstamp>().map_err(|source| {
                    PitrCliError::At {
                        value: vs.clone(),
                        source,
                    }
                })?)
            }
            (None, Some(t)) => RestoreTarget::Time(parse_time("--time", t)?),
            (None, None) => RestoreTarget::Latest,
        })
    }
}

/// `kv-connect-server pitr ...`
#[derive(Subcommand, Debug)]
pub(crate) enum PitrCommand {
    /// List the recovery points of a backup, newest first: `<versionstamp>\t<RFC 3339 time>`.
    List {
        #[command(flatten)]
        backup: BackupArgs,
        /// Only points at or after this time (RFC 3339).
        #[arg(long)]
        start: Option<String>,
        /// Only points before this time (RFC 3339).
        #[arg(long)]
        end: Option<String>,
    },
    /// Describe a backup: its first consistent point, latest point and object counts.
    Info {
        #[command(flatten)]
        backup: BackupArgs,
    },
    /// Move a database restored from a backup (and not written since) to another point: the
    /// latest, or `--at` / `--time`. Forward moves apply the log in place; backward moves
    /// restore into a new file or schema and replace the old one (sqlite, redb and postgres).
    Checkout {
        #[command(flatten)]
        backup: BackupArgs,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Show where a database is: `Current versionstamp: <20 hex digits>` (the recovery point
    /// of a restored copy, else the last commit) and whether it is still an unwritten copy of
    /// a backup (what `checkout` needs).
    Status {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Delete the log segments before the newest checkpoint at or before `--at` / `--time`
    /// (default: the newest checkpoint), so backup storage stops growing with its age. Every
    /// recovery point before that checkpoint's first one is lost; later ones stay restorable.
    /// The reference `denokv` cannot read a compacted backup.
    Compact {
        #[command(flatten)]
        backup: BackupArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Restore a backup into a new database (any engine), to the latest point or to `--at` /
    /// `--time`.
    Restore {
        #[command(flatten)]
        backup: BackupArgs,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Ignore checkpoints: start from the initial snapshot and replay the whole log (e.g.
        /// to get around a damaged checkpoint).
        #[arg(long)]
        no_checkpoints: bool,
    },
}

/// Opens an object store from a backup location (see [`kv_pitr::consumer::open_store_url`]).
/// A local directory is created when `create` is set (a new backup), and must exist otherwise.
pub(crate) fn open_store(
    url: &str,
    store: &StoreArgs,
    create: bool,
) -> Result<(Arc<dyn ObjectStore>, Path), PitrCliError> {
    let local = match url.strip_prefix("file://") {
        Some(p) => Some(p),
        None if url.contains("://") => None,
        None => Some(url),
    };
    if let Some(dir) = local {
        if !create && !dir.is_empty() && !std::path::Path::new(dir).is_dir() {
            return Err(PitrCliError::NoSuchDirectory {
                url: url.to_string(),
            });
        }
    }
    kv_pitr::consumer::open_store_url(url, store.s3_endpoint.as_deref())
        .map_err(|e| PitrCliError::Location(Box::new(e)))
}

/// What runs beside the server: a backup shipper or a replica follower.
pub(crate) enum Companion {
    None,
    Backup(Backup),
    Replica(Replica),
}

impl Companion {
    /// Stops it, shipping or applying what it can first.
    pub(crate) async fn stop(self) {
        match self {
            Companion::None => {}
            Companion::Backup(b) => {
                if let Err(e) = b.shutdown().await {
                    tracing::warn!(error = %e, "backup stopped with unshipped changes; they are kept and shipped at the next start");
                }
            }
            Companion::Replica(r) => r.stop().await,
        }
    }
}

/// Opens the database to serve, with its backup shipper or replica follower.
pub(crate) async fn open_for_serving(
    db_args: &DbArgs,
    mut db_config: kv_db::DbConfig,
    args: &ServeBackupArgs,
    server: &mut ServerConfig,
) -> Result<(kv_db::Db, Companion), MainError> {
    if let Some(url) = &args.backup_to {
        let (db, backup, report, gauges) = open_with_backup(db_args, db_config, args, url).await?;
        server.health_report = Some(report);
        server.metrics_report = Some(gauges);
        return Ok((db, backup));
    }
    if let Some(url) = &args.replica_of {
        let (store, prefix) = open_store(url, &args.store, false)?;
        db_config.read_only = true;
        db_config.background_tasks = false;
        let db = open_db(db_args, db_config).await?;
        let reader =
            BackupReader::new(store, prefix).with_concurrency(kv_pitr::url::fetch_concurrency(url));
        // A restarted replica continues from what its database already holds.
        let config = ReplicaConfig {
            resume_existing: true,
            ..ReplicaConfig::new(Duration::from_millis(args.replica_poll_ms.max(10)))
        };
        let replica = Replica::start_with(reader, db.clone(), config)
            .await
            .map_err(PitrCliError::Replica)?;
        let gauges = replica.subscribe();
        server.metrics_report = Some(Arc::new(move || {
            let s = gauges.borrow().clone();
            // The receiver's status has no lag filled in: compute it like `Replica::status`.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            match s.last_success_at_ms {
                Some(t) => vec![GaugeSample {
                    name: "kv_replica_lag_seconds",
                    help: "Time since the read replica last caught up with its backup",
                    value: now.saturating_sub(t) as f64 / 1000.0,
                }],
                None => Vec::new(),
            }
        }));
        let status = replica.subscribe();
        server.health_report = Some(Arc::new(move || {
            let s = status.borrow().clone();
            format!(
                "replica_applied_through: {}\nreplica_lag_ms: {}\nreplica_last_error: {}\n",
                s.applied_through,
                s.lag_ms
                    .map_or_else(|| "unknown".to_string(), |l| l.to_string()),
                s.last_error.as_deref().unwrap_or("none")
            )
        }));
        server.replica = Some(ReplicaSettings {
            source: url.clone(),
            primary_data_url: args.primary_url.clone(),
        });
        tracing::info!(of = %url, "read replica following the backup");
        return Ok((db, Companion::Replica(replica)));
    }
    Ok((open_db(db_args, db_config).await?, Companion::None))
}

/// Opens the database `db_args` names with continuous backup to `url` (`--backup-to`, or a
/// database's sub-prefix of it with `--data-dir`); returns it, the running backup and the
/// `/healthz` lines reporting on it.
pub(crate) async fn open_with_backup(
    db_args: &DbArgs,
    mut db_config: kv_db::DbConfig,
    args: &ServeBackupArgs,
    url: &str,
) -> Result<
    (
        kv_db::Db,
        Companion,
        kv_connect_server::HealthReport,
        kv_connect_server::MetricsReport,
    ),
    MainError,
> {
    let (store, prefix) = open_store(url, &args.store, true)?;
    db_config.change_log = true;
    let db = open_db(db_args, db_config).await?;
    let mut config = BackupConfig::new(store, prefix);
    config.checkpoint_interval =
        (args.backup_checkpoint_secs > 0).then(|| Duration::from_secs(args.backup_checkpoint_secs));
    config.retention = args.backup_retention;
    config.retention_grace = args.backup_retention_grace;
    let backup = Backup::start(db.clone(), config)
        .await
        .map_err(PitrCliError::Backup)?;
    let gauges = backup.subscribe();
    let metrics: kv_connect_server::MetricsReport = Arc::new(move || {
        let s = gauges.borrow().clone();
        let mut out = vec![
            GaugeSample {
                name: "kv_backup_lag_seconds",
                help: "How far the continuous backup lags behind the latest commit",
                value: s.lag_ms as f64 / 1000.0,
            },
            GaugeSample {
                name: "kv_backup_standby",
                help: "1 while this server stands by (another server of the shared database ships the backup)",
                value: f64::from(u8::from(s.standby)),
            },
            GaugeSample {
                name: "kv_backup_compacted_bytes",
                help: "Bytes of log segments deleted by --backup-retention since the server started",
                value: s.compacted_bytes as f64,
            },
            GaugeSample {
                name: "kv_backup_failing",
                help: "1 while the last backup attempt failed",
                value: f64::from(u8::from(s.last_error.is_some())),
            },
        ];
        if let Some(ms) = s.last_upload_at_ms {
            out.push(GaugeSample {
                name: "kv_backup_last_upload_timestamp_seconds",
                help: "Unix time of the backup's last successful upload (absent before the first)",
                value: ms as f64 / 1000.0,
            });
        }
        out
    });
    let status = backup.subscribe();
    let report: kv_connect_server::HealthReport = Arc::new(move || {
        let s = status.borrow().clone();
        format!(
            "backup_initial_snapshot_done: {}\nbackup_shipped_through: {}\nbackup_committed: {}\nbackup_lag_ms: {}\nbackup_last_error: {}\nbackup_standby: {}\n",
            s.initial_snapshot_done,
            s.shipped_through,
            s.committed,
            s.lag_ms,
            s.last_error.as_deref().unwrap_or("none"),
            s.standby
        )
    });
    tracing::info!(to = %url, "continuous backup running");
    Ok((db, Companion::Backup(backup), report, metrics))
}

/// `--backup-retention`: a human duration (`7d`, `12h`) longer than zero.
fn parse_retention(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the retention window must be longer than zero".into());
    }
    Ok(d)
}

fn parse_time(what: &'static str, value: &str) -> Result<u64, PitrCliError> {
    let t = chrono::DateTime::parse_from_rfc3339(value).map_err(|source| PitrCliError::Time {
        what,
        value: value.to_string(),
        source,
    })?;
    u64::try_from(t.timestamp_millis()).map_err(|_| PitrCliError::TimeBeforeEpoch {
        what,
        value: value.to_string(),
    })
}

/// Opens a database to restore into or move in time (no background sweeps: it must hold
/// exactly what the backup says).
async fn open_target(db: &DbArgs) -> Result<kv_db::Db, MainError> {
    let config = kv_db::DbConfig {
        background_tasks: false,
        ..Default::default()
    };
    open_db(db, config).await
}

/// Restores into the database `db` names. File engines (sqlite, redb) restore into a
/// temporary file beside it that replaces it only when complete
/// ([`kv_pitr::file_restore::restore_file`]): a failed or killed restore leaves the old file
/// (or none). Postgres restores into a staging schema swapped in by one transaction when
/// complete ([`restore_postgres`]). `replace` allows replacing a non-empty database
/// (`checkout` backwards). The memory engine has nothing to swap: it restores in place (a
/// failure deletes what was written).
async fn restore_into(
    reader: &BackupReader,
    db: &DbArgs,
    target: RestoreTarget,
    replace: bool,
) -> Result<kv_pitr::restore::RestoreOutcome, MainError> {
    let mut last_report = std::time::Instant::now();
    let progress = move |p| {
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = std::time::Instant::now();
            eprintln!("restoring: {p:?}");
        }
    };
    #[cfg(feature = "postgres")]
    if db.engine == crate::Engine::Postgres {
        return restore_postgres(reader, db, target, replace, progress).await;
    }
    if matches!(db.engine, crate::Engine::Memory | crate::Engine::Postgres) {
        if replace {
            return Err(PitrCliError::MemoryBackwards.into());
        }
        let target_db = open_target(db).await?;
        let outcome = kv_pitr::restore::restore(reader, &target_db, target, progress).await;
        let closed = kv_traits::Database::close(&target_db).await;
        let outcome = outcome.map_err(PitrCliError::Restore)?;
        closed.map_err(PitrCliError::Close)?;
        return Ok(outcome);
    }
    let open = |path: std::path::PathBuf| {
        let args = DbArgs { path, ..db.clone() };
        async move { open_target(&args).await }
    };
    let result = if replace {
        // Build beside the old copy, then swap: `restore_file` would refuse a non-empty target.
        let tmp = kv_pitr::file_restore::temp_path(&db.path);
        let staging = tmp.with_extension("pitr-checkout");
        match kv_pitr::file_restore::remove_database(&staging) {
            Ok(()) => kv_pitr::file_restore::restore_file(reader, &staging, open, target, progress)
                .await
                .and_then(|o| kv_pitr::file_restore::swap_in(&staging, &db.path).map(|()| o)),
            Err(e) => Err(e),
        }
    } else {
        kv_pitr::file_restore::restore_file(reader, &db.path, open, target, progress).await
    };
    Ok(result.map_err(PitrCliError::RestoreFile)?)
}

/// Restores into the postgres store `db` names, all or nothing (see
/// [`kv_pitr::pg_restore::restore_postgres`]: a staging schema swapped in by one transaction,
/// refused while read-write servers serve the target).
#[cfg(feature = "postgres")]
async fn restore_postgres(
    reader: &BackupReader,
    db: &DbArgs,
    target: RestoreTarget,
    replace: bool,
    progress: impl FnMut(kv_pitr::restore::RestoreProgress),
) -> Result<kv_pitr::restore::RestoreOutcome, MainError> {
    let url = db
        .postgres
        .database_url
        .as_deref()
        .ok_or(MainError::NoDatabaseUrl)?;
    let options = crate::postgres_options(db, false);
    kv_pitr::pg_restore::restore_postgres(reader, url, options, replace, target, progress)
        .await
        .map_err(|e| PitrCliError::RestorePostgres(Box::new(e)).into())
}

fn format_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn print(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
}

/// Runs a `pitr` subcommand.
pub(crate) async fn run(cmd: PitrCommand) -> Result<(), MainError> {
    match cmd {
        PitrCommand::List { backup, start, end } => {
            let start = start.map(|s| parse_time("--start", &s)).transpose()?;
            let end = end.map(|s| parse_time("--end", &s)).transpose()?;
            let points = backup
                .reader()?
                .recovery_points(start, end)
                .await
                .map_err(PitrCliError::Read)?;
            for p in points {
                print(format_args!(
                    "{}\t{}",
                    p.versionstamp,
                    format_time(p.timestamp_ms)
                ));
            }
            Ok(())
        }
        PitrCommand::Info { backup } => {
            let info = backup.reader()?.info().await.map_err(PitrCliError::Read)?;
            let kind = if info.manifest.is_some() {
                "kv-pitr"
            } else {
                "foreign (e.g. Deno Deploy)"
            };
            print(format_args!("Backup written by: {kind}"));
            print(format_args!(
                "First consistent point: {}\t{}",
                info.first_point.versionstamp,
                format_time(info.first_point.timestamp_ms)
            ));
            print(format_args!(
                "Latest point: {}\t{}",
                info.latest_point.versionstamp,
                format_time(info.latest_point.timestamp_ms)
            ));
            print(format_args!("Recovery points: {}", info.recovery_points));
            print(format_args!(
                "Objects: {} snapshot ranges, {} log segments, {} bytes",
                info.snapshot_ranges, info.log_segments, info.log_bytes
            ));
            Ok(())
        }
        PitrCommand::Compact { backup, target } => {
            let report = kv_pitr::compact::compact(&backup.reader()?, target.target()?)
                .await
                .map_err(PitrCliError::Read)?;
            match (report.checkpoint, report.first_point) {
                (Some(c), Some(first)) => print(format_args!(
                    "Compacted to checkpoint {c}: deleted {} log segments ({} bytes); first recovery point now {}\t{}",
                    report.deleted_segments,
                    report.deleted_bytes,
                    first.versionstamp,
                    format_time(first.timestamp_ms)
                )),
                _ => print(format_args!(
                    "Nothing to compact (no newer checkpoint at or before the horizon)"
                )),
            }
            Ok(())
        }
        PitrCommand::Status { db } => {
            let target_db = open_target(&db).await?;
            let points = async {
                Ok::<_, kv_traits::KvError>((
                    target_db.imported_through().await?,
                    target_db.current_versionstamp().await?,
                ))
            }
            .await;
            let closed = kv_traits::Database::close(&target_db).await;
            let (imported, current) = points.map_err(|source| MainError::Open {
                location: db.path.display().to_string(),
                source,
            })?;
            closed.map_err(PitrCliError::Close)?;
            print(format_args!(
                "Current versionstamp: {}",
                imported.unwrap_or(current)
            ));
            print(format_args!(
                "Restored copy: {}",
                if imported.is_some() {
                    "yes (not written since; `pitr checkout` can move it)"
                } else {
                    "no"
                }
            ));
            Ok(())
        }
        PitrCommand::Checkout { backup, db, target } => {
            let target = target.target()?;
            let reader = backup.reader()?;
            let target_db = open_target(&db).await?;
            let outcome = kv_pitr::restore::catch_up(&reader, &target_db, target).await;
            let closed = kv_traits::Database::close(&target_db).await;
            let outcome = match outcome {
                Err(kv_pitr::restore::RestoreError::Backwards { .. }) => {
                    closed.map_err(PitrCliError::Close)?;
                    restore_into(&reader, &db, target, true).await?
                }
                other => {
                    let outcome = other.map_err(PitrCliError::Restore)?;
                    closed.map_err(PitrCliError::Close)?;
                    outcome
                }
            };
            print(format_args!(
                "Snapshot is now at versionstamp {} ({})",
                outcome.versionstamp,
                format_time(outcome.timestamp_ms)
            ));
            Ok(())
        }
        PitrCommand::Restore {
            backup,
            db,
            target,
            no_checkpoints,
        } => {
            let target = target.target()?;
            let reader = backup.reader()?.with_checkpoints(!no_checkpoints);
            let outcome = restore_into(&reader, &db, target, false).await?;
            let base = match outcome.checkpoint {
                Some(c) => format!("checkpoint {c}"),
                None => "the initial snapshot".to_string(),
            };
            print(format_args!(
                "Restored {} to versionstamp {} ({}): {} keys, {} transactions replayed on {base}",
                db.path.display(),
                outcome.versionstamp,
                format_time(outcome.timestamp_ms),
                outcome.keys,
                outcome.transactions,
            ));
            Ok(())
        }
    }
}
