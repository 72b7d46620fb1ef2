//! `POST /console/api/watch`: a key's entry as server-sent events.
//!
//! # Contract
//!
//! - The answer is `text/event-stream`: an `entry` event whose data is
//!   `{"entry": <entry JSON of super::api, full> | null}` first (the current state) and then
//!   after every change of the key, and a `: keep-alive` comment after each
//!   [`ServerConfig::watch_keepalive`](crate::ServerConfig) of silence.
//! - The database's watch refusal (e.g. key too large) is answered before the stream starts,
//!   as a JSON error.
//! - The stream ends when the page goes away, the database's stream ends or fails, or the
//!   server shuts down.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kv_traits::{Database, WatchKeyOutput};
use serde_json::json;
use tokio::sync::mpsc;

use super::api::{entry_json, read_entry, KeyRequest};
use super::keys;
use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::state::{stopped, AppState};

/// Content type of the stream.
const EVENT_STREAM: &str = "text/event-stream";

/// One `entry` event.
fn event(entry: &Option<kv_traits::KvEntry>) -> Bytes {
    let data = json!({ "entry": entry.as_ref().map(|e| entry_json(e, true)) });
    Bytes::from(format!("event: entry\ndata: {data}\n\n"))
}

/// `{key}` → the event stream.
pub(super) async fn watch<D: Database>(
    state: &AppState<D>,
    req: KeyRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let key = keys::from_json(&req.key)?;
    let mut stream = state.db.watch(vec![key.clone()]).await?;
    let db = state.db.clone();
    let keepalive = state.watch_keepalive;
    let mut shutdown = state.shutdown.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = tx.closed() => break,
                _ = ticker.tick() => Bytes::from_static(b": keep-alive\n\n"),
                item = stream.next() => match item {
                    Some(Ok(mut outputs)) => match outputs.pop() {
                        Some(WatchKeyOutput::Changed(entry)) => event(&entry),
                        // The database's first notification reports every key; read it anyway
                        // if it did not.
                        Some(WatchKeyOutput::Unchanged) | None => match read_entry(&*db, &key).await {
                            Ok(entry) => event(&entry),
                            Err(e) => {
                                tracing::warn!(error = %e.message, "console watch read failed");
                                break;
                            }
                        },
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "console watch stream failed");
                        break;
                    }
                    None => break,
                },
            };
            if tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut res = Response::new(BodyExt::boxed(StreamBody::new(body)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    Ok(res)
}
