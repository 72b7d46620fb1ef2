//! Engine tuning flags of the stock binary (part of `DbArgs`): the few `SqliteOptions` and
//! `RedbOptions` settings an operator may need to trade, each with an environment fallback.
//! Everything else keeps the engine's defaults.
//!
//! | flag | env | default | trade |
//! |---|---|---|---|
//! | `--sqlite-mmap-mib N` | `KV_CONNECT_SQLITE_MMAP_MIB` | 2047 | read speed vs `SIGBUS` on a disk error; `0` reads with `read(2)` |
//! | `--redb-quick-repair BOOL` | `KV_CONNECT_REDB_QUICK_REPAIR` | `true` | fast open after a crash vs commit rate (two fsyncs per commit) |
//! | `--redb-cache-mib N` | `KV_CONNECT_REDB_CACHE_MIB` | 64 | resident memory vs reads served by the page cache |

use clap::Args;

/// `kv_engine_sqlite::DEFAULT_MMAP_SIZE_MIB` (kept here so that the flags parse in a build
/// without the sqlite engine; a test checks they agree).
const SQLITE_MMAP_MIB: u32 = 2047;
/// `kv_engine_redb::DEFAULT_CACHE_SIZE` in MiB (a test checks they agree).
const REDB_CACHE_MIB: u32 = 64;

/// Engine tuning flags (see the module docs).
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub(crate) struct EngineTuning {
    /// SQLite engine: MiB of the database file each connection reads through a memory map
    /// (capped at 2047 by the bundled SQLite). Faster point reads in large databases; an I/O
    /// error on a mapped page raises SIGBUS instead of an error. `0` turns mapping off.
    #[arg(long, env = "KV_CONNECT_SQLITE_MMAP_MIB", default_value_t = SQLITE_MMAP_MIB)]
    pub sqlite_mmap_mib: u32,

    /// redb engine: record the allocator state on every commit, so that opening after a crash
    /// takes milliseconds instead of a walk of the whole file (about 8 s per million 1 KB
    /// entries). Costs every commit a second fsync: `false` trades crash-open time for writes.
    #[arg(long, env = "KV_CONNECT_REDB_QUICK_REPAIR", default_value_t = true, action = clap::ArgAction::Set)]
    pub redb_quick_repair: bool,

    /// redb engine: page cache size in MiB.
    #[arg(long, env = "KV_CONNECT_REDB_CACHE_MIB", default_value_t = REDB_CACHE_MIB, value_parser = clap::value_parser!(u32).range(1..))]
    pub redb_cache_mib: u32,
}

impl Default for EngineTuning {
    fn default() -> Self {
        EngineTuning {
            sqlite_mmap_mib: SQLITE_MMAP_MIB,
            redb_quick_repair: true,
            redb_cache_mib: REDB_CACHE_MIB,
        }
    }
}

impl EngineTuning {
    /// The SQLite engine's options under these flags.
    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(&self) -> kv_engine_sqlite::SqliteOptions {
        kv_engine_sqlite::SqliteOptions {
            mmap_size_mib: self.sqlite_mmap_mib,
            ..Default::default()
        }
    }

    /// The redb engine's options under these flags.
    #[cfg(feature = "redb")]
    pub(crate) fn redb(&self) -> kv_engine_redb::RedbOptions {
        kv_engine_redb::RedbOptions {
            quick_repair: self.redb_quick_repair,
            cache_size: Some(self.redb_cache_mib as usize * 1024 * 1024),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tuning: EngineTuning,
    }

    #[test]
    fn defaults_are_the_engines_defaults() {
        let cli = Cli::try_parse_from(["x"]).map_err(|e| e.to_string());
        assert_eq!(cli.map(|c| c.tuning), Ok(EngineTuning::default()));
        #[cfg(feature = "redb")]
        {
            let engine = kv_engine_redb::RedbOptions::default();
            let ours = EngineTuning::default().redb();
            assert_eq!(ours.quick_repair, engine.quick_repair);
            assert_eq!(
                ours.cache_size.unwrap_or(0),
                engine
                    .cache_size
                    .unwrap_or(kv_engine_redb::DEFAULT_CACHE_SIZE)
            );
        }
        #[cfg(feature = "sqlite")]
        assert_eq!(SQLITE_MMAP_MIB, kv_engine_sqlite::DEFAULT_MMAP_SIZE_MIB);
        #[cfg(feature = "redb")]
        assert_eq!(
            REDB_CACHE_MIB as usize * 1024 * 1024,
            kv_engine_redb::DEFAULT_CACHE_SIZE
        );
        #[cfg(feature = "sqlite")]
        assert_eq!(
            EngineTuning::default().sqlite(),
            kv_engine_sqlite::SqliteOptions::default()
        );
    }

    #[test]
    fn flags_reach_the_engine_options() {
        let cli = Cli::try_parse_from([
            "x",
            "--sqlite-mmap-mib",
            "0",
            "--redb-quick-repair",
            "false",
            "--redb-cache-mib",
            "8",
        ])
        .map_err(|e| e.to_string());
        let tuning = cli.map(|c| c.tuning);
        assert_eq!(
            tuning,
            Ok(EngineTuning {
                sqlite_mmap_mib: 0,
                redb_quick_repair: false,
                redb_cache_mib: 8
            })
        );
    }

    #[test]
    fn a_zero_cache_is_refused() {
        assert!(Cli::try_parse_from(["x", "--redb-cache-mib", "0"]).is_err());
    }
}
