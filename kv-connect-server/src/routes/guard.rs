//! What every data-path request (`/v2/...`, `/eventual/v2/...`) passes before its handler runs,
//! the refusal of writes on a read replica, and of writes and queue calls on the `eventual`
//! endpoint.
//!
//! # Contract
//!
//! The router has already authorized the request ([`crate::access`]: a valid data-path token
//! whose scope allows the route). [`data_request`] then checks, in this order, and answers the
//! first failure:
//!
//! 1. the protocol headers: v2/v3 clients send `x-denokv-version: 2|3` and
//!    `x-denokv-database-id`; v1 clients send no version header and `x-transaction-domain-id`;
//!    either way the id must be this database's → else 400;
//! 2. the token is within its request rate ([`crate::limits`]) → else 429 with `Retry-After`;
//! 3. the body is at most [`ServerConfig::max_body_size`](crate::ServerConfig::max_body_size)
//!    bytes → else 413.
//!
//! Request limits are not checked here: the database enforces its own
//! ([`kv_traits::Database::limits`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use hyper::body::Body;
use kv_traits::Database;
use uuid::Uuid;

use crate::body::read_body;
use crate::error::ApiError;
use crate::limits::TokenId;
use crate::routes::metadata::{DATA_PATH_PREFIX, EVENTUAL_DATA_PATH_PREFIX};
use crate::state::AppState;

/// Checks the protocol headers of an authorized data-path request and reads its bounded body.
pub(crate) async fn data_request<D, B>(
    state: &AppState<D>,
    req: Request<B>,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    check_protocol_headers(req.headers(), state.database_id)?;
    state
        .limiter
        .check_rate(|| TokenId::of_headers(req.headers()))?;
    let (_, body) = read_body(req, state.max_body_size).await?;
    Ok(body)
}

/// A read replica refuses writes and queue operations with a 400 naming what it follows.
pub(crate) fn refuse_on_replica<D>(state: &AppState<D>) -> Result<(), ApiError> {
    match &state.replica {
        None => Ok(()),
        Some(replica) => Err(ApiError::bad_request(format!(
            "This database is a read-only replica of {}; it does not accept writes or queue operations. Send them to the primary.",
            replica.source
        ))),
    }
}

/// The database of the `eventual` endpoint; 404 when the server has none (the endpoint is not
/// advertised then).
pub(crate) fn eventual_database<D>(state: &AppState<D>) -> Result<&Arc<dyn Database>, ApiError> {
    state
        .eventual
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Resource not found."))
}

/// The answer to a write or queue call sent to the `eventual` endpoint.
pub(crate) fn refused_on_eventual() -> ApiError {
    ApiError::bad_request(format!(
        "This is the eventual-consistency endpoint ({EVENTUAL_DATA_PATH_PREFIX}, reads from a read replica): it serves only snapshot reads and watches. Send writes and queue operations to the strong endpoint ({DATA_PATH_PREFIX})."
    ))
}

/// Checks the protocol headers of a data-path request (step 2 of the contract).
fn check_protocol_headers(headers: &HeaderMap, database_id: Uuid) -> Result<(), ApiError> {
    let id_header = match headers.get("x-denokv-version") {
        Some(v) => {
            let v = v.to_str().unwrap_or("").trim();
            if v != "2" && v != "3" {
                return Err(ApiError::bad_request(format!(
                    "Unsupported protocol version {v:?} in the x-denokv-version header; this server speaks 2 and 3 (and 1 without the header)."
                )));
            }
            "x-denokv-database-id"
        }
        None => {
            if headers.contains_key("x-transaction-domain-id") {
                "x-transaction-domain-id"
            } else {
                "x-denokv-database-id"
            }
        }
    };
    let value = headers.get(id_header).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid database id: the {id_header} header is missing."
        ))
    })?;
    let id = value
        .to_str()
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid database id: the {id_header} header is not a UUID."
            ))
        })?;
    if id != database_id {
        return Err(ApiError::bad_request(format!(
            "Invalid database id: {id} is not this database ({database_id}); exchange metadata again."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn protocol_headers() {
        let id = Uuid::from_u128(0x1234);
        let s = id.hyphenated().to_string();
        let upper = s.to_uppercase();
        assert!(check_protocol_headers(
            &headers(&[("x-denokv-version", "3"), ("x-denokv-database-id", &s)]),
            id
        )
        .is_ok());
        assert!(check_protocol_headers(
            &headers(&[("x-denokv-version", "2"), ("x-denokv-database-id", &upper)]),
            id
        )
        .is_ok());
        assert!(check_protocol_headers(&headers(&[("x-transaction-domain-id", &s)]), id).is_ok());
        let bad = [
            headers(&[("x-denokv-version", "4"), ("x-denokv-database-id", &s)]),
            headers(&[("x-denokv-version", "3")]),
            headers(&[("x-denokv-version", "3"), ("x-denokv-database-id", "nope")]),
            headers(&[
                ("x-denokv-version", "3"),
                (
                    "x-denokv-database-id",
                    "00000000-0000-0000-0000-000000000000",
                ),
            ]),
            headers(&[]),
        ];
        for h in bad {
            let e = check_protocol_headers(&h, id).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{h:?}");
        }
    }
}
