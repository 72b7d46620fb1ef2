//! The metadata exchange (`POST /`): version negotiation, endpoint list and data-path token.
//!
//! # Contract
//!
//! - The router has authorized the caller (`access.rs`: the access token or a scoped
//!   token of this database). The request carries a JSON body of at most 64 KiB, `{"supportedVersions":[...]}`; an empty body means version 1 only.
//! - The answer is the highest common version of 1, 2 and 3 (none in common → 400) as a JSON
//!   [`MetadataResponse`] with exactly its five properties, plus the header
//!   `x-denokv-extensions: queue-v1`.
//! - Endpoints: the database's data path for v2/v3 as an absolute path ([`DATA_PATH_PREFIX`],
//!   or `/db/<name>/v2` for a database of a server with many: both Deno and `@deno/kv` resolve
//!   it against the metadata URL like a link, so a relative `v2` would lose the `/db/<name>`
//!   part), an absolute URL for v1 (built from the request's authority and scheme, see
//!   [`absolute_endpoint`]); one `strong` endpoint, or on a read replica this server `eventual`
//!   followed by the primary (or itself) `strong`; with an eventual-read database
//!   ([`crate::ServerConfig::eventual`], single-database mode only)
//!   [`EVENTUAL_DATA_PATH_PREFIX`] `eventual` followed by [`DATA_PATH_PREFIX`] `strong`
//!   (absolute for v1 too). Clients send strong reads and writes to the first `strong`
//!   endpoint; `@deno/kv` sends eventual reads and watches to the first `eventual` one, Deno
//!   sends everything to the `strong` one.
//! - The token is a fresh data-path token for the caller (`access.rs`); `expiresAt` is its
//!   expiry.

use std::time::SystemTime;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Body;
use kv_proto as wire;
use serde::{Deserialize, Serialize};

use crate::access::Grant;
use crate::body::{read_body, response, ResponseBody};
use crate::config::ReplicaSettings;
use crate::error::ApiError;
use crate::state::{AppState, ConnInfo};

/// Largest accepted metadata request body.
const MAX_METADATA_BODY: usize = 64 * 1024;

/// Protocol versions this server speaks, highest preferred.
pub const SUPPORTED_VERSIONS: [u64; 3] = [3, 2, 1];

/// Path of the data-path endpoint advertised to clients.
pub const DATA_PATH_PREFIX: &str = "/v2";

/// Path of the `eventual` data-path endpoint, advertised when the server has an eventual-read
/// database ([`ServerConfig::eventual`](crate::ServerConfig::eventual)).
pub const EVENTUAL_DATA_PATH_PREFIX: &str = "/eventual/v2";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataRequest {
    /// Non-integer entries are ignored rather than rejected.
    #[serde(default)]
    supported_versions: Vec<serde_json::Value>,
}

/// The metadata exchange response: exactly these five properties (npm rejects extra ones).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataResponse {
    /// Negotiated protocol version.
    pub version: u64,
    /// Lowercase hyphenated database UUID.
    pub database_id: String,
    /// Data-path endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Data-path bearer token.
    pub token: String,
    /// RFC 3339 UTC expiry of `token`, ending in `Z`.
    pub expires_at: String,
}

/// One data-path endpoint.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Endpoint URL (relative for v2/v3, absolute for v1).
    pub url: String,
    /// `strong` or `eventual`.
    pub consistency: &'static str,
}

/// Picks the highest protocol version both sides support from the request body. An empty body
/// means "version 1 only" (protocol rule for the oldest clients).
pub fn negotiate_version(body: &[u8]) -> Result<u64, ApiError> {
    let offered: Vec<u64> = if body.iter().all(u8::is_ascii_whitespace) {
        vec![1]
    } else {
        let req: MetadataRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "The metadata request body is not valid JSON of the form {{\"supportedVersions\":[1,2,3]}}: {e}."
            ))
        })?;
        req.supported_versions
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .collect()
    };
    SUPPORTED_VERSIONS.into_iter().find(|v| offered.contains(v)).ok_or_else(|| {
        ApiError::bad_request(format!(
            "The server could not negotiate a protocol version: the client supports {offered:?}, the server supports 1, 2 and 3."
        ))
    })
}

/// Formats a time as RFC 3339 UTC with milliseconds and a literal `Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The absolute URL of the data-path endpoint for v1 clients, from the request's authority
/// (`:authority` in HTTP/2, `Host` in HTTP/1.1) and scheme (`X-Forwarded-Proto` if a proxy set
/// it, else the connection's).
pub fn absolute_endpoint(
    uri: &http::Uri,
    headers: &HeaderMap,
    tls: bool,
    data_path: &str,
) -> Result<String, ApiError> {
    Ok(format!("{}{data_path}", origin(uri, headers, tls)?))
}

/// `scheme://authority` of the request (see [`absolute_endpoint`]).
fn origin(uri: &http::Uri, headers: &HeaderMap, tls: bool) -> Result<String, ApiError> {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "Protocol version 1 needs an absolute endpoint URL, but the request has no Host header.",
            )
        })?;
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|s| *s == "http" || *s == "https")
        .unwrap_or(if tls { "https" } else { "http" });
    Ok(format!("{scheme}://{host}"))
}

/// Handles `POST /` (see the module contract).
pub(crate) async fn exchange<D, B>(
    state: &AppState<D>,
    conn: ConnInfo,
    grant: &Grant,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = read_body(req, MAX_METADATA_BODY).await?;
    let version = negotiate_version(&body)?;
    // v1 clients need absolute URLs; later ones resolve the absolute paths against the
    // metadata URL.
    let base = if version == 1 {
        origin(&parts.uri, &parts.headers, conn.tls)?
    } else {
        String::new()
    };
    let (token, expires) = state
        .access
        .issue(grant, state.database.as_ref(), SystemTime::now());
    let meta = MetadataResponse {
        version,
        database_id: state.database_id.hyphenated().to_string(),
        endpoints: endpoints(
            &base,
            &state.data_path,
            state.replica.as_ref(),
            state.eventual.is_some(),
        ),
        token,
        expires_at: rfc3339_utc(expires),
    };
    let json = serde_json::to_vec(&meta).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to encode metadata: {e}"),
        )
    })?;
    let mut res = response(StatusCode::OK, "application/json", json);
    res.headers_mut().insert(
        wire::EXTENSIONS_HEADER,
        HeaderValue::from_static(wire::QUEUE_EXTENSION),
    );
    Ok(res)
}

/// The advertised data-path endpoints, `base` being empty or the origin for v1: this server,
/// `strong`; on a replica, this server as `eventual` followed by the primary (or this server
/// again) as the `strong` endpoint every client requires; with an eventual-read database, its
/// endpoint `eventual` followed by this server `strong`.
fn endpoints(
    base: &str,
    data_path: &str,
    replica: Option<&ReplicaSettings>,
    eventual: bool,
) -> Vec<Endpoint> {
    let url = format!("{base}{data_path}");
    match replica {
        None if eventual => vec![
            Endpoint {
                url: format!("{base}{EVENTUAL_DATA_PATH_PREFIX}"),
                consistency: "eventual",
            },
            Endpoint {
                url,
                consistency: "strong",
            },
        ],
        None => vec![Endpoint {
            url,
            consistency: "strong",
        }],
        Some(r) => {
            let strong = r.primary_data_url.clone().unwrap_or_else(|| url.clone());
            vec![
                Endpoint {
                    url,
                    consistency: "eventual",
                },
                Endpoint {
                    url: strong,
                    consistency: "strong",
                },
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(
            negotiate_version(br#"{"supportedVersions":[1,2,3]}"#),
            Ok(3)
        );
        assert_eq!(negotiate_version(br#"{"supportedVersions":[2,1]}"#), Ok(2));
        assert_eq!(
            negotiate_version(br#"{"supportedVersions":[1],"extra":true}"#),
            Ok(1)
        );
        assert_eq!(negotiate_version(b""), Ok(1));
        assert_eq!(
            negotiate_version(br#"{"supportedVersions":[3,"x",4]}"#),
            Ok(3)
        );
        assert!(negotiate_version(br#"{"supportedVersions":[4,5]}"#).is_err());
        assert!(negotiate_version(br#"{}"#).is_err());
        assert!(negotiate_version(b"not json").is_err());
        assert!(negotiate_version(b"[]").is_err());
    }

    #[test]
    fn endpoints_per_setting() {
        let urls = |e: Vec<Endpoint>| -> Vec<(String, &str)> {
            e.into_iter().map(|e| (e.url, e.consistency)).collect()
        };
        assert_eq!(
            urls(endpoints("", DATA_PATH_PREFIX, None, false)),
            [("/v2".into(), "strong")]
        );
        assert_eq!(
            urls(endpoints("http://h:1", DATA_PATH_PREFIX, None, true)),
            [
                ("http://h:1/eventual/v2".into(), "eventual"),
                ("http://h:1/v2".into(), "strong")
            ]
        );
        let replica = ReplicaSettings {
            source: "s3://b/p/".into(),
            primary_data_url: Some("http://p/v2".into()),
        };
        assert_eq!(
            urls(endpoints("", DATA_PATH_PREFIX, Some(&replica), true)),
            [("/v2".into(), "eventual"), ("http://p/v2".into(), "strong")]
        );
    }

    #[test]
    fn rfc3339_has_z_and_millis() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_utc(t), "2023-11-14T22:13:20.123Z");
    }
}
