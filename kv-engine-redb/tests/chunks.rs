//! The chunked layout against a model: random sequences of puts (value sizes around the chunk
//! size, so values go inline, into one more chunk, or into several, and overwrites switch
//! between them), deletes, gets, forward and reverse range scans with limits, commits,
//! rollbacks and reopens, run on a redb file with a chunk size of 8 bytes and on the memory
//! engine, comparing every result. Keys include ones that extend others by zero bytes (their
//! chunk keys interleave). After each sequence the chunks table must hold exactly the chunks of
//! the stored values: no chunk outlives its value.

use std::num::NonZeroUsize;
use std::path::Path;

use kv_engine_memory::MemoryBackend;
use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::{Backend, WriteTxn};
use proptest::prelude::*;
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

const CHUNK_SIZE: usize = 8;

const KEYS: &[&[u8]] = &[
    b"",
    b"\x00",
    b"\x00\x00\x00\x00",
    b"\x00\x00\x00\x00\x00",
    b"\x01",
    b"\x01\x00\x00\x00\x00",
    b"\x01\x00\x00\x00\x01",
    b"\x01\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x01\x02",
    b"\xff",
];

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        len: usize,
        seed: u8,
    },
    Delete {
        key: usize,
    },
    Get {
        key: usize,
    },
    Scan {
        start: usize,
        end: usize,
        limit: usize,
        reverse: bool,
    },
    Commit,
    Rollback,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    // Sizes at the edges of 0, 1, 2 and 5 chunks, and anything up to 5 chunks.
    let len = prop_oneof![
        prop::sample::select(vec![0, 1, 7, 8, 9, 15, 16, 17, 39, 40, 41]),
        0..=5 * CHUNK_SIZE,
    ];
    prop_oneof![
        6 => (key.clone(), len, any::<u8>()).prop_map(|(key, len, seed)| Op::Put { key, len, seed }),
        2 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => key.clone().prop_map(|key| Op::Get { key }),
        3 => (0..=KEYS.len(), 0..=KEYS.len(), 0..6usize, any::<bool>())
            .prop_map(|(start, end, limit, reverse)| Op::Scan { start, end, limit, reverse }),
        2 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Reopen),
    ]
}

/// Scan bounds: a key of [`KEYS`], or past every key.
fn bound(i: usize) -> Vec<u8> {
    KEYS.get(i).map_or_else(|| vec![0xff, 0xff], |k| k.to_vec())
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

fn options() -> RedbOptions {
    RedbOptions {
        chunk_size: NonZeroUsize::new(CHUNK_SIZE).unwrap(),
        cache_size: Some(1 << 20),
        ..RedbOptions::default()
    }
}

/// The chunks a value of `len` bytes is stored in (0 when inline).
fn chunks_of(len: usize) -> u64 {
    if len <= CHUNK_SIZE {
        return 0;
    }
    let piece = len.div_ceil(len.div_ceil(CHUNK_SIZE));
    len.div_ceil(piece) as u64
}

/// Every committed pair.
async fn all(backend: &dyn Backend) -> Vec<kv_traits::KvPair> {
    let mut snapshot = backend.begin_read().await.unwrap();
    snapshot.scan(b"", b"\xff\xff", 100, false).await.unwrap()
}

async fn run(path: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    let model = MemoryBackend::new();
    let mut redb = RedbBackend::open(path, options()).unwrap();
    let mut m: Box<dyn WriteTxn> = model.begin_write().await.unwrap();
    let mut r: Box<dyn WriteTxn> = redb.begin_write().await.unwrap();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Put { key, len, seed } => {
                let v = value(*len, *seed);
                m.put(KEYS[*key], &v).await.unwrap();
                r.put(KEYS[*key], &v).await.unwrap();
            }
            Op::Delete { key } => {
                m.delete(KEYS[*key]).await.unwrap();
                r.delete(KEYS[*key]).await.unwrap();
            }
            Op::Get { key } => {
                let want = m.get(KEYS[*key]).await.unwrap();
                prop_assert_eq!(r.get(KEYS[*key]).await.unwrap(), want, "step {}", step);
            }
            Op::Scan {
                start,
                end,
                limit,
                reverse,
            } => {
                let (s, e) = (bound(*start), bound(*end));
                let want = m.scan(&s, &e, *limit, *reverse).await.unwrap();
                let got = r.scan(&s, &e, *limit, *reverse).await.unwrap();
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Commit | Op::Rollback | Op::Reopen => {
                if matches!(op, Op::Rollback) {
                    drop(m);
                    drop(r);
                } else {
                    m.commit().await.unwrap();
                    r.commit().await.unwrap();
                }
                if matches!(op, Op::Reopen) {
                    redb.close().await.unwrap();
                    redb = RedbBackend::open(path, options()).unwrap();
                }
                // A new snapshot sees exactly the committed state.
                let want = all(&model).await;
                prop_assert_eq!(all(&redb).await, want, "step {}", step);
                m = model.begin_write().await.unwrap();
                r = redb.begin_write().await.unwrap();
            }
        }
    }
    m.commit().await.unwrap();
    r.commit().await.unwrap();
    let committed = all(&model).await;
    redb.close().await.unwrap();

    // No chunk outlives its value, and none is missing.
    let expected: u64 = committed.iter().map(|(_, v)| chunks_of(v.len())).sum();
    let raw = redb::Database::open(path).unwrap();
    let read = raw.begin_read().unwrap();
    let chunks = read
        .open_table(TableDefinition::<&[u8], &[u8]>::new("kv_chunks"))
        .unwrap();
    prop_assert_eq!(chunks.len().unwrap(), expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn chunked_layout_matches_the_memory_engine(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&path, &ops))?;
    }
}

/// A value of a size far from the threshold (a Deno KV maximum, 64 KiB) under the default
/// options, overwritten by an inline value and deleted: chunks come and go with it.
#[tokio::test]
async fn default_chunk_size_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let db = RedbBackend::open(&path, RedbOptions::default()).unwrap();
    let big = value(65_536, 3);
    let mut w = db.begin_write().await.unwrap();
    w.put(b"k", &big).await.unwrap();
    w.put(b"k\x00\x00\x00\x00", b"neighbour").await.unwrap();
    w.commit().await.unwrap();
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(r.get(b"k").await.unwrap(), Some(big.clone()));
    let mut w = db.begin_write().await.unwrap();
    w.put(b"k", b"small").await.unwrap();
    w.commit().await.unwrap();
    // The earlier snapshot still sees the big value.
    assert_eq!(r.get(b"k").await.unwrap(), Some(big));
    drop(r);
    let mut r = db.begin_read().await.unwrap();
    assert_eq!(
        r.scan(b"", b"\xff", 10, true).await.unwrap(),
        vec![
            (b"k\x00\x00\x00\x00".to_vec(), b"neighbour".to_vec()),
            (b"k".to_vec(), b"small".to_vec())
        ]
    );
    drop(r);
    db.close().await.unwrap();
    let raw = redb::Database::open(&path).unwrap();
    let read = raw.begin_read().unwrap();
    let chunks = read
        .open_table(TableDefinition::<&[u8], &[u8]>::new("kv_chunks"))
        .unwrap();
    assert_eq!(chunks.len().unwrap(), 0);
}
