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

use kv_traits::BackendError;
use tokio_postgres::error::SqlState;

/// Converts a driver error raised while doing `what`.
pub(crate) fn pg_err(what: &str, e: &tokio_postgres::Error) -> BackendError {
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
            return BackendError::Conflict(text);
        }
        if *code == SqlState::QUERY_CANCELED {
            return BackendError::Io(format!(
                "{text} (the statement timeout may be too short, see PostgresOptions::statement_timeout)"
            ));
        }
        if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN {
            return BackendError::Io(format!("{text} (connection to PostgreSQL lost)"));
        }
        return BackendError::Io(text);
    }
    if e.is_closed() {
        return BackendError::Io(format!("{what}: connection to PostgreSQL lost ({e})"));
    }
    BackendError::Io(format!("{what}: {}", chain(e)))
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
        PoolError::Backend(e) => connect_err(target, &e),
        PoolError::Timeout(kind) => BackendError::Io(format!(
            "timed out ({kind:?}) getting a connection to PostgreSQL at {target}: the server is \
             slow or unreachable, or every pooled connection is busy (see PostgresOptions::pool_size \
             and connect_timeout)"
        )),
        other => BackendError::Io(format!(
            "cannot get a connection to PostgreSQL at {target}: {other}"
        )),
    }
}

/// Converts an error of establishing a connection to `target`.
pub(crate) fn connect_err(target: &str, e: &tokio_postgres::Error) -> BackendError {
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
        return BackendError::Io(format!(
            "cannot connect to PostgreSQL at {target}: {} {}: {}{hint}",
            db.severity(),
            code.code(),
            db.message()
        ));
    }
    BackendError::Io(format!(
        "cannot connect to PostgreSQL at {target}: {} (is the server running and reachable?)",
        chain(e)
    ))
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
