//! How a [`Db`](crate::Db) is configured.

use std::sync::Arc;
use std::time::Duration;

use kv_traits::{Clock, Limits, SystemClock};

/// Configuration of a [`Db`](crate::Db).
#[derive(Clone)]
pub struct DbConfig {
    /// Limits enforced on requests. [`Db`](crate::Db) checks every read, write and watch
    /// against them, once, before anything reaches the backend (see the crate docs).
    pub limits: Limits,
    /// Time source for expiry and queues.
    pub clock: Arc<dyn Clock>,
    /// Run the expiry sweep and queue lease expiry in the background. Tests with a
    /// [`kv_traits::ManualClock`] turn this off and call
    /// [`Db::run_maintenance`](crate::Db::run_maintenance) themselves.
    pub background_tasks: bool,
    /// How often the background task looks for expired keys and leases.
    pub maintenance_interval: Duration,
    /// How long a dequeued message is leased to its listener before it is redelivered.
    pub queue_lease: Duration,
    /// Read-only database: writes fail with [`KvError::WriteDisabled`](kv_traits::KvError::WriteDisabled).
    /// [`Db::import`](crate::Db::import) still works (read replicas apply what they follow
    /// with it).
    pub read_only: bool,
    /// Keep a durable log of every commit's changes for a backup shipper (see
    /// [`Db::read_changes`](crate::Db::read_changes)). Costs one extra row per commit until it
    /// is trimmed.
    pub change_log: bool,
    /// Shared stores only ([`kv_traits::Backend::shared`]): how often this process looks for
    /// commits made by other processes (to wake watchers and queue listeners), besides the
    /// engine's push notifications.
    pub follow_interval: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            background_tasks: true,
            maintenance_interval: Duration::from_millis(500),
            queue_lease: Duration::from_secs(30),
            read_only: false,
            change_log: false,
            follow_interval: Duration::from_millis(25),
        }
    }
}
