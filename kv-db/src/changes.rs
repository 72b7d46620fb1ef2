//! The change log (what continuous backup ships) and raw import/export (what restore and
//! read replicas use).
//!
//! With [`DbConfig::change_log`](crate::DbConfig::change_log) on, every commit that changes user
//! data also stores, in the same backend transaction, one [`ChangeBatch`] per logical write: the
//! post-image of every key it touched. A write is therefore in the log if and only if it is
//! committed, and a backup shipper that crashes loses nothing: it reads the log again after a
//! restart and trims it only once the changes are safely stored elsewhere.

use kv_traits::{BackendError, KvValue, Versionstamp};

use crate::layout::{self, Record, CHANGE_LOG};

/// One committed logical write (an atomic write, one expiry-sweep commit, or one dead-letter
/// write) as its effect on user data keys. Queue state is not included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The commit's versionstamp.
    pub versionstamp: Versionstamp,
    /// Wall-clock time of the commit (the database's clock), ms since the epoch.
    pub timestamp_ms: u64,
    /// At least one change, each key at most once.
    pub changes: Vec<KeyChange>,
}

/// The state of one key after a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// Encoded user key, as on the wire.
    pub key: Vec<u8>,
    /// The value after the commit; `None` when the key was deleted.
    pub value: Option<KvValue>,
    /// Expiry of the new value, if any.
    pub expire_at_ms: Option<u64>,
}

/// A raw data entry as stored, including entries that have expired but are not swept yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportEntry {
    /// Encoded user key.
    pub key: Vec<u8>,
    /// The value.
    pub value: KvValue,
    /// Versionstamp of the commit that wrote it.
    pub versionstamp: Versionstamp,
    /// Expiry time in ms, if any.
    pub expire_at_ms: Option<u64>,
}

/// One operation of an [`import`](crate::Db::import).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportOp {
    /// Store the entry as is (its own versionstamp and expiry).
    Put(ExportEntry),
    /// Delete the key if present.
    Delete(Vec<u8>),
}

/// The log key of the commit with `version`.
pub(crate) fn log_key(version: u64) -> Vec<u8> {
    layout::timed(CHANGE_LOG, version, &[])
}

/// Collapses `(key, post-image)` changes recorded in application order so that each key
/// appears once, at its last position, with its final state.
pub(crate) fn dedupe(changes: Vec<KeyChange>) -> Vec<KeyChange> {
    if changes.len() < 2 {
        return changes;
    }
    let mut last = std::collections::HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert(c.key.clone(), i);
    }
    changes
        .into_iter()
        .enumerate()
        .filter(|(i, c)| last.get(&c.key) == Some(i))
        .map(|(_, c)| c)
        .collect()
}

/// `timestamp u64 ‖ n u32 ‖ n × (key len u32 ‖ key ‖ 0 | 1 ‖ record if 1)` where the record is
/// [`Record::encode`]'s form prefixed by its length.
pub(crate) fn encode_batch(timestamp_ms: u64, version: u64, changes: &[KeyChange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + changes.len() * 32);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(changes.len() as u32).to_be_bytes());
    for c in changes {
        out.extend_from_slice(&(c.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&c.key);
        match &c.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                let rec = Record {
                    value: v.clone(),
                    versionstamp: Versionstamp::from_version(version),
                    expire_at_ms: c.expire_at_ms,
                }
                .encode();
                out.extend_from_slice(&(rec.len() as u32).to_be_bytes());
                out.extend_from_slice(&rec);
            }
        }
    }
    out
}

fn corrupt(what: &str) -> BackendError {
    BackendError::Corrupt(format!("change log: {what}").into())
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], BackendError> {
    if b.len() < n {
        return Err(corrupt("truncated entry"));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_u32(b: &mut &[u8]) -> Result<usize, BackendError> {
    let mut a = [0u8; 4];
    a.copy_from_slice(take(b, 4)?);
    Ok(u32::from_be_bytes(a) as usize)
}

/// Inverse of [`encode_batch`]; `key` is the log key.
pub(crate) fn decode_batch(key: &[u8], value: &[u8]) -> Result<ChangeBatch, BackendError> {
    let (version, _) = layout::split_timed(key)?;
    let mut b = value;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(take(&mut b, 8)?);
    let n = take_u32(&mut b)?;
    let mut changes = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let klen = take_u32(&mut b)?;
        let key = take(&mut b, klen)?.to_vec();
        let flag = take(&mut b, 1)?[0];
        let change = match flag {
            0 => KeyChange {
                key,
                value: None,
                expire_at_ms: None,
            },
            1 => {
                let rlen = take_u32(&mut b)?;
                let rec = Record::decode(take(&mut b, rlen)?)?;
                KeyChange {
                    key,
                    value: Some(rec.value),
                    expire_at_ms: rec.expire_at_ms,
                }
            }
            _ => return Err(corrupt("unknown change kind")),
        };
        changes.push(change);
    }
    if !b.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(ChangeBatch {
        versionstamp: Versionstamp::from_version(version),
        timestamp_ms: u64::from_be_bytes(ts),
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let changes = vec![
            KeyChange {
                key: vec![2, b'a', 0],
                value: Some(KvValue::U64(5)),
                expire_at_ms: Some(77),
            },
            KeyChange {
                key: vec![2, b'b', 0],
                value: None,
                expire_at_ms: None,
            },
            KeyChange {
                key: vec![],
                value: Some(KvValue::V8(vec![0xff, 0x0f, 0x22, 0])),
                expire_at_ms: None,
            },
        ];
        let enc = encode_batch(1234, 9, &changes);
        let got = decode_batch(&log_key(9), &enc).unwrap();
        assert_eq!(
            got,
            ChangeBatch {
                versionstamp: Versionstamp::from_version(9),
                timestamp_ms: 1234,
                changes
            }
        );
        for cut in 0..enc.len() {
            assert!(decode_batch(&log_key(9), &enc[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode_batch(&log_key(9), &extra).is_err());
    }

    #[test]
    fn dedupe_keeps_last_state_of_each_key() {
        let c = |k: u8, v: u64| KeyChange {
            key: vec![k],
            value: Some(KvValue::U64(v)),
            expire_at_ms: None,
        };
        let got = dedupe(vec![c(1, 1), c(2, 2), c(1, 3)]);
        assert_eq!(got, vec![c(2, 2), c(1, 3)]);
    }
}
