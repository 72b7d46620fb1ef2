//! `kv-connect-server data …`: read and write the data of a database by hand, against a
//! running server (`--url`, KV Connect, token from `DENO_KV_ACCESS_TOKEN`) or a database file
//! opened in this process (`--engine`/`--path`, as `serve` takes them).
//!
//! Contract:
//! - Keys and values are written in kv-v8's JSON notation; output is one JSON document per
//!   line (NDJSON) on stdout, in the forms of [`entry`]. Messages go to stderr.
//! - `get`, `list`, `watch` and `export` never write. `set` and `delete` are one atomic write
//!   each. `import` validates the whole input before its first write (see [`import`]).
//! - Every failure exits non-zero with one message naming what was wrong (the argument, or
//!   the line of an import); bad input never causes a partial write.
//! - Progress bars (indicatif) are drawn on stderr only when stderr is a terminal.

mod entry;
mod import;
mod target;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use futures::StreamExt;
use kv_traits::key::prefix_range;
use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, KvError, Mutation, ReadRange, Versionstamp,
    WatchKeyOutput,
};
use serde_json::{json, Value};

use crate::{DbArgs, MainError};
use entry::{entry_json, key_json, parse_key, parse_value, ExportLine};
use target::Target;

/// Errors of the data commands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DataError {
    #[error("--url needs an access token: set DENO_KV_ACCESS_TOKEN (or pass --access-token)")]
    NoToken,
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: KvError },
    #[error(transparent)]
    Open(Box<MainError>),
    #[error("invalid key in {what}: {reason}")]
    Key { what: String, reason: String },
    #[error("invalid value: {reason}")]
    Value { reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("not written: the check failed ({0})")]
    CheckFailed(&'static str),
    #[error("line {line}: {reason}; nothing was written")]
    Line { line: usize, reason: String },
    #[error("import stopped at line {line} after writing {written} of {total} entries: {reason}")]
    ImportStopped {
        line: usize,
        written: usize,
        total: usize,
        reason: String,
    },
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// How to reach the database: `--url` (KV Connect), else the database flags of `serve`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnArgs {
    /// A server's KV Connect URL (`http://HOST:PORT`); without it, the database file named by
    /// --engine/--path is opened in this process (stop a server using that file first, or go
    /// through its URL).
    #[arg(long, env = "KV_DATA_URL")]
    url: Option<String>,

    /// Access token for --url.
    #[arg(long, env = "DENO_KV_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,

    #[command(flatten)]
    db: DbArgs,
}

/// `data` subcommands. KEY is a JSON array of key parts: strings, numbers, booleans,
/// {"$bigint": "5"} and {"$bytes": "<base64>"}, e.g. '["users", 1]'. VALUE is JSON, with
/// tagged forms for other JS values: {"$u64": "5"}, {"$bytes": "<base64>"},
/// {"$bigint": "1"}, {"$date": "2024-01-02T03:04:05.000Z"}, {"$map": [[k, v]]},
/// {"$set": [v]}, {"$undefined": true}, … (see docs/data-cli.md).
#[derive(Subcommand, Debug)]
pub(crate) enum DataCommand {
    /// Print one entry: {"key", "value", "versionstamp"} (value and versionstamp null when the
    /// key is absent).
    Get {
        /// The key.
        key: String,
        /// Also print kv-v8's typed display tree of the value ("tree").
        #[arg(long)]
        tree: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print entries in key order, one JSON line each.
    List {
        #[command(flatten)]
        range: RangeArgs,
        /// Print at most this many entries.
        #[arg(long)]
        limit: Option<usize>,
        /// Descending key order.
        #[arg(long)]
        reverse: bool,
        /// Also print kv-v8's typed display tree of each value ("tree").
        #[arg(long)]
        tree: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Write one value; prints {"versionstamp"}.
    Set {
        /// The key.
        key: String,
        /// The value in JSON notation; `-` reads it from stdin.
        value: String,
        /// Let the entry expire this many milliseconds from now.
        #[arg(long)]
        expire_in_ms: Option<u64>,
        /// Write only if the key does not exist.
        #[arg(long, conflicts_with = "if_versionstamp")]
        if_absent: bool,
        /// Write only if the key's versionstamp is still this one (20 hex digits), so that a
        /// concurrent change is not overwritten.
        #[arg(long)]
        if_versionstamp: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete one key; prints {"versionstamp"}.
    Delete {
        /// The key.
        key: String,
        /// Delete only if the key's versionstamp is still this one.
        #[arg(long)]
        if_versionstamp: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print the watched keys' entries now and after every change, one JSON line per key and
    /// change, until interrupted (or --count notifications).
    Watch {
        /// The keys (up to 10).
        #[arg(required = true)]
        keys: Vec<String>,
        /// Stop after this many notifications (the first one reports every key).
        #[arg(long)]
        count: Option<usize>,
        /// Also print kv-v8's typed display tree of each value ("tree").
        #[arg(long)]
        tree: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Write entries as NDJSON: key, value (notation), exact stored bytes (encoding, data),
    /// versionstamp and expiry (expireAt; only from a database file: KV Connect cannot read
    /// expiry times).
    Export {
        #[command(flatten)]
        range: RangeArgs,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Read an export (or hand-written lines of {"key", "value", "expireAt"?}) and write it,
    /// in the original versionstamp order. The whole input is checked first; any bad line
    /// stops the import before anything is written.
    Import {
        /// The NDJSON file; `-` for stdin.
        file: PathBuf,
        /// Check everything, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace keys that already exist (by default an existing key is an error).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// A key range, as `list` and `export` take it (Deno's `list` selectors).
#[derive(Args, Debug, Clone)]
pub(crate) struct RangeArgs {
    /// Keys under this prefix (not the prefix key itself). Default: every key.
    #[arg(long)]
    prefix: Option<String>,
    /// First key (inclusive).
    #[arg(long)]
    start: Option<String>,
    /// Key to stop before (exclusive).
    #[arg(long)]
    end: Option<String>,
}

impl RangeArgs {
    /// `[start, end)` of encoded keys.
    fn bounds(&self) -> Result<(Vec<u8>, Vec<u8>), DataError> {
        let prefix = match &self.prefix {
            Some(p) => parse_key("--prefix", p)?,
            None => Vec::new(),
        };
        let (mut start, mut end) = prefix_range(&prefix);
        if let Some(s) = &self.start {
            start = parse_key("--start", s)?;
        }
        if let Some(e) = &self.end {
            end = parse_key("--end", e)?;
        }
        Ok((start, end))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_versionstamp(flag: &str, s: &str) -> Result<Versionstamp, DataError> {
    s.parse().map_err(|_| DataError::Value {
        reason: format!("{flag} {s:?} is not a versionstamp (20 hex digits)"),
    })
}

/// NDJSON on stdout (or a file). A closed pipe (`| head`) ends the output quietly.
struct Out {
    w: Box<dyn Write>,
    closed: bool,
}

impl Out {
    fn stdout() -> Out {
        Out {
            w: Box::new(std::io::BufWriter::new(std::io::stdout())),
            closed: false,
        }
    }

    fn line(&mut self, v: &Value) -> Result<(), DataError> {
        if self.closed {
            return Ok(());
        }
        let r = writeln!(self.w, "{v}");
        self.check(r)
    }

    fn flush(&mut self) -> Result<(), DataError> {
        if self.closed {
            return Ok(());
        }
        let r = self.w.flush();
        self.check(r)
    }

    fn check(&mut self, r: std::io::Result<()>) -> Result<(), DataError> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.map_err(|source| DataError::Io {
                what: "writing the output".into(),
                source,
            }),
        }
    }
}

/// Runs a data command.
pub(crate) async fn run(cmd: DataCommand) -> Result<(), DataError> {
    let conn = match &cmd {
        DataCommand::Get { conn, .. }
        | DataCommand::List { conn, .. }
        | DataCommand::Set { conn, .. }
        | DataCommand::Delete { conn, .. }
        | DataCommand::Watch { conn, .. }
        | DataCommand::Export { conn, .. }
        | DataCommand::Import { conn, .. } => conn.clone(),
    };
    // Parse everything typed on the command line before touching the database.
    let target = Target::open(conn.url.as_deref(), conn.access_token.as_deref(), &conn.db).await?;
    let result = run_on(cmd, &target).await;
    let closed = target.close().await;
    result?;
    Ok(closed?)
}

async fn run_on(cmd: DataCommand, target: &Target) -> Result<(), DataError> {
    let db = target.db();
    let mut out = Out::stdout();
    match cmd {
        DataCommand::Get { key, tree, .. } => {
            let key = parse_key("KEY", &key)?;
            let mut ranges = db
                .snapshot_read(vec![ReadRange::single(&key)], Consistency::Strong)
                .await?;
            let entry = ranges.pop().and_then(|mut r| r.pop());
            let line = match entry {
                Some(e) => entry_json(&e, tree),
                None => json!({"key": key_json(&key), "value": null, "versionstamp": null}),
            };
            out.line(&line)?;
        }
        DataCommand::List {
            range,
            limit,
            reverse,
            tree,
            ..
        } => {
            let (start, end) = range.bounds()?;
            let mut pages = Pages::new(start, end, reverse, limit, db.limits().max_read_entries);
            while let Some(page) = pages.next(db).await? {
                for e in &page {
                    out.line(&entry_json(e, tree))?;
                }
            }
        }
        DataCommand::Set {
            key,
            value,
            expire_in_ms,
            if_absent,
            if_versionstamp,
            ..
        } => {
            let key = parse_key("KEY", &key)?;
            let text = if value == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|source| DataError::Io {
                    what: "reading the value from stdin".into(),
                    source,
                })?
            } else {
                value
            };
            let value = parse_value(&text)?;
            let mut write = AtomicWrite::default();
            let check = match (if_absent, &if_versionstamp) {
                (true, _) => Some((None, "the key exists")),
                (false, Some(vs)) => Some((
                    Some(parse_versionstamp("--if-versionstamp", vs)?),
                    "the key's versionstamp changed",
                )),
                (false, None) => None,
            };
            if let Some((versionstamp, _)) = check {
                write.checks.push(Check {
                    key: key.clone(),
                    versionstamp,
                });
            }
            let mut m = Mutation::set(key, value);
            m.expire_at_ms = expire_in_ms.map(|ms| now_ms().saturating_add(ms));
            write.mutations.push(m);
            commit(db, write, check.map(|c| c.1), &mut out).await?;
        }
        DataCommand::Delete {
            key,
            if_versionstamp,
            ..
        } => {
            let key = parse_key("KEY", &key)?;
            let mut write = AtomicWrite::default();
            if let Some(vs) = &if_versionstamp {
                write.checks.push(Check {
                    key: key.clone(),
                    versionstamp: Some(parse_versionstamp("--if-versionstamp", vs)?),
                });
            }
            write.mutations.push(Mutation::delete(key));
            let why = if_versionstamp
                .as_ref()
                .map(|_| "the key's versionstamp changed");
            commit(db, write, why, &mut out).await?;
        }
        DataCommand::Watch {
            keys, count, tree, ..
        } => {
            let keys = keys
                .iter()
                .enumerate()
                .map(|(i, k)| parse_key(&format!("KEY {}", i + 1), k))
                .collect::<Result<Vec<_>, _>>()?;
            let mut stream = db.watch(keys.clone()).await?;
            let mut seen = 0usize;
            while count.is_none_or(|c| seen < c) {
                let Some(outputs) = stream.next().await else {
                    break;
                };
                for (key, output) in keys.iter().zip(outputs?) {
                    if let WatchKeyOutput::Changed(entry) = output {
                        out.line(&match entry {
                            Some(e) => entry_json(&e, tree),
                            None => {
                                json!({"key": key_json(key), "value": null, "versionstamp": null})
                            }
                        })?;
                    }
                }
                out.flush()?;
                seen += 1;
            }
        }
        DataCommand::Export {
            range, out: file, ..
        } => {
            let (start, end) = range.bounds()?;
            let mut out = match file {
                Some(path) => Out {
                    w: Box::new(std::io::BufWriter::new(
                        std::fs::File::create(&path).map_err(|source| DataError::Io {
                            what: format!("creating {}", path.display()),
                            source,
                        })?,
                    )),
                    closed: false,
                },
                None => out,
            };
            export(target, start, end, &mut out).await?;
            return out.flush();
        }
        DataCommand::Import {
            file,
            dry_run,
            overwrite,
            ..
        } => {
            let report = import::run(db, &file, dry_run, overwrite).await?;
            out.line(&report)?;
        }
    }
    out.flush()
}

/// Commits one write and prints its versionstamp; a failed check is an error naming `why`.
async fn commit(
    db: &dyn kv_traits::Database,
    write: AtomicWrite,
    why: Option<&'static str>,
    out: &mut Out,
) -> Result<(), DataError> {
    match db.atomic_write(write).await? {
        CommitResult::Committed(vs) => out.line(&json!({"versionstamp": vs.to_string()})),
        CommitResult::CheckFailed(_) => Err(DataError::CheckFailed(why.unwrap_or("check"))),
    }
}

/// Reads `[start, end)` page by page (each page one snapshot).
struct Pages {
    start: Vec<u8>,
    end: Vec<u8>,
    reverse: bool,
    remaining: usize,
    page: usize,
    done: bool,
}

impl Pages {
    fn new(start: Vec<u8>, end: Vec<u8>, reverse: bool, limit: Option<usize>, page: usize) -> Self {
        Pages {
            start,
            end,
            reverse,
            remaining: limit.unwrap_or(usize::MAX),
            page: page.clamp(1, 1000),
            done: false,
        }
    }

    async fn next(
        &mut self,
        db: &dyn kv_traits::Database,
    ) -> Result<Option<Vec<kv_traits::KvEntry>>, DataError> {
        if self.done || self.remaining == 0 || self.start >= self.end {
            return Ok(None);
        }
        let n = self.page.min(self.remaining);
        let range = ReadRange {
            start: self.start.clone(),
            end: self.end.clone(),
            limit: n as u32,
            reverse: self.reverse,
        };
        let entries = db
            .snapshot_read(vec![range], Consistency::Strong)
            .await?
            .pop()
            .unwrap_or_default();
        self.remaining -= entries.len().min(self.remaining);
        match entries.last() {
            Some(last) if entries.len() == n => {
                if self.reverse {
                    self.end = last.key.clone();
                } else {
                    self.start = last.key.clone();
                    self.start.push(0);
                }
            }
            _ => self.done = true,
        }
        Ok(Some(entries))
    }
}

/// A spinner counting `what` on stderr, when stderr is a terminal.
fn spinner(what: &'static str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template(&format!("{{spinner}} {{pos}} {what}"))
    {
        bar.set_style(style);
    }
    bar
}

/// Writes `[start, end)` as export lines. From a database file every entry carries its expiry
/// (entries already expired but not swept yet are left out); over KV Connect there is no way
/// to read expiry, which the output then lacks (a note on stderr says so).
async fn export(
    target: &Target,
    start: Vec<u8>,
    end: Vec<u8>,
    out: &mut Out,
) -> Result<(), DataError> {
    let bar = spinner("entries exported");
    match target {
        Target::Local(db) => {
            let now = now_ms();
            let mut start = start;
            loop {
                let (page, _) = db.export_range(&start, &end, 1000).await?;
                let full = page.len() == 1000;
                for e in &page {
                    if e.expire_at_ms.is_some_and(|t| t <= now) {
                        continue;
                    }
                    out.line(
                        &ExportLine {
                            key: e.key.clone(),
                            value: e.value.clone(),
                            versionstamp: Some(e.versionstamp),
                            expire_at_ms: e.expire_at_ms,
                        }
                        .to_json(),
                    )?;
                    bar.inc(1);
                }
                match page.last() {
                    Some(last) if full => {
                        start = last.key.clone();
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
        Target::Remote(_) => {
            tracing::warn!("over KV Connect expiry times cannot be read: the export has no expireAt (export from the database file to keep them)");
            let page = target.db().limits().max_read_entries;
            let mut pages = Pages::new(start, end, false, None, page);
            while let Some(page) = pages.next(target.db()).await? {
                for e in page {
                    out.line(
                        &ExportLine {
                            key: e.key,
                            value: e.value,
                            versionstamp: Some(e.versionstamp),
                            expire_at_ms: None,
                        }
                        .to_json(),
                    )?;
                    bar.inc(1);
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}
