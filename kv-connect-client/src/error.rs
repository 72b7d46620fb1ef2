//! The error type of the [`Kv`](crate::Kv) API.

use kv_traits::key::KeyError;
use kv_traits::KvError;

/// An error of the [`Kv`](crate::Kv) API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The database operation failed (see [`KvError::is_client_error`] to tell request errors
    /// from transient ones).
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A key could not be encoded, or a stored key could not be decoded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A list cursor is not valid base64url.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A list cursor points outside the selector's range.
    #[error("cursor out of bounds")]
    CursorOutOfBounds,
    /// An argument is invalid (selector, limit, batch size, queue payload, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A write that had no checks reported a check failure (a misbehaving server).
    #[error("the write was rejected by a check failure")]
    CheckFailed,
}

impl Error {
    /// True for errors that retrying cannot fix.
    pub fn is_client_error(&self) -> bool {
        match self {
            Error::Kv(e) => e.is_client_error(),
            _ => true,
        }
    }
}
