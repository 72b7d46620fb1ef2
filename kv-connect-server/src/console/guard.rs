//! What every console API call passes first, and what every console answer carries.
//!
//! # Contract
//!
//! - [`check_api_request`]: refuses a token in the query string (400, whatever else the
//!   request carries), a cross-origin request (403: an `Origin` whose host and port are not
//!   this request's `Host`, or that is not `http(s)://`, or a `Sec-Fetch-Site` other than
//!   `same-origin`/`none`; the scheme may differ, for proxies that terminate TLS), then requires
//!   `Authorization: Bearer <token>` (401 without).
//! - [`authorize`]: the token must be an admin token for the database asked for: the access
//!   token (compared in constant time) or a scoped token of scope `admin` for that database or
//!   for every database (401 unknown, 403 too little scope or another database's token).
//! - [`database_param`]: the `database` query parameter, a [`DbName`] (400 otherwise).
//! - [`json_body`]: a `POST` body must be `application/json` (415), at most the server's body
//!   bound (413) and parse into the request type (400 with serde's message, naming the field).
//! - [`secure_headers`] sets the security headers of the module contract on every answer.

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Request, Response, StatusCode};
use hyper::body::Body;
use serde::de::DeserializeOwned;

use crate::access::{require, Access};
use crate::auth::{bearer_token, AuthError};
use crate::body::{read_body, response, ResponseBody};
use crate::error::ApiError;
use crate::registry::DbName;
use crate::state::{AppState, ConnInfo};
use crate::tokens::Scope;

/// The content security policy of every console answer: only this origin's scripts, styles and
/// fetches; no inline code, no plugins, no framing, no form posts elsewhere.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Content type of console API answers.
pub(super) const JSON: &str = "application/json";

/// Query parameters that look like a credential: refused, never read.
const TOKEN_PARAMS: [&str; 5] = [
    "token",
    "access_token",
    "accesstoken",
    "auth",
    "authorization",
];

/// Sets the security headers (module contract) on `headers`.
pub(super) fn secure_headers(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        HeaderName::from_static("content-security-policy"),
        CSP,
    );
    set(headers, X_FRAME_OPTIONS, "DENY");
    set(headers, X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, REFERRER_POLICY, "no-referrer");
    set(headers, CACHE_CONTROL, "no-store");
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
}

/// The JSON answer of `err`: `{"error": message}` with its status.
pub(super) fn json_error(err: &ApiError) -> Response<ResponseBody> {
    json_response(err.status, &serde_json::json!({ "error": err.message }))
}

/// A JSON answer.
pub(super) fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
) -> Response<ResponseBody> {
    response(status, JSON, Bytes::from(value.to_string()))
}

/// Checks query and origin of an API call and returns its bearer token, not yet authorized
/// (module contract; [`authorize`] decides what it may see).
pub(super) fn check_api_request<B>(conn: ConnInfo, req: &Request<B>) -> Result<String, ApiError> {
    if let Some(query) = req.uri().query() {
        let named = query.split('&').filter_map(|pair| pair.split('=').next());
        for name in named {
            if TOKEN_PARAMS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ApiError::bad_request(format!(
                    "Never put the token in a URL (query parameter {name:?}): send it as \
                     'Authorization: Bearer <token>'."
                )));
            }
        }
    }
    check_origin(conn, req)?;
    Ok(bearer_token(req.headers().get(AUTHORIZATION))?.to_string())
}

/// Requires `token` to be an admin token for `database` (`None`: the single database, or
/// every database): 401 unknown, 403 too little scope or another database's token.
pub(super) fn authorize(
    access: &Access,
    token: &str,
    database: Option<&DbName>,
) -> Result<(), ApiError> {
    let grant = access.credential(token, database, std::time::SystemTime::now())?;
    require(grant.scope, Scope::Admin)?;
    Ok(())
}

/// Requires `token` to be a valid credential (401 otherwise), of any scope or database: what
/// it may see is then decided per database by [`authorize`].
pub(super) fn authenticate(access: &Access, token: &str) -> Result<(), ApiError> {
    match access.credential(token, None, std::time::SystemTime::now()) {
        Ok(_) | Err(AuthError::WrongDatabase { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The `database` query parameter of an API call, if any (names need no decoding: anything
/// [`DbName`] refuses is a 400).
pub(super) fn database_param<B>(req: &Request<B>) -> Result<Option<DbName>, ApiError> {
    let Some(query) = req.uri().query() else {
        return Ok(None);
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == "database")
        .map(|(_, value)| DbName::parse(value).map_err(ApiError::from))
        .transpose()
}

/// Refuses cross-origin requests (module contract).
fn check_origin<B>(conn: ConnInfo, req: &Request<B>) -> Result<(), ApiError> {
    let forbidden = |why: String| ApiError::new(StatusCode::FORBIDDEN, why);
    if let Some(site) = req.headers().get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(forbidden(format!(
                "Cross-origin request refused (Sec-Fetch-Site: {site})."
            )));
        }
    }
    let Some(origin) = req.headers().get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    // The scheme may differ from the connection's behind a proxy that terminates TLS; the host
    // (with its port) must be this server's.
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    if host.is_empty() || !origin_host.is_some_and(|h| h.eq_ignore_ascii_case(host)) {
        let scheme = if conn.tls { "https" } else { "http" };
        return Err(forbidden(format!(
            "Cross-origin request refused: Origin {origin:?} is not this server ({scheme}://{host})."
        )));
    }
    Ok(())
}

/// Reads and parses a JSON request body (module contract).
pub(super) async fn json_body<D, B, T>(state: &AppState<D>, req: Request<B>) -> Result<T, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
    T: DeserializeOwned,
{
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(JSON));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request body must be JSON (Content-Type: application/json).",
        ));
    }
    let (_, body) = read_body(req, state.max_body_size).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid: {e}.")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn conn() -> ConnInfo {
        ConnInfo {
            tls: false,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::post("/console/api/list");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap_or_default()
    }

    #[test]
    fn same_origin_passes_and_cross_origin_is_refused() {
        let host = ("host", "127.0.0.1:4512");
        assert!(check_origin(conn(), &req(&[host])).is_ok());
        assert!(check_origin(conn(), &req(&[host, ("origin", "http://127.0.0.1:4512")])).is_ok());
        assert!(check_origin(conn(), &req(&[host, ("sec-fetch-site", "same-origin")])).is_ok());
        // Behind a proxy that terminates TLS.
        assert!(check_origin(conn(), &req(&[host, ("origin", "https://127.0.0.1:4512")])).is_ok());
        for bad in [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://127.0.0.1:4513")],
            vec![host, ("origin", "http://127.0.0.1:4512.evil.example")],
            vec![host, ("origin", "ftp://127.0.0.1:4512")],
            vec![host, ("origin", "null")],
            vec![("origin", "http://127.0.0.1:4512")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
        ] {
            let err = check_origin(conn(), &req(&bad)).err();
            assert_eq!(
                err.map(|e| e.status),
                Some(StatusCode::FORBIDDEN),
                "{bad:?}"
            );
        }
    }
}
