//! Mapping of driver and pool errors to [`BackendError`].
//!
//! Every message names what failed (the operation, and for connection problems the server as
//! `host:port`, the database and the user) and never contains the password: messages are built
//! from the parsed configuration's host, port, database and user, never from the URL.
//!
//! - SQLSTATE `40001` (serialization failure) and `40P01` (deadlock) → [`BackendError::Conflict`];
//! - a pool that was closed → [`BackendError::Closed`];
//! - everything else → [`BackendError::Io`] (authentication failures, a missing database, an
//!   unreachable server, a lost connection, a statement timeout, ...).
//!
//! The driver's or the pool's error is kept as the [`std::error::Error::source`] of the result
//! ([`tokio_postgres::Error`], or [`deadpool_postgres::PoolError`] when the pool itself failed).

use kv_traits::{BackendError, Cause};
use tokio_postgres::error::SqlState;

/// Converts a driver error raised while doing `what`.
pub(crate) fn pg_err(what: &str, e: tokio_postgres::Error) -> BackendError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let text = format!(
            "{what}: PostgreSQL {} {}: {}",
            db.severity(),
            code.code(),
            db.message()
        );
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return BackendError::Conflict(Cause::with_source(text, e));
        }
        if *code == SqlState::QUERY_CANCELED {
            return BackendError::Io(Cause::with_source(
                format!(
                    "{text} (the statement timeout may be too short, see PostgresOptions::statement_timeout)"
                ),
                e,
            ));
        }
        if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN {
            return BackendError::Io(Cause::with_source(
                format!("{text} (connection to PostgreSQL lost)"),
                e,
            ));
        }
        return BackendError::Io(Cause::with_source(text, e));
    }
    if e.is_closed() {
        return BackendError::Io(Cause::with_source(
            format!("{what}: connection to PostgreSQL lost ({e})"),
            e,
        ));
    }
    BackendError::Io(Cause::with_source(format!("{what}: {}", chain(&e)), e))
}

/// True when `e` means the connection is unusable (lost, closed, or an I/O error on it), as
/// opposed to an error the server reported on a working connection.
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => {
            let code = db.code();
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || code.code().starts_with("08")
        }
        // Not a server error: an I/O error, an unexpected message, a TLS failure.
        None => true,
    }
}

/// Converts an error of the connection pool while getting a connection to `target`.
pub(crate) fn pool_err(target: &str, e: deadpool_postgres::PoolError) -> BackendError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Closed => BackendError::Closed,
        PoolError::Backend(e) => connect_err(target, e),
        PoolError::Timeout(kind) => BackendError::Io(Cause::with_source(
            format!(
                "timed out ({kind:?}) getting a connection to PostgreSQL at {target}: the server is \
                 slow or unreachable, or every pooled connection is busy (see \
                 PostgresOptions::pool_size and connect_timeout)"
            ),
            PoolError::Timeout(kind),
        )),
        other => BackendError::Io(Cause::with_source(
            format!("cannot get a connection to PostgreSQL at {target}: {other}"),
            other,
        )),
    }
}

/// Converts an error of establishing a connection to `target`.
pub(crate) fn connect_err(target: &str, e: tokio_postgres::Error) -> BackendError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let hint = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            " (authentication failed: check the user name and password)"
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            " (the database does not exist: create it first)"
        } else {
            ""
        };
        let text = format!(
            "cannot connect to PostgreSQL at {target}: {} {}: {}{hint}",
            db.severity(),
            code.code(),
            db.message()
        );
        return BackendError::Io(Cause::with_source(text, e));
    }
    let text = format!(
        "cannot connect to PostgreSQL at {target}: {} (is the server running and reachable?)",
        chain(&e)
    );
    BackendError::Io(Cause::with_source(text, e))
}

/// The error and its sources, separated by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadpool_postgres::PoolError;
    use std::error::Error as _;

    /// A driver error that needs no server: an unparsable connection string.
    fn driver_error() -> tokio_postgres::Error {
        "host=localhost port=notaport"
            .parse::<tokio_postgres::Config>()
            .unwrap_err()
    }

    fn source_of(err: &BackendError) -> &(dyn std::error::Error + 'static) {
        err.source().unwrap_or_else(|| panic!("no source: {err:?}"))
    }

    #[test]
    fn driver_errors_are_the_source() {
        let text = driver_error().to_string();
        let err = pg_err("reading a key", driver_error());
        assert!(matches!(&err, BackendError::Io(m) if m.message().starts_with("reading a key: ")));
        let native = source_of(&err)
            .downcast_ref::<tokio_postgres::Error>()
            .expect("the driver error");
        assert_eq!(native.to_string(), text);

        let err = connect_err("db:5432", driver_error());
        assert!(source_of(&err)
            .downcast_ref::<tokio_postgres::Error>()
            .is_some());

        let kv = kv_traits::KvError::from(err);
        assert!(kv
            .source()
            .unwrap()
            .downcast_ref::<tokio_postgres::Error>()
            .is_some());
    }

    #[test]
    fn pool_errors_are_the_source() {
        let err = pool_err("db:5432", PoolError::Backend(driver_error()));
        assert!(source_of(&err)
            .downcast_ref::<tokio_postgres::Error>()
            .is_some());

        let err = pool_err(
            "db:5432",
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait),
        );
        assert!(matches!(&err, BackendError::Io(m) if m.message().starts_with("timed out (Wait)")));
        assert!(matches!(
            source_of(&err).downcast_ref::<PoolError>(),
            Some(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait))
        ));

        assert_eq!(pool_err("db:5432", PoolError::Closed), BackendError::Closed);
    }
}
