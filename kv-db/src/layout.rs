//! How Deno KV state is laid out in the backend's single ordered keyspace.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `00 'f'` | format version | u64 BE |
//! | `00 'v'` | latest commit version | u64 BE |
//! | `01` | `01 ‖ user key` | [`Record`] |
//! | `02` | `02 ‖ expire_at_ms BE ‖ user key` | empty (expiry index) |
//! | `03` | `03 ‖ ready_ms BE ‖ id` | [`QueueRecord`] (ready queue) |
//! | `04` | `04 ‖ id` | [`QueueRecord`] with its lease deadline (running) |
//! | `05` | `05 ‖ deadline_ms BE ‖ id` | empty (lease index) |
//! | `00 'c'` | version from which the change log is complete | u64 BE (only while logging) |
//! | `06` | `06 ‖ version BE` | one logged commit (see [`crate::changes`]) |
//! | `00 'i'` | version reached by imports (restored copy, replica) | u64 BE (until a write) |
//! | `07` | `07 ‖ last version BE` | one write transaction's changed keys (shared stores only; see [`crate::feed`]) |
//! | `00 'L'` | `00 'L' ‖ lease name` | holder (16 bytes) ‖ expiry ms BE (a cross-process lease; see [`crate::lease`]) |
//!
//! Prefixing keeps user-key order, so a user range `[s, e)` is the backend range `[01‖s, 01‖e)`.

use kv_traits::{BackendError, KvValue, Versionstamp};

/// The format version written by this build.
pub const FORMAT_VERSION: u64 = 1;
/// Meta key holding the format version.
pub const META_FORMAT: &[u8] = b"\x00f";
/// Meta key holding the latest commit version.
pub const META_VERSION: &[u8] = b"\x00v";
/// Prefix of data records.
pub const DATA: u8 = 0x01;
/// Prefix of the expiry index.
pub const EXPIRY: u8 = 0x02;
/// Prefix of ready queue messages.
pub const QUEUE_READY: u8 = 0x03;
/// Prefix of leased (running) queue messages.
pub const QUEUE_RUNNING: u8 = 0x04;
/// Prefix of the lease deadline index.
pub const QUEUE_LEASE: u8 = 0x05;
/// Prefix of the change log.
pub const CHANGE_LOG: u8 = 0x06;
/// Meta key holding the version from which the change log is complete.
pub const META_CHANGE_LOG_SINCE: &[u8] = b"\x00c";
/// Meta key holding the version reached by imports, while nothing else has been committed.
pub const META_IMPORTED: &[u8] = b"\x00i";
/// Prefix of lease records (followed by the lease's name).
pub const META_LEASE: &[u8] = b"\x00L";

fn corrupt(what: &str) -> BackendError {
    BackendError::Corrupt(what.into())
}

/// `prefix ‖ key`.
pub fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

/// `prefix ‖ ts BE ‖ rest`.
pub fn timed(prefix: u8, ts: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + rest.len());
    k.push(prefix);
    k.extend_from_slice(&ts.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// Splits `prefix ‖ ts BE ‖ rest` into `(ts, rest)`.
pub fn split_timed(key: &[u8]) -> Result<(u64, &[u8]), BackendError> {
    if key.len() < 9 {
        return Err(corrupt("short timed index key"));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&key[1..9]);
    Ok((u64::from_be_bytes(ts), &key[9..]))
}

/// Encodes a u64 meta value.
pub fn encode_u64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Decodes a u64 meta value.
pub fn decode_u64(b: &[u8]) -> Result<u64, BackendError> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| corrupt("meta value is not 8 bytes"))?;
    Ok(u64::from_be_bytes(arr))
}

/// A stored entry: value, versionstamp and optional expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The value.
    pub value: KvValue,
    /// Versionstamp of the commit that wrote it.
    pub versionstamp: Versionstamp,
    /// Expiry time in ms, if any.
    pub expire_at_ms: Option<u64>,
}

impl Record {
    /// `encoding u8 ‖ versionstamp 10 ‖ expire_at_ms u64 BE (0 = none) ‖ data`.
    pub fn encode(&self) -> Vec<u8> {
        let data = self.value.data();
        let mut out = Vec::with_capacity(19 + data.len());
        out.push(self.value.encoding() as u8);
        out.extend_from_slice(&self.versionstamp.0);
        out.extend_from_slice(&self.expire_at_ms.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// Inverse of [`Record::encode`], reusing the buffer for the value (no copy of the data
    /// into a new allocation: reads decode many records).
    pub fn decode_owned(mut b: Vec<u8>) -> Result<Record, BackendError> {
        if b.len() < 19 {
            return Err(corrupt("short data record"));
        }
        let versionstamp =
            Versionstamp::from_slice(&b[1..11]).ok_or_else(|| corrupt("versionstamp"))?;
        let expire = decode_u64(&b[11..19])?;
        let encoding = b[0] as i32;
        b.drain(..19);
        let value = KvValue::from_encoded(encoding, b)
            .map_err(|e| BackendError::Corrupt(format!("stored value: {e}").into()))?;
        Ok(Record {
            value,
            versionstamp,
            expire_at_ms: (expire != 0).then_some(expire),
        })
    }

    /// Inverse of [`Record::encode`].
    pub fn decode(b: &[u8]) -> Result<Record, BackendError> {
        Self::decode_owned(b.to_vec())
    }

    /// True when the record has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expire_at_ms, Some(t) if t <= now_ms)
    }
}

/// A queue message as stored in the ready or running set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRecord {
    /// Deliveries so far.
    pub attempts: u32,
    /// Lease deadline of the current (running) or last (ready) delivery; 0 before the first.
    pub lease_deadline_ms: u64,
    /// Remaining retry delays.
    pub backoff: Vec<u32>,
    /// Dead-letter keys.
    pub keys_if_undelivered: Vec<Vec<u8>>,
    /// Payload (V8).
    pub payload: Vec<u8>,
}

impl QueueRecord {
    /// Binary form: attempts u32, lease u64, n u32, n × u32, m u32, m × (len u32, bytes), payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.payload.len());
        out.extend_from_slice(&self.attempts.to_be_bytes());
        out.extend_from_slice(&self.lease_deadline_ms.to_be_bytes());
        out.extend_from_slice(&(self.backoff.len() as u32).to_be_bytes());
        for b in &self.backoff {
            out.extend_from_slice(&b.to_be_bytes());
        }
        out.extend_from_slice(&(self.keys_if_undelivered.len() as u32).to_be_bytes());
        for k in &self.keys_if_undelivered {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Inverse of [`QueueRecord::encode`].
    pub fn decode(b: &[u8]) -> Result<QueueRecord, BackendError> {
        let mut r = Reader { b, pos: 0 };
        let attempts = r.u32()?;
        let lease_deadline_ms = r.u64()?;
        let n = r.u32()? as usize;
        let mut backoff = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            backoff.push(r.u32()?);
        }
        let m = r.u32()? as usize;
        let mut keys = Vec::with_capacity(m.min(64));
        for _ in 0..m {
            let len = r.u32()? as usize;
            keys.push(r.take(len)?.to_vec());
        }
        let payload = r.b[r.pos..].to_vec();
        Ok(QueueRecord {
            attempts,
            lease_deadline_ms,
            backoff,
            keys_if_undelivered: keys,
            payload,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackendError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| corrupt("short queue record"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, BackendError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, BackendError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record {
            value: KvValue::U64(7),
            versionstamp: Versionstamp::from_version(3),
            expire_at_ms: Some(99),
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert_eq!(Record::decode_owned(r.encode()).unwrap(), r);
        assert!(Record::decode_owned(vec![1; 18]).is_err());
        let r = Record {
            value: KvValue::Bytes(vec![]),
            versionstamp: Versionstamp::from_version(1),
            expire_at_ms: None,
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert!(Record::decode(&[1, 2]).is_err());
        let q = QueueRecord {
            attempts: 2,
            lease_deadline_ms: 5,
            backoff: vec![1, 2],
            keys_if_undelivered: vec![vec![1], vec![]],
            payload: vec![9, 9],
        };
        assert_eq!(QueueRecord::decode(&q.encode()).unwrap(), q);
        assert!(QueueRecord::decode(&[0, 0, 0]).is_err());
        let mut bad = q.encode();
        bad.truncate(20);
        assert!(QueueRecord::decode(&bad).is_err());
    }
}
