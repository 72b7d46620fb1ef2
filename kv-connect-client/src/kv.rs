//! [`Kv`]: a Deno.Kv-like API over any [`Database`], embedded or remote.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kv_traits::clock::now_ms;
use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, Database, Enqueue, KvEntry, Mutation,
    MutationKind, ReadRange, Versionstamp, WatchKeyOutput,
};

use crate::error::Error;
use crate::list::{ListIterator, ListOptions, Selector};
#[cfg(feature = "remote")]
use crate::remote::{RemoteConfig, RemoteDatabase};
use crate::value::{Key, Value};

/// A stored entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: Key,
    /// The value.
    pub value: Value,
    /// The versionstamp of the commit that last wrote it.
    pub versionstamp: Versionstamp,
}

impl Entry {
    pub(crate) fn from_kv_entry(e: KvEntry) -> Result<Self, Error> {
        Ok(Entry {
            key: Key::decode(&e.key)?,
            value: Value::from_kv_value(e.value),
            versionstamp: e.versionstamp,
        })
    }
}

/// The result of a point read: the value and versionstamp are `None` if the key is absent
/// (Deno's `KvEntryMaybe`).
#[derive(Clone, Debug, PartialEq)]
pub struct EntryMaybe {
    /// The key that was read.
    pub key: Key,
    /// The value, if the key exists.
    pub value: Option<Value>,
    /// The versionstamp, if the key exists.
    pub versionstamp: Option<Versionstamp>,
}

impl EntryMaybe {
    fn absent(key: Key) -> Self {
        EntryMaybe {
            key,
            value: None,
            versionstamp: None,
        }
    }

    fn present(key: Key, e: KvEntry) -> Self {
        EntryMaybe {
            key,
            value: Some(Value::from_kv_value(e.value)),
            versionstamp: Some(e.versionstamp),
        }
    }
}

/// Options of a queue message (Deno's `enqueue` options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    /// Deliver no earlier than this from now.
    pub delay: Duration,
    /// Keys that receive the message if every delivery attempt fails.
    pub keys_if_undelivered: Vec<Key>,
    /// Retry delays in ms; `None` for the server's default schedule.
    pub backoff_schedule: Option<Vec<u32>>,
}

/// Bounds of a `sum` on a V8 number or bigint (ignored for `U64` operands).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SumOptions {
    /// Lower bound (a `Number` or `BigInt` value).
    pub min: Option<Value>,
    /// Upper bound (a `Number` or `BigInt` value).
    pub max: Option<Value>,
    /// Clamp an out-of-range result instead of failing the write.
    pub clamp: bool,
}

/// A stream of watch notifications: the current entry of every watched key, in order.
pub type EntriesStream = Pin<Box<dyn Stream<Item = Result<Vec<EntryMaybe>, Error>> + Send>>;

/// A Deno KV database handle with an API in the spirit of `Deno.Kv`, the same whether the
/// database is embedded ([`Kv::from_database`]) or remote ([`Kv::open_remote`]). Cheap to
/// clone.
#[derive(Clone)]
pub struct Kv {
    db: Arc<dyn Database>,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").finish_non_exhaustive()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Kv {
    /// Wraps any database, e.g. an embedded `kv_db::Db`.
    pub fn from_database(db: impl Database) -> Self {
        Kv { db: Arc::new(db) }
    }

    /// Wraps a shared database.
    pub fn from_arc(db: Arc<dyn Database>) -> Self {
        Kv { db }
    }

    /// Connects to a KV Connect server (`Deno.openKv(url)` with `DENO_KV_ACCESS_TOKEN`).
    /// Needs the `remote` feature.
    #[cfg(feature = "remote")]
    pub async fn open_remote(
        url: impl Into<String>,
        access_token: impl Into<String>,
    ) -> Result<Self, Error> {
        Ok(Kv::from_database(
            RemoteDatabase::open(url, access_token).await?,
        ))
    }

    /// Connects to a KV Connect server with a full configuration. Needs the `remote` feature.
    #[cfg(feature = "remote")]
    pub async fn open_remote_with(config: RemoteConfig) -> Result<Self, Error> {
        Ok(Kv::from_database(RemoteDatabase::open_with(config).await?))
    }

    /// The underlying database.
    pub fn database(&self) -> &Arc<dyn Database> {
        &self.db
    }

    /// Reads one key (strong consistency).
    pub async fn get(&self, key: &Key) -> Result<EntryMaybe, Error> {
        self.get_with(key, Consistency::Strong).await
    }

    /// Reads one key with the given consistency.
    pub async fn get_with(&self, key: &Key, consistency: Consistency) -> Result<EntryMaybe, Error> {
        let mut out = self
            .get_many_with(std::slice::from_ref(key), consistency)
            .await?;
        out.pop()
            .ok_or_else(|| Error::InvalidArgument("the database returned no result".into()))
    }

    /// Reads several keys from one snapshot (at most 10, like Deno).
    pub async fn get_many(&self, keys: &[Key]) -> Result<Vec<EntryMaybe>, Error> {
        self.get_many_with(keys, Consistency::Strong).await
    }

    /// [`get_many`](Self::get_many) with the given consistency.
    pub async fn get_many_with(
        &self,
        keys: &[Key],
        consistency: Consistency,
    ) -> Result<Vec<EntryMaybe>, Error> {
        let ranges = keys
            .iter()
            .map(|k| Ok(ReadRange::single(&k.encode()?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let results = self.db.snapshot_read(ranges, consistency).await?;
        if results.len() != keys.len() {
            return Err(Error::InvalidArgument(format!(
                "the database returned {} results for {} keys",
                results.len(),
                keys.len()
            )));
        }
        Ok(keys
            .iter()
            .zip(results)
            .map(|(k, mut r)| match r.pop() {
                Some(e) => EntryMaybe::present(k.clone(), e),
                None => EntryMaybe::absent(k.clone()),
            })
            .collect())
    }

    /// Stores a value; returns the commit's versionstamp.
    pub async fn set(&self, key: &Key, value: impl Into<Value>) -> Result<Versionstamp, Error> {
        self.atomic().set(key, value).commit_ok().await
    }

    /// Stores a value that expires after `expire_in`.
    pub async fn set_with_expiry(
        &self,
        key: &Key,
        value: impl Into<Value>,
        expire_in: Duration,
    ) -> Result<Versionstamp, Error> {
        self.atomic()
            .set_with_expiry(key, value, expire_in)
            .commit_ok()
            .await
    }

    /// Deletes a key (no error if absent); returns the commit's versionstamp.
    pub async fn delete(&self, key: &Key) -> Result<Versionstamp, Error> {
        self.atomic().delete(key).commit_ok().await
    }

    /// Lists entries; see [`ListIterator`].
    pub fn list(&self, selector: Selector, options: ListOptions) -> Result<ListIterator, Error> {
        ListIterator::new(self.db.clone(), &selector, options)
    }

    /// Starts an atomic operation.
    pub fn atomic(&self) -> AtomicOperation {
        AtomicOperation {
            db: self.db.clone(),
            write: AtomicWrite::default(),
            error: None,
        }
    }

    /// Sends a queue message; returns the commit's versionstamp.
    pub async fn enqueue(
        &self,
        value: impl Into<Value>,
        options: EnqueueOptions,
    ) -> Result<Versionstamp, Error> {
        self.atomic().enqueue(value, options).commit_ok().await
    }

    /// Watches up to 10 keys. The stream yields the current entries of all keys at once: first
    /// immediately, then whenever at least one versionstamp changed.
    pub async fn watch(&self, keys: &[Key]) -> Result<EntriesStream, Error> {
        let encoded = keys
            .iter()
            .map(|k| k.encode())
            .collect::<Result<Vec<_>, _>>()?;
        let inner = self.db.watch(encoded).await?;
        let current: Vec<EntryMaybe> = keys.iter().cloned().map(EntryMaybe::absent).collect();
        let stream = futures::stream::unfold(
            (inner, current, true),
            |(mut inner, mut current, first)| async move {
                loop {
                    let outputs = match inner.next().await? {
                        Ok(o) => o,
                        Err(e) => return Some((Err(Error::from(e)), (inner, current, first))),
                    };
                    let mut changed = false;
                    for (slot, out) in current.iter_mut().zip(outputs) {
                        if let WatchKeyOutput::Changed(entry) = out {
                            let next = match entry {
                                Some(e) => EntryMaybe::present(slot.key.clone(), e),
                                None => EntryMaybe::absent(slot.key.clone()),
                            };
                            if next.versionstamp != slot.versionstamp {
                                changed = true;
                            }
                            *slot = next;
                        }
                    }
                    if first || changed {
                        return Some((Ok(current.clone()), (inner, current, false)));
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    /// Closes the database.
    pub async fn close(&self) -> Result<(), Error> {
        Ok(self.db.close().await?)
    }
}

/// An atomic operation under construction (Deno's `AtomicOperation`): checks, mutations and
/// enqueues committed together or not at all.
#[must_use = "an atomic operation does nothing until committed"]
pub struct AtomicOperation {
    db: Arc<dyn Database>,
    write: AtomicWrite,
    /// The first key or argument error, reported by `commit`.
    error: Option<Error>,
}

impl std::fmt::Debug for AtomicOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicOperation")
            .field("write", &self.write)
            .field("error", &self.error)
            .finish()
    }
}

impl AtomicOperation {
    fn encode(&mut self, key: &Key) -> Option<Vec<u8>> {
        match key.encode() {
            Ok(k) => Some(k),
            Err(e) => {
                self.error.get_or_insert(e.into());
                None
            }
        }
    }

    fn fail(&mut self, msg: String) {
        self.error.get_or_insert(Error::InvalidArgument(msg));
    }

    fn mutate(mut self, key: &Key, kind: MutationKind, expire_at_ms: Option<u64>) -> Self {
        if let Some(key) = self.encode(key) {
            self.write.mutations.push(Mutation {
                key,
                kind,
                expire_at_ms,
            });
        }
        self
    }

    /// Requires `key`'s current versionstamp to be `versionstamp` (`None`: the key must be
    /// absent).
    pub fn check(mut self, key: &Key, versionstamp: Option<Versionstamp>) -> Self {
        if let Some(key) = self.encode(key) {
            self.write.checks.push(Check { key, versionstamp });
        }
        self
    }

    /// Stores a value.
    pub fn set(self, key: &Key, value: impl Into<Value>) -> Self {
        let v = value.into().to_kv_value();
        self.mutate(key, MutationKind::Set(v), None)
    }

    /// Stores a value that expires after `expire_in`.
    pub fn set_with_expiry(self, key: &Key, value: impl Into<Value>, expire_in: Duration) -> Self {
        let v = value.into().to_kv_value();
        let at = now_ms().saturating_add(duration_ms(expire_in)).max(1);
        self.mutate(key, MutationKind::Set(v), Some(at))
    }

    /// Deletes a key.
    pub fn delete(self, key: &Key) -> Self {
        self.mutate(key, MutationKind::Delete, None)
    }

    /// Adds `value` to the stored value: wrapping for `U64`; exact for V8 numbers/bigints.
    /// An absent key is set to `value`.
    pub fn sum(self, key: &Key, value: impl Into<Value>) -> Self {
        self.sum_with(key, value, SumOptions::default())
    }

    /// [`sum`](Self::sum) with bounds for V8 numbers/bigints.
    pub fn sum_with(mut self, key: &Key, value: impl Into<Value>, options: SumOptions) -> Self {
        let mut bound = |b: Option<Value>, what: &str| match b {
            None => None,
            Some(v @ (Value::Number(_) | Value::BigInt(_))) => v.to_v8_bytes(),
            Some(other) => {
                self.fail(format!(
                    "the sum {what} bound must be a Number or BigInt, got {other:?}"
                ));
                None
            }
        };
        let min = bound(options.min, "min");
        let max = bound(options.max, "max");
        let kind = MutationKind::Sum {
            value: value.into().to_kv_value(),
            min,
            max,
            clamp: options.clamp,
        };
        self.mutate(key, kind, None)
    }

    /// Keeps the smaller of the stored and given value (a `U64`).
    pub fn min(self, key: &Key, value: impl Into<Value>) -> Self {
        let v = value.into().to_kv_value();
        self.mutate(key, MutationKind::Min(v), None)
    }

    /// Keeps the larger of the stored and given value (a `U64`).
    pub fn max(self, key: &Key, value: impl Into<Value>) -> Self {
        let v = value.into().to_kv_value();
        self.mutate(key, MutationKind::Max(v), None)
    }

    /// Sends a queue message with this commit. The value must be V8-serializable (a number,
    /// bigint, string, boolean, null, undefined or raw V8 bytes).
    pub fn enqueue(mut self, value: impl Into<Value>, options: EnqueueOptions) -> Self {
        let value = value.into();
        let Some(payload) = value.to_v8_bytes() else {
            self.fail(format!(
                "queue messages must be V8 values (number, bigint, string, boolean, null, undefined or raw V8 bytes), got {value:?}"
            ));
            return self;
        };
        let mut keys = Vec::with_capacity(options.keys_if_undelivered.len());
        for k in &options.keys_if_undelivered {
            match self.encode(k) {
                Some(k) => keys.push(k),
                None => return self,
            }
        }
        self.write.enqueues.push(Enqueue {
            payload,
            deadline_ms: now_ms().saturating_add(duration_ms(options.delay)),
            keys_if_undelivered: keys,
            backoff_schedule: options.backoff_schedule,
        });
        self
    }

    /// Commits: `Committed(versionstamp)`, or `CheckFailed` if a check did not hold (nothing
    /// was applied).
    pub async fn commit(self) -> Result<CommitResult, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(self.db.atomic_write(self.write).await?)
    }

    /// Commits a write without checks, returning its versionstamp.
    async fn commit_ok(self) -> Result<Versionstamp, Error> {
        match self.commit().await? {
            CommitResult::Committed(v) => Ok(v),
            CommitResult::CheckFailed(_) => Err(Error::CheckFailed),
        }
    }
}
