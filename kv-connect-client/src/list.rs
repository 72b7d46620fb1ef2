//! `list()`: selectors, options, Deno-compatible cursors and the paging [`ListIterator`].
//!
//! Ranges and cursors follow Deno exactly (`key-codec.md` §6): `prefix` reads
//! `[P‖00, P‖ff)`, `prefix + start` reads `[S, P‖ff)`, `prefix + end` reads `[P‖00, E)`,
//! `start + end` reads `[S, E)`; every request asks for `batch_size` entries and a shorter
//! page ends the iteration. A cursor is the base64url (padded) encoding of the last yielded
//! key without the selector's common prefix, so cursors are interchangeable with Deno's.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use futures::Stream;
use kv_traits::{Consistency, Database, KvEntry, KvError, ReadRange};

use crate::error::Error;
use crate::kv::Entry;
use crate::value::Key;

/// Padded base64url for encoding; decoding accepts missing padding too.
const CURSOR_B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which keys to list (Deno's `KvListSelector`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every key strictly under the prefix (not the prefix itself).
    Prefix(Key),
    /// Keys under `prefix` from `start` (inclusive); `start` must extend `prefix`.
    PrefixStart {
        /// The prefix.
        prefix: Key,
        /// The first key (inclusive).
        start: Key,
    },
    /// Keys under `prefix` before `end` (exclusive); `end` must extend `prefix`.
    PrefixEnd {
        /// The prefix.
        prefix: Key,
        /// The end key (exclusive).
        end: Key,
    },
    /// Keys in `[start, end)`.
    Range {
        /// The first key (inclusive).
        start: Key,
        /// The end key (exclusive).
        end: Key,
    },
}

impl Selector {
    /// `{ prefix }`.
    pub fn prefix(prefix: impl Into<Key>) -> Self {
        Selector::Prefix(prefix.into())
    }

    /// `{ prefix, start }`.
    pub fn prefix_start(prefix: impl Into<Key>, start: impl Into<Key>) -> Self {
        Selector::PrefixStart {
            prefix: prefix.into(),
            start: start.into(),
        }
    }

    /// `{ prefix, end }`.
    pub fn prefix_end(prefix: impl Into<Key>, end: impl Into<Key>) -> Self {
        Selector::PrefixEnd {
            prefix: prefix.into(),
            end: end.into(),
        }
    }

    /// `{ start, end }`.
    pub fn range(start: impl Into<Key>, end: impl Into<Key>) -> Self {
        Selector::Range {
            start: start.into(),
            end: end.into(),
        }
    }
}

/// Options of `list()` (Deno's `KvListOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Stop after this many entries.
    pub limit: Option<usize>,
    /// Highest keys first.
    pub reverse: bool,
    /// Entries per request; default `limit` or 100, capped at 500 when not given. At most 1000.
    pub batch_size: Option<usize>,
    /// Resume after the entry this cursor points at (from [`ListIterator::cursor`]).
    pub cursor: Option<String>,
    /// Read consistency.
    pub consistency: Consistency,
}

impl ListOptions {
    /// Sets `limit`.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets `reverse`.
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// Sets `batch_size`.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Sets `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Sets `consistency`.
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }
}

/// A selector in encoded form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSelector {
    prefix: Option<Vec<u8>>,
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
}

impl RawSelector {
    /// Encodes and validates a selector like Deno does.
    pub(crate) fn new(selector: &Selector) -> Result<Self, Error> {
        let extends =
            |prefix: &[u8], key: &[u8]| key.starts_with(prefix) && key.len() > prefix.len();
        Ok(match selector {
            Selector::Prefix(p) => RawSelector {
                prefix: Some(p.encode()?),
                start: None,
                end: None,
            },
            Selector::PrefixStart { prefix, start } => {
                let (p, s) = (prefix.encode()?, start.encode()?);
                if !extends(&p, &s) {
                    return Err(Error::InvalidArgument(
                        "Start key is not in the keyspace defined by prefix".into(),
                    ));
                }
                RawSelector {
                    prefix: Some(p),
                    start: Some(s),
                    end: None,
                }
            }
            Selector::PrefixEnd { prefix, end } => {
                let (p, e) = (prefix.encode()?, end.encode()?);
                if !extends(&p, &e) {
                    return Err(Error::InvalidArgument(
                        "End key is not in the keyspace defined by prefix".into(),
                    ));
                }
                RawSelector {
                    prefix: Some(p),
                    start: None,
                    end: Some(e),
                }
            }
            Selector::Range { start, end } => {
                let (s, e) = (start.encode()?, end.encode()?);
                if s > e {
                    return Err(Error::InvalidArgument(
                        "Start key is greater than end key".into(),
                    ));
                }
                RawSelector {
                    prefix: None,
                    start: Some(s),
                    end: Some(e),
                }
            }
        })
    }

    fn range_start_key(&self) -> Vec<u8> {
        match (&self.start, &self.prefix) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => [p.as_slice(), &[0x00]].concat(),
            (None, None) => Vec::new(),
        }
    }

    fn range_end_key(&self) -> Vec<u8> {
        match (&self.end, &self.prefix) {
            (Some(e), _) => e.clone(),
            (None, Some(p)) => [p.as_slice(), &[0xff]].concat(),
            (None, None) => vec![0xff],
        }
    }

    fn common_prefix(&self) -> &[u8] {
        if let Some(p) = &self.prefix {
            return p;
        }
        match (&self.start, &self.end) {
            (Some(s), Some(e)) => {
                let n = s.iter().zip(e.iter()).take_while(|(a, b)| a == b).count();
                &s[..n]
            }
            _ => &[],
        }
    }

    /// The cursor pointing at `key` (which must lie under the common prefix).
    pub(crate) fn encode_cursor(&self, key: &[u8]) -> Result<String, Error> {
        let rest = key.strip_prefix(self.common_prefix()).ok_or_else(|| {
            Error::Kv(KvError::Transport(
                "the server returned a key outside the listed range".into(),
            ))
        })?;
        Ok(CURSOR_B64.encode(rest))
    }

    /// The `[start, end)` to read, resuming after `cursor` if given.
    pub(crate) fn bounds(
        &self,
        reverse: bool,
        cursor: Option<&str>,
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let Some(cursor) = cursor else {
            return Ok((self.range_start_key(), self.range_end_key()));
        };
        let decoded = CURSOR_B64
            .decode(cursor)
            .map_err(|_| Error::InvalidCursor)?;
        let boundary = [self.common_prefix(), decoded.as_slice()].concat();
        let (first, last) = if reverse {
            (self.range_start_key(), boundary)
        } else {
            (
                [boundary.as_slice(), &[0x00]].concat(),
                self.range_end_key(),
            )
        };
        let lower = self
            .start
            .clone()
            .or_else(|| self.prefix.clone())
            .unwrap_or_default();
        if first < lower {
            return Err(Error::CursorOutOfBounds);
        }
        if last > self.range_end_key() {
            return Err(Error::CursorOutOfBounds);
        }
        Ok((first, last))
    }
}

type BatchFuture = Pin<Box<dyn Future<Output = Result<Vec<Vec<KvEntry>>, KvError>> + Send>>;

/// The entries of a `list()` call as an async [`Stream`], fetched in batches.
///
/// ```
/// # async fn demo(kv: &kv_connect_client::Kv) -> Result<(), kv_connect_client::Error> {
/// use futures::TryStreamExt;
/// use kv_connect_client::{key, ListOptions, Selector};
///
/// let mut it = kv.list(Selector::prefix(key!["users"]), ListOptions::default().limit(10))?;
/// while let Some(entry) = it.try_next().await? {
///     println!("{:?} = {:?}", entry.key, entry.value);
/// }
/// let resume_here = it.cursor(); // "" once everything was listed
/// # let _ = resume_here; Ok(()) }
/// ```
pub struct ListIterator {
    db: Arc<dyn Database>,
    selector: RawSelector,
    reverse: bool,
    consistency: Consistency,
    batch_size: u32,
    limit: Option<usize>,
    /// Where the next batch starts (the initial cursor, then the last yielded entry's).
    cursor: Option<String>,
    buffer: VecDeque<KvEntry>,
    count: usize,
    last_batch: bool,
    done: bool,
    pending: Option<BatchFuture>,
}

impl std::fmt::Debug for ListIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListIterator")
            .field("selector", &self.selector)
            .field("reverse", &self.reverse)
            .field("batch_size", &self.batch_size)
            .field("limit", &self.limit)
            .field("cursor", &self.cursor)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl ListIterator {
    pub(crate) fn new(
        db: Arc<dyn Database>,
        selector: &Selector,
        options: ListOptions,
    ) -> Result<Self, Error> {
        let selector = RawSelector::new(selector)?;
        if options.limit == Some(0) {
            return Err(Error::InvalidArgument("limit must be positive".into()));
        }
        let batch_size = match options.batch_size {
            Some(b) => b,
            None => options.limit.unwrap_or(100).min(500),
        };
        if batch_size == 0 {
            return Err(Error::InvalidArgument("batchSize must be positive".into()));
        }
        if batch_size > 1000 {
            return Err(Error::InvalidArgument("Too many entries (max 1000)".into()));
        }
        // Validate the cursor now rather than on the first poll.
        selector.bounds(options.reverse, options.cursor.as_deref())?;
        Ok(ListIterator {
            db,
            selector,
            reverse: options.reverse,
            consistency: options.consistency,
            batch_size: batch_size as u32,
            limit: options.limit,
            cursor: options.cursor,
            buffer: VecDeque::new(),
            count: 0,
            last_batch: false,
            done: false,
            pending: None,
        })
    }

    /// The cursor to resume after the last yielded entry (pass it as [`ListOptions::cursor`]
    /// with the same selector and `reverse`); `""` once the listing is exhausted. Before the
    /// first entry it is the cursor the listing started from, if any.
    pub fn cursor(&self) -> String {
        if self.done && self.buffer.is_empty() && self.last_batch {
            return String::new();
        }
        self.cursor.clone().unwrap_or_default()
    }

    fn start_batch(&mut self) -> Result<BatchFuture, Error> {
        let (start, end) = self.selector.bounds(self.reverse, self.cursor.as_deref())?;
        let range = ReadRange {
            start,
            end,
            limit: self.batch_size,
            reverse: self.reverse,
        };
        let db = self.db.clone();
        let consistency = self.consistency;
        Ok(Box::pin(async move {
            db.snapshot_read(vec![range], consistency).await
        }))
    }
}

impl Stream for ListIterator {
    type Item = Result<Entry, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done || this.limit.is_some_and(|l| this.count >= l) {
                return Poll::Ready(None);
            }
            if let Some(raw) = this.buffer.pop_front() {
                let item = this
                    .selector
                    .encode_cursor(&raw.key)
                    .and_then(|c| Ok((c, Entry::from_kv_entry(raw)?)));
                return Poll::Ready(Some(match item {
                    Ok((cursor, entry)) => {
                        this.count += 1;
                        this.cursor = Some(cursor);
                        Ok(entry)
                    }
                    Err(e) => {
                        this.done = true;
                        Err(e)
                    }
                }));
            }
            if this.last_batch {
                this.done = true;
                return Poll::Ready(None);
            }
            if this.pending.is_none() {
                match this.start_batch() {
                    Ok(f) => this.pending = Some(f),
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            let Some(fut) = this.pending.as_mut() else {
                continue;
            };
            let result = match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            this.pending = None;
            match result {
                Ok(mut ranges) => {
                    let batch = ranges.pop().unwrap_or_default();
                    if batch.len() < this.batch_size as usize {
                        this.last_batch = true;
                    }
                    this.buffer = batch.into();
                }
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key;

    fn raw(sel: Selector) -> RawSelector {
        RawSelector::new(&sel).unwrap()
    }

    #[test]
    fn ranges_match_deno() {
        let p = raw(Selector::prefix(key!["a"]));
        assert_eq!(
            p.bounds(false, None).unwrap(),
            (b"\x02a\x00\x00".to_vec(), b"\x02a\x00\xff".to_vec())
        );
        let ps = raw(Selector::prefix_start(key!["a"], key!["a", "m"]));
        assert_eq!(
            ps.bounds(false, None).unwrap(),
            (b"\x02a\x00\x02m\x00".to_vec(), b"\x02a\x00\xff".to_vec())
        );
        let pe = raw(Selector::prefix_end(key!["a"], key!["a", "m"]));
        assert_eq!(
            pe.bounds(false, None).unwrap(),
            (b"\x02a\x00\x00".to_vec(), b"\x02a\x00\x02m\x00".to_vec())
        );
        let r = raw(Selector::range(key!["a"], key!["b"]));
        assert_eq!(
            r.bounds(true, None).unwrap(),
            (b"\x02a\x00".to_vec(), b"\x02b\x00".to_vec())
        );
    }

    #[test]
    fn selector_validation() {
        assert!(RawSelector::new(&Selector::prefix_start(key!["a"], key!["b", "c"])).is_err());
        assert!(RawSelector::new(&Selector::prefix_start(key!["a"], key!["a"])).is_err());
        assert!(RawSelector::new(&Selector::prefix_end(key!["a"], key!["b"])).is_err());
        assert!(RawSelector::new(&Selector::range(key!["b"], key!["a"])).is_err());
    }

    #[test]
    fn cursors_match_deno() {
        let p = raw(Selector::prefix(key!["a"]));
        // Key ["a", "b"] under prefix ["a"]: cursor = base64url(02 62 00) = "AmIA".
        let c = p.encode_cursor(b"\x02a\x00\x02b\x00").unwrap();
        assert_eq!(c, "AmIA");
        assert_eq!(
            p.bounds(false, Some(&c)).unwrap(),
            (
                b"\x02a\x00\x02b\x00\x00".to_vec(),
                b"\x02a\x00\xff".to_vec()
            )
        );
        assert_eq!(
            p.bounds(true, Some(&c)).unwrap(),
            (b"\x02a\x00\x00".to_vec(), b"\x02a\x00\x02b\x00".to_vec())
        );
        // Padding is written, and optional when read.
        let c1 = p.encode_cursor(b"\x02a\x00\x02bc\x00").unwrap();
        assert_eq!(c1, "AmJjAA==");
        assert!(p.bounds(false, Some("AmJjAA")).is_ok());
        assert_eq!(p.bounds(false, Some("!!")), Err(Error::InvalidCursor));
        // Range selector: common prefix of start and end.
        let r = raw(Selector::range(key!["k", "a"], key!["k", "z"]));
        assert_eq!(
            r.encode_cursor(b"\x02k\x00\x02m\x00").unwrap(),
            CURSOR_B64.encode(b"m\x00")
        );
        // A cursor past the end is rejected.
        let past = CURSOR_B64.encode(b"\xff\xff");
        assert_eq!(p.bounds(true, Some(&past)), Err(Error::CursorOutOfBounds));
        let ps = raw(Selector::prefix_start(key!["a"], key!["a", "m"]));
        let before = CURSOR_B64.encode(b"\x02b\x00");
        assert_eq!(
            ps.bounds(false, Some(&before)),
            Err(Error::CursorOutOfBounds)
        );
    }
}
