//! A pooled connection held by a transaction, and what happens to it when the transaction ends
//! without committing.
//!
//! A connection goes back to the pool only outside a transaction. When a [`Conn`] that is still
//! inside one is dropped, a task on the current Tokio runtime sends `ROLLBACK` and then returns
//! it (and releases the in-process writer slot, if it holds one, only then); when there is no
//! runtime, the rollback fails or the task is cancelled, the connection is discarded instead
//! (closing it makes the server roll back and release the advisory lock).

use deadpool_postgres::{ClientWrapper, Object};
use kv_traits::BackendError;
use tokio::sync::OwnedMutexGuard;

/// A pooled connection, possibly inside a transaction.
pub(crate) struct Conn {
    obj: Option<Object>,
    /// True from `BEGIN` until `COMMIT`/`ROLLBACK` succeeded.
    pub in_txn: bool,
    /// The in-process writer slot of a write transaction.
    writer: Option<OwnedMutexGuard<()>>,
    /// A background rollback was already tried (its task was dropped): discard.
    rollback_tried: bool,
}

impl Conn {
    pub fn new(obj: Object, writer: Option<OwnedMutexGuard<()>>) -> Conn {
        Conn {
            obj: Some(obj),
            in_txn: false,
            writer,
            rollback_tried: false,
        }
    }

    /// The client.
    pub fn client(&self) -> Result<&ClientWrapper, BackendError> {
        self.obj
            .as_deref()
            .ok_or_else(|| BackendError::Io("internal error: connection already released".into()))
    }

    /// Closes the connection instead of returning it to the pool.
    pub fn discard(mut self) {
        if let Some(obj) = self.obj.take() {
            drop(Object::take(obj));
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else {
            return;
        };
        if !self.in_txn {
            return; // `obj` goes back to the pool
        }
        let writer = self.writer.take();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if !self.rollback_tried && !obj.is_closed() => {
                let mut conn = Conn {
                    obj: Some(obj),
                    in_txn: true,
                    writer,
                    rollback_tried: true,
                };
                handle.spawn(async move {
                    if let Ok(client) = conn.client() {
                        if client.batch_execute("ROLLBACK").await.is_ok() {
                            conn.in_txn = false;
                        }
                    }
                    if conn.in_txn {
                        conn.discard();
                    }
                });
            }
            _ => drop(Object::take(obj)),
        }
    }
}
