//! Walking the log of a backup: segments in order, gaps detected, entries grouped into
//! transactions.
//!
//! Log segments are named `{version}_{monoseq}_{first}_{last}` (see [`crate::format`]); their
//! name order is the log order. This module guarantees:
//!
//! - **No silent gap.** In backups written by this crate (with a `kv-pitr.json` manifest)
//!   `monoseq` numbers start at [`FIRST_LOG_MONOSEQ`] and are contiguous, and a segment starts
//!   after the previous one ends: [`check_log_sequence`] and [`split_logs`] reject a listing
//!   that skips a number or overlaps backwards ([`ConsumerError::MissingLogSegments`],
//!   [`ConsumerError::Inconsistent`]). Backups without a manifest (Deno Deploy's) carry no
//!   such numbering; for them [`LogWalker::check_reached_differential`] at least checks that
//!   the log reaches the first consistent point.
//! - **Whole transactions.** A [`LogWalker`] fed decoded segments in log order yields each
//!   committed transaction exactly once, when its boundary entry (index `ffff`) arrives, even
//!   when its entries span segments; entries already seen (overlapping segments) are skipped.
//! - **Monotonic times.** A transaction's time is the largest segment time seen so far, so
//!   times never decrease along the log.
//!
//! Decoding and checksum checks of each segment happen when it is fetched
//! ([`crate::store::BackupStore::fetch_log`]); the walker only orders and groups.

use kv_traits::Versionstamp;

use crate::consumer::{BackupKind, BackupLayout, ConsumerError, RecoveryPoint};
use crate::format::{self, LogEntry, LogSegment, LogSegmentKey, Vs12};
use crate::store::{BackupStore, LogObject};

/// The `monoseq` of the first log segment of a backup written by this crate.
pub const FIRST_LOG_MONOSEQ: u64 = 1;

/// One complete transaction of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The commit's versionstamp.
    pub versionstamp: Versionstamp,
    /// Time of the segment holding its boundary entry (never less than earlier ones).
    pub timestamp_ms: u64,
    /// Its entries, in order (the last one is the boundary).
    pub entries: Vec<LogEntry>,
}

/// Turns a sequence of log segments into complete transactions, skipping entries already
/// seen (overlapping segments) and keeping a transaction whose boundary is in a later
/// segment until that segment arrives.
#[derive(Clone, Debug)]
pub(crate) struct LogWalker {
    differential: Versionstamp,
    manifest_created_ms: Option<u64>,
    /// Entries after the last boundary seen.
    pending: Vec<LogEntry>,
    /// The greatest vs12 seen.
    pub(crate) last_vs12: Option<Vs12>,
    /// Largest segment time seen.
    ts_max: u64,
    /// Largest time of a transaction at or before the differential versionstamp.
    ts_at_differential: Option<u64>,
    /// Time of the first segment (fallback time of the first point).
    first_segment_ts: Option<u64>,
    /// The first point, until it is taken.
    first_point_pending: bool,
    /// Last segment pushed.
    pub(crate) cursor: Option<LogSegmentKey>,
}

impl LogWalker {
    pub(crate) fn new(layout: &BackupLayout) -> Self {
        LogWalker {
            differential: layout.differential,
            manifest_created_ms: match &layout.kind {
                BackupKind::KvPitr(m) => Some(m.created_at_ms),
                BackupKind::Foreign => None,
            },
            pending: Vec::new(),
            last_vs12: None,
            ts_max: 0,
            ts_at_differential: None,
            first_segment_ts: None,
            first_point_pending: true,
            cursor: None,
        }
    }

    /// Continues after a known position: `applied` is the last applied boundary, `cursor` the
    /// last segment consumed and `pending` the entries after `applied` already read.
    pub(crate) fn resume(
        layout: &BackupLayout,
        cursor: Option<LogSegmentKey>,
        applied: Versionstamp,
        pending: Vec<LogEntry>,
    ) -> Self {
        let mut w = LogWalker::new(layout);
        w.first_point_pending = false;
        w.cursor = cursor;
        w.last_vs12 = Some(
            pending
                .last()
                .map(|e| e.vs12)
                .unwrap_or_else(|| format::boundary_of(&applied)),
        );
        w.pending = pending;
        w
    }

    /// Records that a segment was passed over without reading it (it lies wholly before
    /// the snapshot, so its entries are not needed).
    pub(crate) fn skip(&mut self, key: &LogSegmentKey) {
        self.cursor = Some(*key);
        self.last_vs12 = Some(
            self.last_vs12
                .map_or(key.last_vs12, |l| l.max(key.last_vs12)),
        );
    }

    /// Feeds one segment; returns the transactions it completes.
    pub(crate) fn push(&mut self, key: &LogSegmentKey, seg: LogSegment) -> Vec<Transaction> {
        self.cursor = Some(*key);
        self.first_segment_ts.get_or_insert(seg.timestamp_ms);
        self.ts_max = self.ts_max.max(seg.timestamp_ms);
        let last = self.last_vs12;
        let mut entries = std::mem::take(&mut self.pending);
        entries.extend(
            seg.entries
                .into_iter()
                .filter(|e| last.is_none_or(|l| e.vs12 > l)),
        );
        if let Some(e) = entries.last() {
            self.last_vs12 = Some(self.last_vs12.map_or(e.vs12, |l| l.max(e.vs12)));
        }
        let (done, rest) = format::group_transactions(entries);
        self.pending = rest;
        let ts = self.ts_max;
        done.into_iter()
            .map(|(versionstamp, entries)| {
                if versionstamp <= self.differential {
                    self.ts_at_differential = Some(ts);
                }
                Transaction {
                    versionstamp,
                    timestamp_ms: ts,
                    entries,
                }
            })
            .collect()
    }

    /// The time of the first point (the differential versionstamp).
    fn differential_time(&self) -> u64 {
        if let Some(t) = self.ts_at_differential {
            return t;
        }
        // No commit up to the differential point is in the logs: the state at it was current
        // when the backup was created and until the first logged commit.
        match (self.manifest_created_ms, self.first_segment_ts) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        }
    }

    /// The first point, once: call it before handling each transaction after the
    /// differential versionstamp (and at the end); it is returned the first time a
    /// transaction after the differential versionstamp is about to be handled.
    pub(crate) fn take_first_point(&mut self) -> Option<RecoveryPoint> {
        if !self.first_point_pending {
            return None;
        }
        self.first_point_pending = false;
        Some(RecoveryPoint {
            versionstamp: self.differential,
            timestamp_ms: self.differential_time(),
        })
    }

    /// For backups without our manifest, the logs must reach the differential versionstamp:
    /// otherwise the state at it cannot be rebuilt (segments missing or not written yet).
    pub(crate) fn check_reached_differential(
        &self,
        store: &BackupStore,
    ) -> Result<(), ConsumerError> {
        if self.manifest_created_ms.is_some() {
            // Our producer writes the marker only after the segments up to it are stored,
            // and segment gaps are detected by monoseq.
            return Ok(());
        }
        let target = format::boundary_of(&self.differential);
        match self.last_vs12 {
            Some(l) if l >= target => Ok(()),
            _ if self.differential == Versionstamp::ZERO => Ok(()),
            other => Err(ConsumerError::LogsIncomplete {
                prefix: store.describe(),
                differential: self.differential,
                logs_end: other.map_or_else(|| "nothing".to_string(), hex::encode),
            }),
        }
    }
}

/// Checks that `logs` continue `prev` without a gap (`monoseq` + 1, no overlap), or start
/// the backup's log when `prev` is `None`.
pub(crate) fn check_log_sequence(
    store: &BackupStore,
    prev: Option<LogSegmentKey>,
    logs: &[LogObject],
) -> Result<(), ConsumerError> {
    let mut prev = prev;
    for obj in logs {
        if let Some(p) = &prev {
            let expected = p.monoseq.saturating_add(1);
            if obj.key.monoseq != expected {
                return Err(ConsumerError::MissingLogSegments {
                    prefix: store.describe(),
                    expected_monoseq: expected,
                    after: format!("after {p}"),
                    found: obj.key.to_string(),
                });
            }
            if obj.key.first_vs12 <= p.last_vs12 {
                return Err(ConsumerError::Inconsistent {
                    object: format::log_path(store.prefix(), &obj.key).to_string(),
                    reason: format!(
                        "it starts at {} but the previous segment {p} ends at {}",
                        hex::encode(obj.key.first_vs12),
                        hex::encode(p.last_vs12)
                    ),
                });
            }
        } else if obj.key.monoseq != FIRST_LOG_MONOSEQ {
            return Err(ConsumerError::MissingLogSegments {
                prefix: store.describe(),
                expected_monoseq: FIRST_LOG_MONOSEQ,
                after: "first".into(),
                found: obj.key.to_string(),
            });
        }
        prev = Some(obj.key);
    }
    Ok(())
}

/// Splits the listed segments of a layout from `BackupReader::restore_layout` into
/// those wholly at or before `start` (not needed to rebuild states after `start`; they
/// are not checked, and may even have been deleted) and the rest, which are checked: with
/// our manifest, their `monoseq` numbers are contiguous and nothing is missing between
/// `start` and the first of them (it is the backup's first segment, holds `start`
/// itself, or its predecessor is listed). `None`: every segment is needed.
pub(crate) fn split_logs(
    store: &BackupStore,
    layout: &BackupLayout,
    start: Option<Vs12>,
) -> Result<(Vec<LogObject>, Vec<LogObject>), ConsumerError> {
    let (before, needed): (Vec<LogObject>, Vec<LogObject>) = layout
        .logs
        .iter()
        .cloned()
        .partition(|o| start.is_some_and(|s| o.key.last_vs12 <= s));
    if let BackupKind::KvPitr(_) = layout.kind {
        if let Some(first) = needed.first() {
            if let Some(late) = before.iter().find(|o| o.key > first.key) {
                return Err(ConsumerError::Inconsistent {
                    object: format::log_path(store.prefix(), &late.key).to_string(),
                    reason: format!("it comes after {} but ends before it", first.key),
                });
            }
        }
        let prev = match needed.first() {
            None => None,
            Some(first) if first.key.monoseq == FIRST_LOG_MONOSEQ => None,
            Some(first) => match before.last() {
                Some(p) if p.key.monoseq.saturating_add(1) == first.key.monoseq => Some(p.key),
                _ if start.is_some_and(|s| {
                    next_vs12(&s).is_none_or(|next| first.key.first_vs12 <= next)
                }) =>
                {
                    // It starts at or before the first entry that can follow `start`:
                    // nothing after `start` can be in an earlier one.
                    check_log_sequence(
                        store,
                        Some(first.key),
                        needed.get(1..).unwrap_or_default(),
                    )?;
                    return Ok((before, needed));
                }
                _ => {
                    return Err(ConsumerError::MissingLogSegments {
                        prefix: store.describe(),
                        expected_monoseq: first.key.monoseq.saturating_sub(1),
                        after: format!(
                            "before {} (it may hold entries after {}, which are needed)",
                            first.key,
                            start.map_or_else(
                                || "the start".to_string(),
                                |s| format::vs10_of(&s).to_string()
                            )
                        ),
                        found: match before.last() {
                            Some(p) => format!("{} before it", p.key),
                            None => "no earlier segment".into(),
                        },
                    });
                }
            },
        };
        check_log_sequence(store, prev, &needed)?;
    }
    Ok((before, needed))
}

/// The 12-byte versionstamp right after `v` (`None` after the largest one): no entry can lie
/// strictly between the two.
fn next_vs12(v: &Vs12) -> Option<Vs12> {
    let mut next = *v;
    for b in next.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use object_store::path::Path;

    use super::*;
    use crate::format::{boundary_of, vs12, BackupManifest};

    fn vs(n: u64) -> Versionstamp {
        Versionstamp::from_version(n)
    }

    fn entry(v: Vs12) -> LogEntry {
        LogEntry {
            vs12: v,
            key: b"k".to_vec(),
            value: None,
            expire_at_ms: None,
        }
    }

    fn layout(dv: u64) -> BackupLayout {
        BackupLayout {
            compaction: None,
            differential: vs(dv),
            kind: BackupKind::Foreign,
            snapshot_ranges: vec![],
            logs: vec![],
        }
    }

    fn key(m: u64, seg: &LogSegment) -> LogSegmentKey {
        LogSegmentKey {
            format_version: 1,
            monoseq: m,
            first_vs12: seg.entries[0].vs12,
            last_vs12: seg.entries[seg.entries.len() - 1].vs12,
        }
    }

    #[test]
    fn walker_groups_across_segments_and_skips_overlaps() {
        let mut w = LogWalker::new(&layout(2));
        let s1 = LogSegment {
            timestamp_ms: 10,
            entries: vec![entry(boundary_of(&vs(1))), entry(vs12(&vs(3), 0))],
        };
        let s2 = LogSegment {
            timestamp_ms: 5, // clock went backwards: times never decrease
            entries: vec![
                entry(vs12(&vs(3), 0)), // overlap, skipped
                entry(boundary_of(&vs(3))),
                entry(boundary_of(&vs(4))),
            ],
        };
        let t1 = w.push(&key(1, &s1), s1.clone());
        assert_eq!(t1.len(), 1);
        assert_eq!(t1[0].versionstamp, vs(1));
        assert_eq!(w.pending.len(), 1);
        let t2 = w.push(&key(2, &s2), s2.clone());
        assert_eq!(
            t2.iter().map(|t| t.versionstamp).collect::<Vec<_>>(),
            vec![vs(3), vs(4)]
        );
        assert_eq!(t2[0].entries.len(), 2);
        assert!(t2.iter().all(|t| t.timestamp_ms == 10));
        let first = w.take_first_point().unwrap();
        assert_eq!(first.versionstamp, vs(2));
        assert_eq!(first.timestamp_ms, 10);
        assert!(w.take_first_point().is_none());
        assert_eq!(w.cursor, Some(key(2, &s2)));
    }

    #[test]
    fn split_logs_checks_only_the_needed_segments() {
        use object_store::memory::InMemory;
        let store = BackupStore::new(Arc::new(InMemory::new()), Path::from("p"));
        // Segment m holds versions 10m+1 ..= 10m+10 (boundaries only).
        let obj = |m: u64| LogObject {
            key: LogSegmentKey {
                format_version: 1,
                monoseq: m,
                first_vs12: boundary_of(&vs(10 * m + 1)),
                last_vs12: boundary_of(&vs(10 * m + 10)),
            },
            size: 1,
            last_modified: Utc::now(),
        };
        let layout = |ms: &[u64]| BackupLayout {
            compaction: None,
            differential: vs(1),
            kind: BackupKind::KvPitr(BackupManifest {
                format: 1,
                producer: "t".into(),
                created_at_ms: 0,
                initial_snapshot_monoseq: 1,
                snapshot_start: vs(0).to_string(),
                snapshot_end: vs(1).to_string(),
            }),
            snapshot_ranges: vec![],
            logs: ms.iter().map(|m| obj(*m)).collect(),
        };
        let monoseqs = |v: &[LogObject]| v.iter().map(|o| o.key.monoseq).collect::<Vec<_>>();
        // Start at the end of segment 3: 4.. needed, 3 listed as its predecessor.
        let (before, needed) = split_logs(
            &store,
            &layout(&[1, 2, 3, 4, 5]),
            Some(boundary_of(&vs(40))),
        )
        .unwrap();
        assert_eq!(
            (monoseqs(&before), monoseqs(&needed)),
            (vec![1, 2, 3], vec![4, 5])
        );
        // Segments before the predecessor may be gone.
        let (_, needed) =
            split_logs(&store, &layout(&[3, 4, 5]), Some(boundary_of(&vs(40)))).unwrap();
        assert_eq!(monoseqs(&needed), vec![4, 5]);
        // Without the predecessor, entries after the start may be missing...
        let err = split_logs(&store, &layout(&[4, 5]), Some(boundary_of(&vs(40)))).unwrap_err();
        assert!(
            matches!(
                err,
                ConsumerError::MissingLogSegments {
                    expected_monoseq: 3,
                    ..
                }
            ),
            "{err}"
        );
        // ...unless the first needed segment holds the start itself.
        let (_, needed) = split_logs(&store, &layout(&[4, 5]), Some(boundary_of(&vs(45)))).unwrap();
        assert_eq!(monoseqs(&needed), vec![4, 5]);
        // ...or starts with the entry right after it (a one-change commit is a lone boundary
        // entry): the start of a checkpoint is `vs12(start, 0xfffe)`.
        let (_, needed) =
            split_logs(&store, &layout(&[4, 5]), Some(vs12(&vs(41), 0xfffe))).unwrap();
        assert_eq!(monoseqs(&needed), vec![4, 5]);
        assert!(split_logs(&store, &layout(&[4, 5]), Some(vs12(&vs(40), 0xfffe))).is_err());
        assert_eq!(
            next_vs12(&vs12(&vs(41), 0xfffe)),
            Some(boundary_of(&vs(41)))
        );
        assert_eq!(next_vs12(&[0xff; 12]), None);
        // Gaps among the needed segments are errors; among the others they are not.
        assert!(matches!(
            split_logs(&store, &layout(&[1, 3, 4, 6]), Some(boundary_of(&vs(40)))),
            Err(ConsumerError::MissingLogSegments {
                expected_monoseq: 5,
                ..
            })
        ));
        // From the beginning, the first segment must be there.
        assert!(matches!(
            split_logs(&store, &layout(&[2, 3]), None),
            Err(ConsumerError::MissingLogSegments {
                expected_monoseq: 1,
                ..
            })
        ));
        assert_eq!(
            monoseqs(&split_logs(&store, &layout(&[1, 2]), None).unwrap().1),
            vec![1, 2]
        );
    }
}
