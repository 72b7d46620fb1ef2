//! A reconnecting link to one server: the metadata exchange and one data-path connection,
//! redone when the server goes away (killed, restarted, its database restarting).
//!
//! Contract:
//! - Reads ([`Link::snapshot_read`]) are idempotent: a failed read is retried on a fresh
//!   connection (metadata exchange included, since a restarted server may issue new tokens)
//!   every [`RETRY_PAUSE`] until `retry_for` has passed; only then is the error returned.
//! - Writes ([`Link::atomic_write`]) are retried only while nothing was sent: when establishing
//!   the connection fails, or when the server answered 401/403 (authentication is checked
//!   before anything is applied). Once the request was handed to a connection, any failure
//!   (transport error, timeout, a non-200 answer, an undecodable body) is a
//!   [`WriteError::Unknown`] outcome: the write may or may not have been applied, and it is never
//!   retried here.
//! - Several clients may share a link; a broken connection is replaced once (a generation
//!   number tells whether another client already replaced it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use kv_proto::{pb, queue_pb};
use tokio::sync::Mutex;

use crate::client::{self, ClientError, Connection, Endpoint, HttpMode};

/// Pause between two reconnection attempts.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why a write has no definite answer.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Nothing reached the server within the retry time: the write was not applied.
    #[error("not sent: {0}")]
    NotSent(ClientError),
    /// The request was sent and no definite answer came back: it may have been applied.
    #[error("unknown outcome: {0}")]
    Unknown(ClientError),
}

struct Live {
    endpoint: Arc<Endpoint>,
    conn: Connection,
    generation: u64,
}

/// One server, reached over a connection that is replaced when it breaks.
pub struct Link {
    url: String,
    access_token: String,
    mode: HttpMode,
    timeout: Duration,
    retry_for: Duration,
    live: Mutex<Option<Live>>,
    generations: std::sync::atomic::AtomicU64,
}

impl Link {
    /// Connects to `url` now (so a wrong URL or token fails the run up front).
    pub async fn open(
        url: &str,
        access_token: &str,
        mode: HttpMode,
        timeout: Duration,
        retry_for: Duration,
    ) -> Result<Arc<Link>, ClientError> {
        let link = Link {
            url: url.to_owned(),
            access_token: access_token.to_owned(),
            mode,
            timeout,
            retry_for,
            live: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
        };
        link.connect().await?;
        Ok(Arc::new(link))
    }

    /// The metadata URL of the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The negotiated protocol version of the current connection (0 when disconnected).
    pub async fn version(&self) -> u32 {
        self.live
            .lock()
            .await
            .as_ref()
            .map_or(0, |l| l.endpoint.version)
    }

    async fn connect(&self) -> Result<(Arc<Endpoint>, Connection, u64), ClientError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            return Ok((l.endpoint.clone(), l.conn.clone(), l.generation));
        }
        let endpoint =
            client::exchange_metadata(&self.url, &self.access_token, self.mode, self.timeout)
                .await?;
        let conn = Connection::open(endpoint.addr, self.mode).await?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *live = Some(Live {
            endpoint: endpoint.clone(),
            conn: conn.clone(),
            generation,
        });
        Ok((endpoint, conn, generation))
    }

    async fn drop_connection(&self, generation: u64) {
        let mut live = self.live.lock().await;
        if live.as_ref().is_some_and(|l| l.generation == generation) {
            *live = None;
        }
    }

    /// A strong snapshot read, retried on a fresh connection until `retry_for` has passed.
    pub async fn snapshot_read(
        &self,
        req: &pb::SnapshotRead,
    ) -> Result<pb::SnapshotReadOutput, ClientError> {
        let give_up = Instant::now() + self.retry_for;
        loop {
            let attempt = async {
                let (endpoint, conn, generation) = self.connect().await?;
                match conn.snapshot_read(&endpoint, req).await {
                    Ok(out) => Ok(out),
                    Err(e) => {
                        self.drop_connection(generation).await;
                        Err(e)
                    }
                }
            };
            match attempt.await {
                Ok(out) => return Ok(out),
                Err(e) if retryable_read(&e) && Instant::now() < give_up => {
                    tracing::debug!("read via {} failed, retrying: {e}", self.url);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a watch stream on the current connection (no retry: a benchmark counts a watch
    /// that cannot open as an error).
    pub async fn watch(&self, req: &pb::Watch) -> Result<hyper::body::Incoming, ClientError> {
        let (endpoint, conn, _) = self.connect().await?;
        conn.watch(&endpoint, req).await
    }

    /// An atomic write, retried only while it was certainly not applied (see the module docs).
    pub async fn atomic_write(
        &self,
        req: &pb::AtomicWrite,
    ) -> Result<pb::AtomicWriteOutput, WriteError> {
        let give_up = Instant::now() + self.retry_for;
        loop {
            let (endpoint, conn, generation) = match self.connect().await {
                Ok(c) => c,
                Err(e) if Instant::now() < give_up => {
                    tracing::debug!("connecting to {} failed, retrying: {e}", self.url);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(e) => return Err(WriteError::NotSent(e)),
            };
            match conn.atomic_write(&endpoint, req).await {
                Ok(out) => return Ok(out),
                Err(e) => {
                    self.drop_connection(generation).await;
                    if rejected_before_applying(&e) && Instant::now() < give_up {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    return Err(if rejected_before_applying(&e) {
                        WriteError::NotSent(e)
                    } else {
                        WriteError::Unknown(e)
                    });
                }
            }
        }
    }

    /// A queue dequeue (extension `queue-v1`), retried like a read: a dequeue whose answer was
    /// lost only leaves a lease that expires, so asking again is always safe.
    pub async fn dequeue(
        &self,
        req: &queue_pb::DequeueRequest,
    ) -> Result<queue_pb::DequeueResponse, ClientError> {
        let give_up = Instant::now() + self.retry_for;
        loop {
            let attempt = async {
                let (endpoint, conn, generation) = self.connect().await?;
                match conn.dequeue(&endpoint, req).await {
                    Ok(out) => Ok(out),
                    Err(e) => {
                        self.drop_connection(generation).await;
                        Err(e)
                    }
                }
            };
            match attempt.await {
                Ok(out) => return Ok(out),
                Err(e) if retryable_read(&e) && Instant::now() < give_up => {
                    tracing::debug!("dequeue via {} failed, retrying: {e}", self.url);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A queue finish (extension `queue-v1`), sent once: a lost answer leaves the outcome
    /// unknown, and a second finish of the same lease is refused anyway.
    pub async fn finish(&self, req: &queue_pb::FinishRequest) -> Result<(), WriteError> {
        let (endpoint, conn, generation) = self.connect().await.map_err(WriteError::NotSent)?;
        match conn.finish(&endpoint, req).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if !matches!(e, ClientError::Status { .. }) {
                    self.drop_connection(generation).await;
                }
                Err(WriteError::Unknown(e))
            }
        }
    }
}

/// Errors a read may be retried after: everything but a malformed request.
fn retryable_read(e: &ClientError) -> bool {
    !matches!(
        e,
        ClientError::Url(..) | ClientError::NotLoopback(_) | ClientError::Request(_)
    )
}

/// Answers proving the server refused the write before applying anything.
fn rejected_before_applying(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Status { status, .. }
            if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_authentication_refusals_count_as_not_applied() {
        let status = |s: StatusCode| ClientError::Status {
            status: s,
            body: String::new(),
        };
        assert!(rejected_before_applying(&status(StatusCode::UNAUTHORIZED)));
        assert!(!rejected_before_applying(&status(
            StatusCode::INTERNAL_SERVER_ERROR
        )));
        assert!(!rejected_before_applying(&ClientError::Timeout(
            Duration::from_secs(1)
        )));
        assert!(retryable_read(&ClientError::Timeout(Duration::from_secs(
            1
        ))));
        assert!(!retryable_read(&ClientError::Request("x".into())));
    }
}
