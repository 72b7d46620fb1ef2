//! Scenarios shared by the embedded tests (one file per area) and `remote.rs`, which runs the
//! same scenarios through `RemoteDatabase` against the in-process KV Connect server.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use kv_connect_client::{
    key, CommitResult, EnqueueOptions, Error, Key, Kv, ListOptions, ListenOptions, Selector,
    SumOptions, Value,
};
use kv_traits::{
    AtomicWrite, Consistency, Database, KvEntry, KvError, QueueLease, QueueMessage, ReadRange,
    WatchStream,
};
use num_bigint::BigInt;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A fresh embedded database over the memory engine.
pub async fn embedded_db() -> kv_db::Db {
    kv_db::Db::open(
        kv_engine_memory::MemoryBackend::new(),
        kv_db::DbConfig::default(),
    )
    .await
    .unwrap()
}

/// A `Kv` over a fresh embedded database.
pub async fn embedded() -> Kv {
    Kv::from_database(embedded_db().await)
}

/// Wraps a database and records every range read, to check paging.
#[derive(Clone)]
pub struct Recording<D> {
    pub inner: D,
    pub reads: Arc<Mutex<Vec<Vec<ReadRange>>>>,
}

impl<D> Recording<D> {
    pub fn new(inner: D) -> Self {
        Recording {
            inner,
            reads: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn reads(&self) -> Vec<Vec<ReadRange>> {
        self.reads.lock().unwrap().clone()
    }
}

#[async_trait]
impl<D: Database> Database for Recording<D> {
    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        c: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        self.reads.lock().unwrap().push(ranges.clone());
        self.inner.snapshot_read(ranges, c).await
    }
    async fn atomic_write(&self, w: AtomicWrite) -> Result<CommitResult, KvError> {
        self.inner.atomic_write(w).await
    }
    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        self.inner.watch(keys).await
    }
    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        self.inner.dequeue(wait).await
    }
    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        self.inner.finish(lease, success).await
    }
    async fn close(&self) -> Result<(), KvError> {
        self.inner.close().await
    }
}

// ---------------------------------------------------------------------------------------------
// get / set / delete
// ---------------------------------------------------------------------------------------------

pub async fn get_set_delete(kv: &Kv) {
    let absent = kv.get(&key!["nothing"]).await.unwrap();
    assert_eq!(absent.key, key!["nothing"]);
    assert_eq!(absent.value, None);
    assert_eq!(absent.versionstamp, None);

    let values: Vec<(Key, Value)> = vec![
        (key!["v", "string"], Value::from("héllo")),
        (key!["v", "u64"], Value::U64(u64::MAX)),
        (key!["v", "bytes"], Value::Bytes(vec![0, 1, 2, 0xff])),
        (key!["v", "number"], Value::Number(-1.5)),
        (key!["v", "int-number"], Value::from(7)),
        (
            key!["v", "bigint"],
            Value::BigInt(BigInt::from(-123456789012345678i64)),
        ),
        (key!["v", "bool"], Value::Bool(true)),
        (key!["v", "null"], Value::Null),
        (
            key!["v", 1.0, 2i64, true, vec![0u8, 1]],
            Value::from("mixed key"),
        ),
    ];
    let mut last = None;
    for (k, v) in &values {
        let vs = kv.set(k, v.clone()).await.unwrap();
        if let Some(prev) = last {
            assert!(vs > prev, "versionstamps must increase");
        }
        last = Some(vs);
        let got = kv.get(k).await.unwrap();
        assert_eq!(got.value.as_ref(), Some(v));
        assert_eq!(got.versionstamp, Some(vs));
    }

    // get_many reads from one snapshot, in order, absent keys included.
    let keys: Vec<Key> = vec![key!["v", "u64"], key!["missing"], key!["v", "string"]];
    let many = kv.get_many(&keys).await.unwrap();
    assert_eq!(many.len(), 3);
    assert_eq!(many[0].value, Some(Value::U64(u64::MAX)));
    assert_eq!(many[1].value, None);
    assert_eq!(many[1].key, key!["missing"]);
    assert_eq!(many[2].value, Some(Value::from("héllo")));

    // Overwrite and delete.
    let vs1 = kv.set(&key!["v", "string"], "second").await.unwrap();
    assert_eq!(
        kv.get(&key!["v", "string"]).await.unwrap().versionstamp,
        Some(vs1)
    );
    kv.delete(&key!["v", "string"]).await.unwrap();
    assert_eq!(kv.get(&key!["v", "string"]).await.unwrap().value, None);
    // Deleting an absent key is fine.
    kv.delete(&key!["v", "string"]).await.unwrap();
}

pub async fn set_with_expiry(kv: &Kv) {
    let expire_in = Duration::from_millis(1000);
    let before_set = std::time::Instant::now();
    kv.set_with_expiry(&key!["exp"], "soon gone", expire_in)
        .await
        .unwrap();
    kv.set_with_expiry(&key!["exp-later"], "stays", Duration::from_secs(3600))
        .await
        .unwrap();
    let early = kv.get(&key!["exp"]).await.unwrap().value;
    // Visible until it expires: checked whenever the read certainly happened before the
    // expiry (on a very loaded machine it may not have; then only the expiry is checked).
    if before_set.elapsed() < expire_in {
        assert_eq!(early, Some(Value::from("soon gone")));
    }
    // Gone once expired: waited for, with a deadline that only bounds a hang.
    tokio::time::sleep(expire_in).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kv.get(&key!["exp"]).await.unwrap().value.is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired entry is still visible 30 s after its expiry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        kv.get(&key!["exp-later"]).await.unwrap().value,
        Some(Value::from("stays"))
    );
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

pub const N: i64 = 25;

/// `["l", 0..25)` (bigint parts), plus keys around the prefix that must never be listed.
pub async fn fill_list_data(kv: &Kv) {
    let mut op = kv.atomic();
    for i in 0..N {
        op = op.set(&key!["l", i], Value::Number(i as f64));
    }
    op = op
        .set(&key!["l"], "the prefix itself")
        .set(&key!["k", 1i64], "before")
        .set(&key!["m", 1i64], "after");
    assert!(op.commit().await.unwrap().versionstamp().is_some());
}

fn ints(entries: &[kv_connect_client::Entry]) -> Vec<i64> {
    entries
        .iter()
        .map(|e| match &e.key.parts()[1] {
            kv_connect_client::KeyPart::Int(i) => i64::try_from(i).unwrap(),
            other => panic!("unexpected key part {other:?}"),
        })
        .collect()
}

async fn collect(kv: &Kv, sel: Selector, opts: ListOptions) -> Vec<kv_connect_client::Entry> {
    kv.list(sel, opts).unwrap().try_collect().await.unwrap()
}

pub async fn list_selectors(kv: &Kv) {
    fill_list_data(kv).await;
    let all: Vec<i64> = (0..N).collect();

    let e = collect(kv, Selector::prefix(key!["l"]), ListOptions::default()).await;
    assert_eq!(ints(&e), all);
    assert_eq!(e[3].value, Value::Number(3.0));

    let e = collect(
        kv,
        Selector::prefix(key!["l"]),
        ListOptions::default().reverse(true),
    )
    .await;
    assert_eq!(ints(&e), all.iter().rev().copied().collect::<Vec<_>>());

    let e = collect(
        kv,
        Selector::prefix_start(key!["l"], key!["l", 20i64]),
        ListOptions::default(),
    )
    .await;
    assert_eq!(ints(&e), vec![20, 21, 22, 23, 24]);

    let e = collect(
        kv,
        Selector::prefix_end(key!["l"], key!["l", 5i64]),
        ListOptions::default(),
    )
    .await;
    assert_eq!(ints(&e), vec![0, 1, 2, 3, 4]);

    let e = collect(
        kv,
        Selector::range(key!["l", 3i64], key!["l", 8i64]),
        ListOptions::default(),
    )
    .await;
    assert_eq!(ints(&e), vec![3, 4, 5, 6, 7]);

    let e = collect(
        kv,
        Selector::range(key!["l", 3i64], key!["l", 8i64]),
        ListOptions::default().reverse(true),
    )
    .await;
    assert_eq!(ints(&e), vec![7, 6, 5, 4, 3]);

    let e = collect(
        kv,
        Selector::prefix(key!["l"]),
        ListOptions::default().limit(4).reverse(true),
    )
    .await;
    assert_eq!(ints(&e), vec![24, 23, 22, 21]);

    // A range selector spanning prefixes includes the prefix key itself.
    let e = collect(
        kv,
        Selector::range(key!["k"], key!["m"]),
        ListOptions::default(),
    )
    .await;
    assert_eq!(e.len(), 1 + 1 + N as usize);
    assert_eq!(e[1].key, key!["l"]);

    // Invalid selectors and options.
    assert!(matches!(
        kv.list(
            Selector::prefix_start(key!["l"], key!["x", 1i64]),
            ListOptions::default()
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        kv.list(
            Selector::range(key!["b"], key!["a"]),
            ListOptions::default()
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(kv
        .list(Selector::prefix(key!["l"]), ListOptions::default().limit(0))
        .is_err());
    assert!(kv
        .list(
            Selector::prefix(key!["l"]),
            ListOptions::default().batch_size(0)
        )
        .is_err());
    assert!(kv
        .list(
            Selector::prefix(key!["l"]),
            ListOptions::default().batch_size(1001)
        )
        .is_err());
}

pub async fn list_paging_and_cursors(kv: &Kv) {
    fill_list_data(kv).await;
    for reverse in [false, true] {
        let expected: Vec<i64> = if reverse {
            (0..N).rev().collect()
        } else {
            (0..N).collect()
        };
        for batch in [1usize, 5, 7, 24, 25, 26, 100] {
            let e = collect(
                kv,
                Selector::prefix(key!["l"]),
                ListOptions::default().batch_size(batch).reverse(reverse),
            )
            .await;
            assert_eq!(ints(&e), expected, "batch {batch} reverse {reverse}");
        }

        // Page through with limit + cursor, 10 at a time with batch 3.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut opts = ListOptions::default()
                .limit(10)
                .batch_size(3)
                .reverse(reverse);
            if let Some(c) = &cursor {
                opts = opts.cursor(c.clone());
            }
            let mut it = kv.list(Selector::prefix(key!["l"]), opts).unwrap();
            let mut page = Vec::new();
            while let Some(e) = it.next().await {
                page.push(e.unwrap());
            }
            seen.extend(ints(&page));
            let c = it.cursor();
            if page.len() < 10 {
                assert_eq!(c, "", "an exhausted listing has an empty cursor");
                break;
            }
            assert_ne!(c, "");
            cursor = Some(c);
        }
        assert_eq!(seen, expected, "reverse {reverse}");

        // Cursors of range selectors resume too.
        let sel = || Selector::range(key!["l", 2i64], key!["l", 12i64]);
        let mut it = kv
            .list(sel(), ListOptions::default().batch_size(2).reverse(reverse))
            .unwrap();
        let first: Vec<_> = (&mut it).take(3).try_collect().await.unwrap();
        let rest = collect(
            kv,
            sel(),
            ListOptions::default().reverse(reverse).cursor(it.cursor()),
        )
        .await;
        let mut both = ints(&first);
        both.extend(ints(&rest));
        let expected: Vec<i64> = if reverse {
            (2..12).rev().collect()
        } else {
            (2..12).collect()
        };
        assert_eq!(both, expected);
    }

    // Cursor errors.
    let bad = kv.list(
        Selector::prefix(key!["l"]),
        ListOptions::default().cursor("***"),
    );
    assert_eq!(bad.err(), Some(Error::InvalidCursor));
    let oob = kv.list(
        Selector::prefix_start(key!["l"], key!["l", 20i64]),
        ListOptions::default().cursor("FQE="),
    );
    assert_eq!(oob.err(), Some(Error::CursorOutOfBounds));
}

/// Checks the ranges requested for `list`, exactly as Deno sends them.
pub async fn list_requests_match_deno<D: Database + Clone>(rec: Recording<D>) {
    let kv = Kv::from_database(rec.clone());
    fill_list_data(&kv).await;
    let p = key!["l"].encode().unwrap();
    let e = collect(
        &kv,
        Selector::prefix(key!["l"]),
        ListOptions::default().batch_size(5),
    )
    .await;
    assert_eq!(e.len(), N as usize);
    let reads = rec.reads();
    // 5 full pages, then an empty one ends the iteration.
    assert_eq!(reads.len(), 6, "{reads:?}");
    assert_eq!(
        reads[0],
        vec![ReadRange {
            start: [p.clone(), vec![0]].concat(),
            end: [p.clone(), vec![0xff]].concat(),
            limit: 5,
            reverse: false
        }]
    );
    // The next page starts right after the last key of the previous one.
    let k4 = key!["l", 4i64].encode().unwrap();
    assert_eq!(reads[1][0].start, [k4, vec![0]].concat());
    assert_eq!(reads[1][0].end, [p.clone(), vec![0xff]].concat());

    // With a limit and no batch size, the batch is the limit.
    let before = rec.reads().len();
    let e = collect(
        &kv,
        Selector::prefix(key!["l"]),
        ListOptions::default().limit(7).reverse(true),
    )
    .await;
    assert_eq!(e.len(), 7);
    let reads = rec.reads();
    assert_eq!(reads.len(), before + 1);
    assert_eq!(reads[before][0].limit, 7);
    assert!(reads[before][0].reverse);

    // A short page ends the listing without another request.
    let before = rec.reads().len();
    let e = collect(
        &kv,
        Selector::prefix(key!["l"]),
        ListOptions::default().batch_size(7),
    )
    .await;
    assert_eq!(e.len(), N as usize);
    assert_eq!(rec.reads().len(), before + 4);

    // get = [k, k‖00) limit 1.
    let before = rec.reads().len();
    kv.get(&key!["l", 1i64]).await.unwrap();
    let k1 = key!["l", 1i64].encode().unwrap();
    assert_eq!(rec.reads()[before], vec![ReadRange::single(&k1)]);
}

// ---------------------------------------------------------------------------------------------
// atomic
// ---------------------------------------------------------------------------------------------

pub async fn atomic_checks(kv: &Kv) {
    let a = key!["acct", "a"];
    let b = key!["acct", "b"];
    // "Must be absent" check.
    let r = kv
        .atomic()
        .check(&a, None)
        .set(&a, 100u64)
        .set(&b, 0u64)
        .commit()
        .await
        .unwrap();
    let vs = r.versionstamp().expect("committed");
    assert_eq!(kv.get(&a).await.unwrap().versionstamp, Some(vs));
    // The same check now fails and applies nothing.
    let r = kv
        .atomic()
        .check(&a, None)
        .set(&b, 5u64)
        .commit()
        .await
        .unwrap();
    assert!(matches!(r, CommitResult::CheckFailed(_)), "{r:?}");
    assert_eq!(kv.get(&b).await.unwrap().value, Some(Value::U64(0)));

    // Optimistic transfer with the right versionstamps.
    let ea = kv.get(&a).await.unwrap();
    let eb = kv.get(&b).await.unwrap();
    let r = kv
        .atomic()
        .check(&a, ea.versionstamp)
        .check(&b, eb.versionstamp)
        .set(&a, 70u64)
        .set(&b, 30u64)
        .commit()
        .await
        .unwrap();
    let vs2 = r.versionstamp().unwrap();
    assert!(vs2 > vs);
    // A stale versionstamp fails.
    let r = kv
        .atomic()
        .check(&a, ea.versionstamp)
        .delete(&a)
        .commit()
        .await
        .unwrap();
    assert!(r.versionstamp().is_none());
    assert_eq!(kv.get(&a).await.unwrap().value, Some(Value::U64(70)));
    // Delete inside an atomic op; both keys share the versionstamp.
    let r = kv
        .atomic()
        .delete(&a)
        .set(&key!["acct", "c"], "x")
        .commit()
        .await
        .unwrap();
    let vs3 = r.versionstamp().unwrap();
    assert_eq!(kv.get(&a).await.unwrap().value, None);
    assert_eq!(
        kv.get(&key!["acct", "c"]).await.unwrap().versionstamp,
        Some(vs3)
    );

    // Argument errors are reported by commit.
    let r = kv
        .atomic()
        .enqueue(Value::Bytes(vec![1]), EnqueueOptions::default())
        .commit()
        .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

pub async fn atomic_sum_min_max(kv: &Kv) {
    let c = key!["counter"];
    kv.atomic().sum(&c, 5u64).commit().await.unwrap();
    kv.atomic().sum(&c, 10u64).commit().await.unwrap();
    assert_eq!(kv.get(&c).await.unwrap().value, Some(Value::U64(15)));
    // U64 sums wrap.
    kv.atomic().sum(&c, u64::MAX).commit().await.unwrap();
    assert_eq!(kv.get(&c).await.unwrap().value, Some(Value::U64(14)));

    let m = key!["min"];
    kv.atomic().min(&m, 50u64).commit().await.unwrap(); // absent: set
    kv.atomic().min(&m, 70u64).commit().await.unwrap();
    kv.atomic().min(&m, 20u64).commit().await.unwrap();
    assert_eq!(kv.get(&m).await.unwrap().value, Some(Value::U64(20)));
    let x = key!["max"];
    kv.atomic().max(&x, 50u64).commit().await.unwrap();
    kv.atomic().max(&x, 20u64).commit().await.unwrap();
    kv.atomic().max(&x, 70u64).commit().await.unwrap();
    assert_eq!(kv.get(&x).await.unwrap().value, Some(Value::U64(70)));

    // Sums of JS numbers and bigints (V8 values), as a JS program would read them.
    let n = key!["num"];
    kv.set(&n, 1.5).await.unwrap();
    kv.atomic().sum(&n, 2.25).commit().await.unwrap();
    assert_eq!(kv.get(&n).await.unwrap().value, Some(Value::Number(3.75)));
    let bi = key!["big"];
    kv.atomic()
        .sum(&bi, BigInt::from(10))
        .commit()
        .await
        .unwrap();
    kv.atomic()
        .sum_with(
            &bi,
            BigInt::from(100),
            SumOptions {
                min: None,
                max: Some(BigInt::from(50).into()),
                clamp: true,
            },
        )
        .commit()
        .await
        .unwrap();
    assert_eq!(
        kv.get(&bi).await.unwrap().value,
        Some(Value::BigInt(BigInt::from(50)))
    );
    // Out of range without clamp: the whole write fails and nothing is applied.
    let r = kv
        .atomic()
        .set(&key!["side-effect"], "no")
        .sum_with(
            &bi,
            BigInt::from(1),
            SumOptions {
                min: None,
                max: Some(BigInt::from(50).into()),
                clamp: false,
            },
        )
        .commit()
        .await;
    let err = r.expect_err("sum out of range must fail");
    assert!(err.is_client_error(), "{err:?}");
    assert_eq!(kv.get(&key!["side-effect"]).await.unwrap().value, None);
    // Type mismatch: sum a U64 into a string.
    kv.set(&key!["s"], "text").await.unwrap();
    let err = kv
        .atomic()
        .sum(&key!["s"], 1u64)
        .commit()
        .await
        .expect_err("type mismatch");
    assert!(err.is_client_error(), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// watch
// ---------------------------------------------------------------------------------------------

async fn next(s: &mut kv_connect_client::EntriesStream) -> Vec<kv_connect_client::EntryMaybe> {
    tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .expect("watch notification")
        .unwrap()
        .unwrap()
}

pub async fn watch_keys(kv: &Kv) {
    let a = key!["w", "a"];
    let b = key!["w", "b"];
    kv.set(&a, "a0").await.unwrap();
    let mut stream = kv.watch(&[a.clone(), b.clone()]).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].value, Some(Value::from("a0")));
    assert_eq!(first[1].key, b);
    assert_eq!(first[1].value, None);

    let vs = kv.set(&b, "b1").await.unwrap();
    let n = next(&mut stream).await;
    assert_eq!(n[0].value, Some(Value::from("a0")));
    assert_eq!(n[1].value, Some(Value::from("b1")));
    assert_eq!(n[1].versionstamp, Some(vs));

    // An unrelated write produces no notification.
    kv.set(&key!["w", "other"], 1).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(quiet.is_err(), "unexpected notification {quiet:?}");

    kv.delete(&a).await.unwrap();
    let n = next(&mut stream).await;
    assert_eq!(n[0].value, None);
    assert_eq!(n[1].value, Some(Value::from("b1")));

    // Several quick writes: the last state is eventually seen.
    for i in 0..5 {
        kv.set(&a, i).await.unwrap();
    }
    loop {
        let n = next(&mut stream).await;
        if n[0].value == Some(Value::from(4)) {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// queues
// ---------------------------------------------------------------------------------------------

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Value, u32)>) -> (Value, u32) {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("queue delivery")
        .unwrap()
}

pub async fn queue_listener(kv: &Kv) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = {
        let kv = kv.clone();
        tokio::spawn(async move {
            kv.listen_queue(move |d| {
                let tx = tx.clone();
                async move {
                    let fail = d.value == Value::from("fail-once") && d.attempt == 1
                        || d.value == Value::from("always-fail");
                    tx.send((d.value.clone(), d.attempt)).unwrap();
                    if fail {
                        Err("handler failure")
                    } else {
                        Ok(())
                    }
                }
            })
            .await
        })
    };

    // Plain delivery of JS-compatible values.
    kv.enqueue("hello", EnqueueOptions::default())
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, (Value::from("hello"), 1));
    kv.enqueue(BigInt::from(42), EnqueueOptions::default())
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, (Value::BigInt(BigInt::from(42)), 1));

    // A failed delivery is retried along the backoff schedule.
    let opts = EnqueueOptions {
        backoff_schedule: Some(vec![50]),
        ..Default::default()
    };
    kv.enqueue("fail-once", opts).await.unwrap();
    assert_eq!(recv(&mut rx).await, (Value::from("fail-once"), 1));
    assert_eq!(recv(&mut rx).await, (Value::from("fail-once"), 2));

    // Exhausted retries write the payload to keys_if_undelivered.
    let dead = key!["dead", "letter"];
    let opts = EnqueueOptions {
        backoff_schedule: Some(vec![20]),
        keys_if_undelivered: vec![dead.clone()],
        ..Default::default()
    };
    kv.enqueue("always-fail", opts).await.unwrap();
    assert_eq!(recv(&mut rx).await, (Value::from("always-fail"), 1));
    assert_eq!(recv(&mut rx).await, (Value::from("always-fail"), 2));
    let mut stored = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        stored = kv.get(&dead).await.unwrap().value;
        if stored.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored, Some(Value::from("always-fail")));

    // A delayed message is not delivered early.
    let t0 = std::time::Instant::now();
    kv.enqueue(
        1.5,
        EnqueueOptions {
            delay: Duration::from_millis(400),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(recv(&mut rx).await, (Value::Number(1.5), 1));
    assert!(
        t0.elapsed() >= Duration::from_millis(390),
        "{:?}",
        t0.elapsed()
    );

    // Messages committed atomically with a write.
    let r = kv
        .atomic()
        .set(&key!["job"], "queued")
        .enqueue("job-1", EnqueueOptions::default())
        .commit()
        .await
        .unwrap();
    assert!(r.versionstamp().is_some());
    assert_eq!(recv(&mut rx).await, (Value::from("job-1"), 1));

    listener.abort();
}

pub async fn queue_concurrent_listener(kv: &Kv) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Handlers hold their message until a second one runs alongside (or this deadline, a
    // bound on a hang, passes): overlap is waited for, not left to how fast the dequeues of
    // a loaded machine come back.
    let overlap_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let listener = {
        let kv = kv.clone();
        let (active, max_active) = (active.clone(), max_active.clone());
        tokio::spawn(async move {
            let opts = ListenOptions {
                concurrency: 4,
                poll_wait: Duration::from_secs(1),
                ..Default::default()
            };
            kv.listen_queue_with(opts, move |d| {
                let (tx, active, max_active) = (tx.clone(), active.clone(), max_active.clone());
                async move {
                    use std::sync::atomic::Ordering;
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    max_active.fetch_max(now, Ordering::SeqCst);
                    while max_active.load(Ordering::SeqCst) < 2
                        && tokio::time::Instant::now() < overlap_deadline
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    tx.send(d.value).unwrap();
                    Ok::<(), String>(())
                }
            })
            .await
        })
    };
    let mut op = kv.atomic();
    for i in 0..8 {
        op = op.enqueue(i, EnqueueOptions::default());
    }
    op.commit().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..8 {
        let v = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("delivery")
            .unwrap();
        got.push(v.as_f64().unwrap() as i64);
    }
    got.sort();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    let max = max_active.load(std::sync::atomic::Ordering::SeqCst);
    assert!(max > 1 && max <= 4, "max concurrent handlers {max}");
    listener.abort();
}

/// `listen_queue` returns when the database is closed.
pub async fn queue_listener_stops_on_close(kv: Kv) {
    let listener = {
        let kv = kv.clone();
        tokio::spawn(async move { kv.listen_queue(|_d| async { Ok::<(), String>(()) }).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    kv.close().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), listener)
        .await
        .expect("listener stops")
        .unwrap();
    assert_eq!(r, Ok(()));
}
