//! The raw storage contract: tests of [`kv_traits::Backend`] itself, below the Deno KV semantics.
//!
//! Every clause of the trait's contract (`kv-traits/src/backend.rs`) has tests here, so an engine
//! is checked as a byte store before `kv-db` builds anything on it:
//!
//! - **Snapshots**: a [`kv_traits::ReadTxn`] sees the state committed before it began, whether
//!   or not it was used before a later commit, for its whole life, even while a writer commits
//!   next to it; many snapshots can be open at once, each at its own state; beginning a read never
//!   waits for an open write transaction.
//! - **Read-your-writes**: a [`kv_traits::WriteTxn`] sees its own puts, overwrites and deletes
//!   in `get` and `scan`; nobody else does before `commit`.
//! - **Rollback**: dropping a write transaction discards it and frees the writer slot.
//! - **Scans**: unsigned bytewise key order in both directions, `start` inclusive and `end`
//!   exclusive, `limit` counted from the scan's first key (`0` and `usize::MAX` included),
//!   `start >= end` empty, the empty key first; the same in write transactions; large, empty
//!   and long keys and values round-trip; random operation sequences match a `BTreeMap` model.
//! - **One writer**: `begin_write` waits (without blocking the async runtime) until the previous
//!   write transaction commits or is dropped, and then sees its result; concurrent
//!   read-modify-write transactions lose no update.
//! - **Close**: later `begin_read` / `begin_write` fail with [`kv_traits::BackendError::Closed`],
//!   closing twice is harmless, a snapshot from before the close never returns other data, and a
//!   write transaction open during the close either commits or fails with `Closed`.
//! - **Reopen** (engines whose data survives a restart, through a
//!   [`crate::harness::ReopenableBackend`]): committed data is there after a close or a plain
//!   drop; rolled-back and uncommitted writes are not.
//!
//! Optional promises that go beyond the trait (an engine opts in, see
//! [`crate::backend_contract_tests!`]): [`close_waits_for_the_open_write`].
//!
//! Not covered here: the durability of a commit across a process crash (see [`crate::crash`]),
//! and poisoning after a failed commit (it needs fault injection specific to each engine).
//!
//! Each test takes a fresh, empty backend: `&dyn Backend`, or `Arc<dyn Backend>` when it spawns
//! tasks sharing it. [`crate::contract::run_backend_contract`] runs them all, each on its own
//! Tokio runtime of the flavour the test needs (see [`crate::contract::backend_contract_cases`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kv_traits::{Backend, BackendError, KvPair, ReadTxn};

use crate::harness::ReopenableBackend;

/// How long a test lets a transaction that must wait sit before checking it still waits.
const WAIT_PROBE: Duration = Duration::from_millis(100);
/// How long a test waits for something that must happen promptly: it only bounds a hang (a
/// waiter that never wakes), so a loaded machine cannot make it fail.
const PROMPTLY: Duration = Duration::from_secs(30);

fn kv(k: &[u8], v: &[u8]) -> KvPair {
    (k.to_vec(), v.to_vec())
}

async fn put_all(b: &dyn Backend, pairs: &[(&[u8], &[u8])]) {
    let mut w = b.begin_write().await.expect("begin_write");
    for (k, v) in pairs {
        w.put(k, v).await.expect("put");
    }
    w.commit().await.expect("commit");
}

/// `key` read from a new snapshot.
async fn read(b: &dyn Backend, key: &[u8]) -> Option<Vec<u8>> {
    b.begin_read()
        .await
        .expect("begin_read")
        .get(key)
        .await
        .expect("get")
}

async fn scan(
    txn: &mut (impl ReadTxn + ?Sized),
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Vec<KvPair> {
    txn.scan(start, end, limit, reverse)
        .await
        .unwrap_or_else(|e| panic!("scan {start:02x?}..{end:02x?} failed: {e}"))
}

/// Keys at the edges of the unsigned bytewise order, ascending: the empty key, `00` and `ff`
/// prefixes, the signed/unsigned boundary `7f`/`80`.
fn edge_keys() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x01],
        vec![0x01, 0xff],
        vec![0x02],
        vec![0x7f],
        vec![0x7f, 0xff],
        vec![0x80],
        vec![0xfe, 0xff],
        vec![0xfe, 0xff, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0xff],
    ]
}

/// An end above every edge key.
const EDGE_END: &[u8] = &[0xff; 8];

/// Stores the edge keys (value `v<i>`), inserted in reverse so insertion order cannot pass for
/// key order; returns the expected pairs ascending.
async fn load_edge_keys(b: &dyn Backend) -> Vec<KvPair> {
    let pairs: Vec<KvPair> = edge_keys()
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, format!("v{i}").into_bytes()))
        .collect();
    let mut w = b.begin_write().await.expect("begin_write");
    for (k, v) in pairs.iter().rev() {
        w.put(k, v).await.expect("put");
    }
    w.commit().await.expect("commit");
    pairs
}

fn reversed(pairs: &[KvPair]) -> Vec<KvPair> {
    pairs.iter().rev().cloned().collect()
}

/// A write transaction sees its own puts, overwrites and deletes (in `get` and `scan`);
/// deleting a missing key is fine; readers see none of it before the commit, and every new
/// snapshot sees all of it after, while older snapshots keep the old state.
pub async fn read_your_writes(b: &dyn Backend) {
    put_all(b, &[(b"a", b"1"), (b"b", b"2")]).await;

    let mut w = b.begin_write().await.expect("begin_write");
    assert_eq!(w.get(b"a").await.unwrap(), Some(b"1".to_vec()));
    w.put(b"a", b"10").await.unwrap();
    w.delete(b"b").await.unwrap();
    w.put(b"c", b"3").await.unwrap();
    w.delete(b"missing").await.unwrap();
    assert_eq!(w.get(b"a").await.unwrap(), Some(b"10".to_vec()));
    assert_eq!(w.get(b"b").await.unwrap(), None);
    assert_eq!(w.get(b"c").await.unwrap(), Some(b"3".to_vec()));
    let own = vec![kv(b"a", b"10"), kv(b"c", b"3")];
    assert_eq!(scan(&mut *w, b"", b"\xff", 10, false).await, own);
    assert_eq!(scan(&mut *w, b"", b"\xff", 10, true).await, reversed(&own));
    // Put then delete, and delete then put, inside one transaction.
    w.put(b"d", b"4").await.unwrap();
    w.delete(b"d").await.unwrap();
    assert_eq!(w.get(b"d").await.unwrap(), None);

    // A snapshot taken while the write is open does not see it; nor does a new one.
    let mut during = b.begin_read().await.expect("begin_read");
    assert_eq!(during.get(b"a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(read(b, b"c").await, None);
    assert_eq!(read(b, b"b").await, Some(b"2".to_vec()));
    w.commit().await.expect("commit");

    let mut after = b.begin_read().await.expect("begin_read");
    assert_eq!(scan(&mut *after, b"", b"\xff", 10, false).await, own);
    assert_eq!(after.get(b"d").await.unwrap(), None);
    assert_eq!(during.get(b"b").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(during.get(b"c").await.unwrap(), None);
}

/// A snapshot is the state at `begin_read`, whether it was used before a later commit or not:
/// later puts, overwrites and deletes are invisible to it, in `get` and `scan`.
pub async fn snapshot_is_taken_at_begin(b: &dyn Backend) {
    put_all(b, &[(b"k", b"1"), (b"other", b"x")]).await;

    // Begun but not used before the next commit.
    let mut fresh = b.begin_read().await.expect("begin_read");
    // Used once before the next commit.
    let mut used = b.begin_read().await.expect("begin_read");
    assert_eq!(used.get(b"k").await.unwrap(), Some(b"1".to_vec()));

    let mut w = b.begin_write().await.expect("begin_write");
    w.put(b"k", b"2").await.unwrap();
    w.put(b"new", b"n").await.unwrap();
    w.delete(b"other").await.unwrap();
    w.commit().await.expect("commit");

    let old = vec![kv(b"k", b"1"), kv(b"other", b"x")];
    for r in [&mut fresh, &mut used] {
        assert_eq!(r.get(b"k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(r.get(b"new").await.unwrap(), None);
        assert_eq!(r.get(b"other").await.unwrap(), Some(b"x".to_vec()));
        assert_eq!(scan(&mut **r, b"", b"\xff", 100, false).await, old);
        assert_eq!(
            scan(&mut **r, b"", b"\xff", 100, true).await,
            reversed(&old)
        );
    }
    drop((fresh, used));

    let mut after = b.begin_read().await.expect("begin_read");
    assert_eq!(after.get(b"k").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(after.get(b"new").await.unwrap(), Some(b"n".to_vec()));
    assert_eq!(after.get(b"other").await.unwrap(), None);
}

/// A snapshot reads the same 100 keys over and over while another task rewrites all of them
/// and commits, and after: it never sees a single new value.
pub async fn snapshot_holds_while_a_write_commits(b: Arc<dyn Backend>) {
    let keys: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
    {
        let mut w = b.begin_write().await.expect("begin_write");
        for k in &keys {
            w.put(k, b"old").await.unwrap();
        }
        w.commit().await.expect("commit");
    }
    let mut before = b.begin_read().await.expect("begin_read");

    let writer = {
        let b = b.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let mut w = b.begin_write().await.expect("begin_write");
            for k in &keys {
                w.put(k, b"new").await.unwrap();
            }
            w.put(b"\xffextra", b"x").await.unwrap();
            w.commit().await.expect("commit");
        })
    };
    for _ in 0..20 {
        let all = scan(&mut *before, b"", b"\xff\xff", 1000, false).await;
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|(_, v)| v == b"old"), "saw a new value");
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer task");
    let all = scan(&mut *before, b"", b"\xff\xff", 1000, false).await;
    assert!(all.iter().all(|(_, v)| v == b"old"), "saw a new value");
    assert_eq!(before.get(b"\xffextra").await.unwrap(), None);

    let mut after = b.begin_read().await.expect("begin_read");
    let all = scan(&mut *after, b"", b"\xff\xff", 1000, false).await;
    assert_eq!(all.len(), 101);
    assert!(all[..100].iter().all(|(_, v)| v == b"new"));
}

/// Ten snapshots open at once, each begun after a different commit, each see the value
/// committed just before they began.
pub async fn many_snapshots_each_keep_their_state(b: &dyn Backend) {
    put_all(b, &[(b"k", b"0")]).await;
    let mut snapshots = Vec::new();
    for i in 0..10u8 {
        snapshots.push(b.begin_read().await.expect("begin_read"));
        put_all(b, &[(b"k", &[b'0' + i + 1])]).await;
    }
    for (i, r) in snapshots.iter_mut().enumerate() {
        assert_eq!(r.get(b"k").await.unwrap(), Some(vec![b'0' + i as u8]));
    }
    drop(snapshots);
    for _ in 0..5 {
        assert_eq!(read(b, b"k").await, Some(b":".to_vec()));
    }
}

/// `begin_read` and reads do not wait for an open write transaction (with 1000 pending puts),
/// and do not see it.
pub async fn reads_do_not_wait_for_the_writer(b: &dyn Backend) {
    put_all(b, &[(b"k", b"v")]).await;
    let mut w = b.begin_write().await.expect("begin_write");
    for i in 0..1000u32 {
        w.put(&i.to_be_bytes(), b"pending").await.unwrap();
    }
    let got = tokio::time::timeout(PROMPTLY, read(b, b"k"))
        .await
        .expect("a read must not wait for the open write transaction");
    assert_eq!(got, Some(b"v".to_vec()));
    assert_eq!(read(b, &7u32.to_be_bytes()).await, None);
    w.commit().await.expect("commit");
    assert_eq!(
        read(b, &7u32.to_be_bytes()).await,
        Some(b"pending".to_vec())
    );
}

/// Dropping a write transaction discards its puts and deletes, and frees the writer: the next
/// `begin_write` returns promptly and does not see the discarded writes.
pub async fn drop_rolls_back_and_frees_the_writer(b: &dyn Backend) {
    put_all(b, &[(b"keep", b"1"), (b"also", b"2")]).await;
    {
        let mut w = b.begin_write().await.expect("begin_write");
        w.put(b"keep", b"changed").await.unwrap();
        w.put(b"lost", b"x").await.unwrap();
        w.delete(b"also").await.unwrap();
    }
    assert_eq!(read(b, b"keep").await, Some(b"1".to_vec()));
    assert_eq!(read(b, b"lost").await, None);
    assert_eq!(read(b, b"also").await, Some(b"2".to_vec()));

    let mut w = tokio::time::timeout(PROMPTLY, b.begin_write())
        .await
        .expect("begin_write after a dropped transaction must not hang")
        .expect("begin_write");
    assert_eq!(w.get(b"lost").await.unwrap(), None);
    assert_eq!(w.get(b"keep").await.unwrap(), Some(b"1".to_vec()));
    w.put(b"next", b"2").await.unwrap();
    w.commit().await.expect("commit");
    assert_eq!(read(b, b"next").await, Some(b"2".to_vec()));
    assert_eq!(read(b, b"lost").await, None);
}

/// Scans order keys unsigned bytewise (the empty key first, `7f` before `80`, a key before its
/// extensions, `ff...` last), both directions, in read and write transactions; prefix ranges
/// inside the `00` and `ff` prefixes; `get` finds the edge keys.
pub async fn scan_is_bytewise_unsigned(b: &dyn Backend) {
    let pairs = load_edge_keys(b).await;
    let n = pairs.len();
    let mut r = b.begin_read().await.expect("begin_read");
    let mut w = b.begin_write().await.expect("begin_write");
    for txn in [&mut *r, &mut *w as &mut dyn ReadTxn] {
        assert_eq!(scan(txn, b"", EDGE_END, 100, false).await, pairs);
        assert_eq!(scan(txn, b"", EDGE_END, 100, true).await, reversed(&pairs));
        // Inside the 00 prefix: [00] <= k < [01].
        assert_eq!(scan(txn, &[0x00], &[0x01], 100, false).await, pairs[1..3]);
        // Inside the ff prefix: [ff] <= k < [ff, 01], and the whole ff tail.
        assert_eq!(
            scan(txn, &[0xff], &[0xff, 0x01], 100, false).await,
            pairs[n - 4..n - 2]
        );
        assert_eq!(
            scan(txn, &[0xff], &[0xff, 0x01], 100, true).await,
            reversed(&pairs[n - 4..n - 2])
        );
        assert_eq!(
            scan(txn, &[0xff], EDGE_END, 100, false).await,
            pairs[n - 4..]
        );
        // The empty key is the smallest key: [] <= k < [00] is just it.
        assert_eq!(scan(txn, &[], &[0x00], 100, false).await, pairs[..1]);
        for (k, v) in &pairs {
            assert_eq!(txn.get(k).await.unwrap().as_ref(), Some(v), "get {k:02x?}");
        }
    }
}

/// `start` is inclusive and `end` exclusive; `limit` takes the first keys of the scan's
/// direction (`0` returns nothing, `usize::MAX` everything); in read and write transactions.
pub async fn scan_limits_reverse_and_bounds(b: &dyn Backend) {
    let pairs = load_edge_keys(b).await;
    let n = pairs.len();
    let mut r = b.begin_read().await.expect("begin_read");
    let mut w = b.begin_write().await.expect("begin_write");
    for txn in [&mut *r, &mut *w as &mut dyn ReadTxn] {
        assert_eq!(scan(txn, b"", EDGE_END, 0, false).await, vec![]);
        assert_eq!(scan(txn, b"", EDGE_END, 0, true).await, vec![]);
        assert_eq!(scan(txn, b"", EDGE_END, 1, false).await, pairs[..1]);
        assert_eq!(scan(txn, b"", EDGE_END, 1, true).await, pairs[n - 1..]);
        assert_eq!(scan(txn, b"", EDGE_END, 3, false).await, pairs[..3]);
        assert_eq!(
            scan(txn, b"", EDGE_END, 3, true).await,
            reversed(&pairs[n - 3..])
        );
        assert_eq!(scan(txn, b"", EDGE_END, n, false).await, pairs);
        assert_eq!(scan(txn, b"", EDGE_END, usize::MAX, false).await, pairs);
        assert_eq!(
            scan(txn, b"", EDGE_END, usize::MAX, true).await,
            reversed(&pairs)
        );
        // start inclusive, end exclusive: [01] <= k < [7f] is keys 3..6.
        assert_eq!(scan(txn, &[0x01], &[0x7f], 100, false).await, pairs[3..6]);
        assert_eq!(
            scan(txn, &[0x01], &[0x7f], 100, true).await,
            reversed(&pairs[3..6])
        );
        // A limit inside a bounded range, both directions.
        assert_eq!(scan(txn, &[0x01], &[0x80], 2, false).await, pairs[3..5]);
        assert_eq!(
            scan(txn, &[0x01], &[0x80], 2, true).await,
            reversed(&pairs[6..8])
        );
        // An end equal to a stored key excludes it; a start equal to one includes it.
        assert_eq!(
            scan(txn, &[0x02], &[0x7f, 0xff], 100, false).await,
            pairs[5..7]
        );
    }
}

/// `start == end`, `start > end`, and ranges with no key in them are empty, in both directions,
/// in read and write transactions; `get` of an absent key is `None`.
pub async fn empty_and_inverted_ranges(b: &dyn Backend) {
    let pairs = load_edge_keys(b).await;
    let mut r = b.begin_read().await.expect("begin_read");
    let mut w = b.begin_write().await.expect("begin_write");
    for txn in [&mut *r, &mut *w as &mut dyn ReadTxn] {
        for reverse in [false, true] {
            for (start, end) in [
                (&[0x01][..], &[0x01][..]),
                (&[][..], &[][..]),
                (&[0x80][..], &[0x01][..]),
                (&[0xff][..], &[0x00][..]),
                (&[0xff, 0xff, 0xff][..], &[][..]),
                // Non-empty intervals with no key in them.
                (&[0x03][..], &[0x7f][..]),
                (&[0xff, 0xff, 0xff, 0x00][..], EDGE_END),
                (b"a", b"b"),
            ] {
                assert_eq!(
                    scan(txn, start, end, 100, reverse).await,
                    vec![],
                    "{start:02x?}..{end:02x?} reverse {reverse}"
                );
            }
        }
        assert_eq!(txn.get(&[0x03]).await.unwrap(), None);
        assert_eq!(txn.get(&[0xff, 0xff, 0xff, 0xff]).await.unwrap(), None);
    }
    assert_eq!(pairs.len(), edge_keys().len());
}

/// An 8 MiB value, a 64 KiB value, an empty value (present, not absent) and a 2 KiB key
/// round-trip through the write transaction, a snapshot and a scan.
pub async fn large_and_empty_values(b: &dyn Backend) {
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let medium = vec![0xabu8; 65_536];
    let long_key = vec![0x5au8; 2048];
    let mut w = b.begin_write().await.expect("begin_write");
    w.put(b"big", &big).await.unwrap();
    w.put(b"medium", &medium).await.unwrap();
    w.put(b"empty", b"").await.unwrap();
    w.put(&long_key, b"long").await.unwrap();
    assert_eq!(w.get(b"big").await.unwrap().as_deref(), Some(&big[..]));
    assert_eq!(w.get(b"empty").await.unwrap(), Some(vec![]));
    w.commit().await.expect("commit");

    let mut r = b.begin_read().await.expect("begin_read");
    assert_eq!(r.get(b"big").await.unwrap().as_deref(), Some(&big[..]));
    assert_eq!(r.get(b"medium").await.unwrap(), Some(medium.clone()));
    assert_eq!(r.get(b"empty").await.unwrap(), Some(vec![]));
    assert_eq!(r.get(&long_key).await.unwrap(), Some(b"long".to_vec()));
    let scanned = scan(&mut *r, b"a", b"n", 10, false).await;
    let names: Vec<&[u8]> = scanned.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(names, vec![&b"big"[..], b"empty", b"medium"]);
    assert_eq!(scanned[0].1, big);
    assert_eq!(scanned[1].1, Vec::<u8>::new());
    assert_eq!(scanned[2].1, medium);
    assert_eq!(
        scan(&mut *r, &long_key, &[0x5b], 10, false).await,
        vec![kv(&long_key, b"long")]
    );
}

/// A tiny deterministic PRNG (xorshift), so the randomized test is reproducible.
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

    /// Short keys over a small alphabet including `00` and `ff`, so ranges collide often.
    fn key(&mut self) -> Vec<u8> {
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

/// 40 rounds of random puts, deletes and scans in a write transaction (checked against a
/// `BTreeMap` of the pending state), committed or dropped, then random scans and gets of a new
/// snapshot (checked against the committed state).
pub async fn random_operations_match_a_model(b: &dyn Backend) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for round in 0..40 {
        let mut w = b.begin_write().await.expect("begin_write");
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
                        scan(&mut *w, &s, &e, limit, reverse).await,
                        model_scan(&pending, &s, &e, limit, reverse),
                        "round {round}: write-txn scan {s:02x?}..{e:02x?} limit {limit} \
                         reverse {reverse}"
                    );
                }
            }
        }
        if round % 3 != 2 {
            w.commit().await.expect("commit");
            committed = pending;
        } else {
            drop(w);
        }
        let mut r = b.begin_read().await.expect("begin_read");
        for _ in 0..10 {
            let (s, e) = (rng.key(), rng.key());
            let limit = rng.below(8) as usize;
            let reverse = rng.below(2) == 1;
            assert_eq!(
                scan(&mut *r, &s, &e, limit, reverse).await,
                model_scan(&committed, &s, &e, limit, reverse),
                "round {round}: snapshot scan {s:02x?}..{e:02x?} limit {limit} reverse {reverse}"
            );
            let k = rng.key();
            assert_eq!(r.get(&k).await.unwrap(), committed.get(&k).cloned());
        }
    }
    let end = [0xff; 4];
    let mut r = b.begin_read().await.expect("begin_read");
    let everything = scan(&mut *r, &[], &end, usize::MAX, false).await;
    assert_eq!(
        everything,
        model_scan(&committed, &[], &end, usize::MAX, false)
    );
    assert!(!everything.is_empty());
}

/// While a write transaction is open, a second `begin_write` waits (the runtime keeps running
/// other tasks: the runner gives this test a single-threaded runtime, where a blocking wait
/// would stall it); reads meanwhile see neither. After the first commits, the second starts,
/// sees the first's write, and its own commit wins.
pub async fn begin_write_waits_for_the_open_write(b: Arc<dyn Backend>) {
    let mut first = b.begin_write().await.expect("begin_write");
    first.put(b"n", b"1").await.unwrap();

    let second = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut w = b.begin_write().await.expect("second begin_write");
            let seen = w.get(b"n").await.unwrap();
            w.put(b"n", b"2").await.unwrap();
            w.commit().await.expect("second commit");
            seen
        })
    };
    tokio::time::sleep(WAIT_PROBE).await;
    assert!(
        !second.is_finished(),
        "the second writer must wait for the first"
    );
    assert_eq!(read(&*b, b"n").await, None);

    first.commit().await.expect("commit");
    let seen = tokio::time::timeout(PROMPTLY, second)
        .await
        .expect("the second writer must start once the first committed")
        .expect("second writer task");
    assert_eq!(seen, Some(b"1".to_vec()));
    assert_eq!(read(&*b, b"n").await, Some(b"2".to_vec()));
}

/// 16 tasks × 10 read-modify-write transactions on one counter (each also adding its own key)
/// lose no update: the writers are serialised.
pub async fn concurrent_writers_lose_no_update(b: Arc<dyn Backend>) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 10;
    put_all(&*b, &[(b"counter", &0u64.to_be_bytes())]).await;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let b = b.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let mut w = b.begin_write().await.expect("begin_write");
                let cur = w.get(b"counter").await.unwrap().expect("counter");
                let n = u64::from_be_bytes(cur.try_into().expect("8 bytes")) + 1;
                w.put(b"counter", &n.to_be_bytes()).await.unwrap();
                w.put(format!("t{t:02}-{i:02}").as_bytes(), b"")
                    .await
                    .unwrap();
                w.commit().await.expect("commit");
            }
        }));
    }
    for h in handles {
        h.await.expect("writer task");
    }
    assert_eq!(
        read(&*b, b"counter").await,
        Some(((TASKS * PER_TASK) as u64).to_be_bytes().to_vec())
    );
    let mut r = b.begin_read().await.expect("begin_read");
    assert_eq!(
        scan(&mut *r, b"t", b"u", 1000, false).await.len(),
        TASKS * PER_TASK
    );
}

/// After `close`, `begin_read` and `begin_write` fail with `Closed`; closing again is harmless;
/// a snapshot from before the close either still reads its data or reports `Closed`, never
/// anything else.
pub async fn close_refuses_later_calls(b: &dyn Backend) {
    put_all(b, &[(b"a", b"1")]).await;
    let mut early = b.begin_read().await.expect("begin_read");
    b.close().await.expect("close");
    assert_eq!(b.begin_read().await.err(), Some(BackendError::Closed));
    assert_eq!(b.begin_write().await.err(), Some(BackendError::Closed));
    b.close().await.expect("closing twice");
    match early.get(b"a").await {
        Ok(v) => assert_eq!(v, Some(b"1".to_vec())),
        Err(e) => assert_eq!(e, BackendError::Closed),
    }
    assert_eq!(b.begin_write().await.err(), Some(BackendError::Closed));
}

/// A write transaction open while another task closes the backend either commits (and `close`
/// then succeeds) or fails with `Closed`; afterwards every `begin_write` fails with `Closed`.
pub async fn close_during_an_open_write(b: Arc<dyn Backend>) {
    let mut w = b.begin_write().await.expect("begin_write");
    w.put(b"a", b"1").await.unwrap();
    let closer = {
        let b = b.clone();
        tokio::spawn(async move { b.close().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    match w.commit().await {
        Ok(()) | Err(BackendError::Closed) => {}
        Err(e) => panic!("commit during close failed with {e:?}, not Closed"),
    }
    tokio::time::timeout(PROMPTLY, closer)
        .await
        .expect("close must finish once the write is done")
        .expect("closer task")
        .expect("close");
    assert_eq!(b.begin_write().await.err(), Some(BackendError::Closed));
    assert_eq!(b.begin_read().await.err(), Some(BackendError::Closed));
}

/// Optional (engines that promise it): `close` waits for the open write transaction, which then
/// commits normally and is there after a reopen.
pub async fn close_waits_for_the_open_write(store: &dyn ReopenableBackend) {
    let b = open(store).await;
    let mut w = b.begin_write().await.expect("begin_write");
    w.put(b"k", b"v").await.unwrap();
    let closer = {
        let b = b.clone();
        tokio::spawn(async move { b.close().await })
    };
    tokio::time::sleep(WAIT_PROBE).await;
    assert!(
        !closer.is_finished(),
        "close must wait for the open write transaction"
    );
    w.commit().await.expect("commit during close");
    tokio::time::timeout(PROMPTLY, closer)
        .await
        .expect("close must finish once the write committed")
        .expect("closer task")
        .expect("close");
    assert_eq!(b.begin_write().await.err(), Some(BackendError::Closed));
    drop(b);
    let b = open(store).await;
    assert_eq!(read(&*b, b"k").await, Some(b"v".to_vec()));
    b.close().await.expect("close");
}

async fn open(store: &dyn ReopenableBackend) -> Arc<dyn Backend> {
    store
        .open()
        .await
        .unwrap_or_else(|e| panic!("opening the store failed: {e}"))
}

/// Committed puts and deletes (100 single-key commits, then a delete, an overwrite, edge keys)
/// survive `close` and a reopen; a rolled-back write does not reappear; the reopened store
/// takes new writes.
pub async fn committed_data_survives_reopen(store: &dyn ReopenableBackend) {
    {
        let b = open(store).await;
        for i in 0..100u32 {
            put_all(&*b, &[(&i.to_be_bytes(), &i.to_le_bytes())]).await;
        }
        put_all(&*b, &[(b"", b"empty key"), (b"\xff\xff", b"ff")]).await;
        let mut w = b.begin_write().await.expect("begin_write");
        w.delete(&50u32.to_be_bytes()).await.unwrap();
        w.put(&7u32.to_be_bytes(), b"seven").await.unwrap();
        w.commit().await.expect("commit");
        let mut w = b.begin_write().await.expect("begin_write");
        w.put(b"rolled-back", b"x").await.unwrap();
        w.delete(&8u32.to_be_bytes()).await.unwrap();
        drop(w);
        b.close().await.expect("close");
    }
    let mut expected = vec![kv(b"", b"empty key")];
    for i in (0..100u32).filter(|i| *i != 50) {
        let value = if i == 7 {
            b"seven".to_vec()
        } else {
            i.to_le_bytes().to_vec()
        };
        expected.push((i.to_be_bytes().to_vec(), value));
    }
    expected.push(kv(b"\xff\xff", b"ff"));

    let b = open(store).await;
    assert_eq!(
        read(&*b, &7u32.to_be_bytes()).await,
        Some(b"seven".to_vec())
    );
    assert_eq!(read(&*b, &50u32.to_be_bytes()).await, None);
    assert_eq!(read(&*b, b"rolled-back").await, None);
    let mut r = b.begin_read().await.expect("begin_read");
    let end = [0xff, 0xff, 0xff];
    assert_eq!(scan(&mut *r, &[], &end, usize::MAX, false).await, expected);
    assert_eq!(
        scan(&mut *r, &[], &end, usize::MAX, true).await,
        reversed(&expected)
    );
    drop(r);
    put_all(&*b, &[(b"after", b"reopen")]).await;
    assert_eq!(read(&*b, b"after").await, Some(b"reopen".to_vec()));
    b.close().await.expect("close");
}

/// Committed data survives dropping the backend without `close`; a write transaction still
/// open at the drop is lost.
pub async fn data_survives_drop_without_close(store: &dyn ReopenableBackend) {
    {
        let b = open(store).await;
        put_all(&*b, &[(b"k", b"v")]).await;
        let mut w = b.begin_write().await.expect("begin_write");
        w.put(b"uncommitted", b"x").await.unwrap();
        drop(w);
        drop(b);
    }
    let b = open(store).await;
    assert_eq!(read(&*b, b"k").await, Some(b"v".to_vec()));
    assert_eq!(read(&*b, b"uncommitted").await, None);
    b.close().await.expect("close");
}
