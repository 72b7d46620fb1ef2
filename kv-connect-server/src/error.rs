//! HTTP errors of the server, and the single mapping from [`KvError`] to an HTTP status.
//!
//! Clients treat every 4xx as a permanent error shown to the user and retry every 5xx (Deno
//! forever), so deterministic failures are always 4xx and only transient conditions are 5xx.

use http::StatusCode;
use kv_traits::{BackendError, KvError};

use crate::auth::AuthError;
use crate::registry::{NameError, RegistryError};

/// An error answered to a request: a status and a human-readable plain-text message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Response body (plain text).
    pub message: String,
    /// `Retry-After` header of the answer (429 of the abuse limits), if any.
    pub retry_after: Option<http::HeaderValue>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// Maps a database error to the HTTP status and message the client receives.
///
/// - request problems ([`KvError::is_client_error`]: limits, malformed values, bad versionstamps,
///   type errors of sum/min/max, read-only) → 400 with the error's message; an unknown or
///   expired queue lease → 409;
/// - the database closing, or a transaction conflict → 503 (clients retry);
/// - storage failures → 500 (clients retry; a failed commit did not apply);
/// - errors of a remote database being proxied keep a 4xx status, others become 502, and so does
///   an unknown commit outcome outside the data path (which answers writes `AW_UNSPECIFIED`).
///
/// The match names every variant of [`KvError`] and [`BackendError`]: a new variant does not
/// compile until it is mapped here.
pub fn kv_error_status(err: &KvError) -> (StatusCode, String) {
    match err {
        KvError::Limit(_)
        | KvError::Value(_)
        | KvError::InvalidRequest(_)
        | KvError::Mutation(_)
        | KvError::WriteDisabled => (StatusCode::BAD_REQUEST, err.to_string()),
        KvError::LeaseNotFound => (StatusCode::CONFLICT, err.to_string()),
        KvError::Closed => closing(),
        KvError::Backend(backend) => match backend {
            BackendError::Closed => closing(),
            BackendError::Conflict(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The request conflicted with a concurrent transaction; try again.".to_string(),
            ),
            BackendError::UnknownOutcome(_) => (
                StatusCode::BAD_GATEWAY,
                format!("The storage failed: {backend}"),
            ),
            BackendError::Io(_)
            | BackendError::Poisoned(_)
            | BackendError::Corrupt(_)
            | BackendError::UnsupportedFormat { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("An internal storage error occurred: {backend}"),
            ),
        },
        KvError::Remote { status, message } if (400..500).contains(status) => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            message.clone(),
        ),
        KvError::Remote { .. } | KvError::Transport(_) | KvError::UnknownOutcome(_) => (
            StatusCode::BAD_GATEWAY,
            format!("The upstream database failed: {err}"),
        ),
    }
}

/// The answer while the database is closing (clients retry).
fn closing() -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The server is temporarily unavailable (the database is closing); try again later."
            .to_string(),
    )
}

impl From<KvError> for ApiError {
    fn from(err: KvError) -> Self {
        let (status, message) = kv_error_status(&err);
        ApiError::new(status, message)
    }
}

impl From<AuthError> for ApiError {
    /// 403 for a valid token lacking the scope or the database, 401 otherwise.
    fn from(err: AuthError) -> Self {
        let status = if err.is_forbidden() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        ApiError::new(status, err.to_string())
    }
}

/// `err`'s message as a sentence: capitalized, ending in a period.
fn sentence(err: &impl std::fmt::Display) -> String {
    let message = err.to_string();
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => message,
    }
}

impl From<NameError> for ApiError {
    fn from(err: NameError) -> Self {
        ApiError::bad_request(sentence(&err))
    }
}

impl From<RegistryError> for ApiError {
    /// Bad names 400, unknown databases 404, taken names 409, a single-database server 400,
    /// stopping 503; a database's own errors as [`kv_error_status`] maps them.
    ///
    /// A database that exists but cannot be served because of the server's side (created with
    /// another engine, a corrupt record, the data directory failing) is a server fault: 500,
    /// with a message saying which fault and that the operator must fix it, never a 4xx, which
    /// the clients would show as their own mistake. Deno retries it, which is what a client
    /// should do while the operator repairs the server. Server paths stay out of the answer
    /// and go to the log instead.
    fn from(err: RegistryError) -> Self {
        let server_fault = |message: String| {
            tracing::error!(error = %err, "a database cannot be served");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
        };
        let status =
            match &err {
                RegistryError::Name(_) | RegistryError::SingleDatabase => StatusCode::BAD_REQUEST,
                RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
                RegistryError::AlreadyExists(_) => StatusCode::CONFLICT,
                RegistryError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
                RegistryError::Database { source, .. } => return source.clone().into(),
                RegistryError::EngineMismatch { created_with, .. } => {
                    return server_fault(format!(
                    "{} This is a server configuration error: the server's operator must serve \
                     this database with --engine {created_with}.",
                    sentence(&err)
                ))
                }
                RegistryError::CorruptRecord { name, .. } => {
                    return server_fault(format!(
                    "Database {name:?} cannot be opened: the server's record of it is corrupt. \
                     This is a server-side fault: the server's operator must repair the record \
                     (the server log names the file)."
                ))
                }
                RegistryError::Io { .. } => return server_fault(
                    "The server cannot access its data directory. This is a server-side fault: \
                     the server's operator must fix it (the server log has the details)."
                        .to_string(),
                ),
                RegistryError::Provider(_) => {
                    return server_fault(format!(
                        "{} This is a server-side fault: the server's operator must fix it.",
                        sentence(&err)
                    ))
                }
            };
        ApiError::new(status, sentence(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_traits::{LimitError, ValueError};

    #[test]
    fn client_errors_are_400_and_transient_errors_5xx() {
        let cases: Vec<(KvError, u16)> = vec![
            (
                LimitError::TooManyChecks {
                    count: 101,
                    max: 100,
                }
                .into(),
                400,
            ),
            (ValueError::UnknownEncoding(7).into(), 400),
            (KvError::InvalidRequest("x".into()), 400),
            (KvError::Mutation("sum type".into()), 400),
            (KvError::WriteDisabled, 400),
            (KvError::Closed, 503),
            (BackendError::Closed.into(), 503),
            (BackendError::Conflict("c".into()).into(), 503),
            (BackendError::Io("disk".into()).into(), 500),
            (BackendError::Corrupt("bad".into()).into(), 500),
            (BackendError::Poisoned("fsync".into()).into(), 500),
            (
                BackendError::UnsupportedFormat {
                    found: 9,
                    supported: 1,
                }
                .into(),
                500,
            ),
            (KvError::LeaseNotFound, 409),
            (KvError::UnknownOutcome("x".into()), 502),
            (
                KvError::Remote {
                    status: 413,
                    message: "big".into(),
                },
                413,
            ),
            (
                KvError::Remote {
                    status: 500,
                    message: "x".into(),
                },
                502,
            ),
            (KvError::Transport("x".into()), 502),
        ];
        for (err, status) in cases {
            let (s, msg) = kv_error_status(&err);
            assert_eq!(s.as_u16(), status, "{err:?}");
            assert!(!msg.is_empty());
            assert_eq!(s.is_client_error(), err.is_client_error(), "{err:?}");
        }
        let (_, msg) = kv_error_status(&ValueError::UnknownEncoding(7).into());
        assert!(msg.contains("encoding 7"), "{msg}");
    }

    #[test]
    fn databases_the_server_cannot_serve_are_server_faults_that_say_which() {
        let mismatch = ApiError::from(RegistryError::EngineMismatch {
            name: "app".into(),
            created_with: "sqlite".into(),
            serving: "redb".into(),
        });
        assert_eq!(mismatch.status, StatusCode::INTERNAL_SERVER_ERROR);
        for part in [
            "\"app\"",
            "sqlite engine",
            "--engine redb",
            "server configuration error",
        ] {
            assert!(
                mismatch.message.contains(part),
                "{part}: {}",
                mismatch.message
            );
        }
        let source = match serde_json::from_str::<serde_json::Value>("{") {
            Err(e) => e,
            Ok(v) => panic!("parsed {v}"),
        };
        let corrupt = ApiError::from(RegistryError::CorruptRecord {
            name: "app".into(),
            path: "/srv/secret/databases/app/database.json".into(),
            source,
        });
        assert_eq!(corrupt.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            corrupt.message.contains("record of it is corrupt"),
            "{}",
            corrupt.message
        );
        assert!(
            !corrupt.message.contains("/srv/secret"),
            "{}",
            corrupt.message
        );
        let io = ApiError::from(RegistryError::Io {
            what: "reading /srv/secret/databases/app/database.json".into(),
            source: std::io::Error::other("denied"),
        });
        assert_eq!(io.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!io.message.contains("/srv/secret"), "{}", io.message);
        let closed = ApiError::from(RegistryError::Database {
            name: "app".into(),
            source: KvError::Closed,
        });
        assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
