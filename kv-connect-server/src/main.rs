//! `kv-connect-server`: serves a Deno KV database over KV Connect.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kv_connect_server::{tls, KvConnectServer, ServerConfig};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "pitr")]
mod pitr_cmd;

/// Storage engines (each needs its cargo feature compiled in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Engine {
    /// SQLite file (feature `sqlite`).
    Sqlite,
    /// redb file (feature `redb`).
    Redb,
    /// In memory; data is lost at exit, `--path` is ignored (feature `memory`).
    Memory,
    /// A PostgreSQL database at `--database-url`, which several servers may share (feature
    /// `postgres`; `--path` is ignored).
    Postgres,
}

const fn default_engine() -> Engine {
    if cfg!(feature = "sqlite") {
        Engine::Sqlite
    } else if cfg!(feature = "redb") {
        Engine::Redb
    } else {
        Engine::Memory
    }
}

/// Serve a Deno KV database over the KV Connect protocol, for `Deno.openKv("http://HOST:PORT")`
/// and the `@deno/kv` npm client (both HTTP/1.1 and HTTP/2 on one port).
///
/// Without a subcommand it serves (the flags of `serve`). Prints `kv-connect-server listening on
/// http://ADDR` on stdout once the socket is bound; logs go to stderr (level from `RUST_LOG`,
/// default `info`). SIGINT/SIGTERM shut down gracefully.
#[derive(Parser, Debug)]
#[command(
    name = "kv-connect-server",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a database (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Backups: list recovery points, show a backup, restore a database from it.
    #[cfg(feature = "pitr")]
    #[command(subcommand)]
    Pitr(pitr_cmd::PitrCommand),
}

/// Where the database lives.
#[derive(Args, Debug, Clone)]
pub(crate) struct DbArgs {
    /// Storage engine: `sqlite`, `redb` or `memory` (only those compiled in are available).
    #[arg(long, value_enum, env = "KV_CONNECT_ENGINE", default_value_t = default_engine())]
    pub engine: Engine,

    /// Database file for the `sqlite` and `redb` engines (created if missing).
    #[arg(long, env = "KV_CONNECT_PATH", default_value = "./data.db")]
    pub path: PathBuf,

    #[cfg(feature = "postgres")]
    #[command(flatten)]
    pub postgres: PostgresArgs,
}

/// The `postgres` engine's connection.
#[cfg(feature = "postgres")]
#[derive(Args, Debug, Clone)]
pub(crate) struct PostgresArgs {
    /// PostgreSQL URL for `--engine postgres`: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`,
    /// with `?sslmode=disable|prefer|require|verify-ca|verify-full` and `&sslrootcert=FILE`.
    /// Several servers may serve one database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL schema holding the store's tables (created if missing; default: the user's
    /// current schema). One schema is one Deno KV database.
    #[arg(long, env = "KV_CONNECT_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// Connections to PostgreSQL this server keeps at most.
    #[arg(long, env = "KV_CONNECT_DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u64).range(2..=1024))]
    pub database_pool_size: u64,

    /// Seconds to wait for a connection to PostgreSQL (also for a free pooled one).
    #[arg(long, env = "KV_CONNECT_DATABASE_CONNECT_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_connect_timeout_secs: u64,

    /// Seconds one SQL statement may run before PostgreSQL cancels it.
    #[arg(long, env = "KV_CONNECT_DATABASE_STATEMENT_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_statement_timeout_secs: u64,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,

    /// Access token clients must present (`DENO_KV_ACCESS_TOKEN` on the client side too).
    #[arg(long, env = "DENO_KV_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,

    /// Address to listen on; port 0 picks a free port (the line printed on stdout tells which).
    #[arg(long, env = "KV_CONNECT_ADDR", default_value = "127.0.0.1:4512")]
    addr: SocketAddr,

    /// PEM certificate chain: serve HTTPS (ALPN h2 and http/1.1). Needs `--tls-key`.
    #[arg(long, env = "KV_CONNECT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "KV_CONNECT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Refuse writes: atomic writes answer `AW_WRITE_DISABLED`.
    #[arg(long, env = "KV_CONNECT_READ_ONLY")]
    read_only: bool,

    /// Database id (UUID) advertised to clients. Default: derived from the access token, so it
    /// is stable across restarts.
    #[arg(long, env = "KV_CONNECT_DATABASE_ID")]
    database_id: Option<uuid::Uuid>,

    /// Lifetime of data-path tokens in seconds (the metadata `expiresAt`); at least 600, since
    /// npm re-exchanges metadata before every call once fewer than 5 minutes remain.
    #[arg(long, env = "KV_CONNECT_TOKEN_TTL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(600..))]
    token_ttl_secs: u64,

    /// Seconds to wait for in-flight requests at shutdown before closing the database.
    #[arg(long, env = "KV_CONNECT_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    shutdown_timeout_secs: u64,

    /// Seconds a queue message dequeued by a remote listener (queue extension) stays leased to
    /// it; when the lease runs out without a finish, the delivery counts as failed and the
    /// message is retried along its backoff schedule.
    #[arg(long, env = "KV_CONNECT_QUEUE_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    queue_lease_secs: u64,

    /// HTTP/2 streams one connection may have open at once. Deno carries every `watch()` of one
    /// `Deno.Kv` as a stream of one connection, so this bounds the watches per client process.
    #[arg(long, env = "KV_CONNECT_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = kv_connect_server::http2::DEFAULT_MAX_CONCURRENT_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_concurrent_streams: u32,

    #[cfg(feature = "pitr")]
    #[command(flatten)]
    backup: pitr_cmd::ServeBackupArgs,
}

/// Errors of the binary: its own (arguments, opening the database, the runtime) and, typed as
/// they are, those of the layers below it (TLS files, the server, the `pitr` commands).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MainError {
    #[error("the access token is missing: pass --access-token or set DENO_KV_ACCESS_TOKEN")]
    NoAccessToken,
    #[error("the {0:?} engine is not compiled into this binary (enable the cargo feature)")]
    EngineMissing(Engine),
    #[error("--engine postgres needs --database-url (or DATABASE_URL)")]
    NoDatabaseUrl,
    #[error("cannot open the database: {location}: {source}")]
    Open {
        /// The file, or `memory`.
        location: String,
        source: kv_traits::KvError,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Serve(#[from] kv_connect_server::ServeError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[cfg(feature = "pitr")]
    #[error(transparent)]
    Pitr(#[from] pitr_cmd::PitrCliError),
}

#[cfg(any(feature = "sqlite", feature = "redb"))]
fn open_error(cli: &DbArgs, e: impl Into<kv_traits::KvError>) -> MainError {
    MainError::Open {
        location: cli.path.display().to_string(),
        source: e.into(),
    }
}

/// Opens the database `cli` names with `config`.
pub(crate) async fn open_db(cli: &DbArgs, config: kv_db::DbConfig) -> Result<kv_db::Db, MainError> {
    match cli.engine {
        #[cfg(feature = "sqlite")]
        Engine::Sqlite => {
            let backend = kv_engine_sqlite::SqliteBackend::open(
                &cli.path,
                kv_engine_sqlite::SqliteOptions::default(),
            )
            .map_err(|e| open_error(cli, e))?;
            kv_db::Db::open(backend, config)
                .await
                .map_err(|e| open_error(cli, e))
        }
        #[cfg(feature = "redb")]
        Engine::Redb => {
            let backend = kv_engine_redb::RedbBackend::open(
                &cli.path,
                kv_engine_redb::RedbOptions::default(),
            )
            .map_err(|e| open_error(cli, e))?;
            kv_db::Db::open(backend, config)
                .await
                .map_err(|e| open_error(cli, e))
        }
        #[cfg(feature = "memory")]
        Engine::Memory => kv_db::Db::open(kv_engine_memory::MemoryBackend::new(), config)
            .await
            .map_err(|source| MainError::Open {
                location: "memory".into(),
                source,
            }),
        #[cfg(feature = "postgres")]
        Engine::Postgres => {
            let pg = &cli.postgres;
            let url = pg.database_url.as_deref().ok_or(MainError::NoDatabaseUrl)?;
            let options = kv_engine_postgres::PostgresOptions {
                pool_size: pg.database_pool_size as usize,
                connect_timeout: Duration::from_secs(pg.database_connect_timeout_secs),
                statement_timeout: Some(Duration::from_secs(pg.database_statement_timeout_secs)),
                schema: pg.database_schema.clone(),
                ..Default::default()
            };
            let pg_error = |source: kv_traits::KvError| MainError::Open {
                location: "the PostgreSQL database".into(),
                source,
            };
            let backend = kv_engine_postgres::PostgresBackend::connect(url, options)
                .await
                .map_err(|e| pg_error(e.into()))?;
            kv_db::Db::open(backend, config).await.map_err(pg_error)
        }
        #[allow(unreachable_patterns)]
        other => Err(MainError::EngineMissing(other)),
    }
}

async fn run(cli: Cli) -> Result<(), MainError> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        #[cfg(feature = "pitr")]
        Some(Command::Pitr(cmd)) => Ok(pitr_cmd::run(cmd).await?),
    }
}

async fn serve(cli: ServeArgs) -> Result<(), MainError> {
    let access_token = match &cli.access_token {
        Some(t) if !t.is_empty() => t.clone(),
        _ => return Err(MainError::NoAccessToken),
    };
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(tls::load_tls_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let db_config = kv_db::DbConfig {
        read_only: cli.read_only,
        queue_lease: std::time::Duration::from_secs(cli.queue_lease_secs),
        ..kv_db::DbConfig::default()
    };
    let mut config = ServerConfig::new(access_token);
    config.database_id = cli.database_id;
    config.token_ttl = Duration::from_secs(cli.token_ttl_secs);
    config.shutdown_timeout = Duration::from_secs(cli.shutdown_timeout_secs);
    config.http2.max_concurrent_streams = cli.http2_max_concurrent_streams;
    config.tls = tls;
    #[cfg(feature = "pitr")]
    let (db, pitr) =
        pitr_cmd::open_for_serving(&cli.db, db_config, &cli.backup, &mut config).await?;
    #[cfg(not(feature = "pitr"))]
    let db = open_db(&cli.db, db_config).await?;
    let server = KvConnectServer::new(db, config).bind(cli.addr).await?;
    tracing::info!(engine = ?cli.db.engine, path = %cli.db.path.display(), read_only = cli.read_only, "database open");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "kv-connect-server listening on {scheme}://{}",
            server.local_addr()
        );
        let _ = out.flush();
    }
    let served = server.serve().await;
    #[cfg(feature = "pitr")]
    pitr.stop().await;
    served?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(MainError::Runtime)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kv-connect-server: {e}");
            ExitCode::FAILURE
        }
    }
}
