//! The log index: small objects that say which commits each log segment holds and its time,
//! so that listing recovery points and `pitr info` need not download the segments.
//!
//! Contract:
//!
//! - Objects `<prefix>/log-index/{first monoseq:016x}.json`, each a [`LogIndexChunk`]
//!   describing up to [`CHUNK_SEGMENTS`] consecutive segments. The producer rewrites the
//!   current chunk after every segment it stores (the segment first, so an index entry never
//!   names a segment that was not stored), and starts a new chunk when it is full or after a
//!   restart.
//! - The index is an optimisation, never the truth: a record is used only for a listed
//!   segment whose full name (monoseq and first/last versionstamps) it repeats; any other
//!   segment is downloaded, as for backups written before the index existed or by Deno
//!   Deploy. An index that cannot be read or decoded is ignored with a warning.
//! - Writing the index is best effort: a failure is logged and retried with the next
//!   segment (the chunk holds all its records).
//! - Restores never use it: they download the segments they replay anyway.

use std::collections::HashMap;

use kv_traits::Versionstamp;
use object_store::path::Path;

use crate::format::{self, LogEntry, LogSegment, LogSegmentKey};
use crate::store::BackupStore;

/// Folder of the index objects under the prefix.
pub const LOG_INDEX: &str = "log-index";

/// Most segments one index object describes.
pub const CHUNK_SEGMENTS: usize = 1000;

/// The format of [`LogIndexChunk`] this crate reads and writes.
pub const FORMAT: u32 = 1;

/// A run of commits with consecutive versions (batch index 0, as our producer writes them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitRun {
    /// The first commit's versionstamp (20 hex digits).
    pub first: String,
    /// Commits in the run (versions `first`, `first + 1`, …).
    pub count: u64,
}

/// What one log segment holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRecord {
    /// The segment's object name (without folder and extension).
    pub segment: String,
    /// The segment's time (ms since the Unix epoch), as in the segment.
    pub timestamp_ms: u64,
    /// The commits whose last change (transaction boundary) is in the segment, in order.
    pub commits: Vec<CommitRun>,
}

/// One index object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogIndexChunk {
    /// [`FORMAT`].
    pub format: u32,
    /// Records of consecutive segments.
    pub segments: Vec<SegmentRecord>,
}

/// `<prefix>/log-index`.
pub fn index_dir(prefix: &Path) -> Path {
    prefix.clone().join(LOG_INDEX)
}

/// `<prefix>/log-index/{first_monoseq:016x}.json`.
pub fn chunk_path(prefix: &Path, first_monoseq: u64) -> Path {
    index_dir(prefix).join(format!("{first_monoseq:016x}.json"))
}

/// Compresses commit versionstamps (in order) into runs of consecutive versions.
pub fn runs_of(commits: impl IntoIterator<Item = Versionstamp>) -> Vec<CommitRun> {
    let mut runs: Vec<(Versionstamp, u64)> = Vec::new();
    for vs in commits {
        if let Some((first, count)) = runs.last_mut() {
            let next = first.version().checked_add(*count);
            if first.0[8..] == [0, 0] && vs.0[8..] == [0, 0] && next == Some(vs.version()) {
                *count += 1;
                continue;
            }
        }
        runs.push((vs, 1));
    }
    runs.into_iter()
        .map(|(first, count)| CommitRun {
            first: first.to_string(),
            count,
        })
        .collect()
}

impl SegmentRecord {
    /// A segment with only the boundary entry of each commit: what listing recovery points
    /// needs from it. `None` if the record is malformed.
    fn skeleton(&self) -> Option<LogSegment> {
        let mut entries = Vec::new();
        for run in &self.commits {
            let first: Versionstamp = run.first.parse().ok()?;
            if run.count > 1 && first.0[8..] != [0, 0] {
                return None;
            }
            for i in 0..run.count {
                let vs = Versionstamp::from_version(first.version().checked_add(i)?);
                let vs = if run.count == 1 { first } else { vs };
                entries.push(LogEntry {
                    vs12: format::boundary_of(&vs),
                    key: Vec::new(),
                    value: None,
                    expire_at_ms: None,
                });
            }
        }
        Some(LogSegment {
            timestamp_ms: self.timestamp_ms,
            entries,
        })
    }
}

/// The index of a backup: segment name → record.
#[derive(Debug, Default)]
pub(crate) struct LogIndex(HashMap<String, SegmentRecord>);

impl LogIndex {
    /// Reads every index object of the backup; an unreadable index is ignored (empty).
    pub(crate) async fn read(store: &BackupStore) -> LogIndex {
        match Self::try_read(store).await {
            Ok(index) => index,
            Err(reason) => {
                tracing::warn!(%reason, "ignoring the backup's log index; reading the log segments instead");
                LogIndex::default()
            }
        }
    }

    async fn try_read(store: &BackupStore) -> Result<LogIndex, String> {
        let mut map = HashMap::new();
        let paths = store
            .list_paths(&index_dir(store.prefix()))
            .await
            .map_err(|e| e.to_string())?;
        for path in paths {
            let Some(body) = store.get(&path).await.map_err(|e| e.to_string())? else {
                continue;
            };
            let chunk: LogIndexChunk =
                serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))?;
            if chunk.format != FORMAT {
                return Err(format!("{path}: unsupported format {}", chunk.format));
            }
            for r in chunk.segments {
                map.insert(r.segment.clone(), r);
            }
        }
        Ok(LogIndex(map))
    }

    /// The skeleton of a segment, if the index describes exactly it.
    pub(crate) fn skeleton(&self, key: &LogSegmentKey) -> Option<LogSegment> {
        let seg = self.0.get(&key.to_string())?.skeleton()?;
        // The record must agree with the segment's name.
        match (seg.entries.first(), seg.entries.last()) {
            (Some(_), Some(last)) if last.vs12 == key.last_vs12 => Some(seg),
            _ => None,
        }
    }
}

/// The producer's side: the chunk being written.
#[derive(Debug, Default)]
pub(crate) struct IndexWriter {
    chunk: Option<(u64, Vec<SegmentRecord>)>,
}

impl IndexWriter {
    /// Records a stored segment and rewrites its chunk (best effort).
    pub(crate) async fn record(
        &mut self,
        store: &BackupStore,
        key: &LogSegmentKey,
        timestamp_ms: u64,
        commits: Vec<Versionstamp>,
    ) {
        let (first, records) = self.chunk.get_or_insert_with(|| (key.monoseq, Vec::new()));
        records.push(SegmentRecord {
            segment: key.to_string(),
            timestamp_ms,
            commits: runs_of(commits),
        });
        let chunk = LogIndexChunk {
            format: FORMAT,
            segments: records.clone(),
        };
        let path = chunk_path(store.prefix(), *first);
        let full = records.len() >= CHUNK_SEGMENTS;
        match serde_json::to_vec(&chunk) {
            Ok(body) => {
                if let Err(e) = store.put(&path, body.into()).await {
                    tracing::warn!(error = %e, "could not write the log index (listing recovery points will read the segments instead)");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not encode the log index");
                return;
            }
        }
        if full {
            self.chunk = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_compress_consecutive_versions() {
        let v = Versionstamp::from_version;
        let runs = runs_of([v(5), v(6), v(7), v(9)]);
        assert_eq!(
            runs,
            vec![
                CommitRun {
                    first: v(5).to_string(),
                    count: 3
                },
                CommitRun {
                    first: v(9).to_string(),
                    count: 1
                },
            ]
        );
        let rec = SegmentRecord {
            segment: String::new(),
            timestamp_ms: 3,
            commits: runs,
        };
        let seg = rec.skeleton().unwrap();
        let vs: Vec<Versionstamp> = seg
            .entries
            .iter()
            .map(|e| format::vs10_of(&e.vs12))
            .collect();
        assert_eq!(vs, vec![v(5), v(6), v(7), v(9)]);
        assert!(seg.entries.iter().all(|e| format::is_boundary(&e.vs12)));
    }
}
