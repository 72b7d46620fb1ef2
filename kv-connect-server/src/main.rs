//! `kv-connect-server`: serves a Deno KV database over KV Connect.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kv_connect_server::{tls, KvConnectServer, ServerConfig};
use tracing_subscriber::EnvFilter;

mod admin_cmd;
mod compat;
mod console_cmd;
mod data_cmd;
mod engine_args;
mod healthcheck;
#[cfg(feature = "sqlite")]
mod import_denokv;
mod multidb_cmd;
mod ops_args;
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
///
/// The reference server's command line (`denokv --sqlite-path PATH serve|pitr ...`, its flags
/// and `DENO_KV_*` variables) is accepted too.
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
    /// Databases of a server with --data-dir: create, delete, list.
    #[command(subcommand)]
    Db(admin_cmd::DbCommand),
    /// Scoped tokens (read, write, queue, admin): create, list, revoke.
    #[command(subcommand)]
    Token(admin_cmd::TokenCommand),
    /// Exit 0 if the server at `--addr` answers `GET /healthz` with 200 (for container health
    /// checks; plain HTTP only).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Copy a database file of the reference server (`denokv --sqlite-path`) into a new
    /// database (keys, values, versionstamps and expiry; not queue messages).
    #[cfg(feature = "sqlite")]
    ImportDenokv(import_denokv::ImportArgs),
    /// Read and write data by hand: get, list, set, delete, watch, export, import (against
    /// --url or a database file).
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
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

    #[command(flatten)]
    pub tuning: engine_args::EngineTuning,

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

    /// Serve every database of this data directory, each at `/db/<name>` (created and deleted
    /// with `kv-connect-server db ...`), instead of the single database of `--path` at `/`.
    #[arg(long, env = "KV_CONNECT_DATA_DIR", conflicts_with = "database_id")]
    data_dir: Option<PathBuf>,

    #[cfg(feature = "postgres")]
    /// PostgreSQL URL of a read replica (hot standby) of `--database-url`: eventual reads may
    /// go there. Advertised to clients as the `eventual` endpoint (`/eventual/v2`, used by
    /// `@deno/kv` for eventual reads and watches; Deno uses only the strong one); strong
    /// reads, writes, watches and queues stay on the primary. Only read from, never written.
    #[arg(
        long,
        env = "KV_CONNECT_DATABASE_REPLICA_URL",
        hide_env_values = true,
        conflicts_with = "data_dir"
    )]
    database_replica_url: Option<String>,

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

    #[command(flatten)]
    ops: Box<ops_args::OpsArgs>,

    /// Serve the web console at `/console`: browse and edit keys, watch a key, queue counts,
    /// backups and health (with --data-dir: of the database picked on the page). Sign in with
    /// the access token or an admin token.
    #[arg(long, env = "KV_CONNECT_CONSOLE")]
    console: bool,

    /// HTTP/2 streams one connection may have open at once. Deno carries every `watch()` of one
    /// `Deno.Kv` as a stream of one connection, so this bounds the watches per client process.
    #[arg(long, env = "KV_CONNECT_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = kv_connect_server::http2::DEFAULT_MAX_CONCURRENT_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_concurrent_streams: u32,

    #[cfg(feature = "pitr")]
    #[command(flatten)]
    backup: pitr_cmd::ServeBackupArgs,

    /// Check the configuration and exit: parse every option, load the TLS files, print the
    /// resolved settings (`name: value` lines on stdout); opens no database and no socket.
    #[arg(long, env = "KV_CONNECT_CHECK_CONFIG", value_parser = clap::builder::BoolishValueParser::new())]
    check_config: bool,
}

/// Errors of the binary: its own (arguments, opening the database, the runtime) and, typed as
/// they are, those of the layers below it (TLS files, the server, the `pitr` commands).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MainError {
    #[error("the access token is missing: pass --access-token or set DENO_KV_ACCESS_TOKEN")]
    NoAccessToken,
    #[error("the {0:?} engine is not compiled into this binary (enable the cargo feature)")]
    EngineMissing(Engine),
    #[cfg(feature = "postgres")]
    #[error("--engine postgres needs --database-url (or DATABASE_URL)")]
    NoDatabaseUrl,
    #[cfg(feature = "postgres")]
    #[error("--database-replica-url needs --engine postgres")]
    ReplicaUrlWithoutPostgres,
    #[cfg(feature = "postgres")]
    #[error("--database-replica-url cannot be combined with --replica-of (a replica has no primary database to read)")]
    ReplicaUrlOnReplica,
    // Only engines construct it: a binary built with none has nothing to open.
    #[cfg_attr(
        not(any(
            feature = "sqlite",
            feature = "redb",
            feature = "memory",
            feature = "postgres"
        )),
        allow(dead_code)
    )]
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
    #[error(transparent)]
    Admin(#[from] admin_cmd::AdminCliError),
    #[error(transparent)]
    DataDir(#[from] kv_connect_server::registry::RegistryError),
    #[cfg(feature = "pitr")]
    #[error("--replica-of cannot be combined with --data-dir")]
    ReplicaOfDataDir,
    #[error(transparent)]
    Healthcheck(#[from] healthcheck::HealthcheckError),
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Import(#[from] import_denokv::ImportError),
    #[error(transparent)]
    Data(#[from] data_cmd::DataError),
}

#[cfg(any(feature = "sqlite", feature = "redb"))]
fn open_error(cli: &DbArgs, e: impl Into<kv_traits::KvError>) -> MainError {
    MainError::Open {
        location: cli.path.display().to_string(),
        source: e.into(),
    }
}

/// Connects to the PostgreSQL store `cli` names (`--database-url`, `--database-schema`, ...).
#[cfg(feature = "postgres")]
pub(crate) async fn connect_postgres(
    cli: &DbArgs,
) -> Result<kv_engine_postgres::PostgresBackend, MainError> {
    let url = cli
        .postgres
        .database_url
        .as_deref()
        .ok_or(MainError::NoDatabaseUrl)?;
    kv_engine_postgres::PostgresBackend::connect(url, postgres_options(cli, false))
        .await
        .map_err(|e| postgres_error("the PostgreSQL database", e.into()))
}

/// Opens the database `cli` names with `config`.
pub(crate) async fn open_db(cli: &DbArgs, config: kv_db::DbConfig) -> Result<kv_db::Db, MainError> {
    match cli.engine {
        #[cfg(feature = "sqlite")]
        Engine::Sqlite => {
            let backend = kv_engine_sqlite::SqliteBackend::open(&cli.path, cli.tuning.sqlite())
                .map_err(|e| open_error(cli, e))?;
            kv_db::Db::open(backend, config)
                .await
                .map_err(|e| open_error(cli, e))
        }
        #[cfg(feature = "redb")]
        Engine::Redb => {
            let backend = kv_engine_redb::RedbBackend::open(&cli.path, cli.tuning.redb())
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
            let backend = connect_postgres(cli).await?;
            kv_db::Db::open(backend, config)
                .await
                .map_err(|source| MainError::Open {
                    location: "the PostgreSQL database".into(),
                    source,
                })
        }
        #[allow(unreachable_patterns)]
        other => {
            drop(config);
            Err(MainError::EngineMissing(other))
        }
    }
}

#[cfg(feature = "postgres")]
fn postgres_options(cli: &DbArgs, read_only: bool) -> kv_engine_postgres::PostgresOptions {
    let pg = &cli.postgres;
    kv_engine_postgres::PostgresOptions {
        pool_size: pg.database_pool_size as usize,
        connect_timeout: Duration::from_secs(pg.database_connect_timeout_secs),
        statement_timeout: Some(Duration::from_secs(pg.database_statement_timeout_secs)),
        schema: pg.database_schema.clone(),
        read_only,
        ..Default::default()
    }
}

#[cfg(feature = "postgres")]
fn postgres_error(location: &str, source: kv_traits::KvError) -> MainError {
    MainError::Open {
        location: location.into(),
        source,
    }
}

/// Opens the eventual-read database (`--database-replica-url`): the same store through the
/// read replica, read-only (never written, no background work).
#[cfg(feature = "postgres")]
async fn open_eventual(
    cli: &DbArgs,
    replica_url: Option<&str>,
    limits: kv_traits::Limits,
) -> Result<Option<kv_db::Db>, MainError> {
    let Some(url) = replica_url else {
        return Ok(None);
    };
    if cli.engine != Engine::Postgres {
        return Err(MainError::ReplicaUrlWithoutPostgres);
    }
    let location = "the PostgreSQL read replica";
    let backend = kv_engine_postgres::PostgresBackend::connect(url, postgres_options(cli, true))
        .await
        .map_err(|e| postgres_error(location, e.into()))?;
    let config = kv_db::DbConfig {
        limits,
        read_only: true,
        background_tasks: false,
        // Nothing here watches or listens (watches and queues stay on the primary): the
        // follower of commits only needs to keep up loosely.
        follow_interval: Duration::from_secs(1),
        ..kv_db::DbConfig::default()
    };
    let db = kv_db::Db::open(backend, config)
        .await
        .map_err(|e| postgres_error(location, e))?;
    tracing::info!("eventual reads go to the PostgreSQL read replica");
    Ok(Some(db))
}

async fn run(cli: Cli) -> Result<(), MainError> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        #[cfg(feature = "pitr")]
        Some(Command::Pitr(cmd)) => Ok(pitr_cmd::run(cmd).await?),
        Some(Command::Db(cmd)) => Ok(admin_cmd::run_db(cmd).await?),
        Some(Command::Token(cmd)) => Ok(admin_cmd::run_token(cmd).await?),
        Some(Command::Healthcheck(args)) => Ok(healthcheck::run(&args).await?),
        #[cfg(feature = "sqlite")]
        Some(Command::ImportDenokv(args)) => import_denokv::run(&args).await,
        Some(Command::Data(cmd)) => Ok(data_cmd::run(cmd).await?),
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
    if cli.check_config {
        print_config(&cli, scheme);
        return Ok(());
    }
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
    config.token_file = Some(multidb_cmd::token_file(cli.data_dir.as_ref(), &cli.db.path));
    cli.ops.apply(&mut config);
    if let Some(dir) = &cli.data_dir {
        return serve_many(&cli, dir, db_config, config, scheme).await;
    }
    #[cfg(feature = "pitr")]
    let (db, pitr) =
        pitr_cmd::open_for_serving(&cli.db, db_config, &cli.backup, &mut config).await?;
    #[cfg(not(feature = "pitr"))]
    let db = open_db(&cli.db, db_config).await?;
    if cli.console {
        #[cfg(feature = "pitr")]
        let backup = console_cmd::backup_report(&cli.backup, &pitr)?;
        #[cfg(not(feature = "pitr"))]
        let backup = None;
        config.console = Some(console_cmd::console_config(&db, backup));
    }
    #[cfg(feature = "postgres")]
    {
        let replica_url = cli.database_replica_url.as_deref();
        if replica_url.is_some() && config.replica.is_some() {
            return Err(MainError::ReplicaUrlOnReplica);
        }
        if let Some(eventual) =
            open_eventual(&cli.db, replica_url, db.config().limits.clone()).await?
        {
            config.eventual = Some(std::sync::Arc::new(eventual));
        }
    }
    let server = KvConnectServer::new(db, config).bind(cli.addr).await?;
    // Signal handlers before the listening line: a SIGTERM after it is always graceful.
    let signal = kv_connect_server::shutdown_signal();
    tracing::info!(engine = ?cli.db.engine, path = %cli.db.path.display(), read_only = cli.read_only, console = cli.console, "database open");
    if let Some(addr) = server.metrics_addr() {
        tracing::info!(%addr, "metrics listener (no authentication)");
    }
    print_listening(scheme, server.local_addr());
    let served = server.serve_with_shutdown(signal).await;
    #[cfg(feature = "pitr")]
    pitr.stop().await;
    served?;
    Ok(())
}

/// The line tests and scripts wait for.
fn print_listening(scheme: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "kv-connect-server listening on {scheme}://{addr}");
    let _ = out.flush();
}

/// `serve --data-dir DIR`: every database of the directory at `/db/<name>`.
async fn serve_many(
    cli: &ServeArgs,
    dir: &std::path::Path,
    db_config: kv_db::DbConfig,
    mut config: ServerConfig,
    scheme: &str,
) -> Result<(), MainError> {
    #[cfg(feature = "pitr")]
    if cli.backup.replica_of.is_some() {
        return Err(MainError::ReplicaOfDataDir);
    }
    if !cfg!(feature = "postgres") && cli.db.engine == Engine::Postgres {
        return Err(MainError::EngineMissing(Engine::Postgres));
    }
    if cli.console {
        config.console = Some(console_cmd::many_console_config(cli.db.engine));
    }
    let data_dir = kv_connect_server::datadir::DataDir::new(dir);
    let _lock = multidb_cmd::lock(&data_dir)?;
    let provider = multidb_cmd::DataDirProvider {
        dir: data_dir,
        db_args: cli.db.clone(),
        db_config,
        #[cfg(feature = "pitr")]
        backup: Some(cli.backup.clone()),
    };
    let registry = kv_connect_server::Registry::new(provider, config.shutdown_timeout);
    let server = KvConnectServer::with_registry(registry, config)
        .bind(cli.addr)
        .await?;
    // Signal handlers before the listening line: a SIGTERM after it is always graceful.
    let signal = kv_connect_server::shutdown_signal();
    tracing::info!(engine = ?cli.db.engine, data_dir = %dir.display(), read_only = cli.read_only, console = cli.console, "serving the databases of a data directory");
    print_listening(scheme, server.local_addr());
    server.serve_with_shutdown(signal).await?;
    Ok(())
}

/// `--check-config`: the settings `serve` would run with.
fn print_config(cli: &ServeArgs, scheme: &str) {
    let lines = vec![
        format!("engine: {:?}", cli.db.engine).to_lowercase(),
        format!("path: {}", cli.db.path.display()),
        format!("addr: {}", cli.addr),
        format!("scheme: {scheme}"),
        format!("read_only: {}", cli.read_only),
    ];
    #[cfg(feature = "pitr")]
    let lines = {
        let b = &cli.backup;
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        let mut lines = lines;
        lines.push(format!("backup_to: {}", or_none(&b.backup_to)));
        lines.push(format!(
            "backup_retention: {}",
            b.backup_retention.map_or_else(
                || "none".into(),
                |d| humantime::format_duration(d).to_string()
            )
        ));
        lines.push(format!("replica_of: {}", or_none(&b.replica_of)));
        lines.push(format!("s3_endpoint: {}", or_none(&b.store.s3_endpoint)));
        lines
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

fn main() -> ExitCode {
    let invocation = compat::args_or_exit();
    let cli = Cli::parse_from(&invocation.args);
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for note in &invocation.notes {
        tracing::warn!("{note}");
    }
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
