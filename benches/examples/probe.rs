//! Runs one write workload a fixed number of times on one engine and prints the rate, for use
//! under `strace -c` / `perf` (criterion's own loop makes syscall counts hard to attribute).
//!
//! `cargo run --release --example probe -- <denokv_sqlite|ours-memory|ours-sqlite|ours-redb> <writers> <iterations>`

use std::time::Instant;

use kv_benches::{key, value, BenchDb, DenoKv, OursDb, WRITE_PREFIX};

async fn run<D: BenchDb>(db: D, writers: u64, iterations: u64) {
    let start = Instant::now();
    for it in 0..iterations {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let db = db.clone();
                let i = it * writers + w;
                tokio::spawn(async move { db.set_many(vec![(key(WRITE_PREFIX, i % 10_000), value(i))]).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let writes = (writers * iterations) as f64;
    println!(
        "{writes} writes in {secs:.3} s = {:.0} writes/s, {:.3} ms per iteration",
        writes / secs,
        secs * 1000.0 / iterations as f64
    );
    db.close().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let engine = args.get(1).map(String::as_str).unwrap_or("ours-sqlite");
    let writers: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let iterations: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    match engine {
        "denokv_sqlite" => run(DenoKv::open(dir.path()), writers, iterations).await,
        "ours-memory" => run(OursDb::memory().await, writers, iterations).await,
        "ours-sqlite" => run(OursDb::sqlite(dir.path()).await, writers, iterations).await,
        #[cfg(feature = "redb")]
        "ours-redb" => run(OursDb::redb(dir.path()).await, writers, iterations).await,
        other => panic!("unknown engine {other}"),
    }
}
