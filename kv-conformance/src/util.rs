//! Helpers shared by the tests: key and value builders, one-call reads and writes, error
//! matchers, and a small V8 number codec written independently of the engine's.
//!
//! Every helper panics with a descriptive message when the database misbehaves, so the test
//! functions stay short.

use std::fmt::Debug;

use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, Database, Enqueue, KvEntry, KvError, KvValue,
    LimitError, Mutation, MutationKind, ReadRange, Versionstamp,
};
use num_bigint::{BigInt, Sign};

/// A far-future expiry time (year 2096), valid against both the system clock and the suite's
/// manual clock.
pub const FAR_FUTURE_MS: u64 = 4_000_000_000_000;

/// An expiry time long past for every clock the suite uses (1 ms after the epoch).
pub const LONG_AGO_MS: u64 = 1;

/// The exclusive upper bound used to read the whole keyspace: no key that can be written
/// (at most 2048 bytes) sorts at or after 2049 `0xff` bytes.
pub fn keyspace_end() -> Vec<u8> {
    vec![0xff; 2049]
}

/// A key made of one string part, encoded as Deno does (`02 ‖ utf8 ‖ 00`).
pub fn key(s: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(s.len() + 2);
    k.push(0x02);
    k.extend_from_slice(s.as_bytes());
    k.push(0x00);
    k
}

/// A key with two string parts (`02 a 00 02 b 00`).
pub fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = key(a);
    k.extend_from_slice(&key(b));
    k
}

/// The key a `SetSuffixVersionstampedKey` mutation on `prefix` creates at versionstamp `vs`:
/// `prefix ‖ 02 ‖ 20 lowercase hex chars ‖ 00`. Written here independently of the engine.
pub fn suffixed_key(prefix: &[u8], vs: &Versionstamp) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut k = prefix.to_vec();
    k.push(0x02);
    for b in vs.0 {
        k.push(HEX[(b >> 4) as usize]);
        k.push(HEX[(b & 15) as usize]);
    }
    k.push(0x00);
    k
}

/// A raw-bytes value.
pub fn bytes(b: &[u8]) -> KvValue {
    KvValue::Bytes(b.to_vec())
}

/// A range `[start, end)`.
pub fn range(start: &[u8], end: &[u8], limit: u32, reverse: bool) -> ReadRange {
    ReadRange {
        start: start.to_vec(),
        end: end.to_vec(),
        limit,
        reverse,
    }
}

/// A check that `key` is absent.
pub fn check_absent(key: &[u8]) -> Check {
    Check {
        key: key.to_vec(),
        versionstamp: None,
    }
}

/// A check that `key` carries `vs`.
pub fn check_vs(key: &[u8], vs: Versionstamp) -> Check {
    Check {
        key: key.to_vec(),
        versionstamp: Some(vs),
    }
}

/// A `Set` with an absolute expiry time.
pub fn set_expiring(key: &[u8], value: KvValue, expire_at_ms: u64) -> Mutation {
    Mutation {
        key: key.to_vec(),
        kind: MutationKind::Set(value),
        expire_at_ms: Some(expire_at_ms),
    }
}

/// A `Sum` with a `U64` operand and no bounds.
pub fn sum_u64(key: &[u8], n: u64) -> Mutation {
    sum(key, KvValue::U64(n), None, None, false)
}

/// A `Sum` with any operand and bounds.
pub fn sum(
    key: &[u8],
    value: KvValue,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
    clamp: bool,
) -> Mutation {
    Mutation {
        key: key.to_vec(),
        kind: MutationKind::Sum {
            value,
            min,
            max,
            clamp,
        },
        expire_at_ms: None,
    }
}

/// A `Min`.
pub fn min(key: &[u8], value: KvValue) -> Mutation {
    Mutation {
        key: key.to_vec(),
        kind: MutationKind::Min(value),
        expire_at_ms: None,
    }
}

/// A `Max`.
pub fn max(key: &[u8], value: KvValue) -> Mutation {
    Mutation {
        key: key.to_vec(),
        kind: MutationKind::Max(value),
        expire_at_ms: None,
    }
}

/// A `SetSuffixVersionstampedKey` on `prefix`.
pub fn set_vs_key(prefix: &[u8], value: KvValue) -> Mutation {
    Mutation {
        key: prefix.to_vec(),
        kind: MutationKind::SetSuffixVersionstampedKey(value),
        expire_at_ms: None,
    }
}

/// An enqueue of `payload` deliverable from `deadline_ms`, default schedule, no dead-letter keys.
pub fn enqueue(payload: &[u8], deadline_ms: u64) -> Enqueue {
    Enqueue {
        payload: payload.to_vec(),
        deadline_ms,
        keys_if_undelivered: vec![],
        backoff_schedule: None,
    }
}

/// A write made of `mutations` only.
pub fn write_of(mutations: Vec<Mutation>) -> AtomicWrite {
    AtomicWrite {
        mutations,
        ..Default::default()
    }
}

/// Runs `ranges` as one snapshot read, panicking on error.
pub async fn read(db: &dyn Database, ranges: Vec<ReadRange>) -> Vec<Vec<KvEntry>> {
    let n = ranges.len();
    let out = db
        .snapshot_read(ranges.clone(), Consistency::Strong)
        .await
        .unwrap_or_else(|e| panic!("snapshot_read({ranges:?}) failed: {e}"));
    assert_eq!(
        out.len(),
        n,
        "snapshot_read must return one output per range, in order"
    );
    out
}

/// Reads one range, panicking on error.
pub async fn read1(db: &dyn Database, r: ReadRange) -> Vec<KvEntry> {
    read(db, vec![r]).await.remove(0)
}

/// Reads one key the way Deno's `get` does (`[k, k‖00)`, limit 1).
pub async fn get(db: &dyn Database, key: &[u8]) -> Option<KvEntry> {
    let mut v = read1(db, ReadRange::single(key)).await;
    assert!(v.len() <= 1, "a limit-1 read returned {} entries", v.len());
    let e = v.pop();
    if let Some(e) = &e {
        assert_eq!(e.key, key, "get returned an entry for another key");
    }
    e
}

/// Every live entry of the database in key order (pages through the whole keyspace).
pub async fn scan_all(db: &dyn Database) -> Vec<KvEntry> {
    let mut out: Vec<KvEntry> = Vec::new();
    let end = keyspace_end();
    let mut start = Vec::new();
    loop {
        let page = read1(db, range(&start, &end, 1000, false)).await;
        let full = page.len() == 1000;
        if let Some(last) = page.last() {
            start = last.key.clone();
            start.push(0);
        }
        out.extend(page);
        if !full {
            return out;
        }
    }
}

/// Applies `write`, returning the raw result.
pub async fn try_write(db: &dyn Database, write: AtomicWrite) -> Result<CommitResult, KvError> {
    db.atomic_write(write).await
}

/// Applies `write` and returns its versionstamp; panics if it did not commit.
pub async fn commit(db: &dyn Database, write: AtomicWrite) -> Versionstamp {
    match db.atomic_write(write.clone()).await {
        Ok(CommitResult::Committed(vs)) => {
            assert_ne!(
                vs,
                Versionstamp::ZERO,
                "a commit must never get the all-zero versionstamp"
            );
            vs
        }
        other => panic!("expected the write to commit, got {other:?}\nwrite: {write:?}"),
    }
}

/// Sets `key` to `value` in its own write and returns the versionstamp.
pub async fn set(db: &dyn Database, key: &[u8], value: KvValue) -> Versionstamp {
    commit(db, write_of(vec![Mutation::set(key.to_vec(), value)])).await
}

/// The message of an error as a client would see it (the body for remote errors).
pub fn error_text(e: &KvError) -> String {
    match e {
        KvError::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Asserts `r` is a mutation error (`KvError::Mutation`, or a remote 400) whose text contains
/// `text`.
pub fn assert_mutation_error<T: Debug>(r: Result<T, KvError>, text: &str) {
    match r {
        Err(KvError::Mutation(m)) => assert!(
            m.contains(text),
            "mutation error {m:?} should contain {text:?}"
        ),
        Err(KvError::Remote {
            status: 400,
            message,
        }) => {
            assert!(
                message.contains(text),
                "error {message:?} should contain {text:?}"
            )
        }
        other => panic!("expected a mutation error containing {text:?}, got {other:?}"),
    }
}

/// Asserts `r` is a mutation error whose text contains one of `texts`.
pub fn assert_mutation_error_any<T: Debug>(r: Result<T, KvError>, texts: &[&str]) {
    match r {
        Err(KvError::Mutation(m))
        | Err(KvError::Remote {
            status: 400,
            message: m,
        }) => {
            assert!(
                texts.iter().any(|t| m.contains(t)),
                "error {m:?} should contain one of {texts:?}"
            )
        }
        other => panic!("expected a mutation error containing one of {texts:?}, got {other:?}"),
    }
}

/// Asserts `r` failed with a limit error accepted by `pred` (or a remote 400 whose body
/// contains `text`).
pub fn assert_limit_error<T: Debug>(
    r: Result<T, KvError>,
    pred: impl Fn(&LimitError) -> bool,
    text: &str,
) {
    match r {
        Err(KvError::Limit(l)) => {
            assert!(
                pred(&l),
                "unexpected limit error {l:?} (expected one about {text:?})"
            );
            assert!(
                l.to_string().contains(text),
                "limit error text {:?} should contain {text:?}",
                l.to_string()
            );
        }
        Err(KvError::Remote {
            status: 400,
            message,
        }) => {
            assert!(
                message.contains(text),
                "error {message:?} should contain {text:?}"
            )
        }
        other => panic!("expected a limit error about {text:?}, got {other:?}"),
    }
}

/// Asserts `r` is a client (4xx) error of any kind.
pub fn assert_client_error<T: Debug>(r: Result<T, KvError>, what: &str) {
    match r {
        Err(e) if e.is_client_error() => {}
        other => panic!("{what}: expected a client error, got {other:?}"),
    }
}

/// A tiny V8 ValueSerializer codec for the scalars `sum` understands, written for the suite.
pub mod v8 {
    use super::*;

    fn varint(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn header(version: u8) -> Vec<u8> {
        vec![0xff, version]
    }

    /// A Number stored as int32 (`I`, zigzag varint), header version 15.
    pub fn smi(n: i32) -> Vec<u8> {
        smi_v(n, 15)
    }

    /// A Number stored as int32 with the given header version.
    pub fn smi_v(n: i32, version: u8) -> Vec<u8> {
        let mut b = header(version);
        b.push(b'I');
        varint(((n << 1) ^ (n >> 31)) as u32 as u64, &mut b);
        b
    }

    /// A Number stored as uint32 (`U`).
    pub fn uint32(n: u32) -> Vec<u8> {
        let mut b = header(15);
        b.push(b'U');
        varint(n as u64, &mut b);
        b
    }

    /// A Number stored as a double (`N`), header version 15.
    pub fn double(f: f64) -> Vec<u8> {
        double_v(f, 15)
    }

    /// A double with the given header version.
    pub fn double_v(f: f64, version: u8) -> Vec<u8> {
        let mut b = header(version);
        b.push(b'N');
        b.extend_from_slice(&f.to_le_bytes());
        b
    }

    /// A BigInt (`Z`) written as V8 does: whole 8-byte digits, header version 16.
    pub fn bigint(n: &BigInt) -> Vec<u8> {
        bigint_v(n, 16)
    }

    /// A BigInt with the given header version.
    pub fn bigint_v(n: &BigInt, version: u8) -> Vec<u8> {
        let mut b = header(version);
        b.push(b'Z');
        let (sign, mut mag) = n.to_bytes_le();
        if sign == Sign::NoSign {
            mag.clear();
        }
        while mag.len() % 8 != 0 {
            mag.push(0);
        }
        let bitfield = ((mag.len() as u64) << 1) | u64::from(sign == Sign::Minus);
        varint(bitfield, &mut b);
        b.extend_from_slice(&mag);
        b
    }

    /// A BigInt from an `i128`.
    pub fn big(n: i128) -> Vec<u8> {
        bigint(&BigInt::from(n))
    }

    /// A one-byte string (`"`).
    pub fn string(s: &str) -> Vec<u8> {
        let mut b = header(15);
        b.push(b'"');
        varint(s.len() as u64, &mut b);
        b.extend_from_slice(s.as_bytes());
        b
    }

    /// A decoded V8 number.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Num {
        /// A JS number; the tag byte it was stored with (`I`, `U` or `N`).
        Number(f64, u8),
        /// A JS bigint.
        BigInt(BigInt),
    }

    fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let byte = *b.get(*pos)?;
            *pos += 1;
            if shift >= 64 {
                return None;
            }
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(n);
            }
            shift += 7;
        }
    }

    /// Decodes a V8 Number or BigInt (any header version, optional 0x00 padding); `None` for
    /// anything else or trailing bytes.
    pub fn parse(b: &[u8]) -> Option<Num> {
        if b.first() != Some(&0xff) {
            return None;
        }
        let mut pos = 1;
        read_varint(b, &mut pos)?;
        while b.get(pos) == Some(&0) {
            pos += 1;
        }
        let tag = *b.get(pos)?;
        pos += 1;
        let num = match tag {
            b'I' => {
                let z = read_varint(b, &mut pos)? as u32;
                let n = ((z >> 1) as i32) ^ -((z & 1) as i32);
                Num::Number(f64::from(n), tag)
            }
            b'U' => Num::Number(read_varint(b, &mut pos)? as u32 as f64, tag),
            b'N' => {
                let bytes: [u8; 8] = b.get(pos..pos + 8)?.try_into().ok()?;
                pos += 8;
                Num::Number(f64::from_le_bytes(bytes), tag)
            }
            b'Z' => {
                let bitfield = read_varint(b, &mut pos)?;
                let len = usize::try_from(bitfield >> 1).ok()?;
                let mag = b.get(pos..pos.checked_add(len)?)?;
                pos += len;
                let sign = if bitfield & 1 == 1 {
                    Sign::Minus
                } else {
                    Sign::Plus
                };
                Num::BigInt(BigInt::from_bytes_le(sign, mag))
            }
            _ => return None,
        };
        (pos == b.len()).then_some(num)
    }

    /// Decodes a stored value as a BigInt, panicking with context otherwise.
    pub fn expect_bigint(v: &KvValue) -> BigInt {
        match v {
            KvValue::V8(b) => match parse(b) {
                Some(Num::BigInt(n)) => {
                    assert!(
                        (13..=16).contains(&b[1]),
                        "a V8 BigInt written by the server must use header version 13..=16, got {b:02x?}"
                    );
                    n
                }
                other => panic!("expected a V8 BigInt, got {other:?} from {b:02x?}"),
            },
            other => panic!("expected a V8 value holding a BigInt, got {other:?}"),
        }
    }

    /// Decodes a stored value as a Number, panicking with context otherwise; also returns the tag.
    pub fn expect_number(v: &KvValue) -> (f64, u8) {
        match v {
            KvValue::V8(b) => match parse(b) {
                Some(Num::Number(f, tag)) => {
                    assert!(
                        (13..=16).contains(&b[1]),
                        "a V8 number written by the server must use header version 13..=16, got {b:02x?}"
                    );
                    (f, tag)
                }
                other => panic!("expected a V8 Number, got {other:?} from {b:02x?}"),
            },
            other => panic!("expected a V8 value holding a Number, got {other:?}"),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn encodings_match_the_spec_examples() {
            assert_eq!(smi_v(2, 16), [0xff, 0x10, 0x49, 0x04]);
            assert_eq!(smi_v(-1, 16), [0xff, 0x10, 0x49, 0x01]);
            assert_eq!(
                double_v(0.1, 16),
                [0xff, 0x10, 0x4e, 0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f]
            );
            assert_eq!(bigint(&BigInt::from(0)), [0xff, 0x10, 0x5a, 0x00]);
            assert_eq!(
                bigint(&BigInt::from(5)),
                [0xff, 0x10, 0x5a, 0x10, 5, 0, 0, 0, 0, 0, 0, 0]
            );
            assert_eq!(
                bigint(&BigInt::from(-5)),
                [0xff, 0x10, 0x5a, 0x11, 5, 0, 0, 0, 0, 0, 0, 0]
            );
            let two64 = BigInt::from(1u8) << 64;
            assert_eq!(
                bigint(&two64),
                [0xff, 0x10, 0x5a, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
            );
        }

        #[test]
        fn parse_round_trips_and_accepts_minimal_forms() {
            assert_eq!(parse(&smi(-7)), Some(Num::Number(-7.0, b'I')));
            assert_eq!(parse(&uint32(5)), Some(Num::Number(5.0, b'U')));
            assert_eq!(parse(&double(1.5)), Some(Num::Number(1.5, b'N')));
            assert_eq!(
                parse(&[0xff, 0x0f, 0x5a, 0x02, 0x01]),
                Some(Num::BigInt(BigInt::from(1)))
            );
            assert_eq!(
                parse(&[0xff, 0x0f, 0x5a, 0x03, 0x01]),
                Some(Num::BigInt(BigInt::from(-1)))
            );
            assert_eq!(
                parse(&[0xff, 0x0f, 0x00, 0x49, 0x02]),
                Some(Num::Number(1.0, b'I'))
            );
            assert_eq!(
                parse(&big(-(1i128 << 70))),
                Some(Num::BigInt(BigInt::from(-(1i128 << 70))))
            );
            assert_eq!(parse(&string("x")), None);
            assert_eq!(parse(&[0xff, 0x0f, 0x49, 0x02, 0x00]), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixed_key_matches_the_spec_example() {
        let vs: Versionstamp = "00000000000000260000".parse().unwrap();
        let k = suffixed_key(&key("log"), &vs);
        let mut expected = vec![0x02, b'l', b'o', b'g', 0x00, 0x02];
        expected.extend_from_slice(b"00000000000000260000");
        expected.push(0);
        assert_eq!(k, expected);
    }
}
