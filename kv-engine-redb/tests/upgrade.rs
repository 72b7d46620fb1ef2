//! Files of format 1 (written before values were chunked: table `kv` of whole values, `meta`
//! holding version 1), built here with redb directly as the earlier builds wrote them: upgraded
//! on open by default (every value kept, big ones chunked, version 2), served as they are with
//! `upgrade_on_open` off (the file stays format 1 after reads and writes), and upgraded later.

use std::num::NonZeroUsize;
use std::path::Path;

use kv_engine_redb::{RedbBackend, RedbOptions, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use kv_traits::{Backend, KvPair};
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_chunks");

/// Pairs of every interesting shape: values that start with the new layout's tag bytes, empty,
/// just under and over the chunk size, large.
fn pairs() -> Vec<KvPair> {
    let mut out = vec![
        (b"a".to_vec(), b"".to_vec()),
        (b"b".to_vec(), b"\x00inline-looking".to_vec()),
        (b"c".to_vec(), vec![0x01; 13]),
        (b"d".to_vec(), vec![7; 100]),
        (b"e".to_vec(), vec![8; 101]),
        (
            b"f".to_vec(),
            (0..65_536u32).map(|i| (i % 253) as u8).collect(),
        ),
    ];
    for i in 0..300u32 {
        out.push((
            format!("n{i:04}").into_bytes(),
            vec![i as u8; (i as usize * 7) % 400],
        ));
    }
    out
}

fn write_format_1(path: &Path, pairs: &[KvPair]) {
    let db = redb::Database::create(path).unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut meta = w.open_table(META).unwrap();
        meta.insert("format_version", 1).unwrap();
        let mut data = w.open_table(DATA).unwrap();
        for (k, v) in pairs {
            data.insert(k.as_slice(), v.as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
}

fn options(upgrade_on_open: bool) -> RedbOptions {
    RedbOptions {
        chunk_size: NonZeroUsize::new(100).unwrap(),
        upgrade_on_open,
        ..RedbOptions::default()
    }
}

async fn all(backend: &RedbBackend) -> Vec<KvPair> {
    let mut r = backend.begin_read().await.unwrap();
    r.scan(b"", b"\xff", 10_000, false).await.unwrap()
}

/// The stored version, and whether the chunks table exists, read with redb directly.
fn on_disk(path: &Path) -> (u64, Option<u64>) {
    let db = redb::Database::open(path).unwrap();
    let r = db.begin_read().unwrap();
    let version = r
        .open_table(META)
        .unwrap()
        .get("format_version")
        .unwrap()
        .unwrap()
        .value();
    let chunks = r.open_table(CHUNKS).ok().map(|t| t.len().unwrap());
    (version, chunks)
}

#[tokio::test]
async fn a_format_1_file_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let pairs = pairs();
    write_format_1(&path, &pairs);

    let db = RedbBackend::open(&path, options(true)).unwrap();
    assert_eq!(db.format_version(), FORMAT_VERSION);
    assert_eq!(all(&db).await, pairs);
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"f").await.unwrap().as_ref(), Some(&pairs[5].1));
    drop(r);
    db.close().await.unwrap();

    let (version, chunks) = on_disk(&path);
    assert_eq!(version, FORMAT_VERSION);
    // "e" (101 bytes) and "f" (64 KiB) and the long "n" values are chunked.
    assert!(chunks.unwrap() > 656, "{chunks:?}");
    let db = RedbBackend::open(&path, options(false)).unwrap();
    assert_eq!(all(&db).await, pairs);
}

#[tokio::test]
async fn a_format_1_file_is_served_as_it_is_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let mut pairs = pairs();
    write_format_1(&path, &pairs);

    let db = RedbBackend::open(&path, options(false)).unwrap();
    assert_eq!(db.format_version(), OLDEST_FORMAT_VERSION);
    assert_eq!(all(&db).await, pairs);
    let mut w = db.begin_write().await.unwrap();
    w.put(b"g", &[0x01; 500]).await.unwrap();
    w.delete(b"a").await.unwrap();
    w.commit().await.unwrap();
    db.close().await.unwrap();
    pairs.remove(0);
    pairs.insert(5, (b"g".to_vec(), vec![0x01; 500]));

    // Still format 1, whole values, no chunks table; readable by redb as the old builds did.
    assert_eq!(on_disk(&path), (OLDEST_FORMAT_VERSION, None));
    {
        let raw = redb::Database::open(&path).unwrap();
        let r = raw.begin_read().unwrap();
        let data = r.open_table(DATA).unwrap();
        assert_eq!(data.get(&b"g"[..]).unwrap().unwrap().value(), &[0x01; 500]);
    }

    // A later open with the default options upgrades it, keeping the writes.
    let db = RedbBackend::open(&path, RedbOptions::default()).unwrap();
    assert_eq!(db.format_version(), FORMAT_VERSION);
    assert_eq!(all(&db).await, pairs);
}

/// A version other than 1 and 2 is refused, a current file is not touched by an upgrade.
#[tokio::test]
async fn a_current_file_opens_without_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let db = RedbBackend::open(&path, options(true)).unwrap();
    let mut w = db.begin_write().await.unwrap();
    w.put(b"x", &[1; 250]).await.unwrap();
    w.commit().await.unwrap();
    db.close().await.unwrap();
    assert_eq!(on_disk(&path), (FORMAT_VERSION, Some(3)));
    let db = RedbBackend::open(&path, options(false)).unwrap();
    assert_eq!(db.format_version(), FORMAT_VERSION);
    assert_eq!(all(&db).await, vec![(b"x".to_vec(), vec![1; 250])]);
}
