//! Error types of the storage layer ([`BackendError`]) and of the database operations
//! ([`KvError`]).

use crate::limits::LimitError;
use crate::value::ValueError;

/// An error of a [`crate::Backend`]: the storage itself failed or refuses to work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// An I/O or engine error; the operation did not complete.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// A previous commit failed in a way that leaves the on-disk state unknown (for example an
    /// fsync error); the engine refuses further writes until it is reopened.
    #[error("storage is poisoned by a previous I/O error and refuses writes: {0}")]
    Poisoned(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The file was written by an unknown or newer format.
    #[error("unsupported storage format version {found} (this build understands {supported})")]
    UnsupportedFormat {
        /// Version found in the file.
        found: u64,
        /// Version this build writes and reads.
        supported: u64,
    },
    /// The engine has been closed.
    #[error("storage is closed")]
    Closed,
    /// Another transaction conflicted with this one, or the commit provably did not apply
    /// (networked engines): nothing was written and the caller may retry.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// A commit's outcome could not be determined (networked engines: the connection was lost
    /// at commit and the outcome could not be looked up). The write may or may not have been
    /// applied; it must not be blindly retried. The engine is not poisoned.
    #[error("the outcome of the commit is unknown: {0}")]
    UnknownOutcome(String),
}

/// An error of a [`crate::Database`] operation.
///
/// [`KvError::is_client_error`] tells deterministic request problems (reported as 4xx by the
/// server, never retried) from transient ones (5xx, retried by clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A request exceeds a limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A value has an unknown encoding or a malformed U64.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// The request is malformed (missing operand, bad versionstamp length, bad expiry, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// A mutation cannot be applied to the stored value or its operands (sum/min/max type
    /// errors, sum out of range). Nothing of the write was applied.
    #[error("{0}")]
    Mutation(String),
    /// A queue lease is unknown or has expired (the message may have been redelivered).
    #[error("queue lease is unknown or has expired")]
    LeaseNotFound,
    /// The database does not accept writes (read-only).
    #[error("This database is read only.")]
    WriteDisabled,
    /// The database is closed or shutting down.
    #[error("The database is closed.")]
    Closed,
    /// The storage engine failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The server rejected the request (remote databases): HTTP status and body.
    #[error("server answered {status}: {message}")]
    Remote {
        /// HTTP status code.
        status: u16,
        /// Response body text.
        message: String,
    },
    /// The server could not be reached or answered garbage (remote databases).
    #[error("transport error: {0}")]
    Transport(String),
    /// A write may or may not have been applied: the connection failed after it was sent.
    #[error("the outcome of the write is unknown: {0}")]
    UnknownOutcome(String),
}

impl KvError {
    /// True for deterministic request errors that a retry cannot fix (HTTP 4xx).
    pub fn is_client_error(&self) -> bool {
        match self {
            KvError::Limit(_)
            | KvError::Value(_)
            | KvError::InvalidRequest(_)
            | KvError::Mutation(_)
            | KvError::LeaseNotFound
            | KvError::WriteDisabled => true,
            KvError::Remote { status, .. } => (400..500).contains(status),
            KvError::Closed
            | KvError::Backend(_)
            | KvError::Transport(_)
            | KvError::UnknownOutcome(_) => false,
        }
    }
}
