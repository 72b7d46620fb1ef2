//! Resolving the outcome of a commit whose connection was lost.
//!
//! Every write transaction inserts a fresh random 16-byte id into `kv_outcomes` in the same
//! statement as its writes, before `COMMIT` is sent. If the connection fails while `COMMIT` is
//! in flight, the transaction may or may not have committed. [`resolve`] then runs, on another
//! connection, `INSERT INTO kv_outcomes (id) VALUES (<id>) ON CONFLICT (id) DO NOTHING
//! RETURNING 1` in autocommit mode:
//!
//! - while the original transaction is still open on the server, the insert waits for it (a
//!   unique-index conflict with an uncommitted row waits for that transaction to end);
//! - if the original committed, the id is there: nothing is inserted → [`Outcome::Committed`];
//! - if it rolled back, the probe's own row is inserted and committed → [`Outcome::NotCommitted`].
//!   That row also fences the id: nothing carrying it can commit afterwards.
//!
//! If no probe completes (server unreachable, the wait exceeds the statement timeout) within
//! five attempts, the result is [`Outcome::Unknown`]. Ids older than the retention are purged
//! by later commits, so the table stays bounded.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::error::{is_connection_error, pg_err};
use crate::schema::Names;

/// What [`resolve`] found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The transaction committed.
    Committed,
    /// The transaction did not commit, and now never will.
    NotCommitted,
    /// It could not be found out; the message says why.
    Unknown(String),
}

/// Finds out whether the transaction that inserted `id` committed (see the module docs).
pub(crate) async fn resolve(pool: &Pool, names: &Names, id: &[u8]) -> Outcome {
    let mut last = String::from("no attempt made");
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        let obj = match pool.get().await {
            Ok(obj) => obj,
            Err(e) => {
                last = format!("cannot get a connection: {e}");
                continue;
            }
        };
        match obj.query(&names.probe, &[&id]).await {
            Ok(rows) if rows.is_empty() => return Outcome::Committed,
            Ok(_) => return Outcome::NotCommitted,
            Err(e) => {
                let lost = is_connection_error(&e);
                last = pg_err("checking the commit outcome", e).to_string();
                if lost {
                    drop(Object::take(obj));
                }
            }
        }
        tracing::warn!(attempt, error = %last, "resolving a commit outcome failed");
    }
    Outcome::Unknown(last)
}
