//! Read replicas: a database that follows a backup continuously.
//!
//! Contract: [`Replica::start`] returns once the latest point of the backup is restored (from
//! the newest checkpoint, if any) and the database can be served; a background task then
//! polls the backup every `poll_interval` (or on [`Replica::poll_now`]) and applies each
//! complete transaction (the same way as [`catch_up`](crate::restore::catch_up)), so readers only ever see recovery points of the
//! backup and watchers are notified. A failed poll is retried at the next interval and shown
//! in [`ReplicaStatus::last_error`]; closing the database stops the task. Open the database
//! with `read_only: true` so clients cannot write to it.

use std::sync::Arc;
use std::time::Duration;

use kv_db::Db;
use kv_traits::clock::now_ms;
use kv_traits::{KvError, Versionstamp};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::consumer::{BackupReader, RecoveryPoint};
use crate::follower::Follower;
use crate::restore::{check_empty, restore_staged, RestoreError, RestoreTarget};

/// Settings of a [`Replica`].
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Time between two polls of the backup for new log segments.
    pub poll_interval: Duration,
    /// If the database is not empty, assume it is a copy of this backup made earlier (by a
    /// replica or a restore) and continue from its versionstamp instead of failing.
    pub resume_existing: bool,
}

impl ReplicaConfig {
    /// Polls every `poll_interval`; refuses a non-empty database.
    pub fn new(poll_interval: Duration) -> Self {
        ReplicaConfig {
            poll_interval,
            resume_existing: false,
        }
    }
}

/// Where a [`Replica`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The recovery point the database is at.
    pub applied_through: Versionstamp,
    /// Source time of that point (ms since the Unix epoch; 0 if unknown).
    pub applied_timestamp_ms: u64,
    /// Transactions applied since the replica started (the initial restore included).
    pub transactions: u64,
    /// When the last poll started (ms since the Unix epoch).
    pub last_poll_at_ms: Option<u64>,
    /// When the last poll that succeeded started: everything the backup held then is applied.
    pub last_success_at_ms: Option<u64>,
    /// How far behind the backup the replica may be: time since `last_success_at_ms`, when
    /// the status was taken.
    pub lag_ms: Option<u64>,
    /// The error of the last poll, if it failed (cleared by the next success).
    pub last_error: Option<String>,
}

/// A read replica: a database that follows a backup. Dropping it stops the follower too.
pub struct Replica {
    status: watch::Receiver<ReplicaStatus>,
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl Replica {
    /// Restores the latest point of the backup into the empty `db`, then follows the backup,
    /// polling every `poll_interval`. Returns once the initial restore is done (serve the
    /// database after that). Open `db` read-only so clients cannot write to it.
    pub async fn start(
        reader: BackupReader,
        db: Db,
        poll_interval: Duration,
    ) -> Result<Replica, RestoreError> {
        Self::start_with(reader, db, ReplicaConfig::new(poll_interval)).await
    }

    /// [`Replica::start`] with all settings.
    pub async fn start_with(
        reader: BackupReader,
        db: Db,
        config: ReplicaConfig,
    ) -> Result<Replica, RestoreError> {
        let started = now_ms();
        let empty = check_empty(&db).await;
        let follower = match empty {
            Ok(()) => {
                let (outcome, staged) =
                    restore_staged(&reader, &db, RestoreTarget::Latest, &mut |_| {}).await?;
                Follower {
                    reader: reader.clone(),
                    db: db.clone(),
                    layout: staged.layout,
                    walker: staged.walker,
                    applied: RecoveryPoint {
                        versionstamp: outcome.versionstamp,
                        timestamp_ms: outcome.timestamp_ms,
                    },
                    transactions: outcome.transactions,
                    backlog: Vec::new(),
                }
            }
            Err(RestoreError::NotEmpty { .. }) if config.resume_existing => {
                let mut f = Follower::resume(&reader, &db).await?;
                f.poll(None).await?;
                f
            }
            Err(e) => return Err(e),
        };
        let initial = ReplicaStatus {
            applied_through: follower.applied.versionstamp,
            applied_timestamp_ms: follower.applied.timestamp_ms,
            transactions: follower.transactions,
            last_poll_at_ms: Some(started),
            last_success_at_ms: Some(started),
            lag_ms: None,
            last_error: None,
        };
        tracing::info!(
            versionstamp = %initial.applied_through,
            "read replica of {} started",
            reader.prefix()
        );
        let (status_tx, status) = watch::channel(initial);
        let (stop, stop_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(follow(
            follower,
            config.poll_interval,
            status_tx,
            stop_rx,
            wake.clone(),
        ));
        Ok(Replica {
            status,
            stop,
            wake,
            task: Some(task),
        })
    }

    /// The current status (with `lag_ms` computed now).
    pub fn status(&self) -> ReplicaStatus {
        let mut s = self.status.borrow().clone();
        s.lag_ms = s.last_success_at_ms.map(|t| now_ms().saturating_sub(t));
        s
    }

    /// A receiver that changes after every poll (its `lag_ms` is not filled in).
    pub fn subscribe(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// Polls now instead of waiting for the interval.
    pub fn poll_now(&self) {
        self.wake.notify_one();
    }

    /// Waits until the replica has applied `versionstamp` (or later), up to `timeout`.
    /// Returns the status then, or `None` on timeout.
    pub async fn wait_for(
        &self,
        versionstamp: Versionstamp,
        timeout: Duration,
    ) -> Option<ReplicaStatus> {
        let mut rx = self.status.clone();
        let res =
            tokio::time::timeout(timeout, rx.wait_for(|s| s.applied_through >= versionstamp)).await;
        match res {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Stops following (the database stays open and keeps its data).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn follow(
    mut follower: Follower,
    interval: Duration,
    status: watch::Sender<ReplicaStatus>,
    mut stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        let started = now_ms();
        let res = follower.poll(None).await;
        status.send_modify(|s| {
            s.applied_through = follower.applied.versionstamp;
            s.applied_timestamp_ms = follower.applied.timestamp_ms;
            s.transactions = follower.transactions;
            s.last_poll_at_ms = Some(started);
            match &res {
                Ok(_) => {
                    s.last_success_at_ms = Some(started);
                    s.last_error = None;
                }
                Err(e) => s.last_error = Some(e.to_string()),
            }
        });
        match res {
            Err(RestoreError::Db(KvError::Closed)) => {
                tracing::info!(
                    "read replica of {}: the database was closed; stopping",
                    follower.reader.prefix()
                );
                return;
            }
            Err(e) => tracing::warn!("read replica of {}: {e}", follower.reader.prefix()),
            Ok(_) => {}
        }
    }
}
