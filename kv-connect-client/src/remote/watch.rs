//! The `/watch` stream: framing, transparent reconnection, coalescing and duplicate
//! suppression.
//!
//! The server pushes a frame per change whether or not the consumer is reading. When the
//! consumer polls, every complete frame already received is decoded and merged into a single
//! pending state (per key, the newest entry of any frame that reported it changed), and only
//! that state is handed out: a slow consumer gets the latest state instead of a backlog.
//! Received bytes are decoded as soon as they are taken from the body, so memory holds at most
//! the merged state plus one partial frame.
//!
//! Over HTTP/2 every frame the connection has received is ready at once. HTTP/1.1 bodies are
//! handed over one chunk at a time by hyper's connection task; after a poll finds nothing the
//! stream yields once to let that task pass on more, which drains everything on a
//! current-thread runtime but may hand out an intermediate (never older) state first when the
//! connection task runs on another worker thread.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use kv_proto::{self as wire, WatchFrameDecoder};
use kv_traits::{KvError, Versionstamp, WatchKeyOutput, WatchStream};
use prost::Message;

use super::http::HttpFailure;
use super::Inner;

/// Most body chunks taken in one poll before the merged state is handed out anyway, so that a
/// server sending faster than the client decodes cannot starve the consumer.
const MAX_CHUNKS_PER_POLL: usize = 4096;

/// Opens the first connection (so that request errors surface from `watch()` itself) and
/// returns the stream.
pub(super) async fn open(inner: Arc<Inner>, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
    let mut state = WatchState {
        delivered: vec![None; keys.len()],
        pending: None,
        fatal: None,
        body: None,
        decoder: WatchFrameDecoder::default(),
        inner,
        keys,
        failures: 0,
        done: false,
    };
    state.body = Some(state.connect_with_retries().await?);
    Ok(Box::pin(futures::stream::unfold(
        state,
        |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        },
    )))
}

struct WatchState {
    inner: Arc<Inner>,
    keys: Vec<Vec<u8>>,
    body: Option<Incoming>,
    decoder: WatchFrameDecoder,
    /// Per key: `None` before its first delivery, else the versionstamp last delivered
    /// (`Some(None)` = delivered as absent).
    delivered: Vec<Option<Option<Versionstamp>>>,
    /// Frames received but not yet handed out, merged: per key the newest `Changed` output,
    /// `Unchanged` if no merged frame changed it. `None` = nothing received since the last
    /// notification.
    pending: Option<Vec<WatchKeyOutput>>,
    /// A fatal error met while merging, returned once `pending` has been handed out.
    fatal: Option<KvError>,
    /// Consecutive failures since the last frame, for the reconnect backoff.
    failures: u32,
    done: bool,
}

impl WatchState {
    /// One `/watch` request; a retryable failure is `Ok(Err(..))`.
    async fn connect_once(&self) -> Result<Result<Incoming, String>, KvError> {
        let meta = self.inner.metadata().await?;
        let url: http::Uri = meta
            .method_url("watch")
            .parse()
            .map_err(|e| KvError::Transport(format!("invalid endpoint URL: {e}")))?;
        let headers = Inner::data_headers(&meta)?;
        let body = wire::watch_keys_to_wire(&self.keys).encode_to_vec();
        match self
            .inner
            .transport
            .post_streaming(
                &url,
                &headers,
                body.into(),
                self.inner.config.request_timeout,
            )
            .await
        {
            Ok(resp) => Ok(Ok(resp.into_body())),
            Err(HttpFailure::Status { status, body }) if !status.is_server_error() => {
                Err(super::status_error(status, body, "watch"))
            }
            Err(f) => Ok(Err(f.to_string())),
        }
    }

    /// Connects, retrying network errors and 5xx (bounded by `max_retries`).
    async fn connect_with_retries(&mut self) -> Result<Incoming, KvError> {
        loop {
            self.inner.check_open()?;
            if self.failures > 0 {
                tokio::time::sleep(self.inner.config.watch_backoff.delay(self.failures - 1)).await;
            }
            match self.connect_once().await? {
                Ok(body) => return Ok(body),
                Err(e) => {
                    if !self.inner.retries_left(self.failures) {
                        return Err(KvError::Transport(format!("watch: {e}")));
                    }
                    tracing::warn!(error = %e, attempt = self.failures, "watch connection failed; retrying");
                    self.failures += 1;
                }
            }
        }
    }

    /// Drops the connection; the next poll reconnects after a backoff.
    fn disconnect(&mut self, why: &str) {
        tracing::debug!(reason = why, "watch stream interrupted; reconnecting");
        self.body = None;
        self.decoder = WatchFrameDecoder::default();
        self.failures += 1;
    }

    async fn next_item(&mut self) -> Option<Result<Vec<WatchKeyOutput>, KvError>> {
        loop {
            if self.done {
                return None;
            }
            if self.inner.check_open().is_err() {
                self.done = true;
                return None;
            }
            // Everything received so far, merged into one state.
            self.drain_ready().await;
            if let Some(merged) = self.pending.take() {
                match dedupe(&mut self.delivered, merged) {
                    Ok(Some(n)) => return Some(Ok(n)),
                    Ok(None) => {}
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if let Some(e) = self.fatal.take() {
                self.done = true;
                return Some(Err(e));
            }
            let Some(body) = self.body.as_mut() else {
                match self.connect_with_retries().await {
                    Ok(b) => self.body = Some(b),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            // Nothing new yet: wait for the next chunk.
            let idle = self.inner.config.watch_idle_timeout;
            let read = tokio::select! {
                r = tokio::time::timeout(idle, body.frame()) => r,
                _ = self.inner.wait_closed() => {
                    self.done = true;
                    return None;
                }
            };
            match read {
                Err(_) => self.disconnect("no data or keep-alive within the idle timeout"),
                Ok(chunk) => self.take_chunk(chunk),
            }
        }
    }

    /// Takes every body chunk that is ready without waiting for the network and merges its
    /// frames into `pending`. After a poll finds nothing, the task yields once so that a
    /// connection task holding more received data (HTTP/1.1 hands the body over one chunk at
    /// a time) can pass it on; the drain stops when that produced nothing either.
    async fn drain_ready(&mut self) {
        self.absorb();
        let mut chunks = 0;
        let mut yielded = false;
        while self.fatal.is_none() && chunks < MAX_CHUNKS_PER_POLL {
            let Some(body) = self.body.as_mut() else {
                return;
            };
            match poll_now(body).await {
                Some(chunk) => {
                    chunks += 1;
                    yielded = false;
                    self.take_chunk(chunk);
                }
                None if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                None => return,
            }
        }
    }

    /// Handles one read from the body: data is decoded and merged at once (so at most one
    /// partial frame stays buffered); the end of the body or an error drops the connection.
    fn take_chunk(&mut self, chunk: Option<Result<Frame<Bytes>, hyper::Error>>) {
        match chunk {
            None => self.disconnect("the server ended the stream"),
            Some(Err(e)) => self.disconnect(&e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.decoder.push(&data);
                    self.absorb();
                }
            }
        }
    }

    /// Merges every complete frame in the decoder into `pending`. A framing error drops the
    /// connection (the next poll reconnects); an invalid message is fatal: it is kept in
    /// `fatal`, the connection is dropped and nothing more is read.
    fn absorb(&mut self) {
        while self.fatal.is_none() {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.failures = 0;
                    let merged = wire::watch_keys_output_from_wire(frame, self.keys.len())
                        .and_then(|outputs| merge(&mut self.pending, &self.delivered, outputs));
                    if let Err(e) = merged {
                        self.fatal = Some(e);
                        self.body = None;
                        self.decoder = WatchFrameDecoder::default();
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.disconnect(&e.to_string());
                    return;
                }
            }
        }
    }
}

/// One poll of `body` with the current task's context: `Some` if a read was ready, `None` if it
/// would have to wait.
async fn poll_now(body: &mut Incoming) -> Option<Option<Result<Frame<Bytes>, hyper::Error>>> {
    std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

fn unchanged_before_delivery() -> KvError {
    KvError::Transport(
        "watch: the server reported a key unchanged before it was ever delivered".into(),
    )
}

/// Merges one frame's outputs into the not yet delivered state: a key the frame reports
/// `Changed` takes the frame's entry, an `Unchanged` key keeps what `pending` has. A key
/// reported unchanged that was neither delivered nor changed by an earlier merged frame is an
/// error, and then `pending` is left as it was.
fn merge(
    pending: &mut Option<Vec<WatchKeyOutput>>,
    delivered: &[Option<Option<Versionstamp>>],
    frame: Vec<WatchKeyOutput>,
) -> Result<(), KvError> {
    for (i, (out, last)) in frame.iter().zip(delivered).enumerate() {
        let known = last.is_some()
            || matches!(
                pending.as_ref().and_then(|p| p.get(i)),
                Some(WatchKeyOutput::Changed(_))
            );
        if *out == WatchKeyOutput::Unchanged && !known {
            return Err(unchanged_before_delivery());
        }
    }
    let acc = pending.get_or_insert_with(|| vec![WatchKeyOutput::Unchanged; frame.len()]);
    for (slot, out) in acc.iter_mut().zip(frame) {
        if let WatchKeyOutput::Changed(_) = out {
            *slot = out;
        }
    }
    Ok(())
}

/// Turns `Changed` outputs whose versionstamp equals the last delivered one into `Unchanged`
/// and drops notifications in which nothing changed (a reconnect re-sends a full snapshot).
fn dedupe(
    delivered: &mut [Option<Option<Versionstamp>>],
    mut outputs: Vec<WatchKeyOutput>,
) -> Result<Option<Vec<WatchKeyOutput>>, KvError> {
    let mut any = false;
    for (out, last) in outputs.iter_mut().zip(delivered.iter_mut()) {
        match out {
            WatchKeyOutput::Changed(entry) => {
                let vs = entry.as_ref().map(|e| e.versionstamp);
                if *last == Some(vs) {
                    *out = WatchKeyOutput::Unchanged;
                } else {
                    *last = Some(vs);
                    any = true;
                }
            }
            WatchKeyOutput::Unchanged => {
                if last.is_none() {
                    return Err(unchanged_before_delivery());
                }
            }
        }
    }
    Ok(any.then_some(outputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_traits::{KvEntry, KvValue};

    fn changed(vs: Option<u64>) -> WatchKeyOutput {
        WatchKeyOutput::Changed(vs.map(|v| KvEntry {
            key: b"k".to_vec(),
            value: KvValue::U64(v),
            versionstamp: Versionstamp::from_version(v),
        }))
    }

    #[test]
    fn dedupe_suppresses_repeats() {
        let mut d = vec![None, None];
        // First notification: everything passes, including an absent key.
        let first = dedupe(&mut d, vec![changed(Some(1)), changed(None)])
            .unwrap()
            .unwrap();
        assert_eq!(first, vec![changed(Some(1)), changed(None)]);
        // A reconnect's full snapshot with nothing new is dropped.
        assert_eq!(
            dedupe(&mut d, vec![changed(Some(1)), changed(None)]).unwrap(),
            None
        );
        // One key changed: the other becomes Unchanged.
        let n = dedupe(&mut d, vec![changed(Some(1)), changed(Some(2))])
            .unwrap()
            .unwrap();
        assert_eq!(n, vec![WatchKeyOutput::Unchanged, changed(Some(2))]);
        // Deleted.
        let n = dedupe(&mut d, vec![WatchKeyOutput::Unchanged, changed(None)])
            .unwrap()
            .unwrap();
        assert_eq!(n, vec![WatchKeyOutput::Unchanged, changed(None)]);
    }

    #[test]
    fn unchanged_before_first_delivery_is_an_error() {
        let mut d = vec![None];
        assert!(dedupe(&mut d, vec![WatchKeyOutput::Unchanged]).is_err());
    }

    #[test]
    fn merge_keeps_the_newest_entry_per_key() {
        let delivered = vec![Some(Some(Versionstamp::from_version(1))), Some(None), None];
        let mut pending = None;
        merge(
            &mut pending,
            &delivered,
            vec![
                changed(Some(2)),
                WatchKeyOutput::Unchanged,
                changed(Some(7)),
            ],
        )
        .unwrap();
        merge(
            &mut pending,
            &delivered,
            vec![
                changed(Some(3)),
                WatchKeyOutput::Unchanged,
                WatchKeyOutput::Unchanged,
            ],
        )
        .unwrap();
        merge(
            &mut pending,
            &delivered,
            vec![
                WatchKeyOutput::Unchanged,
                WatchKeyOutput::Unchanged,
                changed(None),
            ],
        )
        .unwrap();
        assert_eq!(
            pending,
            Some(vec![
                changed(Some(3)),
                WatchKeyOutput::Unchanged,
                changed(None)
            ])
        );
    }

    #[test]
    fn merge_rejects_unchanged_unknown_keys_without_touching_pending() {
        let delivered = vec![None, None];
        let mut pending = None;
        assert!(merge(
            &mut pending,
            &delivered,
            vec![changed(Some(1)), WatchKeyOutput::Unchanged]
        )
        .is_err());
        assert_eq!(pending, None);
        // Known through an earlier merged frame: fine.
        merge(
            &mut pending,
            &delivered,
            vec![changed(Some(1)), changed(None)],
        )
        .unwrap();
        merge(
            &mut pending,
            &delivered,
            vec![WatchKeyOutput::Unchanged, WatchKeyOutput::Unchanged],
        )
        .unwrap();
        assert_eq!(pending, Some(vec![changed(Some(1)), changed(None)]));
        // A merged state whose entries were all delivered already is dropped by dedupe.
        let mut d = vec![None, None];
        dedupe(&mut d, vec![changed(Some(1)), changed(None)]).unwrap();
        assert_eq!(dedupe(&mut d, pending.take().unwrap()).unwrap(), None);
    }
}
