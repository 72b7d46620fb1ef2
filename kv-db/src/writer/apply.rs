//! Applying one atomic write: its checks, then its mutations and enqueues under one new
//! versionstamp.
//!
//! Contract:
//! - Checks compare against live records only (an expired, unswept key counts as absent). If any
//!   check fails the write is answered with [`CommitResult::CheckFailed`] listing every failing
//!   check's index, and nothing of it is applied; the version does not move.
//! - Otherwise the write takes the next version; every mutation, the versionstamped keys
//!   included, is stamped with it, in the order given (a later mutation of the same key wins).
//! - SUM, MIN and MAX read the current record once, combine its live value with the operand
//!   (see [`crate::mutate`]) and store the result without expiry. A type error refuses the whole
//!   write.
//! - Each enqueue gets a fresh random id and lands in the ready queue at its deadline.

use kv_traits::key::versionstamped_key;
use kv_traits::{
    AtomicWrite, CommitResult, KvError, KvValue, MutationKind, Versionstamp,
    DEFAULT_BACKOFF_SCHEDULE,
};

use super::overlay::{next_version, ApplyError, Cx};
use crate::layout::{self, QueueRecord, Record, QUEUE_READY};
use crate::mutate;

impl Cx<'_> {
    pub(super) async fn apply_write(
        &mut self,
        w: &AtomicWrite,
    ) -> Result<CommitResult, ApplyError> {
        let mut failed = Vec::new();
        for (i, c) in w.checks.iter().enumerate() {
            let current = self.live(&c.key).await?.map(|r| r.versionstamp);
            if current != c.versionstamp {
                failed.push(i as u32);
            }
        }
        if !failed.is_empty() {
            self.fx.stats.writes_check_failed += 1;
            return Ok(CommitResult::CheckFailed(failed));
        }
        let version = next_version(self.version)?;
        let vs = Versionstamp::from_version(version);
        for m in &w.mutations {
            match &m.kind {
                MutationKind::Set(v) => {
                    let rec = Record {
                        value: v.clone(),
                        versionstamp: vs,
                        expire_at_ms: m.expire_at_ms,
                    };
                    self.set_record(&m.key, rec).await?;
                }
                MutationKind::Delete => self.delete_record(&m.key, version).await?,
                MutationKind::Sum {
                    value,
                    min,
                    max,
                    clamp,
                } => {
                    self.read_modify_write(&m.key, vs, |cur| {
                        mutate::sum(cur, value, min, max, *clamp)
                    })
                    .await?
                }
                MutationKind::Min(v) => {
                    self.read_modify_write(&m.key, vs, |cur| mutate::min_max(cur, v, false))
                        .await?
                }
                MutationKind::Max(v) => {
                    self.read_modify_write(&m.key, vs, |cur| mutate::min_max(cur, v, true))
                        .await?
                }
                MutationKind::SetSuffixVersionstampedKey(v) => {
                    let key = versionstamped_key(&m.key, &vs);
                    let rec = Record {
                        value: v.clone(),
                        versionstamp: vs,
                        expire_at_ms: m.expire_at_ms,
                    };
                    self.set_record(&key, rec).await?;
                }
            }
        }
        for e in &w.enqueues {
            let id: [u8; 16] = rand::random();
            let rec = QueueRecord {
                attempts: 0,
                lease_deadline_ms: 0,
                backoff: e
                    .backoff_schedule
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BACKOFF_SCHEDULE.to_vec()),
                keys_if_undelivered: e.keys_if_undelivered.clone(),
                payload: e.payload.clone(),
            };
            self.put(layout::timed(QUEUE_READY, e.deadline_ms, &id), rec.encode());
            self.fx.queue_changed = true;
            self.fx.stats.queue_ready += 1;
        }
        self.fx.stats.writes_committed += 1;
        self.version = version;
        self.seal(version);
        Ok(CommitResult::Committed(vs))
    }

    /// Replaces the value of `key` with `combine(live value)`, stamped `vs` and without expiry.
    /// The stored record is read and decoded once, for both the live value and the expiry-index
    /// entry to drop.
    async fn read_modify_write(
        &mut self,
        key: &[u8],
        vs: Versionstamp,
        combine: impl FnOnce(Option<&KvValue>) -> Result<KvValue, KvError>,
    ) -> Result<(), ApplyError> {
        let old = self.record(key).await?;
        let now = self.now;
        let live = old.as_ref().filter(|r| !r.is_expired(now));
        let value = combine(live.map(|r| &r.value))?;
        let old_expiry = old.and_then(|r| r.expire_at_ms);
        self.replace_record(
            key,
            old_expiry,
            Record {
                value,
                versionstamp: vs,
                expire_at_ms: None,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use kv_engine_memory::MemoryBackend;
    use kv_traits::{Backend, BackendError, KvPair, Mutation, ReadTxn, WriteTxn};

    use super::*;
    use crate::layout::{DATA, EXPIRY};

    /// A write transaction that counts the reads of one key.
    struct Counting {
        inner: Box<dyn WriteTxn>,
        key: Vec<u8>,
        gets: usize,
    }

    #[async_trait]
    impl ReadTxn for Counting {
        async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
            if key == self.key {
                self.gets += 1;
            }
            self.inner.get(key).await
        }
        async fn scan(
            &mut self,
            start: &[u8],
            end: &[u8],
            limit: usize,
            reverse: bool,
        ) -> Result<Vec<KvPair>, BackendError> {
            self.inner.scan(start, end, limit, reverse).await
        }
    }

    #[async_trait]
    impl WriteTxn for Counting {
        async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
            self.inner.put(key, value).await
        }
        async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
            self.inner.delete(key).await
        }
        async fn commit(self: Box<Self>) -> Result<(), BackendError> {
            self.inner.commit().await
        }
    }

    #[tokio::test]
    async fn sum_min_max_read_the_stored_record_once() {
        let user_key = b"\x02n\x00".to_vec();
        let data_key = layout::prefixed(DATA, &user_key);
        let old_expiry = layout::timed(EXPIRY, 5_000, &user_key);
        let backend = MemoryBackend::new();
        let mut seed = backend.begin_write().await.unwrap();
        let stored = Record {
            value: KvValue::U64(10),
            versionstamp: Versionstamp::from_version(1),
            expire_at_ms: Some(5_000),
        };
        seed.put(&data_key, &stored.encode()).await.unwrap();
        seed.put(&old_expiry, &[]).await.unwrap();
        seed.commit().await.unwrap();

        let sum = MutationKind::Sum {
            value: KvValue::U64(5),
            min: None,
            max: None,
            clamp: false,
        };
        let cases = [
            (sum, 15),
            (MutationKind::Min(KvValue::U64(3)), 3),
            (MutationKind::Max(KvValue::U64(30)), 30),
        ];
        for (kind, expected) in cases {
            let mutation = Mutation {
                key: user_key.clone(),
                kind,
                expire_at_ms: None,
            };
            let mut txn = Counting {
                inner: backend.begin_write().await.unwrap(),
                key: data_key.clone(),
                gets: 0,
            };
            let mut cx = Cx::new(&mut txn, 1, 1_000, false);
            let write = AtomicWrite {
                mutations: vec![mutation],
                ..Default::default()
            };
            let Ok(CommitResult::Committed(vs)) = cx.apply_write(&write).await else {
                panic!("the write did not commit");
            };
            assert_eq!(vs, Versionstamp::from_version(2));
            let written = cx.writes.get(&data_key).cloned().flatten().unwrap();
            let rec = Record::decode(&written).unwrap();
            assert_eq!(rec.value, KvValue::U64(expected));
            assert_eq!(rec.expire_at_ms, None);
            // The old expiry-index entry is dropped along with the expiry.
            assert_eq!(cx.writes.get(&old_expiry), Some(&None));
            drop(cx);
            assert_eq!(txn.gets, 1, "the stored record was read more than once");
        }
    }
}
