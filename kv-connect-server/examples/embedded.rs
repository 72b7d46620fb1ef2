//! Your own KV Connect server binary in a few lines: the engine is picked at compile time
//! (SQLite when the `sqlite` feature is on, else in-memory), the token comes from the
//! environment.
//!
//! ```text
//! DENO_KV_ACCESS_TOKEN=secret cargo run -p kv-connect-server --example embedded
//! ```

use kv_connect_server::{KvConnectServer, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "sqlite")]
    let backend = kv_engine_sqlite::SqliteBackend::open("embedded.db", Default::default())?;
    #[cfg(not(feature = "sqlite"))]
    let backend = kv_engine_memory::MemoryBackend::new();

    let db = kv_db::Db::open(backend, kv_db::DbConfig::default()).await?;
    let token = std::env::var("DENO_KV_ACCESS_TOKEN")?;
    let server = KvConnectServer::new(db, ServerConfig::new(token))
        .bind("127.0.0.1:4512".parse()?)
        .await?;
    println!("open with Deno.openKv(\"http://{}\")", server.local_addr());
    server.serve().await?; // until Ctrl-C / SIGTERM; closes the database at the end
    Ok(())
}
