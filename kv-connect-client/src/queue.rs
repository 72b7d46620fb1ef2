//! `listen_queue`: dequeue, run the handler, finish with its outcome.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use kv_traits::{Database, KvError, QueueMessage};

use crate::backoff::Backoff;
use crate::error::Error;
use crate::kv::Kv;
use crate::value::Value;

/// A delivered queue message.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The message (V8 payloads outside the scalar subset arrive as [`Value::V8`]).
    pub value: Value,
    /// Delivery attempt, 1 for the first.
    pub attempt: u32,
}

/// Options of [`Kv::listen_queue_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// How many handlers may run at once.
    pub concurrency: usize,
    /// How long one dequeue call waits for a message (long poll).
    pub poll_wait: Duration,
    /// Delays after transient dequeue errors.
    pub error_backoff: Backoff,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            concurrency: 1,
            poll_wait: Duration::from_secs(10),
            error_backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
        }
    }
}

type DequeueFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<QueueMessage>, KvError>> + Send + 'a>>;

/// Awaits `f` if present, else never completes.
async fn maybe<F: Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Runs one handler and finishes its message. Returns `Err` only when the listener must stop.
async fn deliver<Fut, E>(
    db: Arc<dyn Database>,
    msg: QueueMessage,
    handler: Fut,
) -> Result<(), Error>
where
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let success = match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, attempt = msg.attempt, "queue handler failed; the message will be retried");
            false
        }
        Err(_) => {
            tracing::warn!(
                attempt = msg.attempt,
                "queue handler panicked; the message will be retried"
            );
            false
        }
    };
    match db.finish(msg.lease, success).await {
        Ok(()) => Ok(()),
        Err(KvError::Closed) => Err(Error::Kv(KvError::Closed)),
        Err(KvError::LeaseNotFound) => {
            tracing::warn!(
                "queue lease expired before the handler finished; the message may be redelivered"
            );
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "finishing a queue message failed; it will be redelivered when its lease expires");
            Ok(())
        }
    }
}

impl Kv {
    /// Delivers queue messages to `handler` one at a time until the database is closed (then
    /// returns `Ok(())`) or a non-transient error occurs (e.g. a remote server without the
    /// queue extension). A handler returning `Err` or panicking fails the delivery: the
    /// message is retried along its backoff schedule.
    ///
    /// The listener runs until dropped or closed; spawn it as a task. Delivery is
    /// at-least-once: a message whose dequeue was in flight when the listener was dropped or
    /// the database closed stays leased until its lease expires (30 s by default on the
    /// server) and is then redelivered.
    pub async fn listen_queue<F, Fut, E>(&self, handler: F) -> Result<(), Error>
    where
        F: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.listen_queue_with(ListenOptions::default(), handler)
            .await
    }

    /// [`listen_queue`](Self::listen_queue) with options (concurrent handlers, poll wait).
    pub async fn listen_queue_with<F, Fut, E>(
        &self,
        options: ListenOptions,
        mut handler: F,
    ) -> Result<(), Error>
    where
        F: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let db = self.database().clone();
        let concurrency = options.concurrency.max(1);
        let mut running = FuturesUnordered::new();
        let mut dequeue: Option<DequeueFuture<'_>> = None;
        let mut failures = 0u32;
        loop {
            if dequeue.is_none() && running.len() < concurrency {
                dequeue = Some(db.dequeue(options.poll_wait));
            }
            tokio::select! {
                Some(done) = running.next(), if !running.is_empty() => {
                    match done {
                        Err(Error::Kv(KvError::Closed)) => return Ok(()),
                        Err(e) => return Err(e),
                        Ok(()) => {}
                    }
                }
                result = maybe(dequeue.as_mut()), if dequeue.is_some() => {
                    dequeue = None;
                    match result {
                        Ok(Some(msg)) => {
                            failures = 0;
                            let delivery = Delivery {
                                value: Value::from_v8_bytes(msg.payload.clone()),
                                attempt: msg.attempt,
                            };
                            let fut = handler(delivery);
                            running.push(deliver(db.clone(), msg, fut));
                        }
                        Ok(None) => failures = 0,
                        Err(KvError::Closed) => {
                            // Let running handlers finish (their finish fails with Closed).
                            while running.next().await.is_some() {}
                            return Ok(());
                        }
                        Err(e) if e.is_client_error() => return Err(e.into()),
                        Err(e) => {
                            tracing::warn!(error = %e, "dequeue failed; retrying");
                            tokio::time::sleep(options.error_backoff.delay(failures)).await;
                            failures = failures.saturating_add(1);
                        }
                    }
                }
            }
        }
    }
}
