//! The one error type of the addon, and how it crosses into JavaScript.
//!
//! Contract: every failure becomes a JavaScript `Error` whose message is
//! `"<Class>: <message>"`. `<Class>` is what `Deno.Kv` throws for the same failure:
//! - `TypeError` for bad input (limits, malformed values or versionstamps, mutations that cannot
//!   apply to the stored value, a 4xx answer of a remote server);
//! - `BadResource` for a closed database (Deno: `Deno.errors.BadResource`);
//! - `Error` for everything else (storage and transport failures, unknown commit outcomes).
//!
//! A remote server's 4xx answer shows the server's text alone (see [`NodeError::js_message`]).
//! The JavaScript half splits the message and throws an instance of that class.

use kv_traits::KvError;

/// A failure of one addon call.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The database operation failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The database was closed.
    #[error("Bad resource ID")]
    Closed,
    /// An argument that the JavaScript half should have rejected is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A database could not be opened.
    #[error("cannot open {location}: {source}")]
    Open {
        /// The path or URL.
        location: String,
        /// Why.
        source: KvError,
    },
}

impl NodeError {
    /// The JavaScript error class Deno throws for this failure.
    pub fn class(&self) -> &'static str {
        match self {
            NodeError::Closed => "BadResource",
            NodeError::InvalidArgument(_) => "TypeError",
            NodeError::Kv(KvError::Closed) => "BadResource",
            NodeError::Kv(e) | NodeError::Open { source: e, .. } if e.is_client_error() => {
                "TypeError"
            }
            NodeError::Kv(_) | NodeError::Open { .. } => "Error",
        }
    }

    /// The message JavaScript sees: a remote server's 4xx answer shows its text alone, as the
    /// embedded database words it (Deno does the same for KV Connect errors it maps).
    pub fn js_message(&self) -> String {
        match self {
            NodeError::Kv(KvError::Remote { status, message }) if (400..500).contains(status) => {
                message.clone()
            }
            other => other.to_string(),
        }
    }
}

impl From<NodeError> for napi::Error {
    fn from(e: NodeError) -> Self {
        napi::Error::new(
            napi::Status::GenericFailure,
            format!("{}: {}", e.class(), e.js_message()),
        )
    }
}

/// The result of an addon call.
pub type NodeResult<T> = Result<T, NodeError>;
