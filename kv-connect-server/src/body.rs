//! Request and response bodies: the response body type, content types, plain and protobuf
//! responses, error responses and bounded request-body reading.
//!
//! # Contract
//!
//! - Errors are answered as `text/plain; charset=utf-8` with the [`ApiError`]'s status and
//!   message; successful data-path answers are [`PROTOBUF`], `/watch` streams [`OCTET_STREAM`].
//! - [`read_body`] never buffers more than its bound: a declared `Content-Length` above it is
//!   refused before reading, a longer body as soon as it passes the bound (413 either way); a
//!   body cut off by the body read timeout ([`crate::limits`]) is answered 408.
//! - An [`ApiError`] with `retry_after` is answered with that `Retry-After` header.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use prost::Message;

use crate::error::ApiError;

/// Response body type of the server.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// Content type of `/snapshot_read` and `/atomic_write` responses.
pub const PROTOBUF: &str = "application/x-protobuf";
/// Content type of `/watch` responses.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Content type of plain-text answers (errors, `/healthz`).
pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A complete response with `status`, `content_type` and `body`.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut res = Response::new(Full::new(body.into()).boxed());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A 200 answer carrying `msg` as protobuf.
pub(crate) fn protobuf_response(msg: &impl Message) -> Response<ResponseBody> {
    response(StatusCode::OK, PROTOBUF, msg.encode_to_vec())
}

/// The plain-text answer of `err`.
pub(crate) fn error_response(err: &ApiError) -> Response<ResponseBody> {
    let mut res = response(err.status, TEXT_PLAIN, err.message.clone());
    if let Some(after) = &err.retry_after {
        res.headers_mut().insert(RETRY_AFTER, after.clone());
    }
    res
}

/// Whether a body error is the body read timeout ([`crate::limits::TimeoutBody`]).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(crate::limits::TimeoutBodyError::TimedOut(_)) = err.downcast_ref() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Reads a request body of at most `max` bytes (413 beyond).
pub(crate) async fn read_body<B>(
    req: Request<B>,
    max: usize,
) -> Result<(http::request::Parts, Bytes), ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is too large (max {max} bytes)."),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) if timed_out(&*e) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "The request body did not arrive in time.",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "Failed to read the request body: {e}."
        ))),
    }
}
