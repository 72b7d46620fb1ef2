//! SKELETON (being implemented): the Deno KV semantics over any Backend.
use std::sync::Arc;
use std::time::Duration;
use kv_traits::*;

/// Configuration of a [`Db`].
#[derive(Clone)]
pub struct DbConfig {
    /// Limits enforced on requests.
    pub limits: Limits,
    /// Time source for expiry and queues.
    pub clock: Arc<dyn Clock>,
    /// Run the expiry sweep and queue lease/timer tasks in the background. Tests with a
    /// [`ManualClock`] turn this off and call [`Db::run_maintenance`] themselves.
    pub background_tasks: bool,
    /// How long a dequeued message is leased to its listener before it is redelivered.
    pub queue_lease: Duration,
    /// Read-only database: writes fail with [`KvError::WriteDisabled`].
    pub read_only: bool,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            background_tasks: true,
            queue_lease: Duration::from_secs(30),
            read_only: false,
        }
    }
}

/// A Deno KV database over a [`Backend`].
pub struct Db {
    _b: Arc<dyn Backend>,
}

impl Db {
    /// Opens the database on `backend`, initialising or checking its format.
    pub async fn open(backend: impl Backend, config: DbConfig) -> Result<Db, KvError> {
        let _ = config;
        Ok(Db { _b: Arc::new(backend) })
    }

    /// Runs one expiry sweep and one queue maintenance pass (lease expiry) now, at the clock's
    /// current time. Returns the number of expired keys deleted.
    pub async fn run_maintenance(&self) -> Result<usize, KvError> {
        Ok(0)
    }
}
