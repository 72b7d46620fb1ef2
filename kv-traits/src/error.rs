//! Error types of the storage layer ([`BackendError`]) and of the database operations
//! ([`KvError`]).
//!
//! # Source chains
//!
//! The variants of [`BackendError`] that describe a failure in words ([`BackendError::Io`],
//! [`BackendError::Poisoned`], [`BackendError::Corrupt`], [`BackendError::Conflict`],
//! [`BackendError::UnknownOutcome`]) carry a [`Cause`]: the message, plus the typed error it was
//! made from when there is one (an engine's native error, an [`std::io::Error`], ...). That
//! typed error is what [`std::error::Error::source`] of the `BackendError` returns, so callers
//! can walk the chain and `downcast_ref` to the engine's error type. The `BackendError` itself is
//! never its own source: the chain is `BackendError` → native error → the native error's sources.
//!
//! [`KvError::Backend`] is transparent: it displays as the wrapped `BackendError` and its
//! `source()` is the `BackendError`'s source, so a chain walker sees each message once. Match on
//! `KvError::Backend(e)` to get the `BackendError` itself.
//!
//! # Equality
//!
//! `BackendError` is `Clone + PartialEq + Eq` so tests and callers can compare errors; a
//! [`Cause`] compares by its message only (two causes with the same message and different or
//! absent sources are equal), because typed errors are generally not comparable.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::limits::LimitError;
use crate::value::ValueError;

/// The payload of a [`BackendError`] that describes a failure in words: a human-readable
/// message and, optionally, the typed error it was made from.
///
/// - [`Display`](fmt::Display) shows the message only (the message usually already contains
///   the source's text);
/// - [`Cause::source`] is the typed error, shared (cloning a `Cause` does not copy it);
/// - equality compares the messages only (see the [module docs](self));
/// - `From<String>` and `From<&str>` build a cause without a source.
///
/// ```
/// use kv_traits::{BackendError, Cause};
///
/// let io = std::io::Error::other("disk on fire");
/// let err = BackendError::Io(Cause::with_source(format!("writing the log: {io}"), io));
/// assert_eq!(err.to_string(), "storage I/O error: writing the log: disk on fire");
/// let source = std::error::Error::source(&err).unwrap();
/// assert!(source.downcast_ref::<std::io::Error>().is_some());
/// assert_eq!(err, BackendError::Io("writing the log: disk on fire".into()));
/// ```
///
/// A `Cause` is one pointer wide (the message and source live behind an [`Arc`]), so it keeps
/// `BackendError`, `KvError` and the `Result`s carrying them small.
#[derive(Clone)]
pub struct Cause(Arc<CauseInner>);

struct CauseInner {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl Cause {
    fn from_parts(message: String, source: Option<Arc<dyn Error + Send + Sync + 'static>>) -> Self {
        Cause(Arc::new(CauseInner { message, source }))
    }

    /// A cause with a message and no typed source.
    pub fn new(message: impl Into<String>) -> Self {
        Cause::from_parts(message.into(), None)
    }

    /// A cause with a message and the typed error it was made from.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Cause::from_parts(message.into(), Some(Arc::new(source)))
    }

    /// A cause with a message and an already shared typed error (for example the source of
    /// another `Cause`, see [`Cause::shared_source`]).
    pub fn with_shared_source(
        message: impl Into<String>,
        source: Arc<dyn Error + Send + Sync + 'static>,
    ) -> Self {
        Cause::from_parts(message.into(), Some(source))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The message, consuming the cause (copied if the cause is shared).
    pub fn into_message(self) -> String {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => inner.message,
            Err(shared) => shared.message.clone(),
        }
    }

    /// The typed error this cause was made from, if any.
    pub fn source(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.0.source.as_deref()
    }

    /// The typed error this cause was made from, shared, to build another cause on it.
    pub fn shared_source(&self) -> Option<Arc<dyn Error + Send + Sync + 'static>> {
        self.0.source.clone()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.source {
            // Without a source, as compact as the plain message used to be.
            None => fmt::Debug::fmt(self.message(), f),
            Some(source) => f
                .debug_struct("Cause")
                .field("message", &self.message())
                .field("source", source)
                .finish(),
        }
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.message() == other.message()
    }
}

impl Eq for Cause {}

impl PartialEq<str> for Cause {
    fn eq(&self, other: &str) -> bool {
        self.message() == other
    }
}

impl PartialEq<&str> for Cause {
    fn eq(&self, other: &&str) -> bool {
        self.message() == *other
    }
}

impl PartialEq<String> for Cause {
    fn eq(&self, other: &String) -> bool {
        self.message() == other
    }
}

impl AsRef<str> for Cause {
    fn as_ref(&self) -> &str {
        self.message()
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Cause::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Cause::new(message)
    }
}

impl From<Cause> for String {
    fn from(cause: Cause) -> Self {
        cause.into_message()
    }
}

/// An error of a [`crate::Backend`]: the storage itself failed or refuses to work.
///
/// [`std::error::Error::source`] is the typed error of the variant's [`Cause`], if any (see the
/// [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// An I/O or engine error; the operation did not complete.
    Io(Cause),
    /// A previous commit failed in a way that leaves the on-disk state unknown (for example an
    /// fsync error); the engine refuses further writes until it is reopened.
    Poisoned(Cause),
    /// Stored data could not be decoded.
    Corrupt(Cause),
    /// The file was written by an unknown or newer format.
    UnsupportedFormat {
        /// Version found in the file.
        found: u64,
        /// Version this build writes and reads.
        supported: u64,
    },
    /// The engine has been closed.
    Closed,
    /// Another transaction conflicted with this one, or the commit provably did not apply
    /// (networked engines): nothing was written and the caller may retry.
    Conflict(Cause),
    /// A commit's outcome could not be determined (networked engines: the connection was lost
    /// at commit and the outcome could not be looked up). The write may or may not have been
    /// applied; it must not be blindly retried. The engine is not poisoned.
    UnknownOutcome(Cause),
}

impl BackendError {
    /// The [`Cause`] of a variant that carries one.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            BackendError::Io(cause)
            | BackendError::Poisoned(cause)
            | BackendError::Corrupt(cause)
            | BackendError::Conflict(cause)
            | BackendError::UnknownOutcome(cause) => Some(cause),
            BackendError::UnsupportedFormat { .. } | BackendError::Closed => None,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Io(cause) => write!(f, "storage I/O error: {cause}"),
            BackendError::Poisoned(cause) => write!(
                f,
                "storage is poisoned by a previous I/O error and refuses writes: {cause}"
            ),
            BackendError::Corrupt(cause) => write!(f, "stored data is corrupt: {cause}"),
            BackendError::UnsupportedFormat { found, supported } => write!(
                f,
                "unsupported storage format version {found} (this build understands {supported})"
            ),
            BackendError::Closed => f.write_str("storage is closed"),
            BackendError::Conflict(cause) => write!(f, "transaction conflict: {cause}"),
            BackendError::UnknownOutcome(cause) => {
                write!(f, "the outcome of the commit is unknown: {cause}")
            }
        }
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        let source = self.cause()?.source()?;
        Some(source)
    }
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
    /// The storage engine failed. Transparent: displays as the [`BackendError`], and its
    /// [`std::error::Error::source`] is the `BackendError`'s (the engine's typed error).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("native failure")]
    struct Native;

    fn with_native() -> BackendError {
        BackendError::Io(Cause::with_source("reading: native failure", Native))
    }

    #[test]
    fn source_is_the_typed_error() {
        let err = with_native();
        let source = err.source().expect("a source");
        assert!(source.downcast_ref::<Native>().is_some());
        assert!(source.source().is_none());
        assert!(BackendError::Io("no source".into()).source().is_none());
        assert!(BackendError::Closed.source().is_none());
        for err in [
            BackendError::Poisoned(Cause::with_source("p", Native)),
            BackendError::Corrupt(Cause::with_source("c", Native)),
            BackendError::Conflict(Cause::with_source("c", Native)),
            BackendError::UnknownOutcome(Cause::with_source("u", Native)),
        ] {
            assert!(
                err.source().unwrap().downcast_ref::<Native>().is_some(),
                "{err:?}"
            );
        }
    }

    #[test]
    fn kv_error_reaches_the_typed_error() {
        let err = KvError::from(with_native());
        assert_eq!(
            err.to_string(),
            "storage I/O error: reading: native failure"
        );
        let source = err.source().expect("a source");
        assert!(source.downcast_ref::<Native>().is_some());
        assert!(
            matches!(&err, KvError::Backend(BackendError::Io(m)) if m == "reading: native failure")
        );
    }

    #[test]
    fn display_texts_are_unchanged() {
        let cases = [
            (BackendError::Io("x".into()), "storage I/O error: x"),
            (
                BackendError::Poisoned("x".into()),
                "storage is poisoned by a previous I/O error and refuses writes: x",
            ),
            (
                BackendError::Corrupt("x".into()),
                "stored data is corrupt: x",
            ),
            (
                BackendError::UnsupportedFormat {
                    found: 9,
                    supported: 1,
                },
                "unsupported storage format version 9 (this build understands 1)",
            ),
            (BackendError::Closed, "storage is closed"),
            (
                BackendError::Conflict("x".into()),
                "transaction conflict: x",
            ),
            (
                BackendError::UnknownOutcome("x".into()),
                "the outcome of the commit is unknown: x",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn equality_is_by_message() {
        assert_eq!(
            with_native(),
            BackendError::Io("reading: native failure".into())
        );
        assert_ne!(with_native(), BackendError::Io("other".into()));
        assert_ne!(
            with_native(),
            BackendError::Corrupt("reading: native failure".into())
        );
        let cause = Cause::from(String::from("m"));
        assert_eq!(cause, "m");
        assert_eq!(cause, *"m");
        assert_eq!(cause, String::from("m"));
        assert_eq!(cause.message(), "m");
        assert_eq!(with_native().clone(), with_native());
        let shared = cause.clone();
        assert_eq!(cause.into_message(), "m");
        assert_eq!(String::from(shared), "m");
    }

    #[test]
    fn errors_stay_small() {
        assert_eq!(std::mem::size_of::<Cause>(), std::mem::size_of::<usize>());
        assert!(std::mem::size_of::<BackendError>() <= 24);
    }

    #[test]
    fn debug_shows_message_and_source() {
        assert_eq!(format!("{:?}", BackendError::Io("x".into())), r#"Io("x")"#);
        let debug = format!("{:?}", with_native());
        assert!(
            debug.contains("reading: native failure") && debug.contains("Native"),
            "{debug}"
        );
    }

    #[test]
    fn shared_source_survives_a_new_message() {
        let first = Cause::with_source("first", Native);
        let second = Cause::with_shared_source("second", first.shared_source().unwrap());
        assert!(BackendError::Poisoned(second)
            .source()
            .unwrap()
            .downcast_ref::<Native>()
            .is_some());
    }
}
