//! What can be sent to the writer, and how each operation is answered.
//!
//! Every [`Op`] carries its own reply channel, typed with that operation's own result, so a
//! caller receives exactly the type it asked for and no reply can be of the wrong kind.
//!
//! Contract of a reply:
//! - It is sent only after the batch holding the operation has committed (or has failed, or
//!   needed no commit). A result is never visible to its caller before it is durable.
//! - An operation refused on its own (a mutation's type error, an unknown lease) is answered
//!   with that error; the rest of its batch is unaffected. A failed check is not a refusal but a
//!   result ([`CommitResult::CheckFailed`]).
//! - When the batch fails (a backend error, a failed commit, a poisoned writer), every operation
//!   of it is answered with the batch's error, except [`Op::Shutdown`], which is always answered
//!   with `()`.
//! - A caller that went away has dropped its receiver; its reply is discarded, except a leased
//!   queue message, which the writer hands back for release (see [`Applied::deliver`]).

use kv_traits::{
    AtomicWrite, BackendError, CommitResult, KvError, QueueLease, QueueMessage, Versionstamp,
};
use tokio::sync::oneshot;

use super::overlay::ApplyError;
use crate::changes::ImportOp;
use crate::lease::{LeaseRequest, LeaseState};

/// Where the result of an operation of result type `T` goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, KvError>>;

/// A state-changing operation, with the channel its result goes to.
pub(crate) enum Op {
    /// An atomic write (already validated by [`crate::Db`]).
    Write {
        write: AtomicWrite,
        reply: Reply<CommitResult>,
    },
    /// Leases the earliest ready message, if one is due, for `lease_ms`.
    Dequeue {
        lease_ms: u64,
        reply: Reply<Dequeued>,
    },
    /// Ends a delivery (see [`kv_traits::Database::finish`]).
    Finish {
        lease: QueueLease,
        success: bool,
        reply: Reply<()>,
    },
    /// One pass of the expiry sweep and lease expiry.
    Maintenance { reply: Reply<Swept> },
    /// Puts a leased message back as if it had never been delivered (its requester went away
    /// before receiving it). Nobody waits for the result.
    Release { lease: QueueLease },
    /// Deletes change-log entries up to and including version `through`, one chunk per pass.
    Trim { through: u64, reply: Reply<Trimmed> },
    /// Stores raw entries (restore, replicas).
    Import {
        ops: Vec<ImportOp>,
        advance_to: Option<Versionstamp>,
        reply: Reply<()>,
    },
    /// Takes, renews or releases a named lease (see [`crate::lease`]); moves no version.
    Lease {
        request: LeaseRequest,
        reply: Reply<LeaseState>,
    },
    /// Ends the writer once this batch is done; later operations are answered with
    /// [`KvError::Closed`].
    Shutdown { done: oneshot::Sender<()> },
}

/// The result of an [`Op::Dequeue`].
pub(crate) enum Dequeued {
    /// The message, now leased to the caller.
    Leased(QueueMessage),
    /// Nothing was due; the ready time of the earliest waiting message, if any.
    Empty { next_ready: Option<u64> },
}

/// The result of an [`Op::Maintenance`] pass.
pub(crate) struct Swept {
    /// Expired keys deleted.
    pub expired: usize,
    /// Whether more was due than one pass handles.
    pub more: bool,
}

/// The result of an [`Op::Trim`] pass.
pub(crate) struct Trimmed {
    /// Whether more change-log entries up to the requested version remain.
    pub more: bool,
}

impl Op {
    /// Whether this operation ends the writer.
    pub(super) fn is_shutdown(&self) -> bool {
        matches!(self, Op::Shutdown { .. })
    }

    /// Answers the operation with `error` without applying it.
    pub(super) fn fail(self, error: KvError) {
        match self {
            Op::Write { reply, .. } => send_err(reply, error),
            Op::Dequeue { reply, .. } => send_err(reply, error),
            Op::Finish { reply, .. } | Op::Import { reply, .. } => send_err(reply, error),
            Op::Maintenance { reply } => send_err(reply, error),
            Op::Trim { reply, .. } => send_err(reply, error),
            Op::Lease { reply, .. } => send_err(reply, error),
            Op::Release { .. } => {}
            Op::Shutdown { done } => {
                let _ = done.send(());
            }
        }
    }
}

fn send_err<T>(reply: Reply<T>, error: KvError) {
    let _ = reply.send(Err(error));
}

/// What applying one operation means for its batch.
pub(super) enum Settled {
    /// Applied: its writes and effects join the batch.
    Applied,
    /// Refused on its own: nothing of it joins the batch.
    Refused,
    /// The backend failed: the whole batch is abandoned.
    Fatal(BackendError),
}

impl Settled {
    fn of<T>(res: &Result<T, ApplyError>) -> Settled {
        match res {
            Ok(_) => Settled::Applied,
            Err(ApplyError::Op(_)) => Settled::Refused,
            Err(ApplyError::Fatal(e)) => Settled::Fatal(e.clone()),
        }
    }
}

/// A result held until its batch commits, with the channel it goes to.
pub(super) struct Answer<T> {
    reply: Reply<T>,
    result: Result<T, KvError>,
}

impl<T> Answer<T> {
    fn send(self) -> Result<(), Result<T, KvError>> {
        self.reply.send(self.result)
    }
}

/// An applied operation waiting for its batch's commit.
pub(super) enum Applied {
    Write(Answer<CommitResult>),
    Dequeue(Answer<Dequeued>),
    /// Finish and import.
    Done(Answer<()>),
    Swept(Answer<Swept>),
    Trimmed(Answer<Trimmed>),
    Lease(Answer<LeaseState>),
    Released,
    Shutdown(oneshot::Sender<()>),
}

impl Applied {
    /// Pairs the outcome of an operation with its reply channel.
    pub(super) fn settle<T>(
        reply: Reply<T>,
        res: Result<T, ApplyError>,
        wrap: fn(Answer<T>) -> Applied,
    ) -> (Applied, Settled) {
        let settled = Settled::of(&res);
        let result = res.map_err(|e| match e {
            ApplyError::Op(e) => e,
            ApplyError::Fatal(e) => KvError::Backend(e),
        });
        (wrap(Answer { reply, result }), settled)
    }

    /// The outcome of an [`Op::Release`], which nobody waits for.
    pub(super) fn released(res: Result<(), ApplyError>) -> (Applied, Settled) {
        (Applied::Released, Settled::of(&res))
    }

    /// Sends the result (the batch committed). Returns the lease of a message that was leased to
    /// a dequeuer who went away before receiving it, so the writer can put it back.
    pub(super) fn deliver(self) -> Option<QueueLease> {
        match self {
            Applied::Write(a) => {
                let _ = a.send();
            }
            Applied::Dequeue(a) => {
                if let Err(Ok(Dequeued::Leased(m))) = a.send() {
                    return Some(m.lease);
                }
            }
            Applied::Done(a) => {
                let _ = a.send();
            }
            Applied::Swept(a) => {
                let _ = a.send();
            }
            Applied::Trimmed(a) => {
                let _ = a.send();
            }
            Applied::Lease(a) => {
                let _ = a.send();
            }
            Applied::Released => {}
            Applied::Shutdown(done) => {
                let _ = done.send(());
            }
        }
        None
    }

    /// Answers with `error` instead of the result (the batch did not commit).
    pub(super) fn fail(self, error: KvError) {
        match self {
            Applied::Write(a) => send_err(a.reply, error),
            Applied::Dequeue(a) => send_err(a.reply, error),
            Applied::Done(a) => send_err(a.reply, error),
            Applied::Swept(a) => send_err(a.reply, error),
            Applied::Trimmed(a) => send_err(a.reply, error),
            Applied::Lease(a) => send_err(a.reply, error),
            Applied::Released => {}
            Applied::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
}
