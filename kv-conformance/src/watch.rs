//! Watch: the first notification reports every key, commits of watched keys produce
//! notifications holding a consistent snapshot, slow watchers get the latest state.

use std::time::Duration;

use futures::StreamExt;
use kv_traits::{Database, KvEntry, KvValue, LimitError, Mutation, WatchKeyOutput, WatchStream};

use crate::util::*;

/// Waits for the next notification (30 s bounds a hang).
pub async fn next(w: &mut WatchStream) -> Vec<WatchKeyOutput> {
    tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("no watch notification within 30 s")
        .expect("watch stream ended")
        .expect("watch stream returned an error")
}

/// The notification arriving within `ms`, if any.
async fn next_within(w: &mut WatchStream, ms: u64) -> Option<Vec<WatchKeyOutput>> {
    match tokio::time::timeout(Duration::from_millis(ms), w.next()).await {
        Ok(Some(Ok(n))) => Some(n),
        Ok(Some(Err(e))) => panic!("watch stream returned an error: {e}"),
        Ok(None) => panic!("watch stream ended"),
        Err(_) => None,
    }
}

/// Folds a notification into the watcher's view of the keys, checking that `Unchanged` is only
/// used after the first notification.
fn apply(view: &mut [Option<Option<KvEntry>>], n: &[WatchKeyOutput]) {
    assert_eq!(
        n.len(),
        view.len(),
        "one output per watched key, in request order"
    );
    for (slot, out) in view.iter_mut().zip(n) {
        match out {
            WatchKeyOutput::Changed(e) => *slot = Some(e.clone()),
            WatchKeyOutput::Unchanged => assert!(
                slot.is_some(),
                "the first notification must report every key as Changed"
            ),
        }
    }
}

fn current(view: &[Option<Option<KvEntry>>]) -> Vec<Option<KvEntry>> {
    view.iter().map(|s| s.clone().expect("seen")).collect()
}

/// Reads the watched keys' current entries.
async fn snapshot(db: &dyn Database, keys: &[Vec<u8>]) -> Vec<Option<KvEntry>> {
    let mut out = Vec::new();
    for k in keys {
        out.push(get(db, k).await);
    }
    out
}

/// Waits until the watcher's view equals `want`; every intermediate view must be a state the
/// keys actually had (checked by the caller through `allowed`).
async fn wait_for(
    w: &mut WatchStream,
    view: &mut [Option<Option<KvEntry>>],
    want: &[Option<KvEntry>],
) {
    for _ in 0..50 {
        if view.iter().all(|s| s.is_some()) && current(view) == want {
            return;
        }
        let n = next(w).await;
        apply(view, &n);
    }
    panic!("watch never reported {want:?}; last view {view:?}");
}

/// The first notification reports every key as `Changed`, with its entry or `None`.
pub async fn first_notification_reports_every_key(db: &dyn Database) {
    let (a, b, c) = (key("a"), key("b"), key("c"));
    set(db, &a, bytes(b"a")).await;
    commit(
        db,
        write_of(vec![set_expiring(&c, bytes(b"c"), LONG_AGO_MS)]),
    )
    .await;
    let mut w = db
        .watch(vec![a.clone(), b.clone(), c.clone(), a.clone()])
        .await
        .expect("watch");
    let n = next(&mut w).await;
    let want = snapshot(db, &[a.clone(), b, c, a]).await;
    assert_eq!(n.len(), 4);
    for (out, want) in n.iter().zip(&want) {
        assert_eq!(out, &WatchKeyOutput::Changed(want.clone()));
    }
    assert!(want[0].is_some() && want[1].is_none() && want[2].is_none());
}

/// A committed write of a watched key produces a notification with the new entry.
pub async fn write_produces_notification(db: &dyn Database) {
    let k = key("a");
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let mut view = vec![None];
    apply(&mut view, &next(&mut w).await);
    assert_eq!(current(&view), vec![None]);
    for i in 0..5u64 {
        let vs = set(db, &k, KvValue::U64(i)).await;
        let want = vec![Some(KvEntry {
            key: k.clone(),
            value: KvValue::U64(i),
            versionstamp: vs,
        })];
        wait_for(&mut w, &mut view, &want).await;
    }
}

/// All keys changed by one write appear in one notification with the write's versionstamp.
pub async fn one_write_one_notification(db: &dyn Database) {
    let ks = vec![key("a"), key("b"), key("c")];
    set(db, &ks[2], bytes(b"old")).await;
    let mut w = db.watch(ks.clone()).await.expect("watch");
    let first = next(&mut w).await;
    let mut view = vec![None, None, None];
    apply(&mut view, &first);
    let vs = commit(
        db,
        write_of(vec![
            Mutation::set(ks[0].clone(), bytes(b"1")),
            Mutation::set(ks[1].clone(), bytes(b"2")),
            Mutation::delete(ks[2].clone()),
        ]),
    )
    .await;
    // Unrelated-key or spurious notifications may come first; the first one showing any effect
    // of the write must show all of it.
    for _ in 0..20 {
        let n = next(&mut w).await;
        let before = current(&view);
        apply(&mut view, &n);
        let now = current(&view);
        if now == before {
            continue;
        }
        let want = snapshot(db, &ks).await;
        assert_eq!(
            now, want,
            "a notification must show the whole write at once"
        );
        assert_eq!(now[0].as_ref().map(|e| e.versionstamp), Some(vs));
        assert_eq!(now[1].as_ref().map(|e| e.versionstamp), Some(vs));
        assert_eq!(now[2], None);
        return;
    }
    panic!("no notification for the write");
}

/// Keys a write did not touch are reported `Unchanged` or `Changed` with the same entry; never
/// with a wrong value.
pub async fn unchanged_keys_are_never_wrong(db: &dyn Database) {
    let (a, b) = (key("a"), key("b"));
    let vb = set(db, &b, bytes(b"b")).await;
    let mut w = db.watch(vec![a.clone(), b.clone()]).await.expect("watch");
    let mut view = vec![None, None];
    apply(&mut view, &next(&mut w).await);
    for i in 0..5u64 {
        let vs = set(db, &a, KvValue::U64(i)).await;
        let want = vec![
            Some(KvEntry {
                key: a.clone(),
                value: KvValue::U64(i),
                versionstamp: vs,
            }),
            Some(KvEntry {
                key: b.clone(),
                value: bytes(b"b"),
                versionstamp: vb,
            }),
        ];
        wait_for(&mut w, &mut view, &want).await;
    }
}

/// Deleting a watched key reports it as `Changed(None)`.
pub async fn delete_reports_absent(db: &dyn Database) {
    let k = key("a");
    let vs = set(db, &k, bytes(b"x")).await;
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let mut view = vec![None];
    apply(&mut view, &next(&mut w).await);
    assert_eq!(current(&view)[0].as_ref().map(|e| e.versionstamp), Some(vs));
    commit(db, write_of(vec![Mutation::delete(k.clone())])).await;
    wait_for(&mut w, &mut view, &[None]).await;
}

/// A watcher that does not poll while many writes happen then gets the latest state, not a
/// backlog of intermediate values.
pub async fn slow_watcher_gets_latest_state(db: &dyn Database) {
    let k = key("counter");
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let mut view = vec![None];
    apply(&mut view, &next(&mut w).await);
    let mut last = None;
    for i in 0..200u64 {
        last = Some(set(db, &k, KvValue::U64(i)).await);
    }
    let n = next(&mut w).await;
    apply(&mut view, &n);
    let want = vec![Some(KvEntry {
        key: k.clone(),
        value: KvValue::U64(199),
        versionstamp: last.expect("written"),
    })];
    assert_eq!(
        current(&view),
        want,
        "the first notification after a burst must carry the latest state"
    );
    // Nothing older may follow.
    while let Some(n) = next_within(&mut w, 200).await {
        apply(&mut view, &n);
        assert_eq!(
            current(&view),
            want,
            "a stale value arrived after the latest one"
        );
    }
}

/// Writes to other keys never change what the watcher sees.
pub async fn unrelated_writes_change_nothing(db: &dyn Database) {
    let k = key("a");
    let vs = set(db, &k, bytes(b"a")).await;
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let mut view = vec![None];
    apply(&mut view, &next(&mut w).await);
    for i in 0..10u64 {
        set(db, &key2("a", &i.to_string()), KvValue::U64(i)).await;
        set(db, &key("b"), KvValue::U64(i)).await;
    }
    let want = vec![Some(KvEntry {
        key: k.clone(),
        value: bytes(b"a"),
        versionstamp: vs,
    })];
    while let Some(n) = next_within(&mut w, 200).await {
        apply(&mut view, &n);
        assert_eq!(current(&view), want);
    }
}

/// More keys than the limit (10) is a limit error; exactly 10 works.
pub async fn too_many_keys_fails(db: &dyn Database) {
    let ks: Vec<Vec<u8>> = (0..11).map(|i| key(&format!("k{i}"))).collect();
    let r = db.watch(ks.clone()).await.map(|_| ());
    assert_limit_error(
        r,
        |l| matches!(l, LimitError::TooManyWatchKeys { count: 11, .. }),
        "Too many keys watched",
    );
    let mut w = db
        .watch(ks[..10].to_vec())
        .await
        .expect("10 keys are allowed");
    assert_eq!(next(&mut w).await.len(), 10);
}

/// Dropping a watch stream does not disturb later writes or watches.
pub async fn dropped_watch_does_not_disturb_writes(db: &dyn Database) {
    let k = key("a");
    for _ in 0..5 {
        let w = db.watch(vec![k.clone()]).await.expect("watch");
        drop(w);
    }
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let _first = next(&mut w).await;
    drop(w);
    for i in 0..20u64 {
        set(db, &k, KvValue::U64(i)).await;
    }
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    match &next(&mut w).await[0] {
        WatchKeyOutput::Changed(Some(e)) => assert_eq!(e.value, KvValue::U64(19)),
        other => panic!("{other:?}"),
    }
}

/// While a writer runs, every notification shows a state the key really had, and states never
/// go backwards.
pub async fn notifications_never_go_backwards(db: &dyn Database) {
    let k = key("a");
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let mut view = vec![None];
    apply(&mut view, &next(&mut w).await);
    let writer = async {
        let mut written = Vec::new();
        for i in 0..100u64 {
            written.push((set(db, &k, KvValue::U64(i)).await, i));
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        written
    };
    let watcher = async {
        let mut seen = Vec::new();
        loop {
            let n = next(&mut w).await;
            apply(&mut view, &n);
            if let Some(Some(e)) = &view[0] {
                seen.push((e.versionstamp, e.value.clone()));
                if e.value == KvValue::U64(99) {
                    return seen;
                }
            }
        }
    };
    let (written, seen) = futures::join!(writer, watcher);
    let mut last = None;
    for (vs, value) in seen {
        let i = written.iter().find(|(v, _)| *v == vs).map(|(_, i)| *i);
        assert_eq!(
            i.map(KvValue::U64),
            Some(value.clone()),
            "notified {value:?} @ {vs}, which no write produced"
        );
        assert!(
            last.is_none_or(|l| vs >= l),
            "watch went backwards: {vs} after {last:?}"
        );
        last = Some(vs);
    }
}
