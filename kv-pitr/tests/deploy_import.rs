//! Importing a backup written by Deno Deploy: format-0 object names, no checksum trailer, no
//! manifest, `MK_SUM`/`MK_MAX` entries carrying their resulting value, a transaction split
//! across two log objects, a re-uploaded (overlapping) log object, and a fuzzy snapshot that
//! only becomes consistent at the differential versionstamp. The backup is built by hand with
//! plain protobuf encoding, the way Deploy writes it.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kv_db::ExportEntry;
use kv_pitr::consumer::{BackupReader, ConsumerError, RecoveryPoint};
use kv_pitr::format::pb::{
    BackupKvMutationKind as Kind, BackupKvPair, BackupMutationRange, BackupReplicationLogEntry,
    BackupSnapshotRange,
};
use kv_pitr::format::{self, Vs12};
use kv_pitr::restore::{restore, RestoreError, RestoreTarget};
use kv_traits::{KvValue, Versionstamp};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prost::Message;

use common::{dump, key, local_store, memory_db as empty_db, restore_err, restore_to};

const FAR_FUTURE: u64 = 4_102_444_800_000; // 2100-01-01

fn vs(n: u64) -> Versionstamp {
    Versionstamp::from_version(n)
}

fn v12(n: u64, index: u16) -> Vs12 {
    format::vs12(&vs(n), index)
}

/// A snapshot pair as Deploy writes it: `d‖key` → value, `m‖key` → versionstamp, encoding,
/// optional expiry.
fn pair(
    k: &str,
    value: &[u8],
    encoding: u8,
    version: u64,
    expire: Option<i64>,
) -> (BackupKvPair, BackupKvPair) {
    let mut dk = vec![b'd'];
    dk.extend_from_slice(&key(k));
    let mut mk = vec![b'm'];
    mk.extend_from_slice(&key(k));
    let mut meta = vs(version).0.to_vec();
    meta.push(encoding);
    if let Some(e) = expire {
        meta.extend_from_slice(&e.to_le_bytes());
    }
    (
        BackupKvPair {
            key: dk,
            value: value.to_vec(),
        },
        BackupKvPair {
            key: mk,
            value: meta,
        },
    )
}

fn snapshot(pairs: Vec<(BackupKvPair, BackupKvPair)>) -> Vec<u8> {
    let (data_list, metadata_list) = pairs.into_iter().unzip();
    BackupSnapshotRange {
        data_list,
        metadata_list,
    }
    .encode_to_vec()
}

fn entry(
    v: Vs12,
    kind: Kind,
    k: &str,
    value: &[u8],
    encoding: i32,
    expire: u64,
) -> BackupReplicationLogEntry {
    BackupReplicationLogEntry {
        versionstamp: v.to_vec(),
        kind: kind as i32,
        key: key(k),
        value: value.to_vec(),
        value_encoding: encoding,
        expire_at_ms: expire,
    }
}

fn log_name(tsn: u64, entries: &[BackupReplicationLogEntry]) -> String {
    let first = hex::encode(&entries[0].versionstamp);
    let last = hex::encode(&entries[entries.len() - 1].versionstamp);
    format!("{:016x}_{:016x}_{first}_{last}.bin", 1, tsn)
}

struct DeployBackup {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    logs: Vec<Path>,
}

/// Writes the hand-made Deploy backup under `deploy/` of a local-filesystem store.
async fn write_deploy_backup() -> DeployBackup {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let put = |name: String, body: Vec<u8>| {
        let store = store.clone();
        async move {
            let p = Path::from(format!("deploy/{name}"));
            store.put(&p, PutPayload::from(body)).await.unwrap();
            p
        }
    };
    // Differential written with a trailing newline.
    put("differential".into(), format!("{}\n", vs(10)).into_bytes()).await;
    // A fuzzy snapshot in two ranges (format-0 names: epoch 1, tsn 0).
    put(
        format!("snapshots/{:016x}_{:016x}_{:016x}.bin", 1, 0, 0),
        snapshot(vec![
            pair("a", &[0xff, 0x0f, 0x22, 0x01, b'a'], 1, 5, None),
            pair("b", &9u64.to_le_bytes(), 2, 9, Some(FAR_FUTURE as i64)),
            pair("zy", b"new", 3, 6, None),
        ]),
    )
    .await;
    put(
        format!("snapshots/{:016x}_{:016x}_{:016x}.bin", 1, 0, 1),
        // "zy" again, an older version (read before range 0 was): the newer one wins.
        snapshot(vec![
            pair("zy", b"old", 3, 4, None),
            pair("zz", b"bytes", 3, 7, None),
        ]),
    )
    .await;

    let seg1 = vec![
        entry(v12(8, 0), Kind::MkSet, "a", b"old", 3, 0),
        entry(v12(8, 0xffff), Kind::MkClear, "zz", b"", 0, 0),
        // The result of a sum, at the differential versionstamp.
        entry(
            v12(10, 0xffff),
            Kind::MkSum,
            "b",
            &100u64.to_le_bytes(),
            2,
            0,
        ),
    ];
    // Transaction 12 starts here and ends in the next object.
    let seg2 = vec![
        entry(
            v12(12, 0),
            Kind::MkSet,
            "c",
            &[0xff, 0x0f, 0x49, 0x02],
            1,
            0,
        ),
        entry(v12(12, 1), Kind::MkClear, "a", b"", 0, 0),
    ];
    let seg3 = vec![
        entry(v12(12, 0xffff), Kind::MkMax, "d", &5u64.to_le_bytes(), 2, 0),
        entry(v12(14, 0xffff), Kind::MkSet, "e", b"e", 3, FAR_FUTURE),
    ];
    // Re-uploaded overlap: 14 again, then 15.
    let seg4 = vec![
        entry(v12(14, 0xffff), Kind::MkSet, "e", b"e", 3, FAR_FUTURE),
        entry(v12(15, 0xffff), Kind::MkClear, "b", b"", 0, 0),
    ];
    let mut logs = Vec::new();
    for (tsn, (entries, ts)) in [(seg1, 1000), (seg2, 2000), (seg3, 3000), (seg4, 4000)]
        .into_iter()
        .enumerate()
    {
        let name = log_name(tsn as u64 + 1, &entries);
        let body = BackupMutationRange {
            entries,
            timestamp_ms: ts,
        }
        .encode_to_vec();
        logs.push(put(format!("logs/{name}"), body).await);
    }
    DeployBackup { dir, store, logs }
}

fn e(k: &str, value: KvValue, version: u64, expire: Option<u64>) -> ExportEntry {
    ExportEntry {
        key: key(k),
        value,
        versionstamp: vs(version),
        expire_at_ms: expire,
    }
}

/// The expected raw state at each recovery point, sorted by key.
fn expected(at: u64) -> Vec<ExportEntry> {
    let a_old = e("a", KvValue::Bytes(b"old".to_vec()), 8, None);
    let b100 = e("b", KvValue::U64(100), 10, None);
    let c = e("c", KvValue::V8(vec![0xff, 0x0f, 0x49, 0x02]), 12, None);
    let d = e("d", KvValue::U64(5), 12, None);
    let ee = e("e", KvValue::Bytes(b"e".to_vec()), 14, Some(FAR_FUTURE));
    let zy = e("zy", KvValue::Bytes(b"new".to_vec()), 6, None);
    match at {
        10 => vec![a_old, b100, zy],
        12 => vec![b100, c, d, zy],
        14 => vec![b100, c, d, ee, zy],
        15 => vec![c, d, ee, zy],
        _ => panic!("no state {at}"),
    }
}

#[tokio::test]
async fn deploy_backup_restores_at_every_point() {
    let b = write_deploy_backup().await;
    let reader = BackupReader::new(b.store.clone(), Path::from("deploy"));
    let points = reader.recovery_points(None, None).await.unwrap();
    let rp = |v: u64, t: u64| RecoveryPoint {
        versionstamp: vs(v),
        timestamp_ms: t,
    };
    assert_eq!(
        points,
        vec![rp(15, 4000), rp(14, 3000), rp(12, 3000), rp(10, 1000)]
    );
    let info = reader.info().await.unwrap();
    assert!(info.manifest.is_none());
    assert_eq!(info.snapshot_ranges, 2);
    assert_eq!(info.log_segments, 4);
    assert_eq!(info.differential, vs(10));

    for p in &points {
        let (db, out) = restore_to(&reader, RestoreTarget::Versionstamp(p.versionstamp)).await;
        assert_eq!(out.versionstamp, p.versionstamp);
        assert_eq!(
            dump(&db).await,
            expected(p.versionstamp.version()),
            "at {p}"
        );
        assert_eq!(db.current_versionstamp().await.unwrap(), p.versionstamp);
    }
    // Time targets.
    for (t, v) in [
        (1000, 10),
        (2999, 10),
        (3000, 14),
        (3999, 14),
        (4000, 15),
        (99_999, 15),
    ] {
        let (db, out) = restore_to(&reader, RestoreTarget::Time(t)).await;
        assert_eq!(out.versionstamp, vs(v), "time {t}");
        assert_eq!(dump(&db).await, expected(v));
    }
    let (_, err) = restore_err(&reader, RestoreTarget::Time(999)).await;
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::BeforeFirstPoint { .. })
        ),
        "{err}"
    );
    // Inside the split transaction 12 is not a point: the state before it is restored.
    let (_, out) = restore_to(&reader, RestoreTarget::Versionstamp(vs(11))).await;
    assert_eq!(out.versionstamp, vs(10));
    // Latest.
    let (_, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, vs(15));
    assert_eq!(out.keys, 4);
    drop(b.dir);
}

#[tokio::test]
async fn segments_modified_after_the_listing_began_are_left_for_later() {
    let b = write_deploy_backup().await;
    // The last object looks as if it were written while we list (modified "in the future").
    let file = b.dir.path().join(b.logs[3].as_ref());
    let f = std::fs::File::options().write(true).open(&file).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let reader = BackupReader::new(b.store.clone(), Path::from("deploy"));
    let (db, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, vs(14));
    assert_eq!(dump(&db).await, expected(14));

    let f = std::fs::File::options().write(true).open(&file).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(10))
        .unwrap();
    drop(f);
    let (_, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, vs(15));
}

#[tokio::test]
async fn deploy_backup_whose_logs_do_not_reach_the_differential() {
    let b = write_deploy_backup().await;
    for p in &b.logs {
        b.store.delete(p).await.unwrap();
    }
    let reader = BackupReader::new(b.store.clone(), Path::from("deploy"));
    let (db, err) = restore_err(&reader, RestoreTarget::Latest).await;
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::LogsIncomplete { .. })
        ),
        "{err}"
    );
    assert!(dump(&db).await.is_empty());
    // Without the differential marker the backup is not ready yet.
    b.store
        .delete(&Path::from("deploy/differential"))
        .await
        .unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, RestoreError::Backup(ConsumerError::NotReady { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn deploy_backup_with_a_corrupt_object() {
    let b = write_deploy_backup().await;
    // No checksum trailer to catch this one, but protobuf decoding does.
    b.store
        .put(&b.logs[1], PutPayload::from_static(b"\x0a\xff\xff\xff"))
        .await
        .unwrap();
    let reader = BackupReader::new(b.store.clone(), Path::from("deploy"));
    let (db, err) = restore_err(&reader, RestoreTarget::Latest).await;
    assert!(
        matches!(&err, RestoreError::Backup(ConsumerError::Corrupt { object, .. }) if object == b.logs[1].as_ref()),
        "{err}"
    );
    assert!(dump(&db).await.is_empty());
}

#[tokio::test]
async fn replica_follows_a_deploy_backup_as_objects_appear() {
    let b = write_deploy_backup().await;
    // Hide the last two objects (transaction 12 is split: its end is in the third).
    let hidden: Vec<(Path, Vec<u8>)> = {
        let mut v = Vec::new();
        for p in &b.logs[2..] {
            let body = common::get(&*b.store, p).await.to_vec();
            b.store.delete(p).await.unwrap();
            v.push((p.clone(), body));
        }
        v
    };
    let db = common::read_only_db().await;
    let reader = BackupReader::new(b.store.clone(), Path::from("deploy"));
    let replica = kv_pitr::restore::Replica::start(reader, db.clone(), Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(replica.status().applied_through, vs(10));
    assert_eq!(dump(&db).await, expected(10));
    for (p, body) in hidden {
        b.store.put(&p, PutPayload::from(body)).await.unwrap();
    }
    let st = replica
        .wait_for(vs(15), Duration::from_secs(20))
        .await
        .expect("replica caught up");
    assert_eq!(st.applied_through, vs(15));
    assert_eq!(dump(&db).await, expected(15));
    replica.stop().await;
}

/// Deno Deploy versionstamps can carry a non-zero batch index in their last two bytes; such a
/// point restores, is recognised as the copy's point afterwards, and a write ends that.
#[tokio::test]
async fn a_point_with_a_batch_index_restores_and_can_be_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let p = |name: &str| Path::from(format!("deploy/{name}"));
    let point: Versionstamp = "000000000000000c0003".parse().unwrap();
    let later: Versionstamp = "000000000000000d0001".parse().unwrap();
    common::put(&*store, &p("differential"), point.to_string().into_bytes()).await;
    common::put(
        &*store,
        &p(&format!("snapshots/{:016x}_{:016x}_{:016x}.bin", 1, 0, 0)),
        snapshot(vec![pair("a", b"1", 3, 5, None)]),
    )
    .await;
    let seg = |entries: Vec<BackupReplicationLogEntry>, ts: u64| {
        BackupMutationRange {
            entries,
            timestamp_ms: ts,
        }
        .encode_to_vec()
    };
    let e1 = vec![entry(
        format::vs12(&point, 0xffff),
        Kind::MkSet,
        "b",
        b"2",
        3,
        0,
    )];
    common::put(
        &*store,
        &p(&format!("logs/{}", log_name(1, &e1))),
        seg(e1, 1000),
    )
    .await;

    let reader = BackupReader::new(store.clone(), Path::from("deploy"));
    let (db, out) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(out.versionstamp, point);
    assert_eq!(db.imported_through().await.unwrap(), Some(point));

    // A later commit appears; the copy moves forward to it.
    let e2 = vec![entry(
        format::vs12(&later, 0xffff),
        Kind::MkClear,
        "a",
        b"",
        0,
        0,
    )];
    common::put(
        &*store,
        &p(&format!("logs/{}", log_name(2, &e2))),
        seg(e2, 2000),
    )
    .await;
    let out = kv_pitr::restore::catch_up(&reader, &db, RestoreTarget::Latest)
        .await
        .unwrap();
    assert_eq!(out.versionstamp, later);
    let keys: Vec<Vec<u8>> = dump(&db).await.into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec![key("b")]);

    // Written to, it is no longer a copy.
    let w = kv_traits::Database::atomic_write(
        &db,
        kv_traits::AtomicWrite {
            mutations: vec![kv_traits::Mutation::set(key("w"), KvValue::U64(1))],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(w, kv_traits::CommitResult::Committed(v) if v > later));
    let err = kv_pitr::restore::catch_up(&reader, &db, RestoreTarget::Latest)
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::NotACopy { .. }), "{err}");
}

/// A restore that stopped halfway (some chunks imported, the final one not) is neither empty
/// nor a copy: restore and catch-up both refuse it instead of serving partial data.
#[tokio::test]
async fn an_interrupted_restore_is_not_taken_for_a_copy() {
    let b = write_deploy_backup().await;
    let reader = BackupReader::new(b.store.clone(), Path::from("deploy"));
    let db = empty_db().await;
    // What the chunks of a restore do before the last one.
    db.import(
        vec![kv_db::ImportOp::Put(e(
            "a",
            KvValue::Bytes(b"x".to_vec()),
            5,
            None,
        ))],
        None,
    )
    .await
    .unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::NotEmpty { .. }), "{err}");
    let err = kv_pitr::restore::catch_up(&reader, &db, RestoreTarget::Latest)
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::NotACopy { .. }), "{err}");
}
