//! Measures the workloads outside criterion, for use under `strace -c` / `perf` and for
//! interleaved comparisons on a noisy machine.
//!
//! - `probe one <engine> <writers> <iterations>`: `iterations` rounds of `writers` concurrent
//!   1-mutation writes on one engine (engines: `denokv_sqlite`, `ours-memory`, `ours-sqlite`,
//!   `ours-redb`); prints writes/s.
//! - `probe compare <rounds> <millis>`: every workload on every engine, engines interleaved: in
//!   each round each engine runs each workload for about `millis` ms. Slow drifts of the machine's
//!   load (other processes, disk) then hit all engines alike. Prints ops/s per engine and the
//!   ratio to `denokv_sqlite`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_benches::{key, prefix_key, preload, value, BenchDb, DenoKv, OursDb, READ_KEYS, READ_PREFIX, WRITE_PREFIX};
use rand::{Rng, SeedableRng};

/// The workloads of `benches/kv.rs`: (name, concurrent writers or 0 for reads, mutations).
const WORKLOADS: [(&str, u64, u64); 6] = [
    ("get", 0, 0),
    ("list100", 0, 0),
    ("write1_1writer", 1, 1),
    ("write1_64writers", 64, 1),
    ("write10_1writer", 1, 10),
    ("sum_hot_key", 1, 0),
];

/// One operation batch of `workload`; returns the number of operations it counts for.
async fn step<D: BenchDb>(db: &D, workload: usize, counter: &AtomicU64, rng: &mut rand::rngs::StdRng) -> u64 {
    match WORKLOADS[workload].0 {
        "get" => {
            assert!(db.get(key(READ_PREFIX, rng.gen_range(0..READ_KEYS))).await);
            1
        }
        "list100" => {
            assert_eq!(db.list(prefix_key(READ_PREFIX), 100).await, 100);
            1
        }
        "sum_hot_key" => {
            db.sum_u64(key("counter", 0), 1).await;
            1
        }
        _ => {
            let (_, writers, mutations) = WORKLOADS[workload];
            let tasks: Vec<_> = (0..writers)
                .map(|_| {
                    let db = db.clone();
                    let first = counter.fetch_add(mutations, Ordering::Relaxed);
                    let pairs = (first..first + mutations).map(|i| (key(WRITE_PREFIX, i % 10_000), value(i))).collect();
                    tokio::spawn(async move { db.set_many(pairs).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            writers
        }
    }
}

#[derive(Clone)]
enum Engine {
    Ours(OursDb),
    DenoKv(DenoKv),
}

async fn step_any(e: &Engine, workload: usize, counter: &AtomicU64, rng: &mut rand::rngs::StdRng) -> u64 {
    match e {
        Engine::Ours(db) => step(db, workload, counter, rng).await,
        Engine::DenoKv(db) => step(db, workload, counter, rng).await,
    }
}

async fn compare(rounds: u32, millis: u64) {
    let dir = tempfile::tempdir().unwrap();
    #[allow(unused_mut)]
    let mut engines: Vec<(&str, Engine)> = vec![
        ("denokv_sqlite", Engine::DenoKv(DenoKv::open(dir.path()))),
        ("ours-memory", Engine::Ours(OursDb::memory().await)),
        ("ours-sqlite", Engine::Ours(OursDb::sqlite(dir.path()).await)),
    ];
    #[cfg(feature = "redb")]
    engines.push(("ours-redb", Engine::Ours(OursDb::redb(dir.path()).await)));
    for (_, e) in &engines {
        match e {
            Engine::Ours(db) => preload(db).await,
            Engine::DenoKv(db) => preload(db).await,
        }
    }
    let counter = Arc::new(AtomicU64::new(0));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // [workload][engine] = (ops, time)
    let mut totals = vec![vec![(0u64, Duration::ZERO); engines.len()]; WORKLOADS.len()];
    for _ in 0..rounds {
        for (w, row) in totals.iter_mut().enumerate() {
            for (i, (_, e)) in engines.iter().enumerate() {
                let start = Instant::now();
                let mut ops = 0;
                while start.elapsed() < Duration::from_millis(millis) {
                    ops += step_any(e, w, &counter, &mut rng).await;
                }
                row[i].0 += ops;
                row[i].1 += start.elapsed();
            }
        }
    }
    print!("{:<18}", "workload (ops/s)");
    for (name, _) in &engines {
        print!(" {name:>14}");
    }
    println!("   ratios vs denokv_sqlite");
    for (w, row) in totals.iter().enumerate() {
        print!("{:<18}", WORKLOADS[w].0);
        let rates: Vec<f64> = row.iter().map(|(ops, t)| *ops as f64 / t.as_secs_f64()).collect();
        for r in &rates {
            print!(" {r:>14.0}");
        }
        print!("  ");
        for (i, r) in rates.iter().enumerate().skip(1) {
            print!(" {}={:.2}x", engines[i].0, r / rates[0]);
        }
        println!();
    }
    for (_, e) in &engines {
        match e {
            Engine::Ours(db) => db.close().await,
            Engine::DenoKv(db) => db.close().await,
        }
    }
}

async fn one<D: BenchDb>(db: D, writers: u64, iterations: u64) {
    let counter = AtomicU64::new(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let workload = if writers == 1 { 2 } else { 3 };
    assert!(writers == 1 || writers == WORKLOADS[3].1, "writers must be 1 or 64");
    let start = Instant::now();
    let mut writes = 0;
    for _ in 0..iterations {
        writes += step(&db, workload, &counter, &mut rng).await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{writes} writes in {secs:.3} s = {:.0} writes/s, {:.3} ms per iteration",
        writes as f64 / secs,
        secs * 1000.0 / iterations as f64
    );
    db.close().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.get(1).map(String::as_str) {
        Some("compare") => compare(arg(2, 5) as u32, arg(3, 300)).await,
        Some("one") => {
            let dir = tempfile::tempdir().unwrap();
            let (writers, iterations) = (arg(3, 64), arg(4, 100));
            match args.get(2).map(String::as_str).unwrap_or("ours-sqlite") {
                "denokv_sqlite" => one(DenoKv::open(dir.path()), writers, iterations).await,
                "ours-memory" => one(OursDb::memory().await, writers, iterations).await,
                "ours-sqlite" => one(OursDb::sqlite(dir.path()).await, writers, iterations).await,
                #[cfg(feature = "redb")]
                "ours-redb" => one(OursDb::redb(dir.path()).await, writers, iterations).await,
                other => panic!("unknown engine {other}"),
            }
        }
        _ => eprintln!("usage: probe compare [rounds] [millis] | probe one <engine> [writers] [iterations]"),
    }
}
