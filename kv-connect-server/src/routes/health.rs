//! `GET /healthz` (and `HEAD`): a liveness probe.
//!
//! # Contract
//!
//! Answers 200 `text/plain` `ok\n`, followed by the lines of the configured
//! [`HealthReport`](crate::HealthReport) if any. It needs no token and never touches the
//! database, so it answers while the database is busy or closing.

use http::{Response, StatusCode};

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
