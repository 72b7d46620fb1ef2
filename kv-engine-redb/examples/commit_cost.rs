//! What quick repair costs a commit: fills a file with `KEYS` keys of 1,000 bytes, then measures
//! durable single-put commits per second (one writer) with quick repair on and off, alternating
//! rounds of `SECS` on the same file so both see the same machine load. Prints each round and
//! the on ÷ off ratio of the totals.
//!
//! ```text
//! cargo run --release -p kv-engine-redb --example commit_cost -- 200000 3 4
//! ```

use std::time::{Duration, Instant};

use kv_engine_redb::{RedbBackend, RedbDurability, RedbOptions};
use kv_traits::Backend;

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keys = arg(&args, 0, 200_000);
    let secs = arg(&args, 1, 3);
    let rounds = arg(&args, 2, 4);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cost.redb");
    {
        let fill = RedbOptions {
            durability: RedbDurability::None,
            ..RedbOptions::default()
        };
        let db = RedbBackend::open(&path, fill)?;
        for start in (0..keys).step_by(1000) {
            let mut w = db.begin_write().await?;
            for i in start..(start + 1000).min(keys) {
                w.put(&key(i), &[7; 1000]).await?;
            }
            w.commit().await?;
        }
        db.close().await?;
    }
    let mut totals = [(0u64, Duration::ZERO); 2];
    let mut next = 0u64;
    for round in 0..rounds * 2 {
        let quick_repair = round % 2 == 0;
        let db = RedbBackend::open(
            &path,
            RedbOptions {
                quick_repair,
                ..RedbOptions::default()
            },
        )?;
        let started = Instant::now();
        let mut commits = 0u64;
        while started.elapsed() < Duration::from_secs(secs) {
            let mut w = db.begin_write().await?;
            // Spread over the keyspace, as the benchmarks' point sets are.
            next = (next + 7_919) % keys;
            w.put(&key(next), &[8; 1000]).await?;
            w.commit().await?;
            commits += 1;
        }
        let elapsed = started.elapsed();
        db.close().await?;
        let slot = &mut totals[usize::from(!quick_repair)];
        slot.0 += commits;
        slot.1 += elapsed;
        println!(
            "round {round}: quick_repair={quick_repair:5} {:8.1} commits/s",
            commits as f64 / elapsed.as_secs_f64()
        );
    }
    let rate = |(n, d): (u64, Duration)| n as f64 / d.as_secs_f64();
    println!(
        "quick repair on {:.1} commits/s, off {:.1} commits/s, on/off {:.2}",
        rate(totals[0]),
        rate(totals[1]),
        rate(totals[0]) / rate(totals[1])
    );
    Ok(())
}
