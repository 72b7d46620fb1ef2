//! Requests and results of the Deno KV operations: read ranges, entries, checks, mutations,
//! enqueues, atomic writes, watch outputs and queue messages.

use crate::value::KvValue;
use crate::versionstamp::Versionstamp;

/// A range read: keys `k` with `start <= k < end` in unsigned bytewise order, at most `limit`
/// of them, ascending or (with `reverse`) descending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRange {
    /// Inclusive lower bound (encoded key bytes).
    pub start: Vec<u8>,
    /// Exclusive upper bound (encoded key bytes).
    pub end: Vec<u8>,
    /// Maximum number of entries to return; must be at least 1.
    pub limit: u32,
    /// Return the highest keys first.
    pub reverse: bool,
}

impl ReadRange {
    /// The range that reads exactly `key` (what Deno sends for `get`): `[key, key ‖ 00)`.
    pub fn single(key: &[u8]) -> Self {
        let (start, end) = crate::key::single_key_range(key);
        ReadRange {
            start,
            end,
            limit: 1,
            reverse: false,
        }
    }

    /// All keys strictly under `prefix` (Deno's `list({prefix})`): `[prefix ‖ 00, prefix ‖ ff)`.
    pub fn prefix(prefix: &[u8], limit: u32) -> Self {
        let (start, end) = crate::key::prefix_range(prefix);
        ReadRange {
            start,
            end,
            limit,
            reverse: false,
        }
    }
}

/// Read consistency requested by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Observe every write acknowledged before the read started.
    #[default]
    Strong,
    /// May be served by a replica that lags behind.
    Eventual,
}

/// A stored entry as returned by reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The full encoded key.
    pub key: Vec<u8>,
    /// The value.
    pub value: KvValue,
    /// Versionstamp of the commit that last wrote the key.
    pub versionstamp: Versionstamp,
}

/// A condition of an atomic write: the key's current versionstamp must equal `versionstamp`
/// (`None` means the key must be absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The key to check.
    pub key: Vec<u8>,
    /// Expected versionstamp, or `None` for "must not exist".
    pub versionstamp: Option<Versionstamp>,
}

/// What a mutation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MutationKind {
    /// Store the value, replacing any previous value and expiry.
    Set(KvValue),
    /// Remove the key (no error if absent).
    Delete,
    /// Add the operand: wrapping on `U64`; exact BigInt or f64 Number sum on V8 operands with
    /// optional V8-serialized bounds. `min`/`max` are ignored for `U64` operands.
    Sum {
        /// The operand.
        value: KvValue,
        /// V8-serialized lower bound, if any.
        min: Option<Vec<u8>>,
        /// V8-serialized upper bound, if any.
        max: Option<Vec<u8>>,
        /// Clamp an out-of-range result to the bound instead of failing the write.
        clamp: bool,
    },
    /// Keep the smaller of the stored and given `U64`.
    Min(KvValue),
    /// Keep the larger of the stored and given `U64`.
    Max(KvValue),
    /// Store the value at `key ‖ 02 ‖ hex(versionstamp) ‖ 00`.
    SetSuffixVersionstampedKey(KvValue),
}

/// One mutation of an atomic write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    /// The target key (the key prefix for `SetSuffixVersionstampedKey`).
    pub key: Vec<u8>,
    /// The operation.
    pub kind: MutationKind,
    /// Absolute expiry time in milliseconds since the Unix epoch; `None` never expires.
    /// Only `Set` and `SetSuffixVersionstampedKey` honour it.
    pub expire_at_ms: Option<u64>,
}

impl Mutation {
    /// A `Set` without expiry.
    pub fn set(key: impl Into<Vec<u8>>, value: KvValue) -> Self {
        Mutation {
            key: key.into(),
            kind: MutationKind::Set(value),
            expire_at_ms: None,
        }
    }

    /// A `Delete`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Mutation {
            key: key.into(),
            kind: MutationKind::Delete,
            expire_at_ms: None,
        }
    }

    /// The operand value, if the kind carries one.
    pub fn value(&self) -> Option<&KvValue> {
        match &self.kind {
            MutationKind::Set(v)
            | MutationKind::Min(v)
            | MutationKind::Max(v)
            | MutationKind::SetSuffixVersionstampedKey(v)
            | MutationKind::Sum { value: v, .. } => Some(v),
            MutationKind::Delete => None,
        }
    }
}

/// The default retry schedule of a queue message when none is given, in milliseconds.
pub const DEFAULT_BACKOFF_SCHEDULE: [u32; 5] = [100, 1000, 5000, 30000, 60000];

/// A queue message enqueued atomically with a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueue {
    /// V8-serialized payload.
    pub payload: Vec<u8>,
    /// Earliest delivery time, ms since the Unix epoch (a past time means "now").
    pub deadline_ms: u64,
    /// Keys that receive the payload (V8 encoding) when every delivery attempt failed.
    pub keys_if_undelivered: Vec<Vec<u8>>,
    /// Delays before each retry in ms; `None` means [`DEFAULT_BACKOFF_SCHEDULE`], `Some(vec![])`
    /// means no retries.
    pub backoff_schedule: Option<Vec<u32>>,
}

/// An atomic write: all checks must pass, then every mutation and enqueue is applied under one
/// new versionstamp, or nothing is applied.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AtomicWrite {
    /// Conditions that must all hold.
    pub checks: Vec<Check>,
    /// Mutations, applied in order.
    pub mutations: Vec<Mutation>,
    /// Queue messages.
    pub enqueues: Vec<Enqueue>,
}

/// The outcome of an atomic write that was processed without error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitResult {
    /// Every mutation and enqueue was applied under this versionstamp.
    Committed(Versionstamp),
    /// A check did not hold; nothing was applied. Lists the 0-based indexes of failed checks.
    CheckFailed(Vec<u32>),
}

impl CommitResult {
    /// The versionstamp if the write committed.
    pub fn versionstamp(&self) -> Option<Versionstamp> {
        match self {
            CommitResult::Committed(v) => Some(*v),
            CommitResult::CheckFailed(_) => None,
        }
    }
}

/// The state of one watched key in one watch notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchKeyOutput {
    /// The key changed (or this is the first notification): its current entry, `None` if absent.
    Changed(Option<KvEntry>),
    /// Same as in the previous notification.
    Unchanged,
}

/// Identifies one delivery of a queue message; needed to finish it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueLease {
    /// The message id (stable across retries).
    pub id: [u8; 16],
    /// When this delivery's lease expires, ms since the Unix epoch.
    pub deadline_ms: u64,
}

impl QueueLease {
    /// 24-byte form: id then big-endian deadline.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..16].copy_from_slice(&self.id);
        b[16..].copy_from_slice(&self.deadline_ms.to_be_bytes());
        b
    }

    /// Parses the 24-byte form.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 24 {
            return None;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[..16]);
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[16..]);
        Some(QueueLease {
            id,
            deadline_ms: u64::from_be_bytes(d),
        })
    }
}

/// A queue message handed to a listener under a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMessage {
    /// The lease to pass to `finish`.
    pub lease: QueueLease,
    /// The V8-serialized payload.
    pub payload: Vec<u8>,
    /// Delivery attempt number, 1 for the first delivery.
    pub attempt: u32,
}
