//! The metadata exchange response: parsing, validation, endpoint selection and resolution.

use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use url::Url;

/// The protocol versions this client offers, in the request body.
pub(crate) const SUPPORTED_VERSIONS: [u32; 3] = [1, 2, 3];

/// The metadata request body: `{"supportedVersions":[1,2,3]}`.
pub(crate) const REQUEST_BODY: &str = r#"{"supportedVersions":[1,2,3]}"#;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    version: u32,
    database_id: String,
    endpoints: Vec<RawEndpoint>,
    token: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct RawEndpoint {
    url: String,
    consistency: String,
}

/// A validated metadata exchange result.
#[derive(Clone, Debug)]
pub(crate) struct Metadata {
    /// Negotiated protocol version (1, 2 or 3).
    pub version: u32,
    /// Database id, lowercase hyphenated.
    pub database_id: String,
    /// Base URL of the first strong endpoint, without a trailing `/`.
    pub endpoint: String,
    /// Data-path bearer token.
    pub token: String,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// When this metadata was received.
    pub fetched_at: Instant,
    /// Extensions advertised in `x-denokv-extensions`.
    pub extensions: Vec<String>,
}

impl Metadata {
    /// Parses and validates a metadata response body received from `base` (the metadata URL).
    pub(crate) fn parse(
        body: &[u8],
        base: &Url,
        extensions_header: Option<&str>,
    ) -> Result<Metadata, String> {
        let raw: RawMetadata =
            serde_json::from_slice(body).map_err(|e| format!("Failed to parse metadata: {e}"))?;
        if !SUPPORTED_VERSIONS.contains(&raw.version) {
            return Err(format!("unsupported metadata version: {}", raw.version));
        }
        let database_id = parse_uuid(&raw.database_id)
            .ok_or_else(|| format!("metadata databaseId is not a UUID: {:?}", raw.database_id))?;
        let mut strong = None;
        for ep in &raw.endpoints {
            match ep.consistency.as_str() {
                "strong" => {
                    if strong.is_none() {
                        strong = Some(ep.url.as_str());
                    }
                }
                "eventual" => {}
                other => return Err(format!("unsupported consistency level: {other}")),
            }
        }
        let endpoint = strong.ok_or("the metadata lists no strong consistency endpoint")?;
        let resolved = if raw.version == 1 {
            Url::parse(endpoint).map_err(|e| format!("invalid endpoint URL {endpoint:?}: {e}"))?
        } else {
            base.join(endpoint)
                .map_err(|e| format!("invalid endpoint URL {endpoint:?}: {e}"))?
        };
        if !matches!(resolved.scheme(), "http" | "https") {
            return Err(format!("unsupported endpoint URL scheme: {resolved}"));
        }
        if resolved.query().is_some() || resolved.fragment().is_some() {
            return Err(format!(
                "endpoint URL must not have a query or fragment: {resolved}"
            ));
        }
        if raw.token.is_empty() {
            return Err("metadata token is empty".into());
        }
        let expires_at = chrono::DateTime::parse_from_rfc3339(&raw.expires_at)
            .map_err(|e| format!("invalid metadata expiresAt {:?}: {e}", raw.expires_at))?;
        let expires_at = system_time_from_unix_ms(expires_at.timestamp_millis());
        let extensions = extensions_header
            .map(|h| {
                h.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Metadata {
            version: raw.version,
            database_id,
            endpoint: resolved.as_str().trim_end_matches('/').to_string(),
            token: raw.token,
            expires_at,
            fetched_at: Instant::now(),
            extensions,
        })
    }

    /// The URL of a data-path method (`snapshot_read`, `queue/dequeue`, ...).
    pub(crate) fn method_url(&self, method: &str) -> String {
        format!("{}/{}", self.endpoint, method)
    }

    /// Whether the server advertised `name` in `x-denokv-extensions`.
    pub(crate) fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }

    /// Time left before the token expires (zero if expired).
    pub(crate) fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

fn system_time_from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// Parses a UUID in any case, with or without hyphens, into the lowercase hyphenated form.
fn parse_uuid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    if s.contains('-') && s.len() != 36 {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:4512").unwrap()
    }

    const GOOD: &str = r#"{"version":3,"databaseId":"00000000-0000-0000-0000-000000000000","endpoints":[{"url":"/v2","consistency":"strong"}],"token":"tok","expiresAt":"2024-01-02T03:04:05.123456789Z"}"#;

    #[test]
    fn parses_denokv_response() {
        let m = Metadata::parse(GOOD.as_bytes(), &base(), Some("queue-v1, other")).unwrap();
        assert_eq!(m.version, 3);
        assert_eq!(m.database_id, "00000000-0000-0000-0000-000000000000");
        assert_eq!(m.endpoint, "http://127.0.0.1:4512/v2");
        assert_eq!(
            m.method_url("snapshot_read"),
            "http://127.0.0.1:4512/v2/snapshot_read"
        );
        assert_eq!(m.token, "tok");
        assert!(m.has_extension("queue-v1"));
        assert!(m.has_extension("other"));
        assert_eq!(
            m.expires_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            1_704_164_645_123
        );
    }

    #[test]
    fn endpoint_resolution() {
        let body = |url: &str, version: u32| {
            format!(
                r#"{{"version":{version},"databaseId":"00000000-0000-0000-0000-000000000000","endpoints":[{{"url":"/ro","consistency":"eventual"}},{{"url":"{url}","consistency":"strong"}},{{"url":"/second","consistency":"strong"}}],"token":"t","expiresAt":"2030-01-01T00:00:00Z"}}"#
            )
        };
        let base = Url::parse("https://kv.example/db/abc").unwrap();
        let m = Metadata::parse(body("./v2", 3).as_bytes(), &base, None).unwrap();
        assert_eq!(m.endpoint, "https://kv.example/db/v2");
        let m = Metadata::parse(body("http://other:1/x/", 2).as_bytes(), &base, None).unwrap();
        assert_eq!(m.endpoint, "http://other:1/x");
        let m = Metadata::parse(body("http://other:1", 2).as_bytes(), &base, None).unwrap();
        assert_eq!(m.method_url("watch"), "http://other:1/watch");
        assert!(!m.has_extension(kv_proto::QUEUE_EXTENSION));
        // v1 needs absolute URLs.
        assert!(Metadata::parse(body("/v2", 1).as_bytes(), &base, None).is_err());
    }

    #[test]
    fn rejects_bad_metadata() {
        let bad = [
            GOOD.replace("\"version\":3", "\"version\":4"),
            GOOD.replace("strong", "weird"),
            GOOD.replace("strong", "eventual"),
            GOOD.replace("00000000-0000-0000-0000-000000000000", "nope"),
            GOOD.replace("2024-01-02T03:04:05.123456789Z", "yesterday"),
            GOOD.replace("\"tok\"", "\"\""),
            "not json".to_string(),
        ];
        for b in bad {
            assert!(Metadata::parse(b.as_bytes(), &base(), None).is_err(), "{b}");
        }
    }

    #[test]
    fn uuid_normalisation() {
        assert_eq!(
            parse_uuid("A0B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5").as_deref(),
            Some("a0b1c2d3-e4f5-a6b7-c8d9-e0f1a2b3c4d5")
        );
        assert_eq!(parse_uuid("a0b1c2d3-e4f5-a6b7-c8d9-e0f1a2b3c4d"), None);
    }
}
