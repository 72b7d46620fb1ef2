//! The KV Connect wire format: the `com.deno.kv.datapath` protobuf messages ([`pb`]) and the
//! conversions between them and the domain types of this crate, in both directions:
//!
//! - server side: wire request → domain request ([`read_ranges_from_wire`],
//!   [`atomic_write_from_wire`], [`watch_keys_from_wire`]) with precise [`KvError`]s for every
//!   malformed field, and domain result → wire output ([`snapshot_read_output`],
//!   [`atomic_write_output`], [`watch_output`]);
//! - client side: domain request → wire ([`read_ranges_to_wire`], [`atomic_write_to_wire`],
//!   [`watch_keys_to_wire`]) and wire output → domain result
//!   ([`snapshot_read_result_from_wire`], [`commit_result_from_wire`],
//!   [`watch_keys_output_from_wire`]);
//! - the `/watch` stream framing ([`encode_watch_frame`], [`WatchFrameDecoder`]).
//!
//! Decoding is lenient as protobuf requires: explicit default values, packed and unpacked
//! repeated integers and unknown fields are all accepted (prost does this).
//!
//! ```
//! use kv_proto::{self as wire, pb};
//! use prost::Message;
//!
//! // `kv.get(["a"])` as Deno sends it.
//! let body = [0x0a, 0x0d, 0x0a, 0x03, 0x02, 0x61, 0x00, 0x12, 0x04, 0x02, 0x61, 0x00, 0x00, 0x18, 0x01];
//! let request: pb::SnapshotRead = wire::decode_request(&body).unwrap();
//! let ranges = wire::read_ranges_from_wire(request).unwrap();
//! assert_eq!(ranges, vec![kv_traits::ReadRange::single(b"\x02a\x00")]);
//!
//! // The answer when the key is absent.
//! let out = wire::snapshot_read_output(vec![vec![]]);
//! assert_eq!(out.encode_to_vec(), [0x0a, 0x00, 0x20, 0x01, 0x40, 0x01]);
//! ```

use prost::Message;

use kv_traits::KvError;
use kv_traits::KvValue;
use kv_traits::LimitError;
use kv_traits::Versionstamp;
use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, Enqueue, KvEntry, Mutation, MutationKind,
    ReadRange, WatchKeyOutput,
};

/// The generated `com.deno.kv.datapath` messages (from `proto/datapath.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/com.deno.kv.datapath.rs"));
}

/// Messages of the KV Connect queue extension `queue-v1` (`docs/queue-extension.md`).
#[allow(missing_docs)]
pub mod queue_pb {
    include!(concat!(env!("OUT_DIR"), "/com.denokv.ext.queue.rs"));
}

/// The metadata response header that advertises protocol extensions.
pub const EXTENSIONS_HEADER: &str = "x-denokv-extensions";
/// The queue extension's name in [`EXTENSIONS_HEADER`].
pub const QUEUE_EXTENSION: &str = "queue-v1";
/// The longest dequeue long-poll a server grants, in ms.
pub const MAX_DEQUEUE_WAIT_MS: u32 = 30_000;

/// Decodes a request body, mapping a protobuf error to [`KvError::InvalidRequest`] with the text
/// `Request protobuf is invalid: <detail>.`.
pub fn decode_request<M: Message + Default>(body: &[u8]) -> Result<M, KvError> {
    M::decode(body)
        .map_err(|e| KvError::InvalidRequest(format!("Request protobuf is invalid: {e}.")))
}

// ---------------------------------------------------------------------------------------------
// Server side: wire requests → domain.
// ---------------------------------------------------------------------------------------------

/// Converts a `SnapshotRead` request. A `limit` ≤ 0 is [`LimitError::InvalidRangeLimit`]; other
/// limits (count, sizes) are left to [`kv_traits::Limits::validate_read`].
pub fn read_ranges_from_wire(req: pb::SnapshotRead) -> Result<Vec<ReadRange>, KvError> {
    req.ranges
        .into_iter()
        .map(|r| {
            let limit = u32::try_from(r.limit)
                .ok()
                .filter(|l| *l > 0)
                .ok_or(LimitError::InvalidRangeLimit)?;
            Ok(ReadRange {
                start: r.start,
                end: r.end,
                limit,
                reverse: r.reverse,
            })
        })
        .collect()
}

/// Converts a `Watch` request into the watched keys, in request order.
pub fn watch_keys_from_wire(req: pb::Watch) -> Vec<Vec<u8>> {
    req.keys.into_iter().map(|k| k.key).collect()
}

/// Converts a check's versionstamp: empty = "must be absent", 10 bytes = exact match.
///
/// Ten zero bytes are also read as "must be absent": old npm clients (`@deno/kv` ≤ 0.8.1) sent
/// them for that, and no commit ever has the all-zero versionstamp.
fn check_from_wire(c: pb::Check) -> Result<Check, KvError> {
    let versionstamp = match c.versionstamp.len() {
        0 => None,
        10 => Versionstamp::from_slice(&c.versionstamp).filter(|v| *v != Versionstamp::ZERO),
        n => {
            return Err(KvError::InvalidRequest(format!(
                "Invalid versionstamp: a check's versionstamp must be empty or 10 bytes, got {n} bytes."
            )))
        }
    };
    Ok(Check {
        key: c.key,
        versionstamp,
    })
}

fn value_from_wire(v: pb::KvValue) -> Result<KvValue, KvError> {
    Ok(KvValue::from_encoded(v.encoding, v.data)?)
}

fn mutation_from_wire(m: pb::Mutation) -> Result<Mutation, KvError> {
    use pb::MutationType as T;
    let unknown = || {
        KvError::InvalidRequest(format!(
            "Invalid mutation kind or arguments: unknown mutation type {}.",
            m.mutation_type
        ))
    };
    let ty = T::try_from(m.mutation_type).map_err(|_| unknown())?;
    let operand = |value: Option<pb::KvValue>| -> Result<KvValue, KvError> {
        let v = value.ok_or_else(|| {
            KvError::InvalidRequest(format!(
                "Invalid mutation kind or arguments: a {} mutation needs a value.",
                ty.as_str_name()
            ))
        })?;
        value_from_wire(v)
    };
    let kind = match ty {
        T::MSet => MutationKind::Set(operand(m.value)?),
        // A delete may carry a value (Deno sends empty bytes); it is ignored.
        T::MDelete => MutationKind::Delete,
        T::MSum => MutationKind::Sum {
            value: operand(m.value)?,
            min: Some(m.sum_min).filter(|b| !b.is_empty()),
            max: Some(m.sum_max).filter(|b| !b.is_empty()),
            clamp: m.sum_clamp,
        },
        T::MMax => MutationKind::Max(operand(m.value)?),
        T::MMin => MutationKind::Min(operand(m.value)?),
        T::MSetSuffixVersionstampedKey => {
            MutationKind::SetSuffixVersionstampedKey(operand(m.value)?)
        }
        T::MUnspecified => return Err(unknown()),
    };
    let expire_at_ms = match m.expire_at_ms {
        0 | -1 => None,
        n if n > 0 => Some(n as u64),
        n => {
            return Err(KvError::InvalidRequest(format!(
                "Invalid mutation expire at: {n} (must be 0 for no expiry or a positive epoch time in ms)."
            )))
        }
    };
    Ok(Mutation {
        key: m.key,
        kind,
        expire_at_ms,
    })
}

fn enqueue_from_wire(e: pb::Enqueue) -> Result<Enqueue, KvError> {
    let deadline_ms = u64::try_from(e.deadline_ms).map_err(|_| {
        KvError::InvalidRequest(format!(
            "Invalid mutation enqueue deadline: {} (must not be negative).",
            e.deadline_ms
        ))
    })?;
    Ok(Enqueue {
        payload: e.payload,
        deadline_ms,
        keys_if_undelivered: e.keys_if_undelivered,
        // Empty on the wire means "the default schedule" (what denokv does).
        backoff_schedule: Some(e.backoff_schedule).filter(|s| !s.is_empty()),
    })
}

/// Converts an `AtomicWrite` request, reporting the first malformed check, mutation or enqueue.
///
/// Rules: a check versionstamp must be empty or 10 bytes; the mutation type must be known; every
/// mutation but `M_DELETE` needs a value with a known encoding (`VE_LE64` exactly 8 bytes);
/// `expire_at_ms` 0 and −1 mean no expiry, other negatives are errors; empty `sum_min`/`sum_max`
/// mean no bound; an enqueue deadline must not be negative; an empty backoff schedule means the
/// default one (`None`). Limits are left to [`kv_traits::Limits::validate_write`].
pub fn atomic_write_from_wire(req: pb::AtomicWrite) -> Result<AtomicWrite, KvError> {
    Ok(AtomicWrite {
        checks: req
            .checks
            .into_iter()
            .map(check_from_wire)
            .collect::<Result<_, _>>()?,
        mutations: req
            .mutations
            .into_iter()
            .map(mutation_from_wire)
            .collect::<Result<_, _>>()?,
        enqueues: req
            .enqueues
            .into_iter()
            .map(enqueue_from_wire)
            .collect::<Result<_, _>>()?,
    })
}

// ---------------------------------------------------------------------------------------------
// Server side: domain results → wire outputs.
// ---------------------------------------------------------------------------------------------

/// Converts a stored entry.
pub fn kv_entry_to_wire(e: KvEntry) -> pb::KvEntry {
    let (encoding, value) = e.value.into_encoded();
    pb::KvEntry {
        key: e.key,
        value,
        encoding,
        versionstamp: e.versionstamp.0.to_vec(),
    }
}

/// The successful `SnapshotReadOutput`: one range output per range, `status = SR_SUCCESS`,
/// `read_is_strongly_consistent = true`, `read_disabled = false`.
pub fn snapshot_read_output(ranges: Vec<Vec<KvEntry>>) -> pb::SnapshotReadOutput {
    pb::SnapshotReadOutput {
        ranges: ranges
            .into_iter()
            .map(|r| pb::ReadRangeOutput {
                values: r.into_iter().map(kv_entry_to_wire).collect(),
            })
            .collect(),
        read_disabled: false,
        read_is_strongly_consistent: true,
        status: pb::SnapshotReadStatus::SrSuccess as i32,
    }
}

/// The bytes of [`snapshot_read_output`]`(ranges)` encoded, written straight from the borrowed
/// entries into one buffer of the exact size (no intermediate protobuf structs: a 10,000-key
/// list spent a third of its CPU building, encoding and dropping them). Byte-identical to
/// prost's encoding of the same message.
pub fn encode_snapshot_read_output(ranges: &[Vec<KvEntry>]) -> Vec<u8> {
    encode_read_output(ranges, true)
}

/// Like [`encode_snapshot_read_output`], but with `read_is_strongly_consistent = false`: the
/// answer of an `eventual` endpoint (a read replica, which may lag behind the primary).
pub fn encode_eventual_snapshot_read_output(ranges: &[Vec<KvEntry>]) -> Vec<u8> {
    encode_read_output(ranges, false)
}

fn encode_read_output(ranges: &[Vec<KvEntry>], strong: bool) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

    /// A value's encoding number and bytes; a `U64`'s 8 little-endian bytes go to `scratch`.
    fn value_bytes<'a>(v: &'a KvValue, scratch: &'a mut [u8; 8]) -> (u64, &'a [u8]) {
        match v {
            KvValue::V8(b) => (1, b),
            KvValue::Bytes(b) => (3, b),
            KvValue::U64(n) => {
                *scratch = n.to_le_bytes();
                (2, &scratch[..])
            }
        }
    }
    fn bytes_field_len(len: usize) -> usize {
        if len == 0 {
            0
        } else {
            1 + encoded_len_varint(len as u64) + len
        }
    }
    fn entry_len(e: &KvEntry) -> usize {
        let mut scratch = [0; 8];
        let (encoding, data) = value_bytes(&e.value, &mut scratch);
        bytes_field_len(e.key.len())
            + bytes_field_len(data.len())
            + 1
            + encoded_len_varint(encoding)
            + bytes_field_len(e.versionstamp.0.len())
    }
    fn put_bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(b.len() as u64, buf);
            buf.extend_from_slice(b);
        }
    }

    let range_lens: Vec<usize> = ranges
        .iter()
        .map(|r| {
            r.iter()
                .map(|e| {
                    let n = entry_len(e);
                    1 + encoded_len_varint(n as u64) + n
                })
                .sum()
        })
        .collect();
    let total: usize = range_lens
        .iter()
        .map(|&n| 1 + encoded_len_varint(n as u64) + n)
        .sum::<usize>()
        + if strong { 2 } else { 0 } // read_is_strongly_consistent = true (false is not encoded)
        + 2; // status = SR_SUCCESS (1)
    let mut buf = Vec::with_capacity(total);
    for (r, &len) in ranges.iter().zip(&range_lens) {
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(len as u64, &mut buf);
        for e in r {
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(entry_len(e) as u64, &mut buf);
            put_bytes(&mut buf, 1, &e.key);
            let mut scratch = [0; 8];
            let (encoding, data) = value_bytes(&e.value, &mut scratch);
            put_bytes(&mut buf, 2, data);
            encode_key(3, WireType::Varint, &mut buf);
            encode_varint(encoding, &mut buf);
            put_bytes(&mut buf, 4, &e.versionstamp.0);
        }
    }
    if strong {
        encode_key(4, WireType::Varint, &mut buf);
        encode_varint(1, &mut buf);
    }
    encode_key(8, WireType::Varint, &mut buf);
    encode_varint(pb::SnapshotReadStatus::SrSuccess as u64, &mut buf);
    buf
}

/// The `SnapshotReadOutput` of an endpoint that cannot serve reads.
pub fn snapshot_read_disabled_output() -> pb::SnapshotReadOutput {
    pb::SnapshotReadOutput {
        ranges: vec![],
        read_disabled: true,
        read_is_strongly_consistent: false,
        status: pb::SnapshotReadStatus::SrReadDisabled as i32,
    }
}

/// Converts the outcome of an atomic write: `AW_SUCCESS` with the versionstamp, or
/// `AW_CHECK_FAILURE` with the failed check indexes.
pub fn atomic_write_output(result: CommitResult) -> pb::AtomicWriteOutput {
    match result {
        CommitResult::Committed(v) => pb::AtomicWriteOutput {
            status: pb::AtomicWriteStatus::AwSuccess as i32,
            versionstamp: v.0.to_vec(),
            failed_checks: vec![],
        },
        CommitResult::CheckFailed(failed_checks) => pb::AtomicWriteOutput {
            status: pb::AtomicWriteStatus::AwCheckFailure as i32,
            versionstamp: vec![],
            failed_checks,
        },
    }
}

/// The `AtomicWriteOutput` of an endpoint that does not accept writes (`AW_WRITE_DISABLED`).
pub fn atomic_write_disabled_output() -> pb::AtomicWriteOutput {
    pb::AtomicWriteOutput {
        status: pb::AtomicWriteStatus::AwWriteDisabled as i32,
        versionstamp: vec![],
        failed_checks: vec![],
    }
}

/// The answer to a write whose outcome is unknown (`AW_UNSPECIFIED`): clients report it as a
/// failed write ("Unspecified write error") and do not retry it, so a write that may already
/// have been applied is never applied twice by a blind retry.
pub fn atomic_write_unknown_outcome_output() -> pb::AtomicWriteOutput {
    pb::AtomicWriteOutput {
        status: pb::AtomicWriteStatus::AwUnspecified as i32,
        versionstamp: vec![],
        failed_checks: vec![],
    }
}

/// Converts one watch notification (`status = SR_SUCCESS`, keys in request order).
pub fn watch_output(keys: Vec<WatchKeyOutput>) -> pb::WatchOutput {
    pb::WatchOutput {
        status: pb::SnapshotReadStatus::SrSuccess as i32,
        keys: keys
            .into_iter()
            .map(|k| match k {
                WatchKeyOutput::Changed(entry) => pb::WatchKeyOutput {
                    changed: true,
                    entry_if_changed: entry.map(kv_entry_to_wire),
                },
                WatchKeyOutput::Unchanged => pb::WatchKeyOutput {
                    changed: false,
                    entry_if_changed: None,
                },
            })
            .collect(),
    }
}

/// A zero-length watch frame: a keep-alive that clients skip.
pub const WATCH_KEEPALIVE_FRAME: [u8; 4] = [0, 0, 0, 0];

/// Frames a `WatchOutput` for the `/watch` stream: `u32` little-endian length, then the message.
pub fn encode_watch_frame(output: &pb::WatchOutput) -> Vec<u8> {
    let len = output.encoded_len();
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    output.encode_raw(&mut buf);
    buf
}

// ---------------------------------------------------------------------------------------------
// Client side: domain requests → wire.
// ---------------------------------------------------------------------------------------------

/// Converts ranges into a `SnapshotRead` request. A limit above `i32::MAX` is sent as
/// `i32::MAX` (far beyond any server limit).
pub fn read_ranges_to_wire(ranges: &[ReadRange]) -> pb::SnapshotRead {
    pb::SnapshotRead {
        ranges: ranges
            .iter()
            .map(|r| pb::ReadRange {
                start: r.start.clone(),
                end: r.end.clone(),
                limit: i32::try_from(r.limit).unwrap_or(i32::MAX),
                reverse: r.reverse,
            })
            .collect(),
    }
}

/// Converts watched keys into a `Watch` request.
pub fn watch_keys_to_wire(keys: &[Vec<u8>]) -> pb::Watch {
    pb::Watch {
        keys: keys
            .iter()
            .map(|k| pb::WatchKey { key: k.clone() })
            .collect(),
    }
}

fn value_to_wire(v: &KvValue) -> pb::KvValue {
    let (encoding, data) = v.clone().into_encoded();
    pb::KvValue { data, encoding }
}

fn mutation_to_wire(m: &Mutation) -> pb::Mutation {
    use pb::MutationType as T;
    let mut out = pb::Mutation {
        key: m.key.clone(),
        value: m.value().map(value_to_wire),
        mutation_type: 0,
        // Times beyond i64 are not representable; they are "never" in practice.
        expire_at_ms: m
            .expire_at_ms
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
        sum_min: vec![],
        sum_max: vec![],
        sum_clamp: false,
    };
    out.mutation_type = match &m.kind {
        MutationKind::Set(_) => T::MSet,
        MutationKind::Delete => T::MDelete,
        MutationKind::Sum {
            min, max, clamp, ..
        } => {
            out.sum_min = min.clone().unwrap_or_default();
            out.sum_max = max.clone().unwrap_or_default();
            out.sum_clamp = *clamp;
            T::MSum
        }
        MutationKind::Min(_) => T::MMin,
        MutationKind::Max(_) => T::MMax,
        MutationKind::SetSuffixVersionstampedKey(_) => T::MSetSuffixVersionstampedKey,
    } as i32;
    out
}

/// Converts an atomic write into the wire request.
///
/// Lossy corner: `backoff_schedule: Some(vec![])` ("no retries") has no wire form distinct from
/// "default schedule" and is sent as empty, which servers read as the default schedule.
pub fn atomic_write_to_wire(w: &AtomicWrite) -> pb::AtomicWrite {
    pb::AtomicWrite {
        checks: w
            .checks
            .iter()
            .map(|c| pb::Check {
                key: c.key.clone(),
                versionstamp: c.versionstamp.map(|v| v.0.to_vec()).unwrap_or_default(),
            })
            .collect(),
        mutations: w.mutations.iter().map(mutation_to_wire).collect(),
        enqueues: w
            .enqueues
            .iter()
            .map(|e| pb::Enqueue {
                payload: e.payload.clone(),
                deadline_ms: i64::try_from(e.deadline_ms).unwrap_or(i64::MAX),
                keys_if_undelivered: e.keys_if_undelivered.clone(),
                backoff_schedule: e.backoff_schedule.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Client side: wire outputs → domain.
// ---------------------------------------------------------------------------------------------

fn bad_response(msg: impl Into<String>) -> KvError {
    KvError::Transport(msg.into())
}

/// Converts an entry received from a server; the versionstamp must be 10 bytes and the encoding
/// known.
pub fn kv_entry_from_wire(e: pb::KvEntry) -> Result<KvEntry, KvError> {
    let versionstamp = Versionstamp::from_slice(&e.versionstamp).ok_or_else(|| {
        bad_response(format!(
            "server sent an entry with a {}-byte versionstamp (expected 10)",
            e.versionstamp.len()
        ))
    })?;
    let value = KvValue::from_encoded(e.encoding, e.value)?;
    Ok(KvEntry {
        key: e.key,
        value,
        versionstamp,
    })
}

/// Interprets a `SnapshotReadOutput` for a request of `expected_ranges` ranges.
///
/// Fails when the server reports reads disabled (`read_disabled` or `SR_READ_DISABLED`), any
/// other non-success status, a non-strongly-consistent answer to a strong read, a range count
/// mismatch or a malformed entry.
pub fn snapshot_read_result_from_wire(
    out: pb::SnapshotReadOutput,
    expected_ranges: usize,
    consistency: Consistency,
) -> Result<Vec<Vec<KvEntry>>, KvError> {
    if out.read_disabled || out.status == pb::SnapshotReadStatus::SrReadDisabled as i32 {
        return Err(bad_response("Reads are disabled for this database"));
    }
    if out.status != pb::SnapshotReadStatus::SrSuccess as i32 {
        return Err(bad_response(format!(
            "Unspecified read error (code={})",
            out.status
        )));
    }
    if consistency == Consistency::Strong && !out.read_is_strongly_consistent {
        return Err(bad_response(
            "Strong consistency reads are not available for this database",
        ));
    }
    if out.ranges.len() != expected_ranges {
        return Err(bad_response(format!(
            "server returned {} ranges for a read of {expected_ranges}",
            out.ranges.len()
        )));
    }
    out.ranges
        .into_iter()
        .map(|r| r.values.into_iter().map(kv_entry_from_wire).collect())
        .collect()
}

/// Interprets an `AtomicWriteOutput`: success needs a 10-byte versionstamp; check failure
/// returns the failed indexes; `AW_WRITE_DISABLED` is [`KvError::WriteDisabled`]; anything else
/// is an error.
pub fn commit_result_from_wire(out: pb::AtomicWriteOutput) -> Result<CommitResult, KvError> {
    use pb::AtomicWriteStatus as S;
    match S::try_from(out.status) {
        Ok(S::AwSuccess) => {
            let v = Versionstamp::from_slice(&out.versionstamp).ok_or_else(|| {
                bad_response(format!(
                    "server committed with a {}-byte versionstamp (expected 10)",
                    out.versionstamp.len()
                ))
            })?;
            Ok(CommitResult::Committed(v))
        }
        Ok(S::AwCheckFailure) => Ok(CommitResult::CheckFailed(out.failed_checks)),
        Ok(S::AwWriteDisabled) => Err(KvError::WriteDisabled),
        _ => Err(bad_response(format!(
            "Unspecified write error (status={})",
            out.status
        ))),
    }
}

/// Interprets one watch frame for a watch of `expected_keys` keys.
pub fn watch_keys_output_from_wire(
    out: pb::WatchOutput,
    expected_keys: usize,
) -> Result<Vec<WatchKeyOutput>, KvError> {
    if out.status == pb::SnapshotReadStatus::SrReadDisabled as i32 {
        return Err(bad_response("Reads are disabled for this database"));
    }
    if out.status != pb::SnapshotReadStatus::SrSuccess as i32 {
        return Err(bad_response(format!(
            "Unspecified watch error (code={})",
            out.status
        )));
    }
    if out.keys.len() != expected_keys {
        return Err(bad_response(format!(
            "server returned {} watch keys for a watch of {expected_keys}",
            out.keys.len()
        )));
    }
    out.keys
        .into_iter()
        .map(|k| {
            if k.changed {
                Ok(WatchKeyOutput::Changed(
                    k.entry_if_changed.map(kv_entry_from_wire).transpose()?,
                ))
            } else {
                Ok(WatchKeyOutput::Unchanged)
            }
        })
        .collect()
}

/// Incremental decoder of the `/watch` byte stream: feed body chunks with [`push`], take
/// complete frames with [`next_frame`]. Keep-alive frames are skipped.
///
/// [`push`]: WatchFrameDecoder::push
/// [`next_frame`]: WatchFrameDecoder::next_frame
#[derive(Debug)]
pub struct WatchFrameDecoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl Default for WatchFrameDecoder {
    fn default() -> Self {
        WatchFrameDecoder {
            buf: Vec::new(),
            max_frame: 16 * 1024 * 1024,
        }
    }
}

impl WatchFrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received but not yet consumed as a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete non-empty frame, `Ok(None)` if more bytes are needed. Fails on a frame
    /// longer than 16 MiB or an undecodable message.
    pub fn next_frame(&mut self) -> Result<Option<pb::WatchOutput>, KvError> {
        loop {
            let Some(header) = self.buf.get(..4) else {
                return Ok(None);
            };
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(header);
            let len = u32::from_le_bytes(len_bytes) as usize;
            if len > self.max_frame {
                return Err(bad_response(format!(
                    "watch frame of {len} bytes exceeds the 16 MiB limit"
                )));
            }
            if self.buf.len() < 4 + len {
                return Ok(None);
            }
            let frame: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
            if len == 0 {
                continue;
            }
            return pb::WatchOutput::decode(frame.as_slice())
                .map(Some)
                .map_err(|e| bad_response(format!("invalid watch frame: {e}")));
        }
    }
}

#[cfg(test)]
mod tests;
