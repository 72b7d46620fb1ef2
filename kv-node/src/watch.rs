//! [`WatchHandle`]: a running watch, pulled one notification at a time by the JavaScript
//! `ReadableStream`.
//!
//! Contract: `next` resolves with the next notification (one element per watched key, in
//! order; the first reports every key as changed), or with nothing once the watch ended:
//! cancelled, its database closed, or the underlying stream finished. An error of the stream
//! rejects `next` once; the watch then ends.

use std::sync::Arc;

use futures::StreamExt;
use kv_traits::WatchStream;
use tokio::sync::{watch, Mutex};

use crate::convert::{watch_key_out, WatchKeyOut};
use crate::database::closed_signal;
use crate::error::NodeError;

/// A running watch.
#[napi]
pub struct WatchHandle {
    stream: Arc<Mutex<Option<WatchStream>>>,
    /// The database's closed flag.
    db_closed: watch::Receiver<bool>,
    /// This watch's own cancel flag.
    cancelled: Arc<watch::Sender<bool>>,
}

impl WatchHandle {
    pub(crate) fn new(stream: WatchStream, db_closed: watch::Receiver<bool>) -> Self {
        WatchHandle {
            stream: Arc::new(Mutex::new(Some(stream))),
            db_closed,
            cancelled: Arc::new(watch::Sender::new(false)),
        }
    }
}

#[napi]
impl WatchHandle {
    /// The next notification, or nothing once the watch ended.
    #[napi]
    pub async fn next(&self) -> napi::Result<Option<Vec<WatchKeyOut>>> {
        let mut guard = self.stream.lock().await;
        let Some(stream) = guard.as_mut() else {
            return Ok(None);
        };
        let item = tokio::select! {
            item = stream.next() => item,
            _ = closed_signal(self.db_closed.clone()) => None,
            _ = closed_signal(self.cancelled.subscribe()) => None,
        };
        match item {
            Some(Ok(outputs)) => Ok(Some(outputs.into_iter().map(watch_key_out).collect())),
            Some(Err(e)) => {
                *guard = None;
                Err(NodeError::from(e).into())
            }
            None => {
                *guard = None;
                Ok(None)
            }
        }
    }

    /// Ends the watch; a pending `next` resolves with nothing.
    #[napi]
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }
}
