//! The reference server's command line: `denokv` (github.com/denoland/denokv, 0.14), accepted
//! unchanged so that a deployment switches by changing only the binary or the image.
//!
//! # Contract
//!
//! - **When.** The command line is read as denokv's when its first argument is `--sqlite-path`
//!   (denokv's global flag, which precedes the subcommand), or when `DENO_KV_SQLITE_PATH` is set,
//!   the first argument is `serve` or `pitr` and the command line uses no flag or subcommand
//!   that denokv lacks (then denokv's own errors, e.g. a missing token, are reported).
//!   Everything else is this server's own command line, untouched ([`resolve`] returns it as
//!   given), so both syntaxes coexist.
//! - **How.** A denokv command line is parsed by a mirror of denokv's own parser (same flags,
//!   same `DENO_KV_*` variables, same defaults, same refusals), then rewritten into this
//!   server's command line, which the binary parses as usual. So every setting the rewrite does
//!   not pass explicitly keeps this server's default and its `KV_CONNECT_*` variable (e.g.
//!   `KV_CONNECT_BACKUP_TO` adds a continuous backup to a denokv-style `serve`).
//! - **Mapping** (denokv → this server):
//!   - `--sqlite-path P` / `DENO_KV_SQLITE_PATH` → `--engine sqlite --path P`;
//!   - `serve --access-token T` / `DENO_KV_ACCESS_TOKEN` → `serve --access-token T` (at least 12
//!     characters, as denokv requires);
//!   - `--addr A` → `--addr A`; denokv's default `0.0.0.0:4512` applies unless `KV_CONNECT_ADDR`
//!     is set;
//!   - `--read-only` → `--read-only`;
//!   - `--sync-from-s3 --s3-bucket B --s3-prefix P --s3-endpoint E` (`DENO_KV_S3_*`) →
//!     `--replica-of s3://B/P --s3-endpoint E` (a read-only replica following the backup);
//!   - `--num-workers`, `--atomic-write-batch-timeout-ms` (`DENO_KV_NUM_WORKERS`,
//!     `DENO_KV_ATOMIC_WRITE_BATCH_TIMEOUT_MS`) are accepted and have no effect: concurrent
//!     writes are always gathered into one commit (group commit). A note says so.
//!   - `pitr sync --s3-*` → records the backup for the database (below), then restores the
//!     latest point into the database if it is missing or empty (`pitr restore`), otherwise
//!     leaves the database's point unchanged and describes the backup (`pitr info --from`);
//!   - `pitr list [--start] [--end]` → `pitr list --from <recorded backup>`;
//!   - `pitr info` → `pitr status` (the database's current versionstamp);
//!   - `pitr checkout <versionstamp>` → `pitr checkout --from <recorded backup> --at <vs>`.
//! - **The recorded backup.** denokv remembers the S3 location inside its database file; this
//!   server keeps its own file format, so the location (`pitr sync`, `serve --sync-from-s3`)
//!   is written beside the database as `<sqlite-path>.backup-source` (JSON). `pitr list` and
//!   `pitr checkout` read it, else `DENO_KV_S3_BUCKET` / `DENO_KV_S3_PREFIX`, else fail with a
//!   message that says what to run.
//! - **Refusals.** What has no equivalent is an error that says so, never silently ignored: a
//!   database file written by denokv itself cannot be served (this server keeps its own format),
//!   and is refused before anything touches it, with the `import-denokv` command that copies it
//!   into a new file.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

/// denokv's default listening address (`--addr`).
pub(crate) const REFERENCE_ADDR: &str = "0.0.0.0:4512";
/// denokv refuses shorter access tokens.
const MIN_TOKEN_LEN: usize = 12;
/// The suffix of the file that records a database's backup location.
const SOURCE_SUFFIX: &str = ".backup-source";
/// `PRAGMA application_id` of this server's SQLite files (stored as a big-endian 32-bit word).
#[cfg(feature = "sqlite")]
const OUR_SQLITE_APPLICATION_ID: u32 = kv_engine_sqlite::APPLICATION_ID as u32;

/// Looks up an environment variable (the process environment; a map in tests).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// A command line ready for this server's parser, with notes to log once logging is set up.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// This server's command line (the first element is the program name).
    pub args: Vec<OsString>,
    /// Things the user should know (settings accepted without effect, what a command did).
    pub notes: Vec<String>,
    /// A backup location to record beside the database before running.
    record: Option<(PathBuf, Source)>,
}

/// Errors of a denokv-style command line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompatError {
    /// Not a valid denokv command line (or `--help`): clap prints it.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("Access token must be at minimum 12 chars long.")]
    ShortToken,
    #[error("--s3-bucket not set (or DENO_KV_S3_BUCKET)")]
    NoBucket,
    #[error("--s3-prefix must end with a slash (got {0:?})")]
    PrefixSlash(String),
    #[error(
        "no backup is recorded for {path}: run `kv-connect-server --sqlite-path {path} pitr sync \
         --s3-bucket <bucket> --s3-prefix <prefix>/` first, or set DENO_KV_S3_BUCKET and \
         DENO_KV_S3_PREFIX"
    )]
    NoSource { path: String },
    #[error("cannot {what} {path}: {source}")]
    SourceFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{path} does not record a backup location: {source}")]
    SourceParse {
        path: String,
        source: serde_json::Error,
    },
    #[cfg(feature = "sqlite")]
    #[error(
        "{path} is a SQLite database of another program (application_id {app_id:#010x}), most \
         likely one written by denokv itself; this server keeps its own file format and cannot \
         serve it. A replica (--sync-from-s3) rebuilds itself from the backup: point \
         --sqlite-path at a new file. For a primary, copy its data into a new file once with \
         `kv-connect-server import-denokv --from {path} --path <new file>` (with the server \
         stopped) and point --sqlite-path at the new file"
    )]
    ForeignFile { path: String, app_id: u32 },
    #[cfg(feature = "sqlite")]
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
}

/// A backup location recorded for a database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Source {
    /// `s3://bucket/prefix/`.
    from: String,
    /// The S3-compatible endpoint, if any.
    s3_endpoint: Option<String>,
}

/// denokv's command line (its `config.rs`): a global `--sqlite-path` and a subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "kv-connect-server",
    about = "denokv-compatible command line: `--sqlite-path PATH serve|pitr ...` (see `kv-connect-server --help` for this server's own)"
)]
struct RefCli {
    /// The path to the SQLite database KV will persist to.
    #[arg(long, env = "DENO_KV_SQLITE_PATH")]
    sqlite_path: PathBuf,
    #[command(subcommand)]
    command: RefCommand,
}

#[derive(Subcommand, Debug)]
enum RefCommand {
    /// Starts the Deno KV HTTP server.
    Serve(RefServe),
    /// Point-in-time recovery tools.
    #[command(subcommand)]
    Pitr(RefPitr),
}

#[derive(Args, Debug)]
struct RefServe {
    /// The access token used by the CLI to connect to this KV instance.
    #[arg(long, env = "DENO_KV_ACCESS_TOKEN", hide_env_values = true)]
    access_token: String,
    /// The address to bind the Deno KV HTTP endpoint to [default: 0.0.0.0:4512, or
    /// KV_CONNECT_ADDR when set].
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Open in read-only mode.
    #[arg(long)]
    read_only: bool,
    /// Sync changes from S3 continuously (serve a read-only replica of the backup).
    #[arg(long, conflicts_with = "read_only")]
    sync_from_s3: bool,
    /// Accepted for compatibility; no effect (concurrent writes are always batched).
    #[arg(long, env = "DENO_KV_ATOMIC_WRITE_BATCH_TIMEOUT_MS")]
    atomic_write_batch_timeout_ms: Option<u64>,
    /// Accepted for compatibility; no effect (concurrent writes are always batched).
    #[arg(long, env = "DENO_KV_NUM_WORKERS", default_value_t = 1)]
    num_workers: usize,
    #[command(flatten)]
    replica: RefS3,
}

#[derive(Args, Debug, Default)]
struct RefS3 {
    /// The name of the S3 bucket to sync changes from.
    #[arg(long, env = "DENO_KV_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// Prefix in the S3 bucket (ends with a slash).
    #[arg(long, env = "DENO_KV_S3_PREFIX")]
    s3_prefix: Option<String>,
    /// S3 endpoint URL like `https://storage.googleapis.com`. Only needed for S3-compatible
    /// services other than Amazon S3.
    #[arg(long, env = "DENO_KV_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RefPitr {
    /// Sync changes from S3 to the SQLite database, without updating the current snapshot.
    Sync {
        #[command(flatten)]
        replica: RefS3,
    },
    /// List available recovery points.
    List {
        /// Start time in RFC3339 format, e.g. 2021-01-01T00:00:00Z
        #[arg(long)]
        start: Option<String>,
        /// End time in RFC3339 format, e.g. 2021-01-01T00:00:00Z
        #[arg(long)]
        end: Option<String>,
    },
    /// Show information about the current snapshot.
    Info,
    /// Checkout the snapshot at a specific versionstamp.
    Checkout { versionstamp: String },
}

/// Is `args` (program name first) a denokv command line? See the module docs.
fn looks_like_reference(args: &[OsString], env: Env<'_>) -> Option<bool> {
    let first = args.get(1)?.to_str()?;
    if first == "--sqlite-path" || first.starts_with("--sqlite-path=") {
        return Some(true);
    }
    let env_path = env("DENO_KV_SQLITE_PATH").is_some_and(|v| !v.is_empty());
    (env_path && matches!(first, "serve" | "pitr")).then_some(false)
}

/// Turns the process's command line into this server's: unchanged, or rewritten from denokv's.
pub(crate) fn resolve(args: Vec<OsString>, env: Env<'_>) -> Result<Invocation, CompatError> {
    let unchanged = |args, notes| Invocation {
        args,
        notes,
        record: None,
    };
    let explicit = match looks_like_reference(&args, env) {
        None => {
            let mut notes = Vec::new();
            if env("DENO_KV_SQLITE_PATH").is_some_and(|v| !v.is_empty()) {
                notes.push(
                    "DENO_KV_SQLITE_PATH is set but the command line is not denokv's \
                     (`serve` or `pitr` first), so it is ignored; --path names the database"
                        .to_string(),
                );
            }
            return Ok(unchanged(args, notes));
        }
        Some(explicit) => explicit,
    };
    let parsed = match RefCli::try_parse_from(&args) {
        Ok(p) => p,
        // Only the environment pointed at denokv, and the line uses flags or subcommands
        // denokv does not have: this server's own command line it is. Other errors (a missing
        // token, a bad value) are denokv's to report.
        Err(e)
            if explicit
                || !matches!(
                    e.kind(),
                    clap::error::ErrorKind::UnknownArgument
                        | clap::error::ErrorKind::InvalidSubcommand
                ) =>
        {
            return Err(e.into())
        }
        Err(_) => {
            let note = "DENO_KV_SQLITE_PATH is set but the command line is not a valid denokv \
                        one, so it is read as this server's own and DENO_KV_SQLITE_PATH is \
                        ignored; --path names the database"
                .to_string();
            return Ok(unchanged(args, vec![note]));
        }
    };
    let program = args
        .first()
        .cloned()
        .unwrap_or_else(|| "kv-connect-server".into());
    translate(program, parsed, env)
}

/// `s3://bucket/prefix` from denokv's S3 flags (same checks as denokv).
fn s3_source(s3: &RefS3) -> Result<Source, CompatError> {
    let bucket = s3.s3_bucket.as_deref().ok_or(CompatError::NoBucket)?;
    let prefix = s3.s3_prefix.clone().unwrap_or_default();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return Err(CompatError::PrefixSlash(prefix));
    }
    Ok(Source {
        from: format!("s3://{bucket}/{prefix}"),
        s3_endpoint: s3.s3_endpoint.clone(),
    })
}

fn source_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(SOURCE_SUFFIX);
    name.into()
}

/// The backup recorded for the database at `db`, else the one the `DENO_KV_S3_*` variables
/// name.
fn recorded_source(db: &Path, env: Env<'_>) -> Result<Source, CompatError> {
    let file = source_file(db);
    match std::fs::read(&file) {
        Ok(bytes) => {
            return serde_json::from_slice(&bytes).map_err(|source| CompatError::SourceParse {
                path: file.display().to_string(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CompatError::SourceFile {
                what: "read",
                path: file.display().to_string(),
                source,
            })
        }
    }
    let var = |name| env(name).and_then(|v| v.into_string().ok());
    match var("DENO_KV_S3_BUCKET") {
        Some(bucket) => s3_source(&RefS3 {
            s3_bucket: Some(bucket),
            s3_prefix: var("DENO_KV_S3_PREFIX"),
            s3_endpoint: var("DENO_KV_S3_ENDPOINT"),
        }),
        None => Err(CompatError::NoSource {
            path: db.display().to_string(),
        }),
    }
}

/// Without the sqlite engine, `--engine sqlite` fails on its own.
#[cfg(not(feature = "sqlite"))]
fn check_not_foreign(_db: &Path) -> Result<(), CompatError> {
    Ok(())
}

/// Refuses a SQLite file that this server did not write (denokv's own, typically). A missing,
/// empty or not-yet-initialised file is fine.
#[cfg(feature = "sqlite")]
fn check_not_foreign(db: &Path) -> Result<(), CompatError> {
    use std::io::Read;
    let mut header = [0u8; 100];
    let read = std::fs::File::open(db).and_then(|mut f| {
        let mut n = 0;
        while n < header.len() {
            match f.read(&mut header[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    });
    let n = match read {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CompatError::ReadFile {
                path: db.display().to_string(),
                source,
            })
        }
    };
    if n < header.len() || &header[..16] != b"SQLite format 3\0" {
        // Not a SQLite file at all: the engine's own error explains it.
        return Ok(());
    }
    let app_id = u32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    // Schema cookie (offset 40): 0 while no table was ever created.
    let schema_cookie = u32::from_be_bytes([header[40], header[41], header[42], header[43]]);
    if app_id == OUR_SQLITE_APPLICATION_ID || (app_id == 0 && schema_cookie == 0) {
        return Ok(());
    }
    Err(CompatError::ForeignFile {
        path: db.display().to_string(),
        app_id,
    })
}

/// Is there no database at `db` yet (missing or empty file)?
fn is_fresh(db: &Path) -> bool {
    std::fs::metadata(db).map_or(true, |m| m.len() == 0)
}

/// Builds this server's command line for a parsed denokv one.
fn translate(program: OsString, cli: RefCli, env: Env<'_>) -> Result<Invocation, CompatError> {
    let path = cli.sqlite_path;
    check_not_foreign(&path)?;
    let mut args: Vec<OsString> = vec![program];
    let mut push = |items: &[&OsStr]| args.extend(items.iter().map(|s| s.to_os_string()));
    let db: [&OsStr; 4] = [
        "--engine".as_ref(),
        "sqlite".as_ref(),
        "--path".as_ref(),
        path.as_os_str(),
    ];
    let mut notes = Vec::new();
    let mut record = None;
    let endpoint = |push: &mut dyn FnMut(&[&OsStr]), source: &Source| {
        if let Some(e) = &source.s3_endpoint {
            push(&["--s3-endpoint".as_ref(), e.as_ref()]);
        }
    };
    match cli.command {
        RefCommand::Serve(serve) => {
            if serve.access_token.len() < MIN_TOKEN_LEN {
                return Err(CompatError::ShortToken);
            }
            push(&["serve".as_ref()]);
            push(&db);
            push(&["--access-token".as_ref(), serve.access_token.as_ref()]);
            match serve.addr {
                Some(addr) => push(&["--addr".as_ref(), addr.to_string().as_ref()]),
                None if env("KV_CONNECT_ADDR").is_some() => {}
                None => push(&["--addr".as_ref(), REFERENCE_ADDR.as_ref()]),
            }
            if serve.read_only {
                push(&["--read-only".as_ref()]);
            }
            if serve.num_workers != 1 || serve.atomic_write_batch_timeout_ms.is_some() {
                notes.push(
                    "--num-workers and --atomic-write-batch-timeout-ms have no effect here: \
                     concurrent writes are always gathered into one commit (group commit)"
                        .to_string(),
                );
            }
            if serve.sync_from_s3 {
                let source = s3_source(&serve.replica)?;
                push(&["--replica-of".as_ref(), source.from.as_ref()]);
                endpoint(&mut push, &source);
                record = Some((path.clone(), source));
            } else if serve.replica.s3_bucket.is_some() || serve.replica.s3_prefix.is_some() {
                notes.push(
                    "--s3-bucket/--s3-prefix have no effect without --sync-from-s3".to_string(),
                );
            }
        }
        RefCommand::Pitr(RefPitr::Sync { replica }) => {
            let source = s3_source(&replica)?;
            if is_fresh(&path) {
                push(&["pitr".as_ref(), "restore".as_ref()]);
                push(&db);
            } else {
                push(&["pitr".as_ref(), "info".as_ref()]);
                notes.push(format!(
                    "{} already holds a copy; its point is unchanged (move it with `pitr \
                     checkout <versionstamp>`); the backup's recovery points follow",
                    path.display()
                ));
            }
            push(&["--from".as_ref(), source.from.as_ref()]);
            endpoint(&mut push, &source);
            record = Some((path.clone(), source));
        }
        RefCommand::Pitr(RefPitr::List { start, end }) => {
            let source = recorded_source(&path, env)?;
            push(&["pitr".as_ref(), "list".as_ref()]);
            push(&["--from".as_ref(), source.from.as_ref()]);
            endpoint(&mut push, &source);
            if let Some(s) = &start {
                push(&["--start".as_ref(), s.as_ref()]);
            }
            if let Some(e) = &end {
                push(&["--end".as_ref(), e.as_ref()]);
            }
        }
        RefCommand::Pitr(RefPitr::Info) => {
            push(&["pitr".as_ref(), "status".as_ref()]);
            push(&db);
        }
        RefCommand::Pitr(RefPitr::Checkout { versionstamp }) => {
            let source = recorded_source(&path, env)?;
            push(&["pitr".as_ref(), "checkout".as_ref()]);
            push(&db);
            push(&["--from".as_ref(), source.from.as_ref()]);
            endpoint(&mut push, &source);
            push(&["--at".as_ref(), versionstamp.as_ref()]);
        }
    }
    Ok(Invocation {
        args,
        notes,
        record,
    })
}

impl Invocation {
    /// Does what the rewrite needs before the command runs: records the backup location beside
    /// the database (written to a temporary file, then renamed over the old record).
    pub(crate) fn prepare(&self) -> Result<(), CompatError> {
        let Some((db, source)) = &self.record else {
            return Ok(());
        };
        let file = source_file(db);
        let io = |what, source| CompatError::SourceFile {
            what,
            path: file.display().to_string(),
            source,
        };
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
        }
        let mut tmp = file.as_os_str().to_os_string();
        tmp.push(".tmp");
        let json = serde_json::to_vec_pretty(source).map_err(|e| io("encode", e.into()))?;
        std::fs::write(&tmp, json).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &file).map_err(|e| io("write", e))
    }
}

/// The process's command line for this server's parser (rewritten from denokv's if it is one,
/// with the backup location recorded), or exits with denokv-style usage errors.
pub(crate) fn args_or_exit() -> Invocation {
    let env = |name: &str| std::env::var_os(name);
    // `--check-config` (only reachable through its variable here) writes nothing.
    let checking = std::env::var("KV_CONNECT_CHECK_CONFIG").is_ok_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "y" | "on"
        )
    });
    let resolved = resolve(std::env::args_os().collect(), &env).and_then(|inv| {
        if !checking {
            inv.prepare()?;
        }
        Ok(inv)
    });
    match resolved {
        Ok(inv) => inv,
        Err(CompatError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("kv-connect-server: {e}");
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(line: &[&str], vars: &[(&str, &str)]) -> Result<Invocation, CompatError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let env = move |name: &str| vars.get(name).cloned();
        let mut args = vec![OsString::from("kv-connect-server")];
        args.extend(line.iter().map(OsString::from));
        resolve(args, &env)
    }

    fn rewritten(line: &[&str], vars: &[(&str, &str)]) -> Vec<String> {
        run(line, vars)
            .unwrap()
            .args
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    const TOKEN: &str = "a-long-enough-token";

    #[test]
    fn own_command_lines_pass_unchanged() {
        for line in [
            &["--path", "x.db", "--addr", "127.0.0.1:0"][..],
            &["serve", "--engine", "memory"],
            &["pitr", "list", "--from", "/tmp/b"],
            &[],
        ] {
            assert_eq!(rewritten(line, &[]), line);
        }
    }

    #[test]
    fn serve_maps_to_ours_with_the_reference_defaults() {
        let args = rewritten(
            &[
                "--sqlite-path",
                "/data/denokv.sqlite",
                "serve",
                "--access-token",
                TOKEN,
            ],
            &[],
        );
        assert_eq!(
            args,
            [
                "serve",
                "--engine",
                "sqlite",
                "--path",
                "/data/denokv.sqlite",
                "--access-token",
                TOKEN,
                "--addr",
                REFERENCE_ADDR
            ]
        );
        // KV_CONNECT_ADDR replaces the reference's default, an explicit --addr wins.
        let args = rewritten(
            &["--sqlite-path=x", "serve", "--access-token", TOKEN],
            &[("KV_CONNECT_ADDR", "127.0.0.1:1")],
        );
        assert!(!args.contains(&"--addr".to_string()), "{args:?}");
        let args = rewritten(
            &[
                "--sqlite-path",
                "x",
                "serve",
                "--access-token",
                TOKEN,
                "--addr",
                "127.0.0.1:9",
                "--read-only",
            ],
            &[("KV_CONNECT_ADDR", "127.0.0.1:1")],
        );
        assert!(args.ends_with(&["--addr".into(), "127.0.0.1:9".into(), "--read-only".into()]));
    }

    #[test]
    fn the_reference_refusals_are_kept() {
        let short = run(
            &["--sqlite-path", "x", "serve", "--access-token", "short"],
            &[],
        );
        assert!(matches!(short, Err(CompatError::ShortToken)), "{short:?}");
        // --sqlite-path is global: it precedes the subcommand, as in denokv.
        let late = run(&["--sqlite-path", "x", "serve", "--sqlite-path", "y"], &[]);
        assert!(matches!(late, Err(CompatError::Clap(_))), "{late:?}");
        let both = run(
            &[
                "--sqlite-path",
                "x",
                "serve",
                "--access-token",
                TOKEN,
                "--read-only",
                "--sync-from-s3",
            ],
            &[],
        );
        assert!(matches!(both, Err(CompatError::Clap(_))), "{both:?}");
        let own_flag = run(&["--sqlite-path", "x", "serve", "--engine", "redb"], &[]);
        assert!(
            matches!(own_flag, Err(CompatError::Clap(_))),
            "{own_flag:?}"
        );
        let no_bucket = run(
            &[
                "--sqlite-path",
                "x",
                "serve",
                "--access-token",
                TOKEN,
                "--sync-from-s3",
            ],
            &[],
        );
        assert!(
            matches!(no_bucket, Err(CompatError::NoBucket)),
            "{no_bucket:?}"
        );
        let slash = run(
            &[
                "--sqlite-path",
                "x",
                "pitr",
                "sync",
                "--s3-bucket",
                "b",
                "--s3-prefix",
                "p",
            ],
            &[],
        );
        assert!(
            matches!(slash, Err(CompatError::PrefixSlash(_))),
            "{slash:?}"
        );
    }

    #[test]
    fn sync_from_s3_is_a_replica_of_the_backup() {
        let inv = run(
            &[
                "--sqlite-path",
                "/nonexistent/r.sqlite",
                "serve",
                "--access-token",
                TOKEN,
                "--sync-from-s3",
                "--s3-bucket",
                "bkt",
                "--s3-prefix",
                "some-prefix/6aea9765/",
                "--s3-endpoint",
                "http://127.0.0.1:9000",
            ],
            &[],
        )
        .unwrap();
        let args: Vec<_> = inv.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(
            args.ends_with(&[
                "--replica-of",
                "s3://bkt/some-prefix/6aea9765/",
                "--s3-endpoint",
                "http://127.0.0.1:9000"
            ]),
            "{args:?}"
        );
        let (db, source) = inv.record.unwrap();
        assert_eq!(db, Path::new("/nonexistent/r.sqlite"));
        assert_eq!(source.from, "s3://bkt/some-prefix/6aea9765/");
    }

    #[test]
    fn the_environment_alone_selects_the_reference_syntax_only_when_it_fits() {
        let vars = [
            ("DENO_KV_SQLITE_PATH", "/data/x.sqlite"),
            ("DENO_KV_ACCESS_TOKEN", TOKEN),
        ];
        // clap reads DENO_KV_* from the process environment: only run this part when the
        // variables are not set there (the test binary's own environment).
        if std::env::var_os("DENO_KV_SQLITE_PATH").is_none() {
            // Without the variable in the process environment the reference parser misses
            // --sqlite-path, so the line stays ours (with a note).
            let inv = run(&["serve", "--engine", "memory"], &vars).unwrap();
            assert_eq!(inv.args.len(), 4);
            assert_eq!(inv.notes.len(), 1, "{:?}", inv.notes);
        }
        let inv = run(&["--engine", "memory"], &vars).unwrap();
        assert_eq!(inv.args.len(), 3);
        assert!(inv.notes[0].contains("DENO_KV_SQLITE_PATH"));
    }

    #[test]
    fn pitr_commands_use_the_recorded_backup() {
        let dir = std::env::temp_dir().join(format!("kvcs-compat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db.sqlite");
        let dbs = db.to_str().unwrap();
        let missing = run(&["--sqlite-path", dbs, "pitr", "list"], &[]);
        assert!(
            matches!(missing, Err(CompatError::NoSource { .. })),
            "{missing:?}"
        );
        // The environment names a backup when none is recorded.
        let args = rewritten(
            &[
                "--sqlite-path",
                dbs,
                "pitr",
                "list",
                "--start",
                "2026-01-01T00:00:00Z",
            ],
            &[
                ("DENO_KV_S3_BUCKET", "env-bkt"),
                ("DENO_KV_S3_PREFIX", "p/"),
            ],
        );
        assert_eq!(
            args,
            [
                "pitr",
                "list",
                "--from",
                "s3://env-bkt/p/",
                "--start",
                "2026-01-01T00:00:00Z"
            ]
        );
        let sync = run(
            &[
                "--sqlite-path",
                dbs,
                "pitr",
                "sync",
                "--s3-bucket",
                "bkt",
                "--s3-prefix",
                "a/b/",
            ],
            &[],
        )
        .unwrap();
        let args: Vec<_> = sync
            .args
            .iter()
            .skip(1)
            .map(|a| a.to_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "pitr",
                "restore",
                "--engine",
                "sqlite",
                "--path",
                dbs,
                "--from",
                "s3://bkt/a/b/"
            ]
        );
        sync.prepare().unwrap();
        let args = rewritten(
            &[
                "--sqlite-path",
                dbs,
                "pitr",
                "checkout",
                "0000000000000a3f0000",
            ],
            &[],
        );
        assert_eq!(
            args,
            [
                "pitr",
                "checkout",
                "--engine",
                "sqlite",
                "--path",
                dbs,
                "--from",
                "s3://bkt/a/b/",
                "--at",
                "0000000000000a3f0000"
            ]
        );
        assert_eq!(
            rewritten(&["--sqlite-path", dbs, "pitr", "info"], &[]),
            ["pitr", "status", "--engine", "sqlite", "--path", dbs]
        );
        // Once the database exists, sync leaves its point alone and describes the backup.
        std::fs::write(&db, b"x").unwrap();
        let args = rewritten(
            &[
                "--sqlite-path",
                dbs,
                "pitr",
                "sync",
                "--s3-bucket",
                "bkt",
                "--s3-prefix",
                "a/b/",
            ],
            &[],
        );
        assert_eq!(args[..2], ["pitr", "info"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_foreign_sqlite_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("kvcs-compat-foreign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("denokv.sqlite");
        let mut header = vec![0u8; 4096];
        header[..16].copy_from_slice(b"SQLite format 3\0");
        header[43] = 3; // a schema cookie: tables were created
        std::fs::write(&db, &header).unwrap();
        let err = run(
            &[
                "--sqlite-path",
                db.to_str().unwrap(),
                "serve",
                "--access-token",
                TOKEN,
            ],
            &[],
        );
        assert!(
            matches!(err, Err(CompatError::ForeignFile { .. })),
            "{err:?}"
        );
        header[68..72].copy_from_slice(&OUR_SQLITE_APPLICATION_ID.to_be_bytes());
        std::fs::write(&db, &header).unwrap();
        assert!(run(
            &[
                "--sqlite-path",
                db.to_str().unwrap(),
                "serve",
                "--access-token",
                TOKEN
            ],
            &[]
        )
        .is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
