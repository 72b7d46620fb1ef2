//! The shapes that cross the JavaScript boundary, and their conversion to and from the
//! `kv_traits` request and result types.
//!
//! Keys are encoded key bytes (the JavaScript half runs the key codec); values are a protocol
//! encoding number (1 V8, 2 little-endian u64, 3 bytes) and the bytes; versionstamps are the
//! 20-digit lowercase hex strings Deno shows.

use napi::bindgen_prelude::Buffer;

use kv_traits::{
    AtomicWrite, Check, Enqueue, KvEntry, KvValue, Mutation, MutationKind, ReadRange, Versionstamp,
    WatchKeyOutput,
};

use crate::error::{NodeError, NodeResult};

/// One range of a snapshot read: `start <= key < end`.
#[napi(object)]
pub struct ReadRangeIn {
    pub start: Buffer,
    pub end: Buffer,
    pub limit: u32,
    pub reverse: bool,
}

/// A stored entry.
#[napi(object)]
pub struct EntryOut {
    pub key: Buffer,
    pub value: Buffer,
    /// 1 V8, 2 little-endian u64, 3 bytes.
    pub encoding: u32,
    pub versionstamp: String,
}

/// A check of an atomic write (`versionstamp` absent or null: the key must be absent).
#[napi(object)]
pub struct CheckIn {
    pub key: Buffer,
    pub versionstamp: Option<String>,
}

/// A mutation of an atomic write. `kind` is one of `set`, `delete`, `sum`, `min`, `max`.
#[napi(object)]
pub struct MutationIn {
    pub key: Buffer,
    pub kind: String,
    pub value: Option<Buffer>,
    pub encoding: Option<u32>,
    /// Absolute expiry, ms since the Unix epoch (`set` only).
    pub expire_at_ms: Option<f64>,
}

/// A queue message of an atomic write.
#[napi(object)]
pub struct EnqueueIn {
    /// V8-serialized payload.
    pub payload: Buffer,
    /// Earliest delivery, ms since the Unix epoch.
    pub deadline_ms: f64,
    pub keys_if_undelivered: Vec<Buffer>,
    pub backoff_schedule: Option<Vec<u32>>,
}

/// An atomic write.
#[napi(object)]
pub struct AtomicWriteIn {
    pub checks: Vec<CheckIn>,
    pub mutations: Vec<MutationIn>,
    pub enqueues: Vec<EnqueueIn>,
}

/// The result of a commit: `versionstamp` is set when `ok`.
#[napi(object)]
pub struct CommitOut {
    pub ok: bool,
    pub versionstamp: Option<String>,
}

/// One watched key in one watch notification.
#[napi(object)]
pub struct WatchKeyOut {
    pub changed: bool,
    /// The current entry of a changed key; absent if the key does not exist.
    pub entry: Option<EntryOut>,
}

/// A queue message leased to this listener.
#[napi(object)]
pub struct QueueMessageOut {
    /// Opaque; pass it back to `finish`.
    pub lease: Buffer,
    pub payload: Buffer,
    pub attempt: u32,
}

pub(crate) fn versionstamp_hex(v: &Versionstamp) -> String {
    v.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_versionstamp(s: &str) -> NodeResult<Versionstamp> {
    let bad = || NodeError::InvalidArgument("Invalid check".into());
    if s.len() != 20 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 10];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Versionstamp(out))
}

pub(crate) fn entry_out(e: KvEntry) -> EntryOut {
    let versionstamp = versionstamp_hex(&e.versionstamp);
    let (encoding, data) = e.value.into_encoded();
    EntryOut {
        key: e.key.into(),
        value: data.into(),
        encoding: encoding as u32,
        versionstamp,
    }
}

/// Packs the entries of one read range into one buffer (one allocation and one JavaScript
/// object per range, not four per entry): for each entry `u32le key length ‖ key ‖ u8 encoding
/// ‖ u32le value length ‖ value ‖ 10-byte versionstamp`. `lib/kv.js` (`unpackEntries`) reads it.
pub(crate) fn pack_entries(entries: Vec<KvEntry>) -> Buffer {
    let size: usize = entries
        .iter()
        .map(|e| 4 + e.key.len() + 1 + 4 + e.value.encoded_len() + 10)
        .sum();
    let mut out = Vec::with_capacity(size);
    for e in entries {
        let (encoding, data) = e.value.into_encoded();
        out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.key);
        out.push(encoding as u8);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(e.versionstamp.as_bytes());
    }
    out.into()
}

pub(crate) fn watch_key_out(o: WatchKeyOutput) -> WatchKeyOut {
    match o {
        WatchKeyOutput::Changed(entry) => WatchKeyOut {
            changed: true,
            entry: entry.map(entry_out),
        },
        WatchKeyOutput::Unchanged => WatchKeyOut {
            changed: false,
            entry: None,
        },
    }
}

pub(crate) fn read_range(r: ReadRangeIn) -> ReadRange {
    ReadRange {
        start: r.start.into(),
        end: r.end.into(),
        limit: r.limit,
        reverse: r.reverse,
    }
}

fn value(value: Option<Buffer>, encoding: Option<u32>) -> NodeResult<KvValue> {
    let data: Vec<u8> = value
        .ok_or_else(|| NodeError::InvalidArgument("a mutation has no value".into()))?
        .into();
    let encoding = i32::try_from(encoding.unwrap_or(1))
        .map_err(|_| NodeError::InvalidArgument("bad value encoding".into()))?;
    KvValue::from_encoded(encoding, data).map_err(|e| NodeError::Kv(e.into()))
}

fn expire_at(ms: Option<f64>) -> NodeResult<Option<u64>> {
    match ms {
        None => Ok(None),
        Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some((ms as u64).max(1))),
        Some(ms) => Err(NodeError::InvalidArgument(format!(
            "expireIn must be a non-negative integer: received {ms}"
        ))),
    }
}

fn mutation(m: MutationIn) -> NodeResult<Mutation> {
    let kind = match m.kind.as_str() {
        "set" => MutationKind::Set(value(m.value, m.encoding)?),
        "delete" => MutationKind::Delete,
        "sum" => MutationKind::Sum {
            value: value(m.value, m.encoding)?,
            min: None,
            max: None,
            clamp: false,
        },
        "min" => MutationKind::Min(value(m.value, m.encoding)?),
        "max" => MutationKind::Max(value(m.value, m.encoding)?),
        other => {
            return Err(NodeError::InvalidArgument(format!(
                "unknown mutation kind {other:?}"
            )))
        }
    };
    let expire_at_ms = if m.kind == "set" {
        expire_at(m.expire_at_ms)?
    } else {
        None
    };
    Ok(Mutation {
        key: m.key.into(),
        kind,
        expire_at_ms,
    })
}

fn enqueue(e: EnqueueIn) -> NodeResult<Enqueue> {
    let deadline_ms = if e.deadline_ms.is_finite() && e.deadline_ms > 0.0 {
        e.deadline_ms as u64
    } else {
        0
    };
    Ok(Enqueue {
        payload: e.payload.into(),
        deadline_ms,
        keys_if_undelivered: e.keys_if_undelivered.into_iter().map(Into::into).collect(),
        backoff_schedule: e.backoff_schedule,
    })
}

pub(crate) fn atomic_write(w: AtomicWriteIn) -> NodeResult<AtomicWrite> {
    let checks = w
        .checks
        .into_iter()
        .map(|c| {
            Ok(Check {
                key: c.key.into(),
                versionstamp: c
                    .versionstamp
                    .as_deref()
                    .map(parse_versionstamp)
                    .transpose()?,
            })
        })
        .collect::<NodeResult<Vec<_>>>()?;
    let mutations = w
        .mutations
        .into_iter()
        .map(mutation)
        .collect::<NodeResult<Vec<_>>>()?;
    let enqueues = w
        .enqueues
        .into_iter()
        .map(enqueue)
        .collect::<NodeResult<Vec<_>>>()?;
    Ok(AtomicWrite {
        checks,
        mutations,
        enqueues,
    })
}
