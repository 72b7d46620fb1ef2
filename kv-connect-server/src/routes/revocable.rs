//! Long-lived responses that end when the scoped token behind them is revoked or expires.
//!
//! # Contract
//!
//! [`end_when_invalid`] passes the response body through frame by frame and ends it, cleanly,
//! before the first frame for which `still_valid` answers `false`. A `/watch` stream yields a
//! frame at least every keep-alive interval, so a revoked token's stream ends within one
//! interval; the client then re-exchanges metadata and receives the refusal.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;

use crate::body::ResponseBody;

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
