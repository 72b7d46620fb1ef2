//! The workloads: key layout, seeding and one operation of each kind, every result checked.

use kv_proto::{self as wire, pb};
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::{Consistency, KvValue};
use rand::rngs::SmallRng;
use rand::Rng;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::ledger::{Ledger, Monotonic, Transfer};
use crate::link::{Link, WriteError};

/// Mutations per atomic write while seeding: far below every server's limits (1000 mutations,
/// 800 KiB of keys and values at 100-byte values).
pub const SEED_BATCH: usize = 500;
/// Bytes of keys and values in one seeding write at most (fewer keys per write for big values).
pub const SEED_BATCH_BYTES: usize = 512 * 1024;
/// Seeding writes in flight at once on the one connection (`seed` runs this many workers): the
/// server's group commit then carries several batches per fsync, and encoding overlaps I/O.
pub const SEED_IN_FLIGHT: usize = 4;

/// The most accounts the bank workload supports: an audit reads all of them in one range, and
/// servers cap a read at 1000 entries.
pub const MAX_ACCOUNTS: u64 = 1000;

/// Workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Point set: an atomic write of `--mutations` sets (default 1) on random keys of the
    /// `--keys` write keyspace, `--value-size`-byte values.
    Set,
    /// Point get: a strong read of one random seeded key (must be found, with its size).
    Get,
    /// List: every one of the first `--list-keys` seeded keys, in pages of `--page-size`
    /// (must return exactly that many).
    List,
    /// Bank transfer: read two random accounts, write both new balances with checks on both
    /// versionstamps plus a record of the transfer under a key of its own; check failures
    /// count as conflicts and are retried, a write without a definite answer is an unknown
    /// outcome (never retried). An auditor reads every account each `--audit-interval-ms`
    /// through the servers in turn and verifies the total never changes and time never goes
    /// backwards; afterwards the final state is verified against the ledger
    /// ([`crate::ledger::verify`]).
    Bank,
    /// `--read-ratio` point gets, the rest point sets.
    Mixed,
    /// Hot-key sum: `sum(KvU64(1))` on one key; afterwards the key must have grown by the number
    /// of committed sums.
    Sum,
    /// Watch streams: `--watchers` streams on `--watch-keys` keys, one writer changing
    /// `--mutations` of them every `--write-interval-ms`; measures the time from a write to each
    /// watcher's notification (see [`crate::watch`]).
    Watch,
    /// Deep queues: `--messages` enqueued with a `--delay-mix`, delivered to `--listeners`
    /// through the queue extension; measures throughput, lateness, duplicates and losses (see
    /// [`crate::queue`]).
    Queue,
}

impl Workload {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Set => "set",
            Workload::Get => "get",
            Workload::List => "list",
            Workload::Bank => "bank",
            Workload::Mixed => "mixed",
            Workload::Sum => "sum",
            Workload::Watch => "watch",
            Workload::Queue => "queue",
        }
    }

    /// Whether the workload reads the seeded keys.
    pub fn needs_seed(self) -> bool {
        matches!(self, Workload::Get | Workload::List | Workload::Mixed)
    }
}

/// `[prefix, kind, i]` for `i` in `0..len`, encoded on demand: 10 million keys held as vectors
/// took about 1.4 GB per kind and longer to build than a short workload runs.
pub struct Numbered {
    /// The encoded `[prefix, kind]`; a key is this followed by the encoded number (a tuple's
    /// encoding is its parts' encodings one after the other).
    head: Vec<u8>,
    len: u64,
}

impl Numbered {
    fn new(head: Vec<u8>, len: u64) -> Numbered {
        Numbered { head, len }
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th key, `[prefix, kind, i]` with `i` a JS number.
    pub fn key(&self, i: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(self.head.len() + 9);
        out.extend_from_slice(&self.head);
        KeyPart::Float(i as f64)
            .encode_into(&mut out)
            .map_err(|e| format!("key encoding failed: {e}"))?;
        Ok(out)
    }
}

/// Encoded keys of every workload.
pub struct Keys {
    /// `[prefix, "read", i]`, seeded.
    pub read: Numbered,
    /// The list range of the read keys: `[prefix, "read"] ‖ 00 .. ‖ ff`.
    pub read_range: (Vec<u8>, Vec<u8>),
    /// `[prefix, "write", i]`.
    pub write: Numbered,
    /// `[prefix, "sum"]`.
    pub sum: Vec<u8>,
    /// `[prefix, "bank", i]`.
    pub accounts: Vec<Vec<u8>>,
    /// The range of every account.
    pub bank_range: (Vec<u8>, Vec<u8>),
    /// `[prefix, "xfer"]`: the bank's transfer records live below, one namespace per run.
    pub records_root: Vec<u8>,
}

fn key(parts: &[KeyPart]) -> Result<Vec<u8>, String> {
    encode_key(parts).map_err(|e| format!("key encoding failed: {e}"))
}

impl Keys {
    /// Builds the keys under `prefix` (numbers are JS numbers, as a Deno program would write).
    pub fn new(prefix: &str, keys: u64, accounts: u64) -> Result<Keys, String> {
        let p = || KeyPart::from(prefix);
        let head = |kind: &str| key(&[p(), KeyPart::from(kind)]);
        let bank = Numbered::new(head("bank")?, accounts);
        Ok(Keys {
            read: Numbered::new(head("read")?, keys),
            read_range: kv_traits::key::prefix_range(&head("read")?),
            write: Numbered::new(head("write")?, keys),
            sum: key(&[p(), KeyPart::from("sum")])?,
            accounts: (0..accounts)
                .map(|i| bank.key(i))
                .collect::<Result<_, _>>()?,
            bank_range: kv_traits::key::prefix_range(&head("bank")?),
            records_root: key(&[p(), KeyPart::from("xfer")])?,
        })
    }
}

/// Everything a client task needs, shared.
pub struct Ctx {
    /// Encoded keys.
    pub keys: Keys,
    /// The value written by `set` and seeded for `get`.
    pub value: Vec<u8>,
    /// Sets per `set` write.
    pub mutations: usize,
    /// Keys per `list` operation.
    pub list_keys: u64,
    /// Entries per list page.
    pub page_size: u64,
    /// Probability of a get in `mixed`.
    pub read_ratio: f64,
    /// Starting balance of every account.
    pub initial_balance: u64,
    /// Largest amount moved by a transfer.
    pub max_transfer: u64,
    /// Conflicts after which a transfer gives up (counts as an error).
    pub max_conflicts: u64,
    /// Bank: the record keys' prefix of this run, `[prefix, "xfer", run id]`.
    pub records: Vec<u8>,
    /// Bank: number of the next transfer (its record key's last part).
    pub next_transfer: AtomicU64,
    /// Bank: what the clients were told.
    pub ledger: Mutex<Ledger>,
}

/// Why an operation failed.
#[derive(Debug)]
pub enum OpError {
    /// It failed (transport error, wrong result…); a write was certainly not applied or the
    /// workload does not care.
    Failed(String),
    /// A bank transfer's write was sent and got no definite answer: it may have been applied.
    Unknown(String),
}

impl From<String> for OpError {
    fn from(s: String) -> Self {
        OpError::Failed(s)
    }
}

impl From<&str> for OpError {
    fn from(s: &str) -> Self {
        OpError::Failed(s.to_owned())
    }
}

/// What a successful operation reports: its kind and how many conflicts it went through.
pub type Done = (&'static str, u64);

fn single(key: &[u8]) -> pb::ReadRange {
    let (start, end) = kv_traits::key::single_key_range(key);
    pb::ReadRange {
        start,
        end,
        limit: 1,
        reverse: false,
    }
}

pub(crate) fn set(key: &[u8], value: KvValue) -> pb::Mutation {
    let (encoding, data) = value.into_encoded();
    pb::Mutation {
        key: key.to_vec(),
        value: Some(pb::KvValue { data, encoding }),
        mutation_type: pb::MutationType::MSet as i32,
        ..Default::default()
    }
}

async fn read(
    ctx: &Ctx,
    link: &Link,
    ranges: Vec<pb::ReadRange>,
) -> Result<Vec<Vec<kv_traits::KvEntry>>, String> {
    let n = ranges.len();
    let _ = ctx;
    let out = link
        .snapshot_read(&pb::SnapshotRead { ranges })
        .await
        .map_err(|e| format!("snapshot_read: {e}"))?;
    wire::snapshot_read_result_from_wire(out, n, Consistency::Strong)
        .map_err(|e| format!("snapshot_read: {e}"))
}

/// Outcome of an atomic write that got an answer.
enum Write {
    Committed,
    CheckFailed,
}

async fn write(link: &Link, req: &pb::AtomicWrite) -> Result<Write, OpError> {
    let out = link.atomic_write(req).await.map_err(|e| match e {
        WriteError::NotSent(e) => OpError::Failed(format!("atomic_write not sent: {e}")),
        WriteError::Unknown(e) => OpError::Unknown(format!("atomic_write: {e}")),
    })?;
    match wire::commit_result_from_wire(out) {
        Ok(kv_traits::CommitResult::Committed(_)) => Ok(Write::Committed),
        Ok(kv_traits::CommitResult::CheckFailed(_)) => Ok(Write::CheckFailed),
        // AW_UNSPECIFIED and the like: the server does not know whether it applied the write.
        Err(e) => Err(OpError::Unknown(format!("atomic_write: {e}"))),
    }
}

pub(crate) async fn commit(link: &Link, req: &pb::AtomicWrite) -> Result<(), String> {
    let answer = write(link, req).await.map_err(|e| match e {
        OpError::Failed(m) | OpError::Unknown(m) => m,
    })?;
    match answer {
        Write::Committed => Ok(()),
        Write::CheckFailed => Err("atomic_write without checks reported a check failure".into()),
    }
}

/// Writes the `keys` read keys (idempotent), [`SEED_IN_FLIGHT`] batches at a time.
pub async fn seed(ctx: &Ctx, link: &Link) -> Result<(), String> {
    // Servers cap a request body at 1 MiB: keep a batch's keys and values under half of that.
    let n = ctx.keys.read.len();
    let per_key = ctx.value.len() + ctx.keys.read.key(0)?.len() + 16;
    let batch = (SEED_BATCH_BYTES / per_key).clamp(1, SEED_BATCH) as u64;
    let next = AtomicU64::new(0);
    let worker = || async {
        loop {
            let start = next.fetch_add(batch, Ordering::Relaxed);
            if start >= n {
                return Ok::<(), String>(());
            }
            let mutations = (start..(start + batch).min(n))
                .map(|i| {
                    Ok(set(
                        &ctx.keys.read.key(i)?,
                        KvValue::Bytes(ctx.value.clone()),
                    ))
                })
                .collect::<Result<_, String>>()?;
            commit(
                link,
                &pb::AtomicWrite {
                    mutations,
                    ..Default::default()
                },
            )
            .await?;
        }
    };
    let (a, b, c, d) = tokio::join!(worker(), worker(), worker(), worker());
    a.and(b).and(c).and(d)
}

/// Sets every account to the initial balance.
pub async fn reset_accounts(ctx: &Ctx, link: &Link) -> Result<(), String> {
    for chunk in ctx.keys.accounts.chunks(SEED_BATCH) {
        let mutations = chunk
            .iter()
            .map(|k| set(k, KvValue::U64(ctx.initial_balance)))
            .collect();
        commit(
            link,
            &pb::AtomicWrite {
                mutations,
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

/// One snapshot of every account: balances in account order and the highest versionstamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Accounts {
    /// Balance of every account.
    pub balances: Vec<u64>,
    /// The highest versionstamp among them.
    pub max_versionstamp: [u8; 10],
}

impl Accounts {
    /// The sum of the balances (wrapping, like the u64 values it adds).
    pub fn total(&self) -> u64 {
        self.balances.iter().fold(0u64, |t, b| t.wrapping_add(*b))
    }
}

/// Reads every account in one snapshot read; returns them, or why the read is wrong.
pub async fn bank_accounts(ctx: &Ctx, link: &Link) -> Result<Result<Accounts, String>, String> {
    let (start, end) = ctx.keys.bank_range.clone();
    let n = ctx.keys.accounts.len();
    let limit = i32::try_from(n).unwrap_or(i32::MAX);
    let out = read(
        ctx,
        link,
        vec![pb::ReadRange {
            start,
            end,
            limit,
            reverse: false,
        }],
    )
    .await?;
    let entries = out.into_iter().next().unwrap_or_default();
    if entries.len() != n {
        return Ok(Err(format!(
            "audit found {} accounts instead of {n}",
            entries.len()
        )));
    }
    let mut found = Accounts {
        balances: Vec::with_capacity(n),
        max_versionstamp: [0; 10],
    };
    for e in entries {
        match e.value {
            KvValue::U64(b) => found.balances.push(b),
            other => return Ok(Err(format!("account holds {other:?}, not a KvU64"))),
        }
        found.max_versionstamp = found.max_versionstamp.max(e.versionstamp.0);
    }
    Ok(Ok(found))
}

/// Reads every account and audits the total; `seen` holds the auditor's history.
pub async fn bank_total(
    ctx: &Ctx,
    link: &Link,
    seen: &mut Monotonic,
) -> Result<Result<u64, String>, String> {
    Ok(bank_accounts(ctx, link).await?.map(|a| {
        let total = a.total();
        seen.observe(link.url(), a.max_versionstamp, a.balances);
        total
    }))
}

/// Every transfer record of this run (key → value), read in pages.
pub async fn bank_records(
    ctx: &Ctx,
    link: &Link,
) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let (mut start, end) = kv_traits::key::prefix_range(&ctx.records);
    let mut out = std::collections::BTreeMap::new();
    loop {
        let range = pb::ReadRange {
            start,
            end: end.clone(),
            limit: 1000,
            reverse: false,
        };
        let page = read(ctx, link, vec![range]).await?;
        let page = page.into_iter().next().unwrap_or_default();
        let full = page.len() == 1000;
        let mut last = None;
        for e in page {
            let value = match e.value {
                KvValue::Bytes(b) => b,
                other => format!("{other:?}").into_bytes(),
            };
            last = Some(e.key.clone());
            out.insert(e.key, value);
        }
        match last {
            Some(mut k) if full => {
                k.push(0x00);
                start = k;
            }
            _ => return Ok(out),
        }
    }
}

/// The hot sum key's value (0 when absent).
pub async fn read_sum(ctx: &Ctx, link: &Link) -> Result<u64, String> {
    let out = read(ctx, link, vec![single(&ctx.keys.sum)]).await?;
    match out.first().and_then(|r| r.first()).map(|e| &e.value) {
        None => Ok(0),
        Some(KvValue::U64(n)) => Ok(*n),
        Some(other) => Err(format!("sum key holds {other:?}, not a KvU64")),
    }
}

async fn get(ctx: &Ctx, link: &Link, rng: &mut SmallRng) -> Result<Done, String> {
    let k = ctx
        .keys
        .read
        .key(rng.random_range(0..ctx.keys.read.len()))?;
    let out = read(ctx, link, vec![single(&k)]).await?;
    match out.first().and_then(|r| r.first()).map(|e| &e.value) {
        Some(KvValue::Bytes(b)) if b.len() == ctx.value.len() => Ok(("get", 0)),
        other => Err(format!(
            "get found {other:?} instead of a {}-byte value (seeded?)",
            ctx.value.len()
        )),
    }
}

async fn put(ctx: &Ctx, link: &Link, rng: &mut SmallRng) -> Result<Done, String> {
    let mutations = (0..ctx.mutations)
        .map(|_| {
            let k = ctx
                .keys
                .write
                .key(rng.random_range(0..ctx.keys.write.len()))?;
            Ok(set(&k, KvValue::Bytes(ctx.value.clone())))
        })
        .collect::<Result<_, String>>()?;
    commit(
        link,
        &pb::AtomicWrite {
            mutations,
            ..Default::default()
        },
    )
    .await?;
    Ok(("set", 0))
}

async fn list(ctx: &Ctx, link: &Link) -> Result<Done, String> {
    let (mut start, end) = ctx.keys.read_range.clone();
    let mut seen = 0u64;
    while seen < ctx.list_keys {
        let limit = (ctx.list_keys - seen).min(ctx.page_size);
        let range = pb::ReadRange {
            start,
            end: end.clone(),
            limit: i32::try_from(limit).unwrap_or(i32::MAX),
            reverse: false,
        };
        let page = read(ctx, link, vec![range]).await?;
        let page = page.into_iter().next().unwrap_or_default();
        seen += page.len() as u64;
        match page.last() {
            Some(last) if page.len() as u64 == limit => {
                start = last.key.clone();
                start.push(0x00);
            }
            _ => {
                return Err(format!(
                    "list found {seen} entries instead of {} (seeded?)",
                    ctx.list_keys
                ))
            }
        }
    }
    Ok(("list", 0))
}

async fn sum(ctx: &Ctx, link: &Link) -> Result<Done, String> {
    let m = pb::Mutation {
        key: ctx.keys.sum.clone(),
        value: Some(pb::KvValue {
            data: 1u64.to_le_bytes().to_vec(),
            encoding: pb::ValueEncoding::VeLe64 as i32,
        }),
        mutation_type: pb::MutationType::MSum as i32,
        ..Default::default()
    };
    commit(
        link,
        &pb::AtomicWrite {
            mutations: vec![m],
            ..Default::default()
        },
    )
    .await?;
    Ok(("sum", 0))
}

fn balance(entries: &[kv_traits::KvEntry]) -> Result<(u64, Vec<u8>), String> {
    match entries.first() {
        Some(e) => match e.value {
            KvValue::U64(b) => Ok((b, e.versionstamp.0.to_vec())),
            ref other => Err(format!("account holds {other:?}, not a KvU64")),
        },
        None => Err("account missing (reset failed?)".into()),
    }
}

async fn transfer(ctx: &Ctx, link: &Link, rng: &mut SmallRng) -> Result<Done, OpError> {
    let n = ctx.keys.accounts.len();
    let a = rng.random_range(0..n);
    let b = (a + rng.random_range(1..n)) % n;
    let (ka, kb) = (&ctx.keys.accounts[a], &ctx.keys.accounts[b]);
    let number = ctx.next_transfer.fetch_add(1, Ordering::Relaxed);
    let record = key_with(&ctx.records, &[KeyPart::Float(number as f64)])?;
    let mut conflicts = 0;
    loop {
        let out = read(ctx, link, vec![single(ka), single(kb)]).await?;
        let (bal_a, vs_a) = balance(out.first().map_or(&[], Vec::as_slice))?;
        let (bal_b, vs_b) = balance(out.get(1).map_or(&[], Vec::as_slice))?;
        let amount = rng.random_range(1..=ctx.max_transfer).min(bal_a);
        let new_b = bal_b
            .checked_add(amount)
            .ok_or("balance overflow: the total grew (serializability bug)")?;
        let t = Transfer {
            from: a as u64,
            to: b as u64,
            amount,
        };
        let req = pb::AtomicWrite {
            checks: vec![
                pb::Check {
                    key: ka.clone(),
                    versionstamp: vs_a,
                },
                pb::Check {
                    key: kb.clone(),
                    versionstamp: vs_b,
                },
            ],
            mutations: vec![
                set(ka, KvValue::U64(bal_a - amount)),
                set(kb, KvValue::U64(new_b)),
                set(&record, KvValue::Bytes(t.encode())),
            ],
            enqueues: vec![],
        };
        let answer = write(link, &req).await;
        let mut ledger = match ctx.ledger.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        match answer {
            Ok(Write::Committed) => {
                ledger.acked.insert(record, t);
                return Ok(("transfer", conflicts));
            }
            Err(OpError::Unknown(e)) => {
                ledger.unknown.insert(record, t);
                return Err(OpError::Unknown(e));
            }
            Err(e) => return Err(e),
            Ok(Write::CheckFailed) => {
                conflicts += 1;
                if conflicts >= ctx.max_conflicts {
                    return Err(format!("transfer gave up after {conflicts} conflicts").into());
                }
            }
        }
    }
}

/// `prefix` (an encoded key) followed by `parts`.
pub fn key_with(prefix: &[u8], parts: &[KeyPart]) -> Result<Vec<u8>, String> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(&key(parts)?);
    Ok(out)
}

/// Runs one operation of `workload`.
pub async fn op(
    workload: Workload,
    ctx: &Ctx,
    link: &Link,
    rng: &mut SmallRng,
) -> Result<Done, OpError> {
    let plain = match workload {
        Workload::Bank => return transfer(ctx, link, rng).await,
        Workload::Set => put(ctx, link, rng).await,
        Workload::Get => get(ctx, link, rng).await,
        Workload::List => list(ctx, link).await,
        Workload::Sum => sum(ctx, link).await,
        Workload::Watch | Workload::Queue => {
            Err("the watch and queue workloads are not made of operations".into())
        }
        Workload::Mixed => {
            if rng.random_bool(ctx.read_ratio) {
                get(ctx, link, rng).await
            } else {
                put(ctx, link, rng).await
            }
        }
    };
    plain.map_err(OpError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_keys_are_the_encoded_tuples() {
        let keys = Keys::new("pfx", 1000, 3).unwrap();
        assert_eq!(keys.read.len(), 1000);
        for i in [0u64, 1, 7, 999, 1 << 40] {
            let whole = encode_key(&[
                KeyPart::from("pfx"),
                KeyPart::from("read"),
                KeyPart::Float(i as f64),
            ])
            .unwrap();
            assert_eq!(keys.read.key(i).unwrap(), whole);
        }
        let (start, end) = &keys.read_range;
        let k = keys.read.key(5).unwrap();
        assert!(start <= &k && &k < end);
        assert_ne!(keys.write.key(5).unwrap(), k);
        assert_eq!(keys.accounts.len(), 3);
    }
}
