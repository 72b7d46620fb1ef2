//! How the keyspace is laid out in redb tables, and the reads and writes that follow the layout.
//!
//! Format 2 ([`Layout::Chunked`]), written by this build:
//!
//! - Table `kv` maps every key of the keyspace to a stored entry: `0x00 ++ value` when the value
//!   is at most the chunk size long ("inline"), else the chunk header `0x01 ++ len ++ count`
//!   (`len`: the value's length, u64 big-endian; `count`: its number of chunks, u32 big-endian,
//!   at least 1).
//! - Table `kv_chunks` maps `key ++ i` (`i` a u32 big-endian, `0 <= i < count`) to the `i`-th
//!   piece of a chunked value; in order, the pieces are the value. The index has a fixed width,
//!   so two different (key, index) pairs never give the same chunk key. A key has chunks exactly
//!   while its `kv` entry is a chunk header naming them: every write replaces or deletes them in
//!   the same transaction as the header, so commits keep the two tables consistent.
//! - Order, range reads and snapshots are those of `kv` alone (one entry per key, ordered as the
//!   keys), so the [`kv_traits::Backend`] contract holds as for plain values; a chunked value
//!   costs one more range read, in the same redb transaction (the same snapshot).
//!
//! Format 1 ([`Layout::Whole`]): `kv` maps each key to its value as is; there is no chunks table.
//!
//! Why chunks: redb keeps a B-tree leaf in one 4 KiB page, splitting it when it overflows, but an
//! entry too big to share a page gets a leaf of its own, rounded up to a power-of-two number of
//! pages: values of 2–4 KB cost 2x their size on disk. Pieces of at most the chunk size (by
//! default [`crate::DEFAULT_CHUNK_SIZE`] bytes, about a third of a page with its key) pack into
//! shared leaves like small values do. Pieces are of equal size (within one byte) so that no
//! piece is a sliver. A value that alone fills most (75%) of the pages redb would give it stays
//! inline all the same (3.5 KB, 8 KB, 16 KB with a short key): that costs no more than chunks
//! and saves the second read.

use kv_traits::{BackendError, Cause, KvPair};
use redb::{ReadableTable, TableDefinition};

use crate::error::storage_error;

/// The table holding the keyspace (both formats).
pub(crate) const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// The table holding the pieces of chunked values (format 2).
pub(crate) const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_chunks");

/// Tag of an inline entry in `kv`.
const INLINE: u8 = 0x00;
/// Tag of a chunk header in `kv`.
const CHUNKED: u8 = 0x01;
/// Length of a chunk header: tag, u64 length, u32 count.
const HEADER_LEN: usize = 1 + 8 + 4;

/// The layout a file is read and written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Format 1: values stored whole and untagged.
    Whole,
    /// Format 2: values over `chunk_size` bytes stored as chunks of at most that size.
    Chunked {
        /// The longest value stored inline, and the longest piece.
        chunk_size: usize,
    },
}

/// A stored `kv` entry of format 2, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Entry<'a> {
    Inline(&'a [u8]),
    Chunked { len: u64, count: u32 },
}

fn corrupt(message: String) -> BackendError {
    BackendError::Corrupt(Cause::from(message))
}

fn parse<'a>(key: &[u8], stored: &'a [u8]) -> Result<Entry<'a>, BackendError> {
    match stored.split_first() {
        Some((&INLINE, value)) => Ok(Entry::Inline(value)),
        Some((&CHUNKED, rest)) if rest.len() == HEADER_LEN - 1 => {
            let (len, count) = rest.split_at(8);
            let len = u64::from_be_bytes(len.try_into().unwrap_or_default());
            let count = u32::from_be_bytes(count.try_into().unwrap_or_default());
            if count == 0 {
                return Err(corrupt(format!(
                    "chunk header of key {key:02x?} names no chunks"
                )));
            }
            Ok(Entry::Chunked { len, count })
        }
        _ => Err(corrupt(format!(
            "stored entry of key {key:02x?} has no valid tag ({} bytes, first {:02x?})",
            stored.len(),
            stored.first()
        ))),
    }
}

/// The key of piece `index` of `key`'s value in the chunks table.
pub(crate) fn chunk_key(key: &[u8], index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 4);
    out.extend_from_slice(key);
    out.extend_from_slice(&index.to_be_bytes());
    out
}

fn missing_chunks_table() -> BackendError {
    corrupt("the chunks table is missing from a format-2 file".into())
}

/// Reads the `count` pieces of `key`'s value and checks they add up to `len` bytes.
fn read_chunks<C>(chunks: &C, key: &[u8], len: u64, count: u32) -> Result<Vec<u8>, BackendError>
where
    C: ReadableTable<&'static [u8], &'static [u8]>,
{
    let start = chunk_key(key, 0);
    let end = chunk_key(key, count);
    // Capped: a corrupt length must not reserve gigabytes.
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 24));
    let mut found = 0u32;
    for item in chunks
        .range::<&[u8]>(start.as_slice()..end.as_slice())
        .map_err(storage_error)?
    {
        let (chunk, piece) = item.map_err(storage_error)?;
        // The range also holds the chunks of keys that extend `key` by a zero byte or more
        // (`key ++ 00 00 00 00 ...`): exactly those of another length.
        if chunk.value().len() != key.len() + 4 {
            continue;
        }
        if chunk.value() != chunk_key(key, found).as_slice() {
            return Err(corrupt(format!(
                "chunk {found} of key {key:02x?} is missing"
            )));
        }
        out.extend_from_slice(piece.value());
        found += 1;
    }
    if found != count || out.len() as u64 != len {
        return Err(corrupt(format!(
            "chunked value of key {key:02x?}: {found} of {count} chunks, {} of {len} bytes",
            out.len()
        )));
    }
    Ok(out)
}

/// The value of a stored `kv` entry.
fn decode<C>(
    layout: Layout,
    chunks: Option<&C>,
    key: &[u8],
    stored: &[u8],
) -> Result<Vec<u8>, BackendError>
where
    C: ReadableTable<&'static [u8], &'static [u8]>,
{
    match layout {
        Layout::Whole => Ok(stored.to_vec()),
        Layout::Chunked { .. } => match parse(key, stored)? {
            Entry::Inline(value) => Ok(value.to_vec()),
            Entry::Chunked { len, count } => {
                read_chunks(chunks.ok_or_else(missing_chunks_table)?, key, len, count)
            }
        },
    }
}

/// The value at `key`.
pub(crate) fn get<D, C>(
    layout: Layout,
    data: &D,
    chunks: Option<&C>,
    key: &[u8],
) -> Result<Option<Vec<u8>>, BackendError>
where
    D: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], &'static [u8]>,
{
    match data.get(key).map_err(storage_error)? {
        Some(stored) => decode(layout, chunks, key, stored.value()).map(Some),
        None => Ok(None),
    }
}

/// Up to `limit` pairs with `start <= key < end`, ascending or descending.
pub(crate) fn scan<D, C>(
    layout: Layout,
    data: &D,
    chunks: Option<&C>,
    (start, end): (&[u8], &[u8]),
    limit: usize,
    reverse: bool,
) -> Result<Vec<KvPair>, BackendError>
where
    D: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], &'static [u8]>,
{
    // redb refuses inverted ranges; an empty or inverted range holds nothing.
    if start >= end || limit == 0 {
        return Ok(Vec::new());
    }
    let range = data.range::<&[u8]>(start..end).map_err(storage_error)?;
    let items: Box<dyn Iterator<Item = _>> = if reverse {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut out = Vec::with_capacity(limit.min(128));
    for item in items.take(limit) {
        let (k, v) = item.map_err(storage_error)?;
        let key = k.value();
        let value = decode(layout, chunks, key, v.value())?;
        out.push((key.to_vec(), value));
    }
    Ok(out)
}

/// A redb table of byte keys and values, open for writing.
pub(crate) type Table<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// What [`put`] replaces at the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replacing {
    /// An entry of the file's own layout (or nothing).
    Entry,
    /// A format-1 value being upgraded: stored whole, it has no chunks.
    WholeValue,
}

/// The number of chunks of a stored format-2 entry.
fn chunk_count(key: &[u8], stored: &[u8]) -> Result<u32, BackendError> {
    Ok(match parse(key, stored)? {
        Entry::Inline(_) => 0,
        Entry::Chunked { count, .. } => count,
    })
}

/// Removes the chunks `from..to` of `key`.
fn remove_chunks(
    chunks: &mut Table<'_>,
    key: &[u8],
    from: u32,
    to: u32,
) -> Result<(), BackendError> {
    for index in from..to {
        chunks
            .remove(chunk_key(key, index).as_slice())
            .map_err(storage_error)?;
    }
    Ok(())
}

/// redb's page size (its default; not configurable outside redb's own tests).
const REDB_PAGE: usize = 4096;
/// Bytes a leaf spends on itself (header) and on each entry (two end offsets).
const LEAF_OVERHEAD: usize = 4 + 8;

/// Whether a value is stored inline: when it is at most `chunk_size` long, or when, alone in a
/// leaf, it fills at least 75% of the power-of-two run of pages redb gives that leaf (a 3.5 KB
/// value in one page, an 8 KB one in two, 16 KB in four: at most 1.33x, no worse than
/// chunks, measured 1.28x–1.45x, and one read).
fn stays_whole(key_len: usize, value_len: usize, chunk_size: usize) -> bool {
    if value_len <= chunk_size {
        return true;
    }
    let entry = LEAF_OVERHEAD + key_len + 1 + value_len;
    let region = entry.div_ceil(REDB_PAGE).next_power_of_two() * REDB_PAGE;
    entry.saturating_mul(4) >= region.saturating_mul(3)
}

/// Stores `value` at `key`, replacing (and cleaning up after) what was there.
pub(crate) fn put(
    layout: Layout,
    data: &mut Table<'_>,
    chunks: Option<&mut Table<'_>>,
    key: &[u8],
    value: &[u8],
    replacing: Replacing,
) -> Result<(), BackendError> {
    let chunk_size = match layout {
        Layout::Whole => {
            data.insert(key, value).map_err(storage_error)?;
            return Ok(());
        }
        Layout::Chunked { chunk_size } => chunk_size.max(1),
    };
    let chunks = chunks.ok_or_else(missing_chunks_table)?;
    let (stored, count) = if stays_whole(key.len(), value.len(), chunk_size) {
        let mut stored = Vec::with_capacity(1 + value.len());
        stored.push(INLINE);
        stored.extend_from_slice(value);
        (stored, 0)
    } else {
        // Equal pieces: `parts` of at most chunk_size, none much shorter than the others.
        let parts = value.len().div_ceil(chunk_size);
        let piece = value.len().div_ceil(parts);
        let mut count = 0u32;
        for part in value.chunks(piece) {
            chunks
                .insert(chunk_key(key, count).as_slice(), part)
                .map_err(storage_error)?;
            count = count.checked_add(1).ok_or_else(|| {
                BackendError::Io(Cause::from(format!(
                    "a value of {} bytes needs more than 2^32 chunks",
                    value.len()
                )))
            })?;
        }
        let mut stored = Vec::with_capacity(HEADER_LEN);
        stored.push(CHUNKED);
        stored.extend_from_slice(&(value.len() as u64).to_be_bytes());
        stored.extend_from_slice(&count.to_be_bytes());
        (stored, count)
    };
    let old_count = match data.insert(key, stored.as_slice()).map_err(storage_error)? {
        Some(old) if replacing == Replacing::Entry => chunk_count(key, old.value())?,
        _ => 0,
    };
    remove_chunks(chunks, key, count, old_count)
}

/// Removes `key` and its chunks.
pub(crate) fn delete(
    layout: Layout,
    data: &mut Table<'_>,
    chunks: Option<&mut Table<'_>>,
    key: &[u8],
) -> Result<(), BackendError> {
    let old = data.remove(key).map_err(storage_error)?;
    if let (Layout::Chunked { .. }, Some(old)) = (layout, old) {
        let count = chunk_count(key, old.value())?;
        drop(old);
        if count > 0 {
            remove_chunks(chunks.ok_or_else(missing_chunks_table)?, key, 0, count)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(
            parse(b"k", &[INLINE, 7, 8]).unwrap(),
            Entry::Inline(&[7, 8])
        );
        assert_eq!(parse(b"k", &[INLINE]).unwrap(), Entry::Inline(&[]));
        let mut header = vec![CHUNKED];
        header.extend_from_slice(&5000u64.to_be_bytes());
        header.extend_from_slice(&5u32.to_be_bytes());
        assert_eq!(
            parse(b"k", &header).unwrap(),
            Entry::Chunked {
                len: 5000,
                count: 5
            }
        );
        for bad in [
            &[][..],
            &[2, 0][..],
            &[CHUNKED, 0, 0][..],
            &header[..HEADER_LEN - 1],
        ] {
            assert!(
                matches!(parse(b"k", bad), Err(BackendError::Corrupt(_))),
                "{bad:?}"
            );
        }
        let mut no_chunks = header.clone();
        no_chunks[HEADER_LEN - 4..].copy_from_slice(&0u32.to_be_bytes());
        assert!(matches!(
            parse(b"k", &no_chunks),
            Err(BackendError::Corrupt(_))
        ));
    }

    #[test]
    fn values_that_fill_their_pages_stay_whole() {
        // Up to the chunk size: inline.
        assert!(stays_whole(100, 1200, 1200));
        // 2 KB and 4 KB would leave half their page or pages empty: chunked.
        assert!(!stays_whole(100, 2000, 1200));
        assert!(!stays_whole(100, 4000, 1200));
        assert!(!stays_whole(100, 12_000, 1200));
        // 3.5 KB fills a page, 8 KB and 16 KB fill two and four.
        assert!(stays_whole(100, 3500, 1200));
        assert!(stays_whole(100, 8000, 1200));
        assert!(stays_whole(100, 16_000, 1200));
        // Small chunk sizes chunk everything that is far from filling a page.
        assert!(!stays_whole(0, 9, 8));
        assert!(stays_whole(0, 8, 8));
    }

    #[test]
    fn chunk_keys_are_prefixed_and_ordered() {
        assert_eq!(chunk_key(b"ab", 1), b"ab\0\0\0\x01".to_vec());
        assert!(chunk_key(b"ab", 255) < chunk_key(b"ab", 256));
        // A key that extends another still gets chunk keys of its own (their lengths differ).
        assert_ne!(chunk_key(b"ab\0\0\0\x01", 0), chunk_key(b"ab", 1));
    }
}
