//! The `/watch` stream: framing, transparent reconnection and duplicate suppression.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use kv_traits::wire::{self, WatchFrameDecoder};
use kv_traits::{KvError, Versionstamp, WatchKeyOutput, WatchStream};
use prost::Message;

use super::http::HttpFailure;
use super::Inner;

/// Opens the first connection (so that request errors surface from `watch()` itself) and
/// returns the stream.
pub(super) async fn open(inner: Arc<Inner>, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
    let mut state = WatchState {
        delivered: vec![None; keys.len()],
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
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.failures = 0;
                    let outputs = match wire::watch_keys_output_from_wire(frame, self.keys.len()) {
                        Ok(o) => o,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    };
                    match dedupe(&mut self.delivered, outputs) {
                        Ok(Some(n)) => return Some(Ok(n)),
                        Ok(None) => continue,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.disconnect(&e.to_string());
                    continue;
                }
            }
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
                Ok(None) => self.disconnect("the server ended the stream"),
                Ok(Some(Err(e))) => self.disconnect(&e.to_string()),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }
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
                    return Err(KvError::Transport(
                        "watch: the server reported a key unchanged before it was ever delivered"
                            .into(),
                    ));
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
}
