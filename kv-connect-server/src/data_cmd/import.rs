//! `data import`: NDJSON lines (an export, or hand-written `{"key", "value"}` lines) into a
//! database.
//!
//! Contract:
//! 1. **Validate everything first.** Every line is parsed (key, value, versionstamp, expiry),
//!    checked against the database's limits as a write of its own (key and value sizes), and
//!    checked for a key repeated in the input; unless `--overwrite`, every key is looked up
//!    and one that exists is an error. The first problem stops the import with its line number
//!    before anything is written. Empty lines are skipped; entries whose `expireAt` is already
//!    past are counted and skipped.
//! 2. **Write in versionstamp order.** Lines are ordered by their `versionstamp` (stable; lines
//!    without one keep their file order and come after), and each run of lines sharing one
//!    versionstamp is one atomic write (split only if it exceeds the per-write limits), so the
//!    imported entries get new versionstamps in the same order, and entries written together
//!    are written together again. Lines without a versionstamp are written in commits of up to
//!    the per-write limits.
//! 3. **Checked batches, not one transaction.** A large import is many commits; without
//!    `--overwrite` each carries a check that its keys are still absent, so a key created by
//!    someone else meanwhile stops the import instead of being overwritten. If writing stops
//!    (a network failure, such a conflict), the commits before it stay: the error says how
//!    many entries were written and at which line it stopped; rerunning with `--overwrite`
//!    completes it (sets are idempotent).
//! 4. The input is held in memory while it is validated and written.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use kv_traits::{AtomicWrite, Check, CommitResult, Consistency, Database, Mutation, ReadRange};
use serde_json::{json, Value};

use super::entry::ExportLine;
use super::{now_ms, DataError};

/// Runs the import; returns the summary line printed on stdout.
pub(crate) async fn run(
    db: &dyn Database,
    file: &Path,
    dry_run: bool,
    overwrite: bool,
) -> Result<Value, DataError> {
    let read_error = |source| DataError::Io {
        what: format!("reading {}", file.display()),
        source,
    };
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).map_err(read_error)?,
        ))
    };
    let limits = db.limits();
    let now = now_ms();
    let mut lines: Vec<(usize, ExportLine)> = Vec::new();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut expired = 0usize;
    for (i, text) in reader.lines().enumerate() {
        let line = i + 1;
        let text = text.map_err(read_error)?;
        if text.trim().is_empty() {
            continue;
        }
        let entry = ExportLine::parse(&text).map_err(|reason| DataError::Line { line, reason })?;
        let mut m = Mutation::set(entry.key.clone(), entry.value.clone());
        m.expire_at_ms = entry.expire_at_ms;
        let write = AtomicWrite {
            mutations: vec![m],
            ..AtomicWrite::default()
        };
        limits
            .validate_write(&write, now)
            .map_err(|e| DataError::Line {
                line,
                // The limit messages end with a full stop; this one continues.
                reason: e.to_string().trim_end_matches('.').to_owned(),
            })?;
        if let Some(first) = seen.insert(entry.key.clone(), line) {
            return Err(DataError::Line {
                line,
                reason: format!("the key is also on line {first}"),
            });
        }
        if entry.expire_at_ms.is_some_and(|t| t <= now) {
            expired += 1;
            continue;
        }
        lines.push((line, entry));
    }
    if !overwrite {
        refuse_existing(db, &lines).await?;
    }
    // Versionstamped lines in versionstamp order first, then the others in file order.
    lines.sort_by_key(|(_, e)| (e.versionstamp.is_none(), e.versionstamp));
    let total = lines.len();
    let batches = batches(&lines, &limits, overwrite);
    if dry_run {
        return Ok(json!({
            "dryRun": true, "valid": total, "commits": batches.len(), "skippedExpired": expired,
        }));
    }
    let bar = progress(total as u64);
    let mut written = 0usize;
    for batch in &batches {
        let chunk = &lines[batch.clone()];
        let mut write = AtomicWrite::default();
        for (_, e) in chunk {
            if !overwrite {
                write.checks.push(Check {
                    key: e.key.clone(),
                    versionstamp: None,
                });
            }
            let mut m = Mutation::set(e.key.clone(), e.value.clone());
            m.expire_at_ms = e.expire_at_ms;
            write.mutations.push(m);
        }
        let first_line = chunk.first().map(|(l, _)| *l).unwrap_or(0);
        let stopped = |reason: String| DataError::ImportStopped {
            line: first_line,
            written,
            total,
            reason,
        };
        match db.atomic_write(write).await {
            Ok(CommitResult::Committed(_)) => {}
            Ok(CommitResult::CheckFailed(_)) => {
                return Err(stopped(
                    "a key was created by someone else meanwhile (rerun with --overwrite to replace it)"
                        .into(),
                ))
            }
            Err(e) => return Err(stopped(e.to_string())),
        }
        written += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(json!({"imported": written, "commits": batches.len(), "skippedExpired": expired}))
}

/// An error for the first line whose key exists in the database.
async fn refuse_existing(
    db: &dyn Database,
    lines: &[(usize, ExportLine)],
) -> Result<(), DataError> {
    let per_read = db.limits().max_read_ranges.max(1);
    for chunk in lines.chunks(per_read) {
        let ranges = chunk
            .iter()
            .map(|(_, e)| ReadRange::single(&e.key))
            .collect();
        let found = db.snapshot_read(ranges, Consistency::Strong).await?;
        for ((line, _), entries) in chunk.iter().zip(found) {
            if !entries.is_empty() {
                return Err(DataError::Line {
                    line: *line,
                    reason:
                        "the key already exists in the database (use --overwrite to replace it)"
                            .into(),
                });
            }
        }
    }
    Ok(())
}

/// Index ranges of `lines` (sorted) written as one commit each: a run of one versionstamp (or
/// of lines without one), cut where the per-write limits would be exceeded.
fn batches(
    lines: &[(usize, ExportLine)],
    limits: &kv_traits::Limits,
    overwrite: bool,
) -> Vec<std::ops::Range<usize>> {
    let max_count = if overwrite {
        limits.max_mutations
    } else {
        limits.max_mutations.min(limits.max_checks)
    }
    .max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0usize;
    for (i, (_, e)) in lines.iter().enumerate() {
        let len = e.key.len() * if overwrite { 1 } else { 2 } + e.value.encoded_len();
        let same_group = i > start && lines[start].1.versionstamp == e.versionstamp;
        let fits = i - start < max_count && size + len <= limits.max_total_mutation_size;
        if i > start && !(same_group && fits) {
            out.push(start..i);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < lines.len() {
        out.push(start..lines.len());
    }
    out
}

/// A progress bar on stderr, when stderr is a terminal.
fn progress(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} entries imported ({eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_traits::{KvValue, Limits, Versionstamp};

    fn line(key: u8, vs: Option<u64>) -> (usize, ExportLine) {
        (
            key as usize,
            ExportLine {
                key: vec![2, key, 0],
                value: KvValue::Bytes(vec![0; 10]),
                versionstamp: vs.map(Versionstamp::from_version),
                expire_at_ms: None,
            },
        )
    }

    #[test]
    fn one_commit_per_versionstamp_run_cut_at_the_limits() {
        let lines = vec![
            line(1, Some(1)),
            line(2, Some(1)),
            line(3, Some(2)),
            line(4, None),
            line(5, None),
            line(6, None),
        ];
        let limits = Limits::default();
        assert_eq!(batches(&lines, &limits, true), vec![0..2, 2..3, 3..6]);
        let small = Limits {
            max_mutations: 2,
            ..Limits::default()
        };
        assert_eq!(batches(&lines, &small, true), vec![0..2, 2..3, 3..5, 5..6]);
        let tiny_total = Limits {
            max_total_mutation_size: 27,
            ..Limits::default()
        };
        // Each line is 3 + 10 = 13 bytes (26 with its check).
        assert_eq!(
            batches(&lines, &tiny_total, true),
            vec![0..2, 2..3, 3..5, 5..6]
        );
        assert_eq!(
            batches(&lines, &tiny_total, false),
            vec![0..1, 1..2, 2..3, 3..4, 4..5, 5..6]
        );
    }
}
