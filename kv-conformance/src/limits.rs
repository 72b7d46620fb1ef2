//! Request limits (spec semantics.md §9), assuming the database uses
//! [`kv_traits::Limits::default`]: every [`LimitError`] variant is reachable from a request, the
//! boundary values are accepted, and a rejected write applies nothing.

use kv_traits::{
    AtomicWrite, Check, Consistency, Database, Enqueue, KvValue, LimitError, Mutation, ReadRange,
    ValueError,
};

use crate::util::*;

fn w(m: Mutation) -> AtomicWrite {
    write_of(vec![m])
}

/// Mutation keys: 2048 bytes allowed, 2049 rejected; read bounds and check keys: 2049 allowed,
/// 2050 rejected; versionstamped-key prefixes must leave room for the 22-byte suffix; dead-letter
/// and watch keys are limited too.
pub async fn key_size(db: &dyn Database) {
    let is_key = |l: &LimitError| matches!(l, LimitError::KeyTooLarge { .. });
    const TEXT: &str = "key size limit";
    commit(db, w(Mutation::set(vec![1; 2048], bytes(b"x")))).await;
    assert_limit_error(
        try_write(db, w(Mutation::set(vec![1; 2049], bytes(b"x")))).await,
        is_key,
        TEXT,
    );
    assert_limit_error(
        try_write(db, w(Mutation::delete(vec![1; 2049]))).await,
        is_key,
        TEXT,
    );
    assert_limit_error(try_write(db, w(sum_u64(&[1; 2049], 1))).await, is_key, TEXT);
    commit(db, w(set_vs_key(&[2; 2048 - 22], bytes(b"x")))).await;
    assert_limit_error(
        try_write(db, w(set_vs_key(&[2; 2048 - 21], bytes(b"x")))).await,
        is_key,
        TEXT,
    );
    commit(
        db,
        AtomicWrite {
            checks: vec![check_absent(&[3; 2049])],
            ..Default::default()
        },
    )
    .await;
    assert_limit_error(
        try_write(
            db,
            AtomicWrite {
                checks: vec![check_absent(&[3; 2050])],
                ..Default::default()
            },
        )
        .await,
        is_key,
        TEXT,
    );
    read(db, vec![range(&[4; 2049], &[5; 2049], 1, false)]).await;
    for r in [
        range(&[4; 2050], &[5], 1, false),
        range(&[4], &[5; 2050], 1, false),
    ] {
        assert_limit_error(
            db.snapshot_read(vec![r], Consistency::Strong).await,
            is_key,
            TEXT,
        );
    }
    let mut e = enqueue(b"p", 0);
    e.keys_if_undelivered = vec![vec![6; 2049]];
    assert_limit_error(
        try_write(
            db,
            AtomicWrite {
                enqueues: vec![e],
                ..Default::default()
            },
        )
        .await,
        is_key,
        TEXT,
    );
    assert_limit_error(
        db.watch(vec![vec![7; 2050]]).await.map(|_| ()),
        is_key,
        TEXT,
    );
}

/// Empty mutation, check and dead-letter keys are rejected.
pub async fn empty_keys(db: &dyn Database) {
    let is_empty = |l: &LimitError| matches!(l, LimitError::EmptyKey);
    const TEXT: &str = "must not be empty";
    assert_limit_error(
        try_write(db, w(Mutation::set(vec![], bytes(b"x")))).await,
        is_empty,
        TEXT,
    );
    assert_limit_error(
        try_write(db, w(Mutation::delete(vec![]))).await,
        is_empty,
        TEXT,
    );
    assert_limit_error(
        try_write(
            db,
            AtomicWrite {
                checks: vec![check_absent(&[])],
                ..Default::default()
            },
        )
        .await,
        is_empty,
        TEXT,
    );
    let mut e = enqueue(b"p", 0);
    e.keys_if_undelivered = vec![vec![]];
    assert_limit_error(
        try_write(
            db,
            AtomicWrite {
                enqueues: vec![e],
                ..Default::default()
            },
        )
        .await,
        is_empty,
        TEXT,
    );
    assert!(scan_all(db).await.is_empty());
}

/// Values and payloads: 65 536 bytes allowed, 65 537 rejected.
pub async fn value_size(db: &dyn Database) {
    let is_val = |l: &LimitError| matches!(l, LimitError::ValueTooLarge { size: 65537, .. });
    const TEXT: &str = "value size limit";
    commit(
        db,
        w(Mutation::set(key("a"), KvValue::Bytes(vec![0; 65536]))),
    )
    .await;
    commit(db, w(Mutation::set(key("b"), KvValue::V8(vec![0; 65536])))).await;
    assert_limit_error(
        try_write(
            db,
            w(Mutation::set(key("c"), KvValue::Bytes(vec![0; 65537]))),
        )
        .await,
        is_val,
        TEXT,
    );
    assert_limit_error(
        try_write(db, w(Mutation::set(key("c"), KvValue::V8(vec![0; 65537])))).await,
        is_val,
        TEXT,
    );
    assert_limit_error(
        try_write(db, w(set_vs_key(&key("c"), KvValue::V8(vec![0; 65537])))).await,
        is_val,
        TEXT,
    );
    assert_limit_error(
        try_write(
            db,
            AtomicWrite {
                enqueues: vec![enqueue(&vec![0; 65537], 0)],
                ..Default::default()
            },
        )
        .await,
        is_val,
        TEXT,
    );
    assert_eq!(get(db, &key("c")).await, None);
}

/// At most 10 ranges and 1000 entries (sum of limits) per read.
pub async fn read_ranges_and_entries(db: &dyn Database) {
    read(db, vec![ReadRange::prefix(b"a", 100); 10]).await;
    assert_limit_error(
        db.snapshot_read(vec![ReadRange::prefix(b"a", 1); 11], Consistency::Strong)
            .await,
        |l| matches!(l, LimitError::TooManyRanges { count: 11, .. }),
        "Too many read ranges",
    );
    read(
        db,
        vec![ReadRange::prefix(b"a", 600), ReadRange::prefix(b"b", 400)],
    )
    .await;
    assert_limit_error(
        db.snapshot_read(
            vec![ReadRange::prefix(b"a", 600), ReadRange::prefix(b"b", 401)],
            Consistency::Strong,
        )
        .await,
        |l| matches!(l, LimitError::TooManyEntries { count: 1001, .. }),
        "too large",
    );
    assert_limit_error(
        db.snapshot_read(vec![ReadRange::prefix(b"a", 1001)], Consistency::Strong)
            .await,
        |l| matches!(l, LimitError::TooManyEntries { .. }),
        "too large",
    );
}

/// A range limit of 0 is invalid.
pub async fn range_limit_zero(db: &dyn Database) {
    let r = ReadRange {
        limit: 0,
        ..ReadRange::prefix(b"a", 1)
    };
    assert_limit_error(
        db.snapshot_read(vec![r], Consistency::Strong).await,
        |l| matches!(l, LimitError::InvalidRangeLimit),
        "read range limit",
    );
}

/// At most 100 checks per write.
pub async fn too_many_checks(db: &dyn Database) {
    let checks = |n: usize| {
        (0..n)
            .map(|i| check_absent(&key(&format!("c{i}"))))
            .collect::<Vec<Check>>()
    };
    commit(
        db,
        AtomicWrite {
            checks: checks(100),
            ..Default::default()
        },
    )
    .await;
    assert_limit_error(
        try_write(
            db,
            AtomicWrite {
                checks: checks(101),
                mutations: vec![Mutation::set(key("x"), bytes(b"x"))],
                ..Default::default()
            },
        )
        .await,
        |l| matches!(l, LimitError::TooManyChecks { count: 101, .. }),
        "Too many checks",
    );
    assert_eq!(get(db, &key("x")).await, None);
}

/// At most 1000 mutations plus enqueues per write.
pub async fn too_many_mutations(db: &dyn Database) {
    let muts = |n: usize| {
        (0..n)
            .map(|i| Mutation::set(key(&format!("m{i}")), KvValue::U64(i as u64)))
            .collect::<Vec<_>>()
    };
    commit(db, write_of(muts(1000))).await;
    assert_eq!(scan_all(db).await.len(), 1000);
    commit(
        db,
        write_of(
            (0..1000)
                .map(|i| Mutation::delete(key(&format!("m{i}"))))
                .collect(),
        ),
    )
    .await;
    let is_many = |l: &LimitError| matches!(l, LimitError::TooManyMutations { count: 1001, .. });
    assert_limit_error(
        try_write(db, write_of(muts(1001))).await,
        is_many,
        "Too many mutations",
    );
    assert_limit_error(
        try_write(
            db,
            AtomicWrite {
                mutations: muts(999),
                enqueues: vec![enqueue(b"a", 0), enqueue(b"b", 0)],
                ..Default::default()
            },
        )
        .await,
        is_many,
        "Too many mutations",
    );
    assert!(scan_all(db).await.is_empty());
}

/// The total size of a write is limited to 819 200 bytes.
pub async fn total_size(db: &dyn Database) {
    let big = |i: u8| Mutation::set(vec![b'k', i], KvValue::Bytes(vec![i; 65536]));
    // 12 × (65536 + 2) = 786 456 bytes: accepted.
    commit(db, write_of((0..12).map(big).collect())).await;
    assert_limit_error(
        try_write(db, write_of((0..13).map(big).collect())).await,
        |l| matches!(l, LimitError::TotalSizeTooLarge { .. }),
        "total size of the atomic write",
    );
    assert_eq!(get(db, &[b'k', 12]).await, None);
}

/// Watching more than 10 keys is rejected.
pub async fn watch_keys(db: &dyn Database) {
    let r = db
        .watch((0..11u8).map(|i| vec![b'w', i]).collect())
        .await
        .map(|_| ());
    assert_limit_error(
        r,
        |l| matches!(l, LimitError::TooManyWatchKeys { count: 11, .. }),
        "Too many keys watched",
    );
}

/// Enqueue limits: ≤ 10 dead-letter keys, ≤ 10 backoff intervals each ≤ 1 h, deadline at most
/// 30 days ahead.
pub async fn queue_limits(db: &dyn Database) {
    let base = enqueue(b"p", 0);
    let wr = |e: Enqueue| AtomicWrite {
        mutations: vec![Mutation::set(key("x"), bytes(b"x"))],
        enqueues: vec![e],
        ..Default::default()
    };
    let e = Enqueue {
        keys_if_undelivered: (0..11u8).map(|i| vec![b'd', i]).collect(),
        ..base.clone()
    };
    assert_limit_error(
        try_write(db, wr(e)).await,
        |l| matches!(l, LimitError::TooManyUndeliveredKeys { count: 11, .. }),
        "Too many dead letter keys",
    );
    let e = Enqueue {
        backoff_schedule: Some(vec![1; 11]),
        ..base.clone()
    };
    assert_limit_error(
        try_write(db, wr(e)).await,
        |l| matches!(l, LimitError::TooManyBackoffIntervals { count: 11, .. }),
        "Too many backoff intervals",
    );
    let e = Enqueue {
        backoff_schedule: Some(vec![1, 3_600_001]),
        ..base.clone()
    };
    assert_limit_error(
        try_write(db, wr(e)).await,
        |l| matches!(l, LimitError::BackoffIntervalTooLarge { ms: 3_600_001, .. }),
        "backoff interval exceeds",
    );
    // A year after the real time is beyond 30 days for the system clock and the manual clock.
    let now = kv_traits::clock::now_ms();
    let e = Enqueue {
        deadline_ms: now + 365 * 24 * 3600 * 1000,
        ..base.clone()
    };
    assert_limit_error(
        try_write(db, wr(e)).await,
        |l| matches!(l, LimitError::DeadlineTooFar { .. }),
        "enqueue deadline",
    );
    assert_eq!(
        get(db, &key("x")).await,
        None,
        "a rejected write applies nothing"
    );
    // The boundary values are accepted.
    let e = Enqueue {
        keys_if_undelivered: (0..10u8).map(|i| vec![b'd', i]).collect(),
        backoff_schedule: Some(vec![3_600_000; 10]),
        ..base
    };
    commit(
        db,
        AtomicWrite {
            enqueues: vec![e],
            ..Default::default()
        },
    )
    .await;
}

/// A write rejected for a limit applies none of its mutations or enqueues.
pub async fn limit_errors_apply_nothing(db: &dyn Database) {
    let r = try_write(
        db,
        AtomicWrite {
            mutations: vec![
                Mutation::set(key("a"), bytes(b"a")),
                Mutation::set(key("b"), KvValue::Bytes(vec![0; 70000])),
            ],
            enqueues: vec![enqueue(b"p", 0)],
            ..Default::default()
        },
    )
    .await;
    assert_limit_error(
        r,
        |l| matches!(l, LimitError::ValueTooLarge { .. }),
        "value size limit",
    );
    assert!(scan_all(db).await.is_empty());
}

/// A `U64` value is always 8 bytes: the protocol conversion rejects other lengths, and the value
/// size limit counts it as 8.
pub async fn u64_values_are_eight_bytes(db: &dyn Database) {
    for len in [0usize, 7, 9, 16] {
        assert_eq!(
            KvValue::from_encoded(2, vec![0; len]),
            Err(ValueError::BadU64Length(len))
        );
    }
    assert_eq!(KvValue::U64(1).encoded_len(), 8);
    set(db, &key("n"), KvValue::U64(0x0102_0304_0506_0708)).await;
    let e = get(db, &key("n")).await.expect("n");
    assert_eq!(e.value.data().as_ref(), &[8, 7, 6, 5, 4, 3, 2, 1]);
}
