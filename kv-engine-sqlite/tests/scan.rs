//! Scans and point reads: unsigned bytewise order, limits, reverse, empty ranges, edge keys,
//! large and empty values, and a randomized comparison with an in-memory model.

use std::collections::BTreeMap;

use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::{Backend, KvPair};

fn open(dir: &tempfile::TempDir) -> SqliteBackend {
    SqliteBackend::open(dir.path().join("db.sqlite3"), SqliteOptions::default()).unwrap()
}

fn edge_keys() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x01],
        vec![0x01, 0xff],
        vec![0x02],
        vec![0x7f],
        vec![0x80],
        vec![0xfe, 0xff, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
    ]
}

async fn load(b: &SqliteBackend, keys: &[Vec<u8>]) {
    let mut w = b.begin_write().await.unwrap();
    // Insert in reverse so insertion order cannot masquerade as key order.
    for (i, k) in keys.iter().enumerate().rev() {
        w.put(k, format!("v{i}").as_bytes()).await.unwrap();
    }
    w.commit().await.unwrap();
}

fn pairs(keys: &[Vec<u8>], idx: &[usize]) -> Vec<KvPair> {
    idx.iter()
        .map(|&i| (keys[i].clone(), format!("v{i}").into_bytes()))
        .collect()
}

#[tokio::test]
async fn scan_is_unsigned_bytewise_with_exclusive_end() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let keys = edge_keys();
    load(&b, &keys).await;
    let mut r = b.begin_read().await.unwrap();

    let all: Vec<usize> = (0..keys.len()).collect();
    let end = [0xff, 0xff, 0xff];
    assert_eq!(
        r.scan(&[], &end, 100, false).await.unwrap(),
        pairs(&keys, &all)
    );
    let rev: Vec<usize> = all.iter().rev().copied().collect();
    assert_eq!(
        r.scan(&[], &end, 100, true).await.unwrap(),
        pairs(&keys, &rev)
    );

    // End is exclusive, start inclusive.
    assert_eq!(
        r.scan(&[0x01], &[0x80], 100, false).await.unwrap(),
        pairs(&keys, &[3, 4, 5, 6])
    );
    // Keys starting with ff: [ff] <= k < [ff, 01].
    assert_eq!(
        r.scan(&[0xff], &[0xff, 0x01], 100, false).await.unwrap(),
        pairs(&keys, &[9, 10])
    );
    assert_eq!(
        r.scan(&[0xff], &[0xff, 0x01], 100, true).await.unwrap(),
        pairs(&keys, &[10, 9])
    );
    // Prefix range of 0x00: [00] <= k < [01].
    assert_eq!(
        r.scan(&[0x00], &[0x01], 100, false).await.unwrap(),
        pairs(&keys, &[1, 2])
    );
    // The empty key is the smallest key.
    assert_eq!(
        r.scan(&[], &[0x00], 100, false).await.unwrap(),
        pairs(&keys, &[0])
    );
    assert_eq!(r.get(&[]).await.unwrap(), Some(b"v0".to_vec()));
}

#[tokio::test]
async fn scan_limits_and_empty_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let keys = edge_keys();
    load(&b, &keys).await;
    let mut r = b.begin_read().await.unwrap();
    let end = [0xff, 0xff, 0xff];

    assert_eq!(r.scan(&[], &end, 0, false).await.unwrap(), vec![]);
    assert_eq!(
        r.scan(&[], &end, 1, false).await.unwrap(),
        pairs(&keys, &[0])
    );
    assert_eq!(
        r.scan(&[], &end, 1, true).await.unwrap(),
        pairs(&keys, &[11])
    );
    assert_eq!(
        r.scan(&[], &end, 3, false).await.unwrap(),
        pairs(&keys, &[0, 1, 2])
    );
    assert_eq!(
        r.scan(&[], &end, 3, true).await.unwrap(),
        pairs(&keys, &[11, 10, 9])
    );
    assert_eq!(
        r.scan(&[], &end, usize::MAX, false).await.unwrap().len(),
        keys.len()
    );
    assert_eq!(
        r.scan(&[0x01], &[0x80], 2, true).await.unwrap(),
        pairs(&keys, &[6, 5])
    );

    // start == end and start > end are empty, in both directions.
    for reverse in [false, true] {
        assert_eq!(r.scan(&[0x01], &[0x01], 10, reverse).await.unwrap(), vec![]);
        assert_eq!(r.scan(&[0x80], &[0x01], 10, reverse).await.unwrap(), vec![]);
        assert_eq!(r.scan(&[0xff], &[0x00], 10, reverse).await.unwrap(), vec![]);
        // A non-empty interval with no keys in it.
        assert_eq!(r.scan(&[0x03], &[0x7f], 10, reverse).await.unwrap(), vec![]);
        assert_eq!(
            r.scan(&[0xff, 0xff, 0x00], &end, 10, reverse)
                .await
                .unwrap(),
            vec![]
        );
    }
    assert_eq!(r.get(&[0x03]).await.unwrap(), None);
}

#[tokio::test]
async fn large_and_empty_values() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let big: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let v64k = vec![0xabu8; 65536];
    let long_key = vec![0x42u8; 2048];
    let mut w = b.begin_write().await.unwrap();
    w.put(b"big", &big).await.unwrap();
    w.put(b"v64k", &v64k).await.unwrap();
    w.put(b"empty", b"").await.unwrap();
    w.put(&long_key, b"long").await.unwrap();
    assert_eq!(w.get(b"big").await.unwrap().as_deref(), Some(&big[..]));
    w.commit().await.unwrap();

    let mut r = b.begin_read().await.unwrap();
    assert_eq!(r.get(b"big").await.unwrap().as_deref(), Some(&big[..]));
    assert_eq!(r.get(b"v64k").await.unwrap(), Some(v64k.clone()));
    // An empty value is present, not absent.
    assert_eq!(r.get(b"empty").await.unwrap(), Some(vec![]));
    assert_eq!(r.get(&long_key).await.unwrap(), Some(b"long".to_vec()));
    let scanned = r.scan(b"a", b"z", 10, false).await.unwrap();
    let names: Vec<&[u8]> = scanned.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(names, vec![&b"big"[..], b"empty", b"v64k"]);
    assert_eq!(scanned[0].1, big);
    assert_eq!(scanned[1].1, Vec::<u8>::new());
}

/// A tiny deterministic PRNG (xorshift) so the randomized test is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn key(&mut self) -> Vec<u8> {
        // Short keys over a small alphabet including 00 and ff, so ranges collide often.
        const ALPHABET: [u8; 5] = [0x00, 0x01, 0x7f, 0x80, 0xff];
        let len = self.below(4) as usize;
        (0..len).map(|_| ALPHABET[self.below(5) as usize]).collect()
    }
}

fn model_scan(
    m: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Vec<KvPair> {
    if start >= end {
        return vec![];
    }
    let it = m
        .range(start.to_vec()..end.to_vec())
        .map(|(k, v)| (k.clone(), v.clone()));
    if reverse {
        it.rev().take(limit).collect()
    } else {
        it.take(limit).collect()
    }
}

#[tokio::test]
async fn randomized_against_a_btreemap_model() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for round in 0..40 {
        let mut w = b.begin_write().await.unwrap();
        let mut pending = committed.clone();
        for _ in 0..20 {
            match rng.below(4) {
                0 | 1 => {
                    let k = rng.key();
                    let v = rng.next().to_le_bytes()[..rng.below(9) as usize].to_vec();
                    w.put(&k, &v).await.unwrap();
                    pending.insert(k, v);
                }
                2 => {
                    let k = rng.key();
                    w.delete(&k).await.unwrap();
                    pending.remove(&k);
                }
                _ => {
                    let (s, e) = (rng.key(), rng.key());
                    let limit = rng.below(6) as usize;
                    let reverse = rng.below(2) == 1;
                    assert_eq!(
                        w.scan(&s, &e, limit, reverse).await.unwrap(),
                        model_scan(&pending, &s, &e, limit, reverse),
                        "write-txn scan {s:02x?}..{e:02x?} limit {limit} reverse {reverse}"
                    );
                }
            }
        }
        let commit = round % 3 != 2;
        if commit {
            w.commit().await.unwrap();
            committed = pending;
        } else {
            drop(w);
        }
        let mut r = b.begin_read().await.unwrap();
        for _ in 0..10 {
            let (s, e) = (rng.key(), rng.key());
            let limit = rng.below(8) as usize;
            let reverse = rng.below(2) == 1;
            assert_eq!(
                r.scan(&s, &e, limit, reverse).await.unwrap(),
                model_scan(&committed, &s, &e, limit, reverse)
            );
            let k = rng.key();
            assert_eq!(r.get(&k).await.unwrap(), committed.get(&k).cloned());
        }
    }
    let mut r = b.begin_read().await.unwrap();
    let everything = r
        .scan(&[], &[0xff, 0xff, 0xff, 0xff], usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(
        everything,
        model_scan(
            &committed,
            &[],
            &[0xff, 0xff, 0xff, 0xff],
            usize::MAX,
            false
        )
    );
    assert!(!everything.is_empty());
}
