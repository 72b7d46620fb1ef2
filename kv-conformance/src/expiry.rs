//! Expiry: expired entries are hidden from reads and checks at once, and the maintenance sweep
//! deletes them (with its own commit) and notifies watchers.
//!
//! The first tests only need a [`Database`] (they use expiry times long past or far in the
//! future); the others take a [`ClockedDb`].

use std::time::Duration;

use futures::StreamExt;
use kv_traits::{AtomicWrite, CommitResult, Database, KvValue, Mutation, WatchKeyOutput};

use crate::harness::ClockedDb;
use crate::util::*;

/// A key whose expiry has passed is never returned, by point or range reads in either direction.
pub async fn past_expiry_is_hidden_from_reads(db: &dyn Database) {
    let (a, b, c) = (key("a"), key("b"), key("c"));
    commit(
        db,
        write_of(vec![
            Mutation::set(a.clone(), bytes(b"a")),
            set_expiring(&b, bytes(b"b"), LONG_AGO_MS),
            Mutation::set(c.clone(), bytes(b"c")),
        ]),
    )
    .await;
    assert_eq!(get(db, &b).await, None);
    let fwd = read1(db, range(&a, &keyspace_end(), 10, false)).await;
    assert_eq!(
        fwd.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![a.clone(), c.clone()]
    );
    let rev = read1(db, range(&a, &keyspace_end(), 10, true)).await;
    assert_eq!(
        rev.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![c, a]
    );
}

/// A read whose limit would be reached by counting expired keys still returns `limit` live
/// entries when they exist.
pub async fn limit_counts_only_live_entries(db: &dyn Database) {
    let mut muts = Vec::new();
    let mut live = Vec::new();
    for i in 0..60 {
        let k = key2("k", &format!("{i:03}"));
        // 0..40 expired, then alternate.
        if i < 40 || i % 2 == 0 {
            muts.push(set_expiring(&k, KvValue::U64(i), LONG_AGO_MS));
        } else {
            muts.push(Mutation::set(k.clone(), KvValue::U64(i)));
            live.push(k);
        }
    }
    commit(db, write_of(muts)).await;
    let p = key("k");
    for limit in [1u32, 5, 10, 11] {
        let got = read1(db, kv_traits::ReadRange::prefix(&p, limit)).await;
        let want: Vec<Vec<u8>> = live.iter().take(limit as usize).cloned().collect();
        assert_eq!(
            got.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            want,
            "forward, limit {limit}"
        );
        let got = read1(
            db,
            kv_traits::ReadRange {
                reverse: true,
                ..kv_traits::ReadRange::prefix(&p, limit)
            },
        )
        .await;
        let want: Vec<Vec<u8>> = live.iter().rev().take(limit as usize).cloned().collect();
        assert_eq!(
            got.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            want,
            "reverse, limit {limit}"
        );
    }
}

/// An expired-but-unswept key counts as absent for checks, as for reads.
pub async fn expired_key_is_absent_for_checks(db: &dyn Database) {
    let k = key("a");
    let vs = commit(
        db,
        write_of(vec![set_expiring(&k, bytes(b"old"), LONG_AGO_MS)]),
    )
    .await;
    let r = try_write(
        db,
        AtomicWrite {
            checks: vec![check_vs(&k, vs)],
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(r, Ok(CommitResult::CheckFailed(_))),
        "a check with an expired key's versionstamp must fail: {r:?}"
    );
    commit(
        db,
        AtomicWrite {
            checks: vec![check_absent(&k)],
            mutations: vec![Mutation::set(k.clone(), bytes(b"new"))],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(bytes(b"new")));
}

/// A key whose expiry is in the future is returned normally.
pub async fn future_expiry_is_visible(db: &dyn Database) {
    let k = key("a");
    let vs = commit(
        db,
        write_of(vec![set_expiring(&k, bytes(b"v"), FAR_FUTURE_MS)]),
    )
    .await;
    let e = get(db, &k).await.expect("not yet expired");
    assert_eq!((e.value, e.versionstamp), (bytes(b"v"), vs));
    commit(
        db,
        AtomicWrite {
            checks: vec![check_vs(&k, vs)],
            ..Default::default()
        },
    )
    .await;
}

/// A key is visible until its expiry time and hidden from then on (`expire_at <= now`), before
/// any sweep runs.
pub async fn hidden_once_time_passes(h: &ClockedDb) {
    let db = h.database();
    let k = key("a");
    let at = h.now() + 1000;
    let vs = commit(db, write_of(vec![set_expiring(&k, bytes(b"v"), at)])).await;
    h.advance(999);
    assert_eq!(
        get(db, &k).await.map(|e| e.versionstamp),
        Some(vs),
        "visible 1 ms before expiry"
    );
    h.advance(1);
    assert_eq!(get(db, &k).await, None, "hidden at the expiry time");
    commit(
        db,
        AtomicWrite {
            checks: vec![check_absent(&k)],
            ..Default::default()
        },
    )
    .await;
}

/// `run_maintenance` deletes exactly the keys whose time has come and reports how many.
pub async fn maintenance_deletes_with_new_versionstamp(h: &ClockedDb) {
    let db = h.database();
    let now = h.now();
    let v0 = commit(
        db,
        write_of(vec![
            set_expiring(&key("a"), bytes(b"a"), now + 100),
            set_expiring(&key("b"), bytes(b"b"), now + 200),
            Mutation::set(key("c"), bytes(b"c")),
        ]),
    )
    .await;
    assert_eq!(h.maintain().await, 0, "nothing has expired yet");
    h.advance(150);
    assert_eq!(h.maintain().await, 1);
    assert_eq!(h.maintain().await, 0, "a second sweep finds nothing");
    h.advance(50);
    assert_eq!(h.maintain().await, 1);
    let all = scan_all(db).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (&all[0].key, all[0].versionstamp),
        (&key("c"), v0),
        "live keys keep their versionstamp"
    );
    let v1 = set(db, &key("d"), bytes(b"d")).await;
    assert!(v1 > v0);
}

/// The sweep notifies watchers of the deleted keys.
pub async fn maintenance_notifies_watchers(h: &ClockedDb) {
    let db = h.database();
    let k = key("a");
    let vs = commit(
        db,
        write_of(vec![set_expiring(&k, bytes(b"v"), h.now() + 100)]),
    )
    .await;
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let first = next_notification(&mut w).await;
    match &first[0] {
        WatchKeyOutput::Changed(Some(e)) => assert_eq!(e.versionstamp, vs),
        other => panic!("first notification should report the live entry, got {other:?}"),
    }
    h.advance(100);
    assert_eq!(h.maintain().await, 1);
    loop {
        let n = next_notification(&mut w).await;
        match &n[0] {
            WatchKeyOutput::Changed(None) => break,
            WatchKeyOutput::Changed(Some(e)) if e.versionstamp == vs => continue,
            WatchKeyOutput::Unchanged => continue,
            other => panic!("unexpected watch output after the sweep: {other:?}"),
        }
    }
}

async fn next_notification(w: &mut kv_traits::WatchStream) -> Vec<WatchKeyOutput> {
    tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("no watch notification within 30 s")
        .expect("watch stream ended")
        .expect("watch stream error")
}

/// The sweep boundary is `expire_at <= now`: a key expiring exactly now goes, one expiring 1 ms
/// later stays.
pub async fn maintenance_keeps_live_keys(h: &ClockedDb) {
    let db = h.database();
    let now = h.now();
    commit(
        db,
        write_of(vec![
            set_expiring(&key("now"), bytes(b"x"), now),
            set_expiring(&key("later"), bytes(b"y"), now + 1),
        ]),
    )
    .await;
    assert_eq!(h.maintain().await, 1);
    assert_eq!(get(db, &key("now")).await, None);
    assert_eq!(
        get(db, &key("later")).await.map(|e| e.value),
        Some(bytes(b"y"))
    );
}

/// A later `Set` without expiry removes the expiry.
pub async fn set_without_expiry_clears_it(h: &ClockedDb) {
    let db = h.database();
    let k = key("a");
    commit(
        db,
        write_of(vec![set_expiring(&k, bytes(b"1"), h.now() + 100)]),
    )
    .await;
    let vs = set(db, &k, bytes(b"2")).await;
    h.advance(200);
    assert_eq!(h.maintain().await, 0);
    assert_eq!(get(db, &k).await.map(|e| e.versionstamp), Some(vs));
}

/// `Sum`, `Min` and `Max` clear the key's expiry, whatever the mutation's own `expire_at_ms`.
pub async fn sum_min_max_clear_expiry(h: &ClockedDb) {
    let db = h.database();
    let now = h.now();
    let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
    commit(
        db,
        write_of(vec![
            set_expiring(&a, KvValue::U64(1), now + 100),
            set_expiring(&b, KvValue::U64(1), now + 100),
            set_expiring(&c, KvValue::U64(1), now + 100),
            set_expiring(&d, KvValue::V8(v8::big(1)), now + 100),
        ]),
    )
    .await;
    let mut s = sum_u64(&a, 1);
    s.expire_at_ms = Some(now + 50);
    let mut dsum = sum(&d, KvValue::V8(v8::big(1)), None, None, false);
    dsum.expire_at_ms = Some(now + 50);
    commit(
        db,
        write_of(vec![
            s,
            min(&b, KvValue::U64(0)),
            max(&c, KvValue::U64(5)),
            dsum,
        ]),
    )
    .await;
    h.advance(200);
    assert_eq!(
        h.maintain().await,
        0,
        "sum/min/max must have cleared the expiry"
    );
    assert_eq!(get(db, &a).await.map(|e| e.value), Some(KvValue::U64(2)));
    assert_eq!(get(db, &b).await.map(|e| e.value), Some(KvValue::U64(0)));
    assert_eq!(get(db, &c).await.map(|e| e.value), Some(KvValue::U64(5)));
    assert_eq!(
        get(db, &d).await.map(|e| v8::expect_bigint(&e.value)),
        Some(2.into())
    );
}

/// A mutation on an expired-but-unswept key sees it as absent, consistent with reads and checks:
/// `Sum`/`Min`/`Max` store the operand, and an expired value of another type is no type error.
pub async fn sum_on_expired_key_treats_it_as_absent(h: &ClockedDb) {
    let db = h.database();
    let now = h.now();
    let (a, b, c) = (key("a"), key("b"), key("c"));
    commit(
        db,
        write_of(vec![
            set_expiring(&a, KvValue::U64(10), now + 100),
            set_expiring(&b, KvValue::U64(10), now + 100),
            set_expiring(&c, bytes(b"not a number"), now + 100),
        ]),
    )
    .await;
    h.advance(100);
    commit(
        db,
        write_of(vec![
            sum_u64(&a, 5),
            max(&b, KvValue::U64(3)),
            sum_u64(&c, 7),
        ]),
    )
    .await;
    assert_eq!(
        get(db, &a).await.map(|e| e.value),
        Some(KvValue::U64(5)),
        "sum on an expired key"
    );
    assert_eq!(
        get(db, &b).await.map(|e| e.value),
        Some(KvValue::U64(3)),
        "max on an expired key"
    );
    assert_eq!(
        get(db, &c).await.map(|e| e.value),
        Some(KvValue::U64(7)),
        "sum on an expired non-U64 key"
    );
    assert_eq!(h.maintain().await, 0, "the rewritten keys no longer expire");
}

/// One `run_maintenance` deletes every key that is due, however many (here 2500).
pub async fn maintenance_sweeps_everything_due(h: &ClockedDb) {
    let db = h.database();
    let at = h.now() + 10;
    for chunk in 0..5 {
        let muts = (0..500)
            .map(|i| set_expiring(&key2("e", &format!("{chunk}-{i:03}")), KvValue::U64(i), at))
            .collect();
        commit(db, write_of(muts)).await;
    }
    set(db, &key("live"), bytes(b"l")).await;
    h.advance(10);
    assert_eq!(
        h.maintain().await,
        2500,
        "one sweep must delete all 2500 due keys"
    );
    assert_eq!(h.maintain().await, 0);
    assert_eq!(scan_all(db).await.len(), 1);
}

/// A value set with a past expiry is already absent for the later mutations of the same write.
pub async fn expired_set_is_absent_for_later_mutations(db: &dyn Database) {
    let k = key("n");
    commit(
        db,
        write_of(vec![
            set_expiring(&k, KvValue::U64(10), LONG_AGO_MS),
            sum_u64(&k, 1),
        ]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(KvValue::U64(1)));
    commit(
        db,
        write_of(vec![
            set_expiring(&k, bytes(b"x"), LONG_AGO_MS),
            max(&k, KvValue::U64(4)),
        ]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(KvValue::U64(4)));
}
