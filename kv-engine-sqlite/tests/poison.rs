//! Poisoning after a real commit failure.
//!
//! The failure is a genuine I/O error: a child process (this test binary re-executed) lowers its
//! `RLIMIT_FSIZE` so that the write-ahead log cannot grow past a limit, then commits a
//! transaction larger than that. SQLite's `write()` of the log frames fails with `EFBIG` during
//! `COMMIT`, exactly as a full disk would fail it. The limit is per process, so it runs in a child
//! to keep other tests (and the harness) unaffected.

use std::process::Command;

use kv_engine_sqlite::{SqliteBackend, SqliteOptions};
use kv_traits::{Backend, BackendError};

const CHILD_ENV: &str = "KV_ENGINE_SQLITE_POISON_CHILD_DIR";
const LIMIT: u64 = 512 * 1024;

fn value(i: u32) -> Vec<u8> {
    (0..8192u32)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8)
        .collect()
}

/// The child (ignored in a normal run; does nothing without the environment variable).
#[ignore = "child process of commit_io_failure_poisons_the_engine, started by it"]
#[tokio::test]
async fn poison_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let path = std::path::Path::new(&dir).join("db.sqlite3");
    let b = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let mut w = b.begin_write().await.unwrap();
    w.put(b"before", b"1").await.unwrap();
    w.commit().await.unwrap();

    // SAFETY: plain libc calls with valid arguments; no other thread depends on SIGXFSZ.
    unsafe {
        // Without this, exceeding the limit kills the process with SIGXFSZ instead of failing
        // the write with EFBIG.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: LIMIT as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }

    // ~1 MiB of pages: fits the page cache (so the puts succeed) but not under the file limit.
    let mut w = b.begin_write().await.unwrap();
    for i in 0..128u32 {
        w.put(&i.to_be_bytes(), &value(i)).await.unwrap();
    }
    let err = w.commit().await.unwrap_err();
    println!("commit error: {err}");
    assert!(matches!(err, BackendError::Io(_)), "{err:?}");

    // Every later write is refused with the original error text.
    let original = b.poisoned().expect("engine must be poisoned");
    assert!(err.to_string().contains(&original), "{err} / {original}");
    for _ in 0..2 {
        match b.begin_write().await {
            Err(err @ BackendError::Poisoned(_)) => {
                assert!(matches!(&err, BackendError::Poisoned(msg) if *msg == original));
                // The poison keeps the failed COMMIT's SQLite error as the source.
                let source = std::error::Error::source(&err).expect("a source");
                assert!(
                    source.downcast_ref::<rusqlite::Error>().is_some(),
                    "{source:?}"
                );
            }
            Err(other) => panic!("expected Poisoned, got {other:?}"),
            Ok(_) => panic!("expected Poisoned, got a write transaction"),
        }
    }
    // Reads continue and do not see the failed transaction.
    let mut r = b.begin_read().await.unwrap();
    assert_eq!(r.get(b"before").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(r.get(&5u32.to_be_bytes()).await.unwrap(), None);
    assert_eq!(r.scan(&[0], &[1], 10, false).await.unwrap(), vec![]);
    drop(r);
    println!("CHILD-OK poisoned: {original}");
}

#[test]
fn commit_io_failure_poisons_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "poison_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    // After a reopen (no file-size limit now) the engine writes again; the committed data is
    // there and the failed transaction left nothing behind.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b =
            SqliteBackend::open(dir.path().join("db.sqlite3"), SqliteOptions::default()).unwrap();
        assert_eq!(b.poisoned(), None);
        let mut r = b.begin_read().await.unwrap();
        assert_eq!(r.get(b"before").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(r.scan(&[0], &[1], 10, false).await.unwrap(), vec![]);
        drop(r);
        let mut w = b.begin_write().await.unwrap();
        for i in 0..128u32 {
            w.put(&i.to_be_bytes(), &value(i)).await.unwrap();
        }
        w.commit().await.unwrap();
        let mut r = b.begin_read().await.unwrap();
        assert_eq!(
            r.get(&127u32.to_be_bytes()).await.unwrap(),
            Some(value(127))
        );
    });
}
