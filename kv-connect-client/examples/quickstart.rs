//! The `Kv` API against an embedded in-memory database, or against a KV Connect server when
//! `DENO_KV_URL` is set (with `DENO_KV_ACCESS_TOKEN`, like `Deno.openKv(url)`):
//!
//! ```text
//! cargo run -p kv-connect-client --example quickstart
//! DENO_KV_URL=http://127.0.0.1:4512 DENO_KV_ACCESS_TOKEN=secret cargo run -p kv-connect-client --example quickstart
//! ```

use futures::TryStreamExt;
use kv_connect_client::{key, EnqueueOptions, Kv, ListOptions, Selector};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let kv = match std::env::var("DENO_KV_URL") {
        Ok(url) => Kv::open_remote(url, std::env::var("DENO_KV_ACCESS_TOKEN")?).await?,
        Err(_) => {
            let db = kv_db::Db::open(
                kv_engine_memory::MemoryBackend::new(),
                kv_db::DbConfig::default(),
            )
            .await?;
            Kv::from_database(db)
        }
    };

    for (i, name) in ["ada", "alan", "grace"].iter().enumerate() {
        kv.set(&key!["quickstart", "users", *name], i as f64)
            .await?;
    }
    let mut users = kv.list(
        Selector::prefix(key!["quickstart", "users"]),
        ListOptions::default().batch_size(2),
    )?;
    while let Some(entry) = users.try_next().await? {
        println!(
            "{:?} = {:?} @ {}",
            entry.key.parts(),
            entry.value,
            entry.versionstamp
        );
    }

    let visits = key!["quickstart", "visits"];
    kv.atomic().sum(&visits, 1u64).commit().await?;
    println!("visits: {:?}", kv.get(&visits).await?.value);

    // Queues need the `queue-v1` extension on remote servers.
    kv.enqueue("hello from Rust", EnqueueOptions::default())
        .await?;
    let listener = kv.clone();
    let handle = tokio::spawn(async move {
        listener
            .listen_queue(|delivery| async move {
                println!(
                    "queue message: {:?} (attempt {})",
                    delivery.value, delivery.attempt
                );
                Ok::<(), String>(())
            })
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    kv.close().await?;
    if let Ok(Err(e)) = handle.await {
        println!("queue listener stopped: {e}");
    }
    Ok(())
}
