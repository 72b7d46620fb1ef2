//! Snapshot reads: range bounds, limits, order, several ranges per read.

use kv_traits::{Database, KvEntry, KvValue, Mutation, ReadRange};

use crate::util::*;

fn keys(entries: &[KvEntry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.key.clone()).collect()
}

/// Writes `n` keys `key("item", i)` (i zero-padded) in one write; returns them ascending.
async fn fill(db: &dyn Database, n: usize) -> Vec<Vec<u8>> {
    let ks: Vec<Vec<u8>> = (0..n).map(|i| key2("item", &format!("{i:04}"))).collect();
    let muts = ks
        .iter()
        .enumerate()
        .map(|(i, k)| Mutation::set(k.clone(), KvValue::U64(i as u64)))
        .collect();
    commit(db, write_of(muts)).await;
    ks
}

/// An empty database returns one empty output per range.
pub async fn empty_database_reads_nothing(db: &dyn Database) {
    let out = read(
        db,
        vec![
            range(b"", &keyspace_end(), 10, false),
            ReadRange::single(&key("a")),
        ],
    )
    .await;
    assert_eq!(out, vec![vec![], vec![]]);
}

/// Each range returns exactly `min(limit, matches)` entries, the first ones in order.
pub async fn exact_min_of_limit_and_matches(db: &dyn Database) {
    let ks = fill(db, 25).await;
    let p = key("item");
    for limit in [1u32, 2, 7, 24, 25, 26, 100, 1000] {
        let got = read1(db, ReadRange::prefix(&p, limit)).await;
        let want = (limit as usize).min(ks.len());
        assert_eq!(got.len(), want, "limit {limit} over {} keys", ks.len());
        assert_eq!(
            keys(&got),
            ks[..want].to_vec(),
            "limit {limit}: wrong keys or order"
        );
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.value, KvValue::U64(i as u64));
        }
        let rev = read1(
            db,
            ReadRange {
                reverse: true,
                ..ReadRange::prefix(&p, limit)
            },
        )
        .await;
        let want_rev: Vec<Vec<u8>> = ks.iter().rev().take(want).cloned().collect();
        assert_eq!(keys(&rev), want_rev, "reverse, limit {limit}");
    }
}

/// `end` is exclusive, `start` inclusive.
pub async fn end_is_exclusive(db: &dyn Database) {
    let ks = fill(db, 10).await;
    let got = read1(db, range(&ks[2], &ks[5], 100, false)).await;
    assert_eq!(keys(&got), ks[2..5].to_vec());
    let got = read1(db, range(&ks[2], &ks[5], 100, true)).await;
    assert_eq!(
        keys(&got),
        ks[2..5].iter().rev().cloned().collect::<Vec<_>>()
    );
    let got = read1(db, range(&ks[2], &ks[3], 100, false)).await;
    assert_eq!(keys(&got), vec![ks[2].clone()]);
}

/// `reverse` returns the highest keys first, and the limit cuts from the top.
pub async fn reverse_returns_highest_first(db: &dyn Database) {
    let ks = fill(db, 10).await;
    let got = read1(db, range(&ks[0], &keyspace_end(), 3, true)).await;
    assert_eq!(
        keys(&got),
        vec![ks[9].clone(), ks[8].clone(), ks[7].clone()]
    );
}

/// A range whose start is not below its end is empty, even when keys sit at its bounds.
pub async fn start_not_below_end_is_empty(db: &dyn Database) {
    let ks = fill(db, 5).await;
    for (s, e) in [(&ks[3], &ks[3]), (&ks[3], &ks[1]), (&ks[4], &ks[0])] {
        for reverse in [false, true] {
            let got = read1(db, range(s, e, 10, reverse)).await;
            assert!(
                got.is_empty(),
                "range [{s:?}, {e:?}) reverse={reverse} returned {got:?}"
            );
        }
    }
}

/// Ordering is unsigned bytewise, including keys with 00 and ff bytes and prefixes of each other.
pub async fn bytewise_order_with_00_and_ff(db: &dyn Database) {
    let mut ks: Vec<Vec<u8>> = vec![
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xff],
        vec![0x01],
        vec![0x01, 0x00],
        vec![0x01, 0x00, 0x00],
        vec![0x01, 0x01],
        vec![0x7f, 0xff],
        vec![0x80],
        vec![0xfe, 0xff, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0xff, 0xff],
    ];
    let muts = ks
        .iter()
        .rev()
        .map(|k| Mutation::set(k.clone(), bytes(k)))
        .collect();
    commit(db, write_of(muts)).await;
    ks.sort();
    let all = read1(db, range(b"", &keyspace_end(), 100, false)).await;
    assert_eq!(keys(&all), ks);
    for e in &all {
        assert_eq!(e.value, bytes(&e.key), "value of {:?}", e.key);
    }
    // [01, 01 00) holds exactly 01.
    let got = read1(db, range(&[0x01], &[0x01, 0x00], 10, false)).await;
    assert_eq!(keys(&got), vec![vec![0x01]]);
    // [01 00, 01 ff) holds 01 00, 01 00 00, 01 01.
    let got = read1(db, range(&[0x01, 0x00], &[0x01, 0xff], 10, false)).await;
    assert_eq!(
        keys(&got),
        vec![vec![0x01, 0x00], vec![0x01, 0x00, 0x00], vec![0x01, 0x01]]
    );
    // [ff, ff ff) holds ff and ff 00.
    let got = read1(db, range(&[0xff], &[0xff, 0xff], 10, true)).await;
    assert_eq!(keys(&got), vec![vec![0xff, 0x00], vec![0xff]]);
    // Starting at the empty key includes 00.
    let got = read1(db, range(b"", &[0x00, 0x00], 10, false)).await;
    assert_eq!(keys(&got), vec![vec![0x00]]);
}

/// Several ranges in one read return one output each, in request order, each honouring its own
/// limit and direction; overlapping ranges are fine.
pub async fn several_ranges_one_output_each_in_order(db: &dyn Database) {
    let ks = fill(db, 20).await;
    let out = read(
        db,
        vec![
            range(&ks[10], &ks[15], 2, false),
            range(&ks[0], &ks[20 - 1], 3, true),
            ReadRange::single(&ks[7]),
            ReadRange::single(&key("missing")),
            range(&ks[0], &keyspace_end(), 1000 - 7, false),
        ],
    )
    .await;
    assert_eq!(keys(&out[0]), vec![ks[10].clone(), ks[11].clone()]);
    assert_eq!(
        keys(&out[1]),
        vec![ks[18].clone(), ks[17].clone(), ks[16].clone()]
    );
    assert_eq!(keys(&out[2]), vec![ks[7].clone()]);
    assert!(out[3].is_empty());
    assert_eq!(keys(&out[4]), ks);
}

/// All ranges of a read see the same snapshot: every entry of one read carries a versionstamp
/// from the same set of commits, and a concurrent writer cannot split a read.
pub async fn ranges_share_one_snapshot(db: &dyn Database) {
    let a = key("snap_a");
    let b = key("snap_b");
    for round in 0..30u64 {
        // Both keys are always written together, so a consistent read sees equal values.
        let w = write_of(vec![
            Mutation::set(a.clone(), KvValue::U64(round)),
            Mutation::set(b.clone(), KvValue::U64(round)),
        ]);
        let write = db.atomic_write(w);
        let reads = read(db, vec![ReadRange::single(&a), ReadRange::single(&b)]);
        let (w, out) = futures::join!(write, reads);
        w.unwrap_or_else(|e| panic!("write failed: {e}"));
        if out[0].is_empty() || out[1].is_empty() {
            assert!(out[0].is_empty() && out[1].is_empty(), "torn read: {out:?}");
            continue;
        }
        assert_eq!(
            out[0][0].value, out[1][0].value,
            "torn read across ranges: {out:?}"
        );
        assert_eq!(
            out[0][0].versionstamp, out[1][0].versionstamp,
            "torn read across ranges: {out:?}"
        );
    }
}

/// The ranges Deno and npm send for `get` and `list({prefix})` behave as the clients expect.
pub async fn single_key_and_prefix_ranges(db: &dyn Database) {
    let p = key("users");
    let child1 = key2("users", "alice");
    let child2 = key2("users", "bob");
    let other = key("usersx");
    for k in [&p, &child1, &child2, &other] {
        set(db, k, bytes(k)).await;
    }
    assert_eq!(get(db, &p).await.map(|e| e.key), Some(p.clone()));
    // Deno list({prefix}) excludes the prefix key itself.
    assert_eq!(
        keys(&read1(db, ReadRange::prefix(&p, 10)).await),
        vec![child1.clone(), child2.clone()]
    );
    // npm get: [k, ff) limit 1 returns k first.
    let got = read1(db, range(&child1, &[0xff], 1, false)).await;
    assert_eq!(keys(&got), vec![child1.clone()]);
    // npm list: [P, P‖ff) includes the prefix key.
    let mut end = p.clone();
    end.push(0xff);
    assert_eq!(
        keys(&read1(db, range(&p, &end, 10, false)).await),
        vec![p.clone(), child1, child2]
    );
}

/// Values of every encoding come back as written, with the write's versionstamp.
pub async fn values_of_every_encoding_round_trip(db: &dyn Database) {
    let cases = [
        (
            key("v8"),
            KvValue::V8(vec![0xff, 0x0f, 0x22, 0x02, b'h', b'i']),
        ),
        (key("bytes"), KvValue::Bytes(vec![0, 1, 2, 0xff])),
        (key("empty"), KvValue::Bytes(vec![])),
        (key("u64max"), KvValue::U64(u64::MAX)),
        (key("u64zero"), KvValue::U64(0)),
        (key("big"), KvValue::Bytes(vec![0xab; 65536])),
    ];
    for (k, v) in &cases {
        let vs = set(db, k, v.clone()).await;
        let e = get(db, k)
            .await
            .unwrap_or_else(|| panic!("{k:?} missing after set"));
        assert_eq!(&e.value, v);
        assert_eq!(
            e.versionstamp, vs,
            "entry must carry the versionstamp of the write that set it"
        );
    }
}

/// A range with more than 1000 matches pages correctly: full pages of exactly the limit, then
/// the rest, in both directions.
pub async fn large_range_pages(db: &dyn Database) {
    let ks: Vec<Vec<u8>> = (0..1500).map(|i| key2("big", &format!("{i:05}"))).collect();
    for chunk in ks.chunks(750) {
        commit(
            db,
            write_of(
                chunk
                    .iter()
                    .map(|k| Mutation::set(k.clone(), bytes(&k[..])))
                    .collect(),
            ),
        )
        .await;
    }
    let p = key("big");
    let page1 = read1(db, ReadRange::prefix(&p, 1000)).await;
    assert_eq!(keys(&page1), ks[..1000].to_vec());
    let mut start = page1.last().expect("full page").key.clone();
    start.push(0);
    let page2 = read1(
        db,
        range(&start, &ReadRange::prefix(&p, 1).end, 1000, false),
    )
    .await;
    assert_eq!(keys(&page2), ks[1000..].to_vec());
    let rev1 = read1(
        db,
        ReadRange {
            reverse: true,
            ..ReadRange::prefix(&p, 1000)
        },
    )
    .await;
    assert_eq!(
        keys(&rev1),
        ks[500..].iter().rev().cloned().collect::<Vec<_>>()
    );
    let end = rev1.last().expect("full page").key.clone();
    let rev2 = read1(db, range(&ReadRange::prefix(&p, 1).start, &end, 1000, true)).await;
    assert_eq!(
        keys(&rev2),
        ks[..500].iter().rev().cloned().collect::<Vec<_>>()
    );
}

/// An `Eventual` read returns what a `Strong` read returns (a single node has no replicas).
pub async fn eventual_consistency_reads_the_same(db: &dyn Database) {
    let ks = fill(db, 5).await;
    let r = vec![
        ReadRange::prefix(&key("item"), 10),
        ReadRange::single(&ks[2]),
    ];
    let strong = db
        .snapshot_read(r.clone(), kv_traits::Consistency::Strong)
        .await
        .expect("strong read");
    let eventual = db
        .snapshot_read(r, kv_traits::Consistency::Eventual)
        .await
        .expect("eventual read");
    assert_eq!(strong, eventual);
}
