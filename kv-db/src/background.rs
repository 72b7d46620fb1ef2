//! Maintenance scheduling: the background task that runs the expiry sweep and lease expiry,
//! and [`Inner::maintain`], which runs passes until nothing due is left.
//!
//! Contract:
//! - The task checks every [`DbConfig::maintenance_interval`](crate::DbConfig) with a read
//!   transaction whether an expired key or lease is due, and only then asks the writer for
//!   passes, so an idle database commits nothing.
//! - It holds only a weak reference to the database and ends when the database is dropped or
//!   closed. Failures are logged and retried at the next interval.

use kv_traits::{BackendError, KvError};

use crate::feed;
use crate::layout::{self, EXPIRY, QUEUE_LEASE};
use crate::writer::{Op, Swept};
use crate::Inner;

impl Inner {
    /// Runs maintenance passes until nothing due is left; returns the expired keys deleted.
    pub(crate) async fn maintain(&self) -> Result<usize, KvError> {
        let mut total = 0;
        loop {
            let Swept { expired, more } = self.call(|reply| Op::Maintenance { reply }).await?;
            total += expired;
            if !more {
                return Ok(total);
            }
        }
    }

    /// True when an expired key or an expired lease awaits maintenance.
    async fn maintenance_due(&self) -> Result<bool, KvError> {
        let now = self.config.clock.now_ms();
        let mut txn = self.backend.begin_read().await?;
        for prefix in [EXPIRY, QUEUE_LEASE] {
            let end = layout::timed(prefix, now.saturating_add(1), &[]);
            if !txn.scan(&[prefix], &end, 1, false).await?.is_empty() {
                return Ok(true);
            }
        }
        if self.backend.shared() {
            return Ok(feed::trim_due(&mut *txn, now).await?);
        }
        Ok(false)
    }
}

/// The background maintenance task.
pub(crate) async fn background(
    inner: std::sync::Weak<Inner>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let Some(db) = inner.upgrade() else { return };
        let interval = db.config.maintenance_interval;
        match db.maintenance_due().await {
            Ok(true) => {
                if let Err(e) = db.maintain().await {
                    tracing::warn!(error = %e, "background maintenance failed");
                }
            }
            Ok(false) => {}
            Err(KvError::Closed) | Err(KvError::Backend(BackendError::Closed)) => return,
            Err(e) => tracing::warn!(error = %e, "background maintenance check failed"),
        }
        drop(db);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
