//! Opening what a killed process leaves behind (an image of the storage taken while the
//! database is open, so no clean shutdown was recorded): with quick repair (the default) the
//! allocator state recorded by the last commit is loaded and no full repair runs; without it,
//! redb repairs the file by walking every tree. Either way every committed write is there,
//! chunked values included.

use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_test_support::storage::MemoryStorage;
use kv_traits::{Backend, KvPair};

async fn write_and_crash(options: &RedbOptions) -> (Vec<u8>, Vec<KvPair>) {
    let disk = MemoryStorage::new();
    let db = RedbBackend::open_with_storage(disk.clone(), options.clone()).unwrap();
    assert!(!db.repaired_on_open(), "a new file needs no repair");
    let mut expected = Vec::new();
    for round in 0..20u32 {
        let mut w = db.begin_write().await.unwrap();
        for i in 0..10u32 {
            let key = format!("k{round:02}-{i}").into_bytes();
            let value = vec![(round + i) as u8; (round as usize * 997 + i as usize * 131) % 5000];
            w.put(&key, &value).await.unwrap();
            expected.push((key, value));
        }
        w.commit().await.unwrap();
    }
    // The process dies here: no close.
    let image = disk.image();
    drop(db);
    (image, expected)
}

async fn reopen(image: Vec<u8>, options: RedbOptions) -> (bool, Vec<KvPair>) {
    let db = RedbBackend::open_with_storage(MemoryStorage::from_image(image), options).unwrap();
    let mut r = db.begin_read().await.unwrap();
    let pairs = r.scan(b"", b"\xff", 1000, false).await.unwrap();
    (db.repaired_on_open(), pairs)
}

#[tokio::test]
async fn quick_repair_skips_the_full_repair() {
    let options = RedbOptions::default();
    let (image, expected) = write_and_crash(&options).await;
    let (repaired, pairs) = reopen(image, options).await;
    assert!(
        !repaired,
        "quick repair should have loaded the allocator state"
    );
    assert_eq!(pairs, expected);
}

#[tokio::test]
async fn without_quick_repair_the_file_is_repaired() {
    let options = RedbOptions {
        quick_repair: false,
        ..RedbOptions::default()
    };
    let (image, expected) = write_and_crash(&options).await;
    let (repaired, pairs) = reopen(image, options).await;
    assert!(
        repaired,
        "a file closed uncleanly without quick repair needs a full repair"
    );
    assert_eq!(pairs, expected);
}
