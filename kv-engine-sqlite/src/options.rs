//! Options of [`crate::SqliteBackend::open`].

use std::time::Duration;

/// How hard a commit works to make its data survive failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `PRAGMA synchronous=FULL`: every commit fsyncs the write-ahead log before it returns, so a
    /// committed transaction survives a process crash (`kill -9`) **and** an operating-system
    /// crash or power loss. The default.
    #[default]
    Full,
    /// `PRAGMA synchronous=NORMAL` (explicit opt-in): commits do not fsync; the log is synced
    /// only at checkpoints. A committed transaction survives a process crash, but the most
    /// recent commits may be lost (never torn) on an operating-system crash or power loss.
    /// Faster, especially with few concurrent writers.
    Normal,
}

impl Durability {
    /// The value of `PRAGMA synchronous` for this level.
    pub fn synchronous_pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// Default of [`SqliteOptions::mmap_size_mib`]: the bundled SQLite's compile-time ceiling
/// (`SQLITE_MAX_MMAP_SIZE`, 0x7fff0000 bytes on Linux, macOS and the BSDs).
pub const DEFAULT_MMAP_SIZE_MIB: u32 = 2047;

/// Options of a [`crate::SqliteBackend`]. `SqliteOptions::default()` is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Commit durability; [`Durability::Full`] by default.
    pub durability: Durability,
    /// Number of idle reader connections kept in the pool (default 4). A read transaction takes
    /// an idle connection, or opens a new one when all are busy (reads never wait for each
    /// other); on return a connection is kept only while fewer than this many are idle. `0`
    /// keeps none (every read transaction opens a connection).
    pub readers: usize,
    /// How long a connection waits for a lock held by another process before failing with an
    /// I/O error (default 5 s). Within one process the engine never contends with itself.
    pub busy_timeout: Duration,
    /// Page cache size of the writer connection in KiB (default 2048 = 2 MiB, SQLite's own
    /// default). Raise it for large group commits of large values: a commit that does not fit
    /// spills pages to the WAL early. 8 MiB measured no faster on the 64-writer benchmark and
    /// cost about 3 MiB of resident memory.
    pub cache_size_kib: u32,
    /// Page cache size of each reader connection in KiB (default 2048 = 2 MiB, SQLite's own
    /// default). Every reader caches its own copy of hot pages; the operating system's page
    /// cache serves the rest, so large reader caches mostly cost memory.
    pub reader_cache_size_kib: u32,
    /// How much of the database file each connection reads through a memory map, in MiB
    /// (`PRAGMA mmap_size`; default [`DEFAULT_MMAP_SIZE_MIB`], the most the bundled SQLite
    /// maps; larger values are capped there; `0` turns mapping off).
    ///
    /// Without a map every page SQLite's small page cache misses is copied from the operating
    /// system's page cache with a `read` call: 32 KiB per page in format 2. A point read in a
    /// large database touches two or three B-tree pages, most of them misses once the tree
    /// outgrows the page cache, so that copy was a quarter of the server's CPU per read at 1M
    /// keys (`benches/scale.sh`). Mapped pages are read in place: no copy, no system call.
    ///
    /// Memory cost: address space, not allocated memory. Mapped pages are the operating
    /// system's page cache (clean, shared with every other reader of the file, reclaimable under
    /// memory pressure), but they count in the process's resident set size once per connection
    /// that touched them, so RSS overstates the real use by up to the mapped size times the
    /// number of connections. Pages beyond the mapped size, and pages still in the WAL, are read
    /// with `read` as before. An I/O error on a mapped page (a failing disk, a file truncated by
    /// another process) raises `SIGBUS` instead of an error code; set `0` where that matters
    /// more than read speed.
    pub mmap_size_mib: u32,
    /// Whether [`crate::SqliteBackend::open`] upgrades a file of an older format version (default
    /// `true`): format 1 (4 KiB pages) is rewritten with `VACUUM` into format 2 (32 KiB pages),
    /// which needs free disk space for a copy of the database and time in proportion to its size.
    /// With `false` such a file is served as it is (same schema; values over about 1 KB keep
    /// costing overflow pages).
    pub upgrade_on_open: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 2048,
            reader_cache_size_kib: 2048,
            mmap_size_mib: DEFAULT_MMAP_SIZE_MIB,
            upgrade_on_open: true,
        }
    }
}

impl SqliteOptions {
    /// These options with `durability` replaced.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// These options with the reader pool size replaced.
    pub fn with_readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_durable() {
        let o = SqliteOptions::default();
        assert_eq!(o.durability, Durability::Full);
        assert_eq!(o.durability.synchronous_pragma(), "FULL");
        assert_eq!(o.readers, 4);
        assert_eq!(o.mmap_size_mib, DEFAULT_MMAP_SIZE_MIB);
    }

    #[test]
    fn builders_replace_fields() {
        let o = SqliteOptions::default()
            .with_durability(Durability::Normal)
            .with_readers(1);
        assert_eq!(o.durability.synchronous_pragma(), "NORMAL");
        assert_eq!(o.readers, 1);
    }
}
