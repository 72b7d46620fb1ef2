//! Long-lived responses that end when the scoped token behind them is revoked or expires.
//!
//! # Contract
//!
//! - [`end_when_invalid`] passes a streamed response body through frame by frame and ends it,
//!   cleanly, before the first frame for which `still_valid` answers `false`. A `/watch` stream
//!   yields a frame at least every keep-alive interval, so a revoked token's stream ends within
//!   one interval; the client then re-exchanges metadata and receives the refusal.
//! - A dequeue long poll has sent nothing while it waits, so it can answer the refusal itself:
//!   [`refused`] re-authorizes its credential every [`RECHECK_INTERVAL`] and completes with the
//!   refusal (the 401/403 the next request would get) as soon as there is one; the handler
//!   answers that instead of waiting out the poll.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;

use crate::body::ResponseBody;
use crate::error::ApiError;

/// How often a waiting dequeue re-authorizes its credential (a token-store `stat` and a MAC
/// check: cheap).
pub(crate) const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Re-authorizes a request's credential: `Err` is the refusal it would get now.
pub(crate) type Reauthorize = Box<dyn Fn() -> Result<(), ApiError> + Send + Sync>;

/// Completes with the refusal once `reauthorize` fails (checked every [`RECHECK_INTERVAL`]);
/// never completes while it passes.
pub(crate) async fn refused(reauthorize: &Reauthorize) -> ApiError {
    refused_every(reauthorize, RECHECK_INTERVAL).await
}

/// [`refused`], checking every `interval`.
async fn refused_every(reauthorize: &Reauthorize, interval: Duration) -> ApiError {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(refusal) = reauthorize() {
            tracing::info!(
                status = refusal.status.as_u16(),
                "ending a dequeue long poll: its token was revoked or expired"
            );
            return refusal;
        }
    }
}

/// `res` with a body that ends once `still_valid` turns `false` (see the contract).
pub(crate) fn end_when_invalid(
    res: Response<ResponseBody>,
    still_valid: impl Fn() -> bool + Send + Sync + 'static,
) -> Response<ResponseBody> {
    res.map(|body| {
        let frames = BodyStream::new(body).take_while(move |_| {
            let valid = still_valid();
            if !valid {
                tracing::info!("ending a watch stream: its token was revoked or expired");
            }
            std::future::ready(valid)
        });
        let frames = frames.map(|f: Result<Frame<Bytes>, Infallible>| f);
        BodyExt::boxed(StreamBody::new(frames))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn refused_completes_with_the_refusal_once_the_check_fails() {
        let revoked = Arc::new(AtomicBool::new(false));
        let flag = revoked.clone();
        let check: Reauthorize = Box::new(move || {
            if flag.load(Ordering::SeqCst) {
                Err(ApiError::new(http::StatusCode::UNAUTHORIZED, "revoked"))
            } else {
                Ok(())
            }
        });
        let every = Duration::from_millis(5);
        // Many checks pass: it keeps waiting.
        let waiting = tokio::time::timeout(every * 20, refused_every(&check, every)).await;
        assert!(waiting.is_err(), "completed while the credential was valid");
        revoked.store(true, Ordering::SeqCst);
        let refusal = refused_every(&check, every).await;
        assert_eq!(refusal.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(refusal.message, "revoked");
    }
}
