//! The suite can fail: deliberately broken databases and backends are caught by the tests meant
//! to catch them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kv_conformance::harness::{block_on, database_suite_report, ClockedDb};
use kv_conformance::model::{run_model_test, ModelConfig};
use kv_db::Db;
use kv_engine_memory::MemoryBackend;
use kv_traits::{
    AtomicWrite, Backend, BackendError, CommitResult, Consistency, Database, KvEntry, KvError,
    KvPair, ManualClock, QueueLease, QueueMessage, ReadRange, ReadTxn, WatchStream, WriteTxn,
};

#[derive(Clone, Copy, PartialEq)]
enum Bug {
    /// Full pages lose their last entry.
    ShortReads,
    /// `reverse` is ignored.
    IgnoreReverse,
    /// Each mutation is committed on its own (the reference server's partial-write bug).
    NonAtomic,
    /// Expiry times are dropped.
    NoExpiry,
}

struct Buggy {
    db: Db,
    bug: Bug,
}

#[async_trait]
impl Database for Buggy {
    async fn snapshot_read(
        &self,
        mut ranges: Vec<ReadRange>,
        c: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        if self.bug == Bug::IgnoreReverse {
            for r in &mut ranges {
                r.reverse = false;
            }
        }
        let limits: Vec<u32> = ranges.iter().map(|r| r.limit).collect();
        let mut out = self.db.snapshot_read(ranges, c).await?;
        if self.bug == Bug::ShortReads {
            for (o, l) in out.iter_mut().zip(limits) {
                if l > 1 && o.len() == l as usize {
                    o.pop();
                }
            }
        }
        Ok(out)
    }

    async fn atomic_write(&self, mut write: AtomicWrite) -> Result<CommitResult, KvError> {
        match self.bug {
            Bug::NonAtomic if write.checks.is_empty() && write.mutations.len() > 1 => {
                let mut last = None;
                for m in write.mutations {
                    last = Some(
                        self.db
                            .atomic_write(AtomicWrite {
                                mutations: vec![m],
                                ..Default::default()
                            })
                            .await?,
                    );
                }
                Ok(last.expect("at least one mutation"))
            }
            Bug::NoExpiry => {
                for m in &mut write.mutations {
                    m.expire_at_ms = None;
                }
                self.db.atomic_write(write).await
            }
            _ => self.db.atomic_write(write).await,
        }
    }

    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        self.db.watch(keys).await
    }

    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        self.db.dequeue(wait).await
    }

    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        self.db.finish(lease, success).await
    }
}

fn failures_with(bug: Bug) -> Vec<String> {
    let factory = move || async move {
        let clock = Arc::new(ManualClock::new(ClockedDb::START_MS));
        let db = Db::open(MemoryBackend::new(), ClockedDb::config(clock)).await?;
        Ok(Arc::new(Buggy { db, bug }) as Arc<dyn Database>)
    };
    let report = block_on(database_suite_report(&factory));
    report.failed.into_iter().map(|(n, _)| n).collect()
}

fn assert_caught(bug: Bug, tests: &[&str]) {
    let failed = failures_with(bug);
    for t in tests {
        assert!(
            failed.iter().any(|f| f == t),
            "{t} should catch the bug; failures: {failed:?}"
        );
    }
}

#[test]
fn short_reads_are_caught() {
    assert_caught(
        Bug::ShortReads,
        &[
            "read::exact_min_of_limit_and_matches",
            "read::several_ranges_one_output_each_in_order",
        ],
    );
}

#[test]
fn ignored_reverse_is_caught() {
    assert_caught(
        Bug::IgnoreReverse,
        &[
            "read::reverse_returns_highest_first",
            "read::end_is_exclusive",
        ],
    );
}

#[test]
fn partial_writes_are_caught() {
    assert_caught(
        Bug::NonAtomic,
        &[
            "write::failing_mutation_applies_nothing",
            "write::one_versionstamp_per_write_shared_by_all_mutations",
            "sum::out_of_range_fails_whole_write",
        ],
    );
}

#[test]
fn ignored_expiry_is_caught() {
    assert_caught(
        Bug::NoExpiry,
        &[
            "expiry::past_expiry_is_hidden_from_reads",
            "expiry::limit_counts_only_live_entries",
        ],
    );
}

/// A backend whose reverse scans come back ascending.
struct ReverseBroken(MemoryBackend);

struct ReverseBrokenTxn<T: ?Sized>(Box<T>);

#[async_trait]
impl ReadTxn for ReverseBrokenTxn<dyn ReadTxn> {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.0.get(key).await
    }
    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        _reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        self.0.scan(start, end, limit, false).await
    }
}

#[async_trait]
impl ReadTxn for ReverseBrokenTxn<dyn WriteTxn> {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.0.get(key).await
    }
    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        _reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        self.0.scan(start, end, limit, false).await
    }
}

#[async_trait]
impl WriteTxn for ReverseBrokenTxn<dyn WriteTxn> {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.0.put(key, value).await
    }
    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        self.0.delete(key).await
    }
    async fn commit(self: Box<Self>) -> Result<(), BackendError> {
        self.0.commit().await
    }
}

#[async_trait]
impl Backend for ReverseBroken {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        Ok(Box::new(ReverseBrokenTxn(self.0.begin_read().await?)))
    }
    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        Ok(Box::new(ReverseBrokenTxn(self.0.begin_write().await?)))
    }
}

#[test]
fn model_catches_a_broken_backend() {
    let factory = || async { Ok::<_, BackendError>(ReverseBroken(MemoryBackend::new())) };
    let r = std::panic::catch_unwind(|| {
        run_model_test(
            &factory,
            ModelConfig {
                cases: 64,
                max_ops: 40,
            },
        )
    });
    let msg = match r {
        Ok(()) => panic!("the model test passed on a backend whose reverse scans are ascending"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(msg.contains("minimal failing sequence"), "{msg}");
}

/// The backend contract catches a backend whose reverse scans come back ascending and whose
/// `close` refuses nothing.
#[test]
fn contract_catches_a_broken_backend() {
    let factory = || async { Ok::<_, BackendError>(ReverseBroken(MemoryBackend::new())) };
    let report = kv_conformance::contract::backend_contract_report(&factory);
    let failed: Vec<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
    for t in [
        "backend::read_your_writes",
        "backend::snapshot_is_taken_at_begin",
        "backend::scan_is_bytewise_unsigned",
        "backend::scan_limits_reverse_and_bounds",
        "backend::random_operations_match_a_model",
        "backend::close_refuses_later_calls",
    ] {
        assert!(
            failed.contains(&t),
            "{t} should catch the bug; failures: {failed:?}"
        );
    }
    // Tests that do not scan in reverse or close still pass.
    assert!(report
        .passed
        .iter()
        .any(|p| p == "backend::concurrent_writers_lose_no_update"));
}
