//! `kv-conformance`: runs the protocol-level (database) conformance suite of the `kv-conformance`
//! crate against any KV Connect server through the `kv-connect-client` `RemoteDatabase`.
//!
//! ```text
//! cargo run -p kv-conformance-cli -- --url http://127.0.0.1:4512 --access-token <token> \
//!     [--filter watch::] [--wipe]
//! ```
//!
//! It lives in its own crate so that the suite itself, which every engine dev-depends on, does
//! not pull the HTTP/TLS client stack into the engines' test builds.
//!
//! The suite's tests assume an empty database (`read::empty_database_reads_nothing`, whole-
//! keyspace scans) and use raw keys anywhere in the keyspace, including the limit tests' 2048-byte
//! and empty keys, so they cannot be confined to a key prefix. The runner therefore owns the
//! whole database: it refuses to start on a database with visible keys unless `--wipe` is given,
//! and it deletes every visible key before and after each case. Queue messages a case enqueued
//! cannot be removed over KV Connect and stay in the database. Point it at a scratch database.
//!
//! Prints `ok <name>`, `FAIL <name>: <reason>` or `skip <name>: <reason>` per case and ends with
//! `<N> passed, <M> failed`; exits with 1 if any case failed, 2 if the run could not start.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use clap::Parser;
use futures::FutureExt;
use kv_conformance::harness::database_tests;
use kv_conformance::util::keyspace_end;
use kv_connect_client::{RemoteConfig, RemoteDatabase};
use kv_traits::{AtomicWrite, CommitResult, Consistency, Database, KvError, Mutation, ReadRange};

/// Cases whose property cannot hold through KV Connect whatever the server does; skipped unless
/// `--include-remote-limited` is given.
const REMOTE_LIMITATIONS: &[(&str, &str)] = &[(
    "watch::slow_watcher_gets_latest_state",
    "/watch is a server-push stream: the client merges the frames it has received when the \
     watcher polls, but the newest one may still be in flight when the last commit returns",
)];

/// Keys deleted per write while wiping (far below the mutation count and total size limits even
/// for 2048-byte keys).
const WIPE_BATCH: u32 = 200;

/// Runs the database-level Deno KV conformance suite against a KV Connect server.
#[derive(Parser, Debug)]
#[command(name = "kv-conformance", version)]
struct Cli {
    /// The database URL (the KV Connect metadata endpoint), e.g. `http://127.0.0.1:4512`.
    #[arg(long, env = "KV_CONFORMANCE_URL")]
    url: String,

    /// The access token of the metadata exchange.
    #[arg(long, env = "DENO_KV_ACCESS_TOKEN", hide_env_values = true)]
    access_token: String,

    /// Run only the cases whose name contains this substring (e.g. `watch::`).
    #[arg(long, env = "KV_CONFORMANCE_FILTER")]
    filter: Option<String>,

    /// Delete every key of a database that is not empty at the start (the runner always deletes
    /// every key between cases).
    #[arg(long)]
    wipe: bool,

    /// Also run the cases that cannot pass over KV Connect (see the list printed as `skip`).
    #[arg(long)]
    include_remote_limited: bool,

    /// Time limit of one case, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,

    /// Only list the cases that would run.
    #[arg(long)]
    list: bool,
}

/// Where the last panic happened (the panic hook records it instead of printing).
fn panic_location() -> &'static Mutex<Option<String>> {
    static LOCATION: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    LOCATION.get_or_init(|| Mutex::new(None))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panicked".to_string()
    }
}

async fn open(cli: &Cli) -> Result<RemoteDatabase, KvError> {
    RemoteDatabase::open_with(RemoteConfig::new(&cli.url, &cli.access_token)).await
}

/// The visible keys in `[start, end of keyspace)`, up to `limit`.
async fn visible_keys(
    db: &dyn Database,
    start: &[u8],
    limit: u32,
) -> Result<Vec<Vec<u8>>, KvError> {
    let range = ReadRange {
        start: start.to_vec(),
        end: keyspace_end(),
        limit,
        reverse: false,
    };
    let mut out = db.snapshot_read(vec![range], Consistency::Strong).await?;
    Ok(out
        .pop()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.key)
        .collect())
}

/// Deletes `keys` in one write.
async fn delete_all(db: &dyn Database, keys: &[Vec<u8>]) -> Result<(), KvError> {
    let write = AtomicWrite {
        mutations: keys.iter().cloned().map(Mutation::delete).collect(),
        ..Default::default()
    };
    match db.atomic_write(write).await? {
        CommitResult::Committed(_) => Ok(()),
        CommitResult::CheckFailed(i) => Err(KvError::InvalidRequest(format!(
            "a delete without checks reported check {i:?} failed"
        ))),
    }
}

/// The smallest key after `k` that is a valid read bound (at most 2049 bytes): `k ‖ 00`, or for
/// a 2049-byte key (no longer key can exist) `k` with its last byte below `ff` incremented.
fn successor(k: &[u8]) -> Vec<u8> {
    const MAX_READ_KEY: usize = 2049;
    if k.len() < MAX_READ_KEY {
        let mut next = k.to_vec();
        next.push(0);
        return next;
    }
    let mut next = k[..MAX_READ_KEY].to_vec();
    while let Some(last) = next.pop() {
        if last < 0xff {
            next.push(last + 1);
            return next;
        }
    }
    // `k` was all `ff`: nothing valid follows it.
    keyspace_end()
}

/// Deletes every visible key. Returns how many keys the server refused to delete (a server
/// that let a too-large key be written but rejects deleting it); those are skipped.
async fn wipe(db: &dyn Database) -> Result<usize, String> {
    let mut start = Vec::new();
    let mut undeletable = 0;
    // Each round deletes or skips up to WIPE_BATCH keys; bounded in case a server never deletes.
    for _ in 0..10_000 {
        let keys = visible_keys(db, &start, WIPE_BATCH)
            .await
            .map_err(|e| format!("listing keys failed: {e}"))?;
        let Some(last) = keys.last() else {
            return Ok(undeletable);
        };
        match delete_all(db, &keys).await {
            Ok(()) => continue,
            Err(e) if e.is_client_error() => {}
            Err(e) => return Err(format!("deleting keys failed: {e}")),
        }
        // One of them is refused: delete them one by one and step over the refused ones.
        let next_start = successor(last);
        for k in &keys {
            match delete_all(db, std::slice::from_ref(k)).await {
                Ok(()) => {}
                Err(e) if e.is_client_error() => undeletable += 1,
                Err(e) => return Err(format!("deleting a key failed: {e}")),
            }
        }
        start = next_start;
    }
    Err("the database still has keys after 10 000 rounds of deleting".into())
}

/// Runs one case on a freshly wiped database; `Err` carries the failure reason.
async fn run_case(
    cli: &Cli,
    test: kv_conformance::harness::DatabaseTest,
    timeout: Duration,
) -> Result<(), String> {
    let db = open(cli)
        .await
        .map_err(|e| format!("connecting failed: {e}"))?;
    let undeletable = wipe(&db)
        .await
        .map_err(|e| format!("wiping before the case: {e}"))?;
    let note = if undeletable > 0 {
        format!(" [note: {undeletable} key(s) the server refuses to delete are left in the database, e.g. by an earlier case]")
    } else {
        String::new()
    };
    if let Ok(mut l) = panic_location().lock() {
        *l = None;
    }
    let outcome = tokio::time::timeout(timeout, AssertUnwindSafe(test(&db)).catch_unwind()).await;
    let result = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(p)) => {
            let at = panic_location()
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .map(|l| format!(" (at {l})"))
                .unwrap_or_default();
            Err(format!("{}{at}{note}", panic_message(&*p)))
        }
        Err(_) => Err(format!("timed out after {timeout:?}{note}")),
    };
    let _ = db.close().await;
    // Clean up with a new connection (the case may have closed its own).
    let cleanup = match open(cli).await {
        Ok(db) => {
            let r = wipe(&db).await;
            let _ = db.close().await;
            r.map(|_| ()).map_err(|e| format!("{e}{note}"))
        }
        Err(e) => Err(format!("connecting failed: {e}")),
    };
    match (result, cleanup) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(format!("wiping after the case: {e}")),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Longest failure line printed; longer ones (e.g. a write with 100 checks) are cut.
const MAX_LINE: usize = 400;

fn shorten(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE) {
        Some((cut, _)) => format!("{}… ({} more bytes)", &line[..cut], line.len() - cut),
        None => line.to_string(),
    }
}

/// Prints `FAIL name: reason`, continuation lines indented.
fn print_failure(name: &str, reason: &str) {
    let mut lines = reason.lines();
    println!("FAIL {name}: {}", shorten(lines.next().unwrap_or("")));
    for line in lines {
        println!("    {}", shorten(line));
    }
}

async fn run(cli: Cli) -> ExitCode {
    let cases: Vec<_> = database_tests()
        .into_iter()
        .filter(|(name, _)| cli.filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    if cli.list {
        for (name, _) in &cases {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }

    let db = match open(&cli).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("kv-conformance: cannot connect to {}: {e}", cli.url);
            return ExitCode::from(2);
        }
    };
    match visible_keys(&db, &[], 1).await {
        Ok(keys) if !keys.is_empty() && !cli.wipe => {
            eprintln!(
                "kv-conformance: the database at {} is not empty; the runner deletes every key \
                 between cases. Use a scratch database, or pass --wipe to delete its contents.",
                cli.url
            );
            return ExitCode::from(2);
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!(
                "kv-conformance: cannot read the database at {}: {e}",
                cli.url
            );
            return ExitCode::from(2);
        }
    }
    let _ = db.close().await;

    // Failures are reported per case; keep the default hook from printing every panic.
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut l) = panic_location().lock() {
            *l = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
        }
    }));

    let timeout = Duration::from_secs(cli.timeout_secs);
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for (name, test) in cases {
        if !cli.include_remote_limited {
            if let Some((_, why)) = REMOTE_LIMITATIONS.iter().find(|(n, _)| *n == name) {
                println!("skip {name}: {why}");
                skipped += 1;
                continue;
            }
        }
        match run_case(&cli, test, timeout).await {
            Ok(()) => {
                println!("ok {name}");
                passed += 1;
            }
            Err(reason) => {
                print_failure(name, &reason);
                failed += 1;
            }
        }
    }
    if skipped > 0 {
        println!(
            "{skipped} skipped (cannot pass over KV Connect; --include-remote-limited runs them)"
        );
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kv-conformance: cannot start the Tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}
