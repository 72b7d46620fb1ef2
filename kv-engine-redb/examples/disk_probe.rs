//! Disk use of the chunked layout by chunk size and value size, at the engine level: fills a
//! fresh file with `KEYS` random 100-byte keys (random order, 100 keys per durable commit: non-durable commits leave pages that only a durable one frees, which inflates the file) for each
//! value size and chunk size, and prints file size ÷ (keys + values). How the default chunk size
//! was chosen; the end-to-end figures come from `benches/scale.sh --disk-values`.
//!
//! ```text
//! cargo run --release -p kv-engine-redb --example disk_probe -- 800,1200,2000 200,1000,2000,4000 [no-quick-repair]
//! ```

use std::num::NonZeroUsize;

use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::Backend;
use rand::{Rng, SeedableRng};

const KEYS: usize = 20_000;

fn list(arg: Option<String>, default: &str) -> Vec<usize> {
    arg.as_deref()
        .unwrap_or(default)
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let chunk_sizes = list(args.next(), "1200");
    let value_sizes = list(args.next(), "200,1000,2000,4000");
    let quick_repair = args.next().as_deref() != Some("no-quick-repair");
    let dir = tempfile::tempdir()?;
    print!("{:>10}", "value B");
    for c in &chunk_sizes {
        print!("{:>12}", format!("chunk {c}"));
    }
    println!();
    for &v in &value_sizes {
        print!("{v:>10}");
        for &c in &chunk_sizes {
            let path = dir.path().join(format!("probe-{c}-{v}.redb"));
            let options = RedbOptions {
                chunk_size: NonZeroUsize::new(c).ok_or("chunk size 0")?,
                quick_repair,
                ..RedbOptions::default()
            };
            let db = RedbBackend::open(&path, options)?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            for _ in 0..KEYS / 100 {
                let mut w = db.begin_write().await?;
                for _ in 0..100 {
                    let key: Vec<u8> = (0..100).map(|_| rng.random()).collect();
                    let value: Vec<u8> = (0..v).map(|_| rng.random()).collect();
                    w.put(&key, &value).await?;
                }
                w.commit().await?;
            }
            db.close().await?;
            let size =
                (std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path)?) * 512) as f64;
            print!("{:>12.2}", size / (KEYS * (100 + v)) as f64);
            std::fs::remove_file(&path)?;
        }
        println!();
    }
    Ok(())
}
