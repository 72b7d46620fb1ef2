//! `GET /metrics`: the Prometheus exposition of [`crate::metrics`].
//!
//! # Contract
//!
//! - On the main port the request must carry `Authorization: Bearer <access token>` (the
//!   admin credential; a data-path token is not enough), else 401: the numbers name databases
//!   and show traffic, and the main port is usually reachable by every client. Prometheus sends
//!   it with `authorization: { credentials: ... }` in its scrape config.
//! - The metrics listener ([`ServerConfig::metrics_addr`](crate::ServerConfig::metrics_addr))
//!   serves the same answer without authentication: bind it to a private address.
//! - The answer is 200 [`CONTENT_TYPE`] (OpenMetrics text); it never touches the storage
//!   (databases report from memory), so a scrape is cheap and answers while a database is busy.

use http::{HeaderMap, Response, StatusCode};

use crate::access::Access;
use crate::auth::{bearer_token, AuthError};
use crate::body::{response, ResponseBody};
use crate::error::ApiError;
use crate::metrics::{Metrics, CONTENT_TYPE};

/// The answer on the main port (access token required).
pub(crate) fn metrics(
    access: &Access,
    metrics: &Metrics,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    let token = bearer_token(headers.get(http::header::AUTHORIZATION))?;
    if !access.is_access_token(token) {
        return Err(AuthError::InvalidAccessToken.into());
    }
    Ok(render(metrics))
}

/// The exposition, without authentication.
pub(crate) fn render(metrics: &Metrics) -> Response<ResponseBody> {
    response(StatusCode::OK, CONTENT_TYPE, metrics.render())
}
