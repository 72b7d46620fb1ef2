//! Push notifications of commits (PostgreSQL `LISTEN`/`NOTIFY`).
//!
//! Contract:
//! - Every write transaction that commits data also sends `NOTIFY` on the store's channel (see
//!   `Names::channel`), in the same round trip as its `COMMIT`; PostgreSQL delivers it to the
//!   listeners only if, and once, the transaction committed.
//! - [`Listener`] keeps one dedicated connection (outside the pool) that `LISTEN`s on the
//!   channel, and counts notifications into a `watch` channel, so any number of subscribers
//!   see "something was committed since you last looked" (coalesced). When the connection
//!   fails it reconnects with backoff; subscribers then simply see no signals for a while,
//!   which is safe because they also poll (see `kv_traits::Backend::commit_signals`).
//! - The listening connection also holds the store's serving lock (`Names::serving_key`)
//!   shared, for as long as it lives: the sign, visible in `pg_locks`, that a read-write
//!   backend serves the store (a restore refuses to replace a store that is being served, see
//!   `admin.rs`). Closing the backend ends the connection and releases it.
//! - A store on a PostgreSQL-compatible system without `LISTEN` (some distributed SQL systems)
//!   keeps working: the listener logs once and retries slowly, and followers poll.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The listening task and the signal it feeds.
pub(crate) struct Listener {
    signal: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Starts listening on `channel` (an already quoted identifier).
    pub fn spawn(
        config: tokio_postgres::Config,
        tls: Option<MakeRustlsConnect>,
        channel: String,
        serving: (i32, i32),
    ) -> Listener {
        let (signal, _) = watch::channel(0u64);
        let task = tokio::spawn(listen(config, tls, channel, serving, signal.clone()));
        Listener { signal, task }
    }

    /// A new subscription: yields after each (coalesced) notification from now on.
    pub fn subscribe(&self) -> BoxStream<'static, ()> {
        let mut rx = self.signal.subscribe();
        rx.mark_unchanged();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok().map(|_| ((), rx))
        })
        .boxed()
    }
}

impl Listener {
    /// Stops listening (the store is closed).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    channel: String,
    serving: (i32, i32),
    signal: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&config, tls.clone(), &channel, serving, &signal).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::debug!(error = %e, "commit notifications unavailable; followers poll");
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        tokio::time::sleep(backoff).await;
        // Something may have been committed while no one listened.
        signal.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// One connection's life: `LISTEN`, then forward notifications until the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    channel: &str,
    serving: (i32, i32),
    signal: &watch::Sender<u64>,
) -> Result<(), tokio_postgres::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let client = match tls {
        Some(tls) => {
            let (client, conn) = config.connect(tls).await?;
            tokio::spawn(forward(conn, tx));
            client
        }
        None => {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(forward(conn, tx));
            client
        }
    };
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_lock_shared({}, {}); LISTEN {channel}",
            serving.0, serving.1
        ))
        .await?;
    while rx.recv().await.is_some() {
        signal.send_modify(|n| *n = n.wrapping_add(1));
    }
    Ok(())
}

/// Drives a connection, forwarding its notifications, until it ends.
async fn forward<S, T>(mut conn: tokio_postgres::Connection<S, T>, tx: mpsc::UnboundedSender<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(m) = messages.next().await {
        match m {
            Ok(AsyncMessage::Notification(_)) => {
                if tx.send(()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "the commit-notification connection ended");
                return;
            }
        }
    }
}
