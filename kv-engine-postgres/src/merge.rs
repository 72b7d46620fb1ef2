//! Scans of a write transaction: the rows of the database merged with the transaction's own
//! buffered writes (the overlay), in either direction, with a limit.
//!
//! The database is asked for `limit + d` rows, `d` being the number of buffered deletes in the
//! range: at most `d` of them can be hidden, so at least `limit` survive. When the database
//! returned that many rows it may hold more beyond the last one, so buffered puts past the last
//! returned key are not merged (the rows between are unknown); the result is still complete,
//! because the rows up to that key already give `limit` pairs.

use std::collections::BTreeMap;
use std::ops::Bound;

use kv_traits::KvPair;

/// A transaction's buffered writes: `Some(value)` = put, `None` = delete.
pub(crate) type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

type Entry<'a> = (&'a Vec<u8>, &'a Option<Vec<u8>>);

/// The number of rows to ask the database for: `limit` plus the buffered deletes in range.
pub(crate) fn db_limit(overlay: &Overlay, start: &[u8], end: &[u8], limit: usize) -> usize {
    let deletes = range(overlay, start, end)
        .filter(|(_, v)| v.is_none())
        .count();
    limit.saturating_add(deletes)
}

fn range<'a>(
    overlay: &'a Overlay,
    start: &[u8],
    end: &[u8],
) -> impl DoubleEndedIterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> {
    // An empty range when `start >= end` (BTreeMap::range panics on reversed bounds).
    let end = if start < end { end } else { start };
    overlay.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
}

/// Merges `db` (rows with `start <= k < end`, ascending or descending as `reverse` says, at
/// most `fetched` of them) with the overlay's entries in the same range; the overlay wins.
pub(crate) fn merge(
    overlay: &Overlay,
    db: Vec<KvPair>,
    fetched: usize,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Vec<KvPair> {
    // Past the last database row, the database's content is unknown if the fetch was full.
    let boundary: Option<Vec<u8>> = if db.len() >= fetched {
        db.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    let in_bounds = |k: &[u8]| match &boundary {
        None => true,
        Some(b) if reverse => k >= b.as_slice(),
        Some(b) => k <= b.as_slice(),
    };
    let mut ov: Box<dyn Iterator<Item = Entry<'_>>> = if reverse {
        Box::new(range(overlay, start, end).rev())
    } else {
        Box::new(range(overlay, start, end))
    };
    let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
    let mut out = Vec::new();
    let mut next_ov = ov.next().filter(|(k, _)| in_bounds(k));
    let mut db = db.into_iter().peekable();
    while out.len() < limit {
        let take_ov = match (&next_ov, db.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((ok, _)), Some((dk, _))) => {
                if ok.as_slice() == dk.as_slice() {
                    db.next(); // shadowed by the overlay
                    true
                } else {
                    before(ok, dk)
                }
            }
        };
        if take_ov {
            if let Some((k, Some(v))) = next_ov.take() {
                out.push((k.clone(), v.clone()));
            }
            next_ov = ov.next().filter(|(k, _)| in_bounds(k));
        } else if let Some(row) = db.next() {
            out.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KvPair {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    /// The reference: apply the overlay to the whole database, then scan.
    fn reference(
        all: &[KvPair],
        overlay: &Overlay,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Vec<KvPair> {
        let mut m: BTreeMap<Vec<u8>, Vec<u8>> = all.iter().cloned().collect();
        for (k, v) in overlay {
            match v {
                Some(v) => m.insert(k.clone(), v.clone()),
                None => m.remove(k),
            };
        }
        let it = m
            .into_iter()
            .filter(|(k, _)| k.as_slice() >= start && k.as_slice() < end);
        if reverse {
            it.rev().take(limit).collect()
        } else {
            it.take(limit).collect()
        }
    }

    /// What the database returns for the fetch.
    fn fetch(all: &[KvPair], start: &[u8], end: &[u8], n: usize, reverse: bool) -> Vec<KvPair> {
        let it = all
            .iter()
            .filter(|(k, _)| k.as_slice() >= start && k.as_slice() < end)
            .cloned();
        if reverse {
            it.rev().take(n).collect()
        } else {
            it.take(n).collect()
        }
    }

    #[test]
    fn merge_matches_the_reference_exhaustively() {
        let all: Vec<KvPair> = ["b", "d", "f", "h", "j"]
            .iter()
            .map(|k| kv(k, "db"))
            .collect();
        let keys = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
        // Every overlay of up to three entries drawn from `keys`, puts or deletes.
        let mut overlays = vec![Overlay::new()];
        for (i, k) in keys.iter().enumerate() {
            for (j, k2) in keys.iter().enumerate().skip(i + 1).step_by(2) {
                for op in 0..4u8 {
                    let mut o = Overlay::new();
                    o.insert(k.as_bytes().to_vec(), (op & 1 == 0).then(|| b"ov".to_vec()));
                    o.insert(
                        k2.as_bytes().to_vec(),
                        (op & 2 == 0).then(|| b"ov2".to_vec()),
                    );
                    if j % 3 == 0 {
                        o.insert(b"e".to_vec(), None);
                    }
                    overlays.push(o);
                }
            }
        }
        for o in &overlays {
            for (start, end) in [("a", "z"), ("c", "i"), ("d", "e"), ("z", "a")] {
                for limit in 0..8 {
                    for reverse in [false, true] {
                        let (s, e) = (start.as_bytes(), end.as_bytes());
                        let n = db_limit(o, s, e, limit);
                        let db = if s < e {
                            fetch(&all, s, e, n, reverse)
                        } else {
                            vec![]
                        };
                        let got = merge(o, db, n, s, e, limit, reverse);
                        let want = reference(&all, o, s, e, limit, reverse);
                        assert_eq!(
                            got, want,
                            "{o:?} {start}..{end} limit {limit} rev {reverse}"
                        );
                    }
                }
            }
        }
    }
}
