//! `POST /v2/watch`: an endless stream of watch notifications.
//!
//! # Contract
//!
//! - Called with the body of a request that passed [`guard::data_request`](super::guard), and
//!   the identity of its token: the stream holds one of the token's watch slots
//!   ([`crate::limits`]) while it runs; without a free slot the answer is 429. The
//!   database validates the watched keys (count, size, non-empty) itself; its refusal is
//!   answered before the stream starts, with the status of [`crate::error`].
//! - The answer is `application/octet-stream`: `u32 LE length ‖ WatchOutput` frames, plus an
//!   empty keep-alive frame every [`ServerConfig::watch_keepalive`](crate::ServerConfig) of
//!   silence.
//! - Every frame is a full snapshot: each key is reported `changed = true` with its current
//!   entry (absent entry = key missing), in request order. Deno 2.9.6 shows a key reported
//!   `changed = false` as missing instead of keeping its previous value, and both clients drop
//!   repeated entries by comparing versionstamps, so full frames are what works everywhere.
//! - The stream ends when the client goes away, the database's stream ends or fails, or the
//!   server shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kv_proto::{self as wire, pb};
use kv_traits::{Consistency, Database, KvEntry, KvError, WatchKeyOutput};
use tokio::sync::watch;

use crate::body::{ResponseBody, OCTET_STREAM};
use crate::error::ApiError;
use crate::limits::{TokenId, WatchPermit};
use crate::state::{stopped, AppState};

/// `Watch` → the frame stream.
pub(crate) async fn watch<D: Database>(
    state: &AppState<D>,
    token: TokenId,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let request: pb::Watch = wire::decode_request(body)?;
    let keys = wire::watch_keys_from_wire(request);
    let permit = state.limiter.open_watch(token)?;
    let stream = state.db.watch(keys.clone()).await?;
    Ok(watch_response(
        state.db.clone(),
        keys,
        stream,
        state.watch_keepalive,
        state.shutdown.clone(),
        permit,
    ))
}

/// Streams `stream`'s notifications as full-snapshot frames with keep-alives (see the module
/// contract).
///
/// The body is polled directly by the connection's stream task: no task or channel of its own
/// per watch, so a notification reaches the socket with one wake-up less and an idle watch
/// holds only its state below.
fn watch_response<D: Database>(
    db: Arc<D>,
    keys: Vec<Vec<u8>>,
    stream: kv_traits::WatchStream,
    keepalive: Duration,
    shutdown: watch::Receiver<bool>,
    permit: WatchPermit,
) -> Response<ResponseBody> {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let frames = Frames {
        snapshot: FullSnapshot {
            db,
            keys,
            last: Vec::new(),
        },
        stream,
        ticker,
        shutdown,
        _permit: permit,
    };
    let body = futures::stream::unfold(frames, |mut f| async move {
        f.next()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), f))
    });
    let body = SyncStream(std::sync::Mutex::new(Box::pin(body)));
    let mut res = Response::new(BodyExt::boxed(StreamBody::new(body)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
    res
}

/// The state of one watch response between frames.
struct Frames<D> {
    snapshot: FullSnapshot<D>,
    stream: kv_traits::WatchStream,
    ticker: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
    /// The token's watch slot, held while the response lives.
    _permit: WatchPermit,
}

impl<D: Database> Frames<D> {
    /// The next frame to send; `None` ends the response.
    async fn next(&mut self) -> Option<Bytes> {
        tokio::select! {
            _ = stopped(&mut self.shutdown) => None,
            _ = self.ticker.tick() => Some(Bytes::from_static(&wire::WATCH_KEEPALIVE_FRAME)),
            item = self.stream.next() => match item {
                Some(Ok(outputs)) => match self.snapshot.fill(outputs).await {
                    Ok(full) => Some(Bytes::from(wire::encode_watch_frame(&wire::watch_output(full)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "watch read failed; ending the response");
                        None
                    }
                },
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watch stream failed; ending the response");
                    None
                }
                None => None,
            },
        }
    }
}

/// Makes a `Send` stream `Sync` (what a boxed response body must be) without locking: polling
/// has `&mut` access, so the mutex is only ever reached through `get_mut`.
struct SyncStream<S>(std::sync::Mutex<S>);

impl<S: futures::Stream + Unpin> futures::Stream for SyncStream<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let inner = match self.get_mut().0.get_mut() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        inner.poll_next_unpin(cx)
    }
}

/// Turns watch notifications into full snapshots by remembering each key's last entry.
struct FullSnapshot<D> {
    db: Arc<D>,
    keys: Vec<Vec<u8>>,
    /// Last entry delivered per key; `None` = never delivered.
    last: Vec<Option<Option<KvEntry>>>,
}

impl<D: Database> FullSnapshot<D> {
    async fn fill(&mut self, outputs: Vec<WatchKeyOutput>) -> Result<Vec<WatchKeyOutput>, KvError> {
        if self.last.len() != outputs.len() {
            self.last = vec![None; outputs.len()];
        }
        let mut full = Vec::with_capacity(outputs.len());
        for (i, output) in outputs.into_iter().enumerate() {
            let entry = match output {
                WatchKeyOutput::Changed(entry) => entry,
                WatchKeyOutput::Unchanged => match &self.last[i] {
                    Some(entry) => entry.clone(),
                    // The database never reported this key (it should have, in its first
                    // notification): read it.
                    None => {
                        let key = self.keys.get(i).cloned().unwrap_or_default();
                        let ranges = vec![kv_traits::ReadRange::single(&key)];
                        let mut result = self.db.snapshot_read(ranges, Consistency::Strong).await?;
                        result.pop().and_then(|mut r| r.pop())
                    }
                },
            };
            self.last[i] = Some(entry.clone());
            full.push(WatchKeyOutput::Changed(entry));
        }
        Ok(full)
    }
}
