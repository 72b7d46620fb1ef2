//! [`RedbOptions`]: what [`crate::RedbBackend::open`] can be told, and the defaults.
//!
//! The defaults are durable and crash-fast: every commit is fsynced
//! ([`RedbDurability::Immediate`]) and records redb's allocator state ([`RedbOptions::quick_repair`]),
//! so a file left by a crash opens in about the time of a clean open.

use std::num::NonZeroUsize;

/// redb's page cache used when [`RedbOptions::cache_size`] is `None`: 64 MiB.
pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;

/// Values longer than this many bytes are stored in chunks (see the crate docs' "Layout") unless
/// [`RedbOptions::chunk_size`] says otherwise.
pub const DEFAULT_CHUNK_SIZE: usize = 1200;

/// How durable a commit is when it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedbDurability {
    /// Every commit is flushed to stable storage (fsync) before it returns. Survives a process
    /// crash and a power loss. The default.
    #[default]
    Immediate,
    /// Commits are visible at once but not flushed: a crash may lose every commit since the last
    /// durable point (a clean [`kv_traits::Backend::close`]). The file stays consistent. Opt-in
    /// only, for tests and caches.
    None,
}

/// Options of [`crate::RedbBackend::open`].
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// Durability of commits; [`RedbDurability::Immediate`] by default.
    pub durability: RedbDurability,
    /// Size of redb's page cache in bytes; [`DEFAULT_CACHE_SIZE`] (64 MiB) when `None`. redb's
    /// own default, 1 GiB, made the resident memory grow with the file up to that size (711 MiB
    /// at 1M keys of 1 KB); past the cache, reads are served by the operating system's page
    /// cache (one positioned read per missed page).
    pub cache_size: Option<usize>,
    /// Whether every commit records redb's allocator state ("quick repair", default `true`).
    /// With it, opening a file that was not closed cleanly (a crash, SIGKILL, power loss) loads
    /// that state instead of walking every tree to rebuild it, which takes time in proportion to
    /// the file (about 8 s per million 1 KB entries). The cost is paid by every commit: redb
    /// writes the allocator state table and commits in two phases (two fsyncs instead of one).
    pub quick_repair: bool,
    /// Values longer than this many bytes are split into chunks of at most this size, stored
    /// apart from the key (default [`DEFAULT_CHUNK_SIZE`]), so that no B-tree entry is too big
    /// to share a page; except a value that alone fills most of the pages redb would give it
    /// (see the `layout` module). Only affects new writes: reads accept any chunking. Ignored
    /// for a file served in format 1 (see [`RedbOptions::upgrade_on_open`]).
    pub chunk_size: NonZeroUsize,
    /// Whether [`crate::RedbBackend::open`] upgrades a file of format 1 (written before values
    /// were chunked) to the current format (default `true`): every value is rewritten, in
    /// batches of bounded size, each its own commit, so the upgrade takes time in proportion to
    /// the file, and an interrupted upgrade resumes at the next open (whatever this option says
    /// then: a half-upgraded file can only be served in the new format). With `false` a format-1
    /// file is served as it is: values stay whole, with the disk use of format 1.
    pub upgrade_on_open: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            durability: RedbDurability::Immediate,
            cache_size: None,
            quick_repair: true,
            chunk_size: NonZeroUsize::new(DEFAULT_CHUNK_SIZE).unwrap_or(NonZeroUsize::MIN),
            upgrade_on_open: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_durable_and_crash_fast() {
        let options = RedbOptions::default();
        assert_eq!(options.durability, RedbDurability::Immediate);
        assert!(options.quick_repair);
        assert!(options.upgrade_on_open);
        assert_eq!(options.chunk_size.get(), DEFAULT_CHUNK_SIZE);
    }
}
