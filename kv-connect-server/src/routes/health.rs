//! `GET /healthz` (and `HEAD`): a liveness probe.
//!
//! # Contract
//!
//! Answers 200 `text/plain` `ok\n`, followed by the lines of the configured
//! [`HealthReport`](crate::HealthReport) if any and, on a server with many databases, the
//! lines of each open database prefixed with `<name>.` ([`append`]). It needs no token and
//! never touches the database, so it answers while the database is busy or closing.

use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{response, ResponseBody, TEXT_PLAIN};
use crate::config::HealthReport;

/// The health answer.
pub(crate) fn healthz(health_report: Option<&HealthReport>) -> Response<ResponseBody> {
    let mut body = String::from("ok\n");
    if let Some(report) = health_report {
        body.push_str(&report());
    }
    response(StatusCode::OK, TEXT_PLAIN, body)
}

/// `res` (a health answer) with `lines` appended (a server with many databases adds theirs).
pub(crate) async fn append(res: Response<ResponseBody>, lines: String) -> Response<ResponseBody> {
    if lines.is_empty() {
        return res;
    }
    let (parts, body) = res.into_parts();
    // The health body is a complete in-memory buffer; its error type is `Infallible`.
    let mut text = match body.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(never) => match never {},
    };
    text.push_str(&lines);
    let mut res = response(parts.status, TEXT_PLAIN, text);
    *res.headers_mut() = parts.headers;
    res
}
