//! Atomic writes: versionstamps, checks, set/delete, U64 sum/min/max, versionstamped keys and
//! all-or-nothing application.

use kv_traits::{AtomicWrite, CommitResult, Database, KvValue, Mutation, Versionstamp};

use crate::util::*;

/// Every commit gets a versionstamp strictly greater than the previous one, and the entries it
/// wrote carry it.
pub async fn versionstamps_strictly_increase(db: &dyn Database) {
    let mut last = Versionstamp::ZERO;
    for i in 0..50u64 {
        let k = key(&format!("k{}", i % 7));
        let vs = set(db, &k, KvValue::U64(i)).await;
        assert!(
            vs > last,
            "versionstamp {vs} after {last} is not increasing"
        );
        let e = get(db, &k).await.expect("key just written");
        assert_eq!(e.versionstamp, vs);
        assert_eq!(e.value, KvValue::U64(i));
        last = vs;
    }
}

/// One write gets one versionstamp, shared by every key it writes.
pub async fn one_versionstamp_per_write_shared_by_all_mutations(db: &dyn Database) {
    set(db, &key("c"), KvValue::U64(1)).await;
    let vs = commit(
        db,
        write_of(vec![
            Mutation::set(key("a"), bytes(b"a")),
            Mutation::set(key("b"), bytes(b"b")),
            sum_u64(&key("c"), 1),
            max(&key("d"), KvValue::U64(4)),
            set_vs_key(&key("log"), bytes(b"l")),
        ]),
    )
    .await;
    for k in [
        key("a"),
        key("b"),
        key("c"),
        key("d"),
        suffixed_key(&key("log"), &vs),
    ] {
        let e = get(db, &k).await.unwrap_or_else(|| panic!("{k:?} missing"));
        assert_eq!(
            e.versionstamp, vs,
            "{k:?} must carry the write's versionstamp"
        );
    }
}

/// An empty write and a write with only checks both commit with a fresh versionstamp and change
/// no data.
pub async fn empty_and_check_only_writes_commit(db: &dyn Database) {
    let v1 = set(db, &key("a"), bytes(b"1")).await;
    let v2 = commit(db, AtomicWrite::default()).await;
    assert!(
        v2 > v1,
        "an empty write must commit with a fresh versionstamp ({v2} after {v1})"
    );
    let v3 = commit(
        db,
        AtomicWrite {
            checks: vec![check_vs(&key("a"), v1), check_absent(&key("b"))],
            ..Default::default()
        },
    )
    .await;
    assert!(
        v3 > v2,
        "a check-only write must commit with a fresh versionstamp ({v3} after {v2})"
    );
    let all = scan_all(db).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].versionstamp, v1,
        "a check-only write must not touch the checked key"
    );
}

/// A `None` check passes on an absent key and fails on a present one.
pub async fn check_for_absence(db: &dyn Database) {
    let k = key("a");
    let w = |v: &[u8]| AtomicWrite {
        checks: vec![check_absent(&k)],
        mutations: vec![Mutation::set(k.clone(), bytes(v))],
        ..Default::default()
    };
    commit(db, w(b"first")).await;
    let r = try_write(db, w(b"second")).await;
    assert!(
        matches!(r, Ok(CommitResult::CheckFailed(_))),
        "check for absence on a present key: {r:?}"
    );
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(bytes(b"first")));
}

/// A versionstamp check passes only with the key's current versionstamp.
pub async fn check_current_versionstamp(db: &dyn Database) {
    let k = key("a");
    let v1 = set(db, &k, bytes(b"1")).await;
    let v2 = commit(
        db,
        AtomicWrite {
            checks: vec![check_vs(&k, v1)],
            mutations: vec![Mutation::set(k.clone(), bytes(b"2"))],
            ..Default::default()
        },
    )
    .await;
    // v1 is now stale.
    let r = try_write(
        db,
        AtomicWrite {
            checks: vec![check_vs(&k, v1)],
            mutations: vec![Mutation::set(k.clone(), bytes(b"3"))],
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(r, Ok(CommitResult::CheckFailed(_))),
        "stale check: {r:?}"
    );
    // A versionstamp check on an absent key fails.
    let r = try_write(
        db,
        AtomicWrite {
            checks: vec![check_vs(&key("nope"), v2)],
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(r, Ok(CommitResult::CheckFailed(_))),
        "versionstamp check on absent key: {r:?}"
    );
    // After a delete the key is absent again.
    commit(db, write_of(vec![Mutation::delete(k.clone())])).await;
    let r = try_write(
        db,
        AtomicWrite {
            checks: vec![check_vs(&k, v2)],
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(r, Ok(CommitResult::CheckFailed(_))),
        "check on deleted key: {r:?}"
    );
    commit(
        db,
        AtomicWrite {
            checks: vec![check_absent(&k)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(get(db, &k).await, None);
}

/// A failed check applies nothing: no mutation, no versionstamped key, and the keys keep their
/// versionstamps.
pub async fn failed_check_applies_nothing(db: &dyn Database) {
    let v1 = set(db, &key("a"), bytes(b"1")).await;
    let before = scan_all(db).await;
    let r = try_write(
        db,
        AtomicWrite {
            checks: vec![check_absent(&key("z")), check_absent(&key("a"))],
            mutations: vec![
                Mutation::set(key("a"), bytes(b"2")),
                Mutation::set(key("b"), bytes(b"2")),
                Mutation::delete(key("a")),
                set_vs_key(&key("log"), bytes(b"x")),
            ],
            enqueues: vec![],
        },
    )
    .await;
    assert!(matches!(r, Ok(CommitResult::CheckFailed(_))), "{r:?}");
    assert_eq!(
        scan_all(db).await,
        before,
        "a failed check must apply nothing"
    );
    let v2 = set(db, &key("c"), bytes(b"3")).await;
    assert!(v2 > v1);
}

/// `CheckFailed` lists only indexes of checks that failed, including the first failing one.
pub async fn failed_check_reports_its_index(db: &dyn Database) {
    let v = set(db, &key("a"), bytes(b"1")).await;
    let r = try_write(
        db,
        AtomicWrite {
            checks: vec![
                check_vs(&key("a"), v),
                check_absent(&key("a")),
                check_absent(&key("b")),
                check_vs(&key("b"), v),
            ],
            ..Default::default()
        },
    )
    .await;
    match r {
        Ok(CommitResult::CheckFailed(idx)) => {
            assert!(!idx.is_empty(), "CheckFailed should name the failed checks");
            assert!(
                idx.iter().all(|i| *i == 1 || *i == 3),
                "indexes {idx:?} must be among the failing ones (1, 3)"
            );
        }
        other => panic!("expected CheckFailed, got {other:?}"),
    }
}

/// Checks may name keys the write does not mutate.
pub async fn check_on_unmutated_key(db: &dyn Database) {
    let guard = key("guard");
    let vg = set(db, &guard, bytes(b"g")).await;
    let vs = commit(
        db,
        AtomicWrite {
            checks: vec![check_vs(&guard, vg)],
            mutations: vec![Mutation::set(key("x"), bytes(b"x"))],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        get(db, &guard).await.map(|e| e.versionstamp),
        Some(vg),
        "the checked key is not rewritten"
    );
    assert_eq!(get(db, &key("x")).await.map(|e| e.versionstamp), Some(vs));
}

/// `Set` replaces the value and the expiry (an expired value becomes live again, a live one can
/// be replaced by an expired one).
pub async fn set_replaces_value_and_expiry(db: &dyn Database) {
    let k = key("a");
    set(db, &k, bytes(b"1")).await;
    let vs = set(db, &k, KvValue::U64(2)).await;
    let e = get(db, &k).await.expect("present");
    assert_eq!((e.value, e.versionstamp), (KvValue::U64(2), vs));
    commit(
        db,
        write_of(vec![set_expiring(&k, bytes(b"3"), LONG_AGO_MS)]),
    )
    .await;
    assert_eq!(
        get(db, &k).await,
        None,
        "a value set with a past expiry is never returned"
    );
    let vs = set(db, &k, bytes(b"4")).await;
    let e = get(db, &k)
        .await
        .expect("a set without expiry replaces the expiry");
    assert_eq!((e.value, e.versionstamp), (bytes(b"4"), vs));
    commit(
        db,
        write_of(vec![set_expiring(&k, bytes(b"5"), FAR_FUTURE_MS)]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(bytes(b"5")));
}

/// `Delete` removes the key; no tombstone is visible.
pub async fn delete_removes_key(db: &dyn Database) {
    set(db, &key("a"), bytes(b"1")).await;
    set(db, &key("b"), bytes(b"2")).await;
    commit(db, write_of(vec![Mutation::delete(key("a"))])).await;
    assert_eq!(get(db, &key("a")).await, None);
    let all = scan_all(db).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].key, key("b"));
}

/// Deleting an absent key commits without error.
pub async fn delete_absent_key_is_ok(db: &dyn Database) {
    commit(db, write_of(vec![Mutation::delete(key("nothing"))])).await;
    assert!(scan_all(db).await.is_empty());
}

/// Mutations apply in request order; later ones see earlier results.
pub async fn mutations_apply_in_order(db: &dyn Database) {
    let k = key("a");
    commit(
        db,
        write_of(vec![
            Mutation::set(k.clone(), KvValue::U64(1)),
            sum_u64(&k, 2),
        ]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(KvValue::U64(3)));
    commit(
        db,
        write_of(vec![
            Mutation::set(k.clone(), bytes(b"x")),
            Mutation::delete(k.clone()),
        ]),
    )
    .await;
    assert_eq!(get(db, &k).await, None);
    commit(
        db,
        write_of(vec![
            Mutation::delete(k.clone()),
            Mutation::set(k.clone(), bytes(b"y")),
        ]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(bytes(b"y")));
    commit(
        db,
        write_of(vec![
            Mutation::set(k.clone(), KvValue::U64(10)),
            max(&k, KvValue::U64(5)),
            min(&k, KvValue::U64(7)),
        ]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(KvValue::U64(7)));
    commit(
        db,
        write_of(vec![sum_u64(&k, 1), Mutation::set(k.clone(), bytes(b"z"))]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(bytes(b"z")));
    // Bytes then a U64 sum after a set to U64 in the same write is fine.
    commit(
        db,
        write_of(vec![
            Mutation::set(k.clone(), KvValue::U64(0)),
            sum_u64(&k, 5),
            sum_u64(&k, 6),
        ]),
    )
    .await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(KvValue::U64(11)));
}

/// `Sum` of `U64` values wraps modulo 2^64.
pub async fn sum_u64_wraps(db: &dyn Database) {
    let k = key("n");
    commit(db, write_of(vec![sum_u64(&k, u64::MAX)])).await;
    assert_eq!(
        get(db, &k).await.map(|e| e.value),
        Some(KvValue::U64(u64::MAX))
    );
    commit(db, write_of(vec![sum_u64(&k, 2)])).await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(KvValue::U64(1)));
    commit(db, write_of(vec![sum_u64(&k, u64::MAX)])).await;
    assert_eq!(get(db, &k).await.map(|e| e.value), Some(KvValue::U64(0)));
}

/// `Min`/`Max` on `U64`: the operand on an absent key, the unsigned min/max otherwise; the key
/// always gets the new versionstamp.
pub async fn min_max_u64(db: &dyn Database) {
    let (a, b) = (key("a"), key("b"));
    commit(
        db,
        write_of(vec![min(&a, KvValue::U64(10)), max(&b, KvValue::U64(10))]),
    )
    .await;
    assert_eq!(get(db, &a).await.map(|e| e.value), Some(KvValue::U64(10)));
    assert_eq!(get(db, &b).await.map(|e| e.value), Some(KvValue::U64(10)));
    commit(
        db,
        write_of(vec![
            min(&a, KvValue::U64(3)),
            max(&b, KvValue::U64(u64::MAX)),
        ]),
    )
    .await;
    assert_eq!(get(db, &a).await.map(|e| e.value), Some(KvValue::U64(3)));
    assert_eq!(
        get(db, &b).await.map(|e| e.value),
        Some(KvValue::U64(u64::MAX))
    );
    let vs = commit(
        db,
        write_of(vec![min(&a, KvValue::U64(100)), max(&b, KvValue::U64(0))]),
    )
    .await;
    let ea = get(db, &a).await.expect("a");
    let eb = get(db, &b).await.expect("b");
    assert_eq!(
        (ea.value, eb.value),
        (KvValue::U64(3), KvValue::U64(u64::MAX))
    );
    assert_eq!(
        (ea.versionstamp, eb.versionstamp),
        (vs, vs),
        "min/max always rewrite the key"
    );
}

/// `Min`/`Max` reject non-`U64` operands and stored values, applying nothing.
pub async fn min_max_reject_non_u64(db: &dyn Database) {
    let k = key("a");
    for (m, name) in [
        (min(&k, bytes(b"1")), "min"),
        (max(&k, KvValue::V8(v8::smi(1))), "max"),
    ] {
        let r = try_write(
            db,
            write_of(vec![Mutation::set(key("other"), bytes(b"o")), m]),
        )
        .await;
        assert_mutation_error(
            r,
            &format!("Failed to perform '{name}' mutation on a non-U64 operand"),
        );
    }
    assert!(scan_all(db).await.is_empty(), "nothing may be applied");
    set(db, &k, bytes(b"not a u64")).await;
    for (m, name) in [
        (min(&k, KvValue::U64(1)), "min"),
        (max(&k, KvValue::U64(1)), "max"),
    ] {
        let r = try_write(db, write_of(vec![m])).await;
        assert_mutation_error(
            r,
            &format!("Failed to perform '{name}' mutation on a non-U64 value in the database"),
        );
    }
    assert_eq!(
        get(db, &k).await.map(|e| e.value),
        Some(bytes(b"not a u64"))
    );
}

/// `SetSuffixVersionstampedKey` creates `prefix ‖ 02 ‖ hex20(vs) ‖ 00` with the write's
/// versionstamp, and not the prefix key itself.
pub async fn versionstamped_key(db: &dyn Database) {
    let p = key("log");
    let mut created = Vec::new();
    for i in 0..3u64 {
        let vs = commit(db, write_of(vec![set_vs_key(&p, KvValue::U64(i))])).await;
        created.push((suffixed_key(&p, &vs), vs, i));
    }
    assert_eq!(
        get(db, &p).await,
        None,
        "the prefix key itself is not written"
    );
    let all = scan_all(db).await;
    assert_eq!(all.len(), 3, "{all:?}");
    for (e, (k, vs, i)) in all.iter().zip(&created) {
        assert_eq!(
            &e.key, k,
            "created key must be prefix ‖ 02 ‖ hex20(versionstamp) ‖ 00"
        );
        assert_eq!(e.versionstamp, *vs);
        assert_eq!(e.value, KvValue::U64(*i));
    }
}

/// Two versionstamped-key mutations on one prefix in one write create one key; the last wins.
pub async fn versionstamped_key_collision_last_wins(db: &dyn Database) {
    let p = key("log");
    let vs = commit(
        db,
        write_of(vec![
            set_vs_key(&p, bytes(b"first")),
            set_vs_key(&p, bytes(b"second")),
        ]),
    )
    .await;
    let all = scan_all(db).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].key, suffixed_key(&p, &vs));
    assert_eq!(all[0].value, bytes(b"second"));
}

/// `SetSuffixVersionstampedKey` honours `expire_at_ms`.
pub async fn versionstamped_key_honours_expiry(db: &dyn Database) {
    let p = key("log");
    let mut m = set_vs_key(&p, bytes(b"gone"));
    m.expire_at_ms = Some(LONG_AGO_MS);
    let vs_gone = commit(db, write_of(vec![m])).await;
    let mut m = set_vs_key(&p, bytes(b"kept"));
    m.expire_at_ms = Some(FAR_FUTURE_MS);
    let vs_kept = commit(db, write_of(vec![m])).await;
    assert_eq!(get(db, &suffixed_key(&p, &vs_gone)).await, None);
    assert_eq!(
        get(db, &suffixed_key(&p, &vs_kept)).await.map(|e| e.value),
        Some(bytes(b"kept"))
    );
}

/// A type error in the third mutation after two successful sets applies nothing of the write
/// (the reference server keeps the first two; this implementation must not).
pub async fn failing_mutation_applies_nothing(db: &dyn Database) {
    let v0 = set(db, &key("pre"), bytes(b"p")).await;
    let before = scan_all(db).await;
    let r = try_write(
        db,
        write_of(vec![
            Mutation::set(key("a"), bytes(&[77])),
            Mutation::set(key("pre"), bytes(b"changed")),
            sum_u64(&key("a"), 1),
            Mutation::set(key("c"), bytes(b"c")),
        ]),
    )
    .await;
    assert_mutation_error(
        r,
        "Failed to perform 'sum' mutation on a non-U64 value in the database",
    );
    assert_eq!(
        scan_all(db).await,
        before,
        "a failing mutation must roll back the whole write"
    );
    let v1 = set(db, &key("after"), bytes(b"x")).await;
    assert!(v1 > v0);
}

/// Failed writes (check failure, mutation error) leave the database exactly as it was, and the
/// next commit still gets a larger versionstamp.
pub async fn failing_write_consumes_no_state(db: &dyn Database) {
    let v0 = set(db, &key("n"), KvValue::U64(5)).await;
    set(db, &key("s"), bytes(b"str")).await;
    let before = scan_all(db).await;
    for w in [
        AtomicWrite {
            checks: vec![check_absent(&key("n"))],
            mutations: vec![sum_u64(&key("n"), 1)],
            ..Default::default()
        },
        write_of(vec![sum_u64(&key("n"), 1), sum_u64(&key("s"), 1)]),
        write_of(vec![
            max(&key("n"), KvValue::U64(9)),
            min(&key("s"), KvValue::U64(1)),
        ]),
    ] {
        let _ = try_write(db, w).await;
        assert_eq!(scan_all(db).await, before);
    }
    let v1 = set(db, &key("n"), KvValue::U64(6)).await;
    assert!(v1 > v0);
}

/// Concurrent compare-and-set loops (read, check the versionstamp, write) never lose an
/// update: writes committed together must see each other's effects when checking.
pub async fn concurrent_check_and_set_is_serializable(db: &dyn Database) {
    let k = key("counter");
    let worker = |_: usize| {
        let k = k.clone();
        async move {
            let mut committed = Vec::new();
            while committed.len() < 10 {
                let cur = get(db, &k).await;
                let (n, vs) = match &cur {
                    Some(e) => match e.value {
                        KvValue::U64(n) => (n, Some(e.versionstamp)),
                        ref other => panic!("counter holds {other:?}"),
                    },
                    None => (0, None),
                };
                let w = AtomicWrite {
                    checks: vec![kv_traits::Check {
                        key: k.clone(),
                        versionstamp: vs,
                    }],
                    mutations: vec![Mutation::set(k.clone(), KvValue::U64(n + 1))],
                    ..Default::default()
                };
                match db.atomic_write(w).await {
                    Ok(CommitResult::Committed(v)) => committed.push(v),
                    Ok(CommitResult::CheckFailed(_)) => {}
                    Err(e) => panic!("compare-and-set failed: {e}"),
                }
            }
            committed
        }
    };
    let results = futures::future::join_all((0..8).map(worker)).await;
    let mut all: Vec<Versionstamp> = results.into_iter().flatten().collect();
    assert_eq!(
        get(db, &k).await.map(|e| e.value),
        Some(KvValue::U64(80)),
        "lost updates"
    );
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "two commits got the same versionstamp");
}

/// Many concurrent writes all apply, each with its own versionstamp shared by its keys.
pub async fn concurrent_writes_get_distinct_versionstamps(db: &dyn Database) {
    let total = key("total");
    let writes = (0..200u64).map(|i| {
        let w = write_of(vec![
            sum_u64(&total, 1),
            Mutation::set(key2("own", &i.to_string()), KvValue::U64(i)),
        ]);
        async move { (i, commit(db, w).await) }
    });
    let results = futures::future::join_all(writes).await;
    assert_eq!(
        get(db, &total).await.map(|e| e.value),
        Some(KvValue::U64(200))
    );
    let mut seen = std::collections::HashSet::new();
    for (i, vs) in &results {
        assert!(seen.insert(*vs), "versionstamp {vs} given to two writes");
        let e = get(db, &key2("own", &i.to_string()))
            .await
            .expect("own key");
        assert_eq!(e.versionstamp, *vs);
    }
    let last = results.iter().map(|(_, v)| *v).max().expect("200 writes");
    assert_eq!(
        get(db, &total).await.map(|e| e.versionstamp),
        Some(last),
        "the total carries the last commit"
    );
}

/// Concurrent failing writes (type errors, failed checks) do not affect the writes committed
/// alongside them.
pub async fn concurrent_failures_are_isolated(db: &dyn Database) {
    set(db, &key("str"), bytes(b"s")).await;
    let writes = (0..60u64).map(|i| {
        let own = key2("own", &i.to_string());
        let w = match i % 3 {
            0 => write_of(vec![
                Mutation::set(own, KvValue::U64(i)),
                sum_u64(&key("n"), 1),
            ]),
            1 => write_of(vec![
                Mutation::set(own, KvValue::U64(i)),
                sum_u64(&key("n"), 1),
                sum_u64(&key("str"), 1),
            ]),
            _ => AtomicWrite {
                checks: vec![check_absent(&key("str"))],
                mutations: vec![Mutation::set(own, KvValue::U64(i)), sum_u64(&key("n"), 1)],
                ..Default::default()
            },
        };
        async move { (i, db.atomic_write(w).await) }
    });
    for (i, r) in futures::future::join_all(writes).await {
        match i % 3 {
            0 => assert!(
                matches!(r, Ok(CommitResult::Committed(_))),
                "write {i}: {r:?}"
            ),
            1 => assert_mutation_error(r, "non-U64 value"),
            _ => assert!(
                matches!(r, Ok(CommitResult::CheckFailed(_))),
                "write {i}: {r:?}"
            ),
        }
    }
    assert_eq!(
        get(db, &key("n")).await.map(|e| e.value),
        Some(KvValue::U64(20))
    );
    for i in 0..60u64 {
        let e = get(db, &key2("own", &i.to_string())).await;
        assert_eq!(e.is_some(), i % 3 == 0, "own key {i}");
    }
    assert_eq!(
        get(db, &key("str")).await.map(|e| e.value),
        Some(bytes(b"s"))
    );
}
