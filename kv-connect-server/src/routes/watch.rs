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
//! - Streams of the same keys share their frames: a snapshot is encoded once for all of them
//!   ([`super::watch_frames`]).
//! - The stream ends when the client goes away, the database's stream ends or fails, or the
//!   server shuts down.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kv_proto::{self as wire, pb};
use kv_traits::{Consistency, Database, KvEntry, KvError, WatchKeyOutput};
use tokio::task::coop;

use crate::body::{ResponseBody, OCTET_STREAM};
use crate::error::ApiError;
use crate::limits::{TokenId, WatchPermit};
use crate::state::{stopped, AppState};

use super::watch_frames::FrameCell;

/// `Watch` → the frame stream.
pub(crate) async fn watch<D: Database>(
    state: &AppState<D>,
    token: TokenId,
    version: http::Version,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let request: pb::Watch = wire::decode_request(body)?;
    let keys = wire::watch_keys_from_wire(request);
    let permit = state.limiter.open_watch(token)?;
    let stream = state.db.watch(keys.clone()).await?;
    Ok(watch_response(
        state,
        keys,
        stream,
        permit,
        version == http::Version::HTTP_2,
    ))
}

/// Streams `stream`'s notifications as full-snapshot frames with keep-alives (see the module
/// contract).
///
/// The body is polled directly by the connection's stream task: no task or channel of its own
/// per watch, so a notification reaches the socket with one wake-up less and an idle watch
/// holds only its state below.
fn watch_response<D: Database>(
    state: &AppState<D>,
    keys: Vec<Vec<u8>>,
    stream: kv_traits::WatchStream,
    permit: WatchPermit,
    http2: bool,
) -> Response<ResponseBody> {
    let keepalive = state.watch_keepalive;
    let mut shutdown = state.shutdown.clone();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let frames = Frames {
        snapshot: FullSnapshot {
            db: state.db.clone(),
            frames: state.watch_frames.join(&keys),
            keys,
            last: Vec::new(),
            known: Vec::new(),
        },
        stream,
        ticker,
        // Registered once for the stream's life, not again for every frame.
        shutdown: Box::pin(async move { stopped(&mut shutdown).await }),
        _permit: permit,
    };
    let body = futures::stream::unfold(frames, |mut f| async move {
        f.next()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), f))
    });
    let body = BatchedStream {
        inner: std::sync::Mutex::new(Box::pin(body)),
        http2,
        after_frame: false,
    };
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
    /// Ready once the server shuts down (then never polled again: the response ends).
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The token's watch slot, held while the response lives.
    _permit: WatchPermit,
}

impl<D: Database> Frames<D> {
    /// The next frame to send; `None` ends the response.
    async fn next(&mut self) -> Option<Bytes> {
        // The notification first: when one is ready, neither the keep-alive timer nor the
        // shutdown signal is polled (both are polled, and shutdown still ends the response, in
        // the poll that waits after every frame).
        tokio::select! {
            biased;
            item = self.stream.next() => match item {
                Some(Ok(outputs)) => match self.snapshot.fill(outputs).await {
                    Ok(frame) => Some(frame),
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
            _ = &mut self.shutdown => None,
            _ = self.ticker.tick() => Some(Bytes::from_static(&wire::WATCH_KEEPALIVE_FRAME)),
        }
    }
}

/// The response body: makes the `Send` frame stream `Sync` (what a boxed response body must be)
/// without locking (polling has `&mut` access, so the mutex is only ever reached through
/// `get_mut`), and on HTTP/2 batches the socket writes of the streams one commit wakes.
///
/// Batching: one commit wakes every stream of the watched keys at once; each stream's task
/// hands its frame to the connection and wakes the connection's task. Tokio runs a task woken
/// that way next, in its "LIFO slot", unless the waking task spent its cooperative budget, so
/// left alone every frame got a write syscall (and a TCP segment, and a wake-up of the client)
/// of its own. When the body has nothing more to send (the poll that follows a frame ends
/// `Pending`) it spends what remains of the task's budget, which sends the connection task to
/// the back of the run queue, behind the other woken streams: it then writes their frames
/// together. Spending budget wakes nothing (it stops at zero, before the call that would ask
/// for a wake-up), and on HTTP/2 the stream's task (hyper's pipe of this body into the
/// connection) ends its poll right after the body's `Pending`, touching no other budgeted
/// resource. Should a wrapper ever poll such a resource after the body, it would be woken again
/// at once; the budget is spent only in the poll that follows a frame, so that costs one extra
/// wake-up per frame, never a loop. HTTP/1 is left alone: there the connection's own task polls
/// the body and then writes to the socket, which a spent budget would stall.
struct BatchedStream<S> {
    inner: std::sync::Mutex<S>,
    http2: bool,
    /// The previous poll returned a frame.
    after_frame: bool,
}

impl<S: futures::Stream + Unpin> futures::Stream for BatchedStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let inner = match this.inner.get_mut() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let poll = inner.poll_next_unpin(cx);
        if poll.is_pending() {
            if this.http2 && this.after_frame {
                spend_budget(cx);
            }
            this.after_frame = false;
        } else {
            this.after_frame = true;
        }
        poll
    }
}

/// Spends the current task's cooperative budget, stopping at zero (see [`BatchedStream`]).
fn spend_budget(cx: &mut Context<'_>) {
    while coop::has_budget_remaining() {
        match coop::poll_proceed(cx) {
            Poll::Ready(progress) => progress.made_progress(),
            Poll::Pending => break,
        }
    }
}

/// Turns watch notifications into full-snapshot frames by remembering each key's last entry.
struct FullSnapshot<D> {
    db: Arc<D>,
    keys: Vec<Vec<u8>>,
    /// The frames of this key set, shared with its other streams.
    frames: Arc<FrameCell>,
    /// Last entry delivered per key (`None` = absent), updated in place.
    last: Vec<Option<KvEntry>>,
    /// Whether each key's entry in `last` was ever delivered.
    known: Vec<bool>,
}

impl<D: Database> FullSnapshot<D> {
    /// The frame of the full snapshot after `outputs`.
    async fn fill(&mut self, outputs: Vec<WatchKeyOutput>) -> Result<Bytes, KvError> {
        if self.last.len() != outputs.len() {
            self.last = vec![None; outputs.len()];
            self.known = vec![false; outputs.len()];
        }
        for (i, output) in outputs.into_iter().enumerate() {
            match output {
                WatchKeyOutput::Changed(entry) => self.last[i] = entry,
                WatchKeyOutput::Unchanged if self.known[i] => {}
                // The database never reported this key (it should have, in its first
                // notification): read it.
                WatchKeyOutput::Unchanged => {
                    let key = self.keys.get(i).cloned().unwrap_or_default();
                    let ranges = vec![kv_traits::ReadRange::single(&key)];
                    let mut result = self.db.snapshot_read(ranges, Consistency::Strong).await?;
                    self.last[i] = result.pop().and_then(|mut r| r.pop());
                }
            }
            self.known[i] = true;
        }
        Ok(self.frames.frame(&self.last))
    }
}
