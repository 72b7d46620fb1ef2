//! The workloads: key layout, seeding and one operation of each kind, every result checked.

use kv_proto::{self as wire, pb};
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::{Consistency, KvValue};
use rand::rngs::SmallRng;
use rand::Rng;

use crate::client::{Connection, Endpoint};

/// Mutations per atomic write while seeding: far below every server's limits (1000 mutations,
/// 800 KiB of keys and values at 100-byte values).
pub const SEED_BATCH: usize = 500;

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
    /// versionstamps; check failures count as conflicts and are retried. An auditor reads every
    /// account each `--audit-interval-ms` and verifies the total never changes.
    Bank,
    /// `--read-ratio` point gets, the rest point sets.
    Mixed,
    /// Hot-key sum: `sum(KvU64(1))` on one key; afterwards the key must have grown by the number
    /// of committed sums.
    Sum,
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
        }
    }

    /// Whether the workload reads the seeded keys.
    pub fn needs_seed(self) -> bool {
        matches!(self, Workload::Get | Workload::List | Workload::Mixed)
    }
}

/// Encoded keys of every workload, computed once.
pub struct Keys {
    /// `[prefix, "read", i]`, seeded.
    pub read: Vec<Vec<u8>>,
    /// The list range of the read keys: `[prefix, "read"] ‖ 00 .. ‖ ff`.
    pub read_range: (Vec<u8>, Vec<u8>),
    /// `[prefix, "write", i]`.
    pub write: Vec<Vec<u8>>,
    /// `[prefix, "sum"]`.
    pub sum: Vec<u8>,
    /// `[prefix, "bank", i]`.
    pub accounts: Vec<Vec<u8>>,
    /// The range of every account.
    pub bank_range: (Vec<u8>, Vec<u8>),
}

fn key(parts: &[KeyPart]) -> Result<Vec<u8>, String> {
    encode_key(parts).map_err(|e| format!("key encoding failed: {e}"))
}

impl Keys {
    /// Builds the keys under `prefix` (numbers are JS numbers, as a Deno program would write).
    pub fn new(prefix: &str, keys: u64, accounts: u64) -> Result<Keys, String> {
        let p = || KeyPart::from(prefix);
        let numbered = |kind: &str, n: u64| -> Result<Vec<Vec<u8>>, String> {
            (0..n)
                .map(|i| key(&[p(), KeyPart::from(kind), KeyPart::Float(i as f64)]))
                .collect()
        };
        Ok(Keys {
            read: numbered("read", keys)?,
            read_range: kv_traits::key::prefix_range(&key(&[p(), KeyPart::from("read")])?),
            write: numbered("write", keys)?,
            sum: key(&[p(), KeyPart::from("sum")])?,
            accounts: numbered("bank", accounts)?,
            bank_range: kv_traits::key::prefix_range(&key(&[p(), KeyPart::from("bank")])?),
        })
    }
}

/// Everything a client task needs, shared.
pub struct Ctx {
    /// The data-path endpoint.
    pub endpoint: std::sync::Arc<Endpoint>,
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

fn set(key: &[u8], value: KvValue) -> pb::Mutation {
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
    conn: &Connection,
    ranges: Vec<pb::ReadRange>,
) -> Result<Vec<Vec<kv_traits::KvEntry>>, String> {
    let n = ranges.len();
    let out = conn
        .snapshot_read(&ctx.endpoint, &pb::SnapshotRead { ranges })
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

async fn write(ctx: &Ctx, conn: &Connection, req: &pb::AtomicWrite) -> Result<Write, String> {
    let out = conn
        .atomic_write(&ctx.endpoint, req)
        .await
        .map_err(|e| format!("atomic_write: {e}"))?;
    match wire::commit_result_from_wire(out) {
        Ok(kv_traits::CommitResult::Committed(_)) => Ok(Write::Committed),
        Ok(kv_traits::CommitResult::CheckFailed(_)) => Ok(Write::CheckFailed),
        Err(e) => Err(format!("atomic_write: {e}")),
    }
}

async fn commit(ctx: &Ctx, conn: &Connection, req: &pb::AtomicWrite) -> Result<(), String> {
    match write(ctx, conn, req).await? {
        Write::Committed => Ok(()),
        Write::CheckFailed => Err("atomic_write without checks reported a check failure".into()),
    }
}

/// Writes the `keys` read keys (idempotent).
pub async fn seed(ctx: &Ctx, conn: &Connection) -> Result<(), String> {
    for chunk in ctx.keys.read.chunks(SEED_BATCH) {
        let mutations = chunk
            .iter()
            .map(|k| set(k, KvValue::Bytes(ctx.value.clone())))
            .collect();
        commit(
            ctx,
            conn,
            &pb::AtomicWrite {
                mutations,
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

/// Sets every account to the initial balance.
pub async fn reset_accounts(ctx: &Ctx, conn: &Connection) -> Result<(), String> {
    for chunk in ctx.keys.accounts.chunks(SEED_BATCH) {
        let mutations = chunk
            .iter()
            .map(|k| set(k, KvValue::U64(ctx.initial_balance)))
            .collect();
        commit(
            ctx,
            conn,
            &pb::AtomicWrite {
                mutations,
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

/// Reads every account in one snapshot read; returns the total, or why the read is wrong.
pub async fn bank_total(ctx: &Ctx, conn: &Connection) -> Result<Result<u64, String>, String> {
    let (start, end) = ctx.keys.bank_range.clone();
    let n = ctx.keys.accounts.len();
    let limit = i32::try_from(n).unwrap_or(i32::MAX);
    let out = read(
        ctx,
        conn,
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
    let mut total = 0u64;
    for e in entries {
        match e.value {
            KvValue::U64(b) => total = total.wrapping_add(b),
            other => return Ok(Err(format!("account holds {other:?}, not a KvU64"))),
        }
    }
    Ok(Ok(total))
}

/// The hot sum key's value (0 when absent).
pub async fn read_sum(ctx: &Ctx, conn: &Connection) -> Result<u64, String> {
    let out = read(ctx, conn, vec![single(&ctx.keys.sum)]).await?;
    match out.first().and_then(|r| r.first()).map(|e| &e.value) {
        None => Ok(0),
        Some(KvValue::U64(n)) => Ok(*n),
        Some(other) => Err(format!("sum key holds {other:?}, not a KvU64")),
    }
}

async fn get(ctx: &Ctx, conn: &Connection, rng: &mut SmallRng) -> Result<Done, String> {
    let k = &ctx.keys.read[rng.random_range(0..ctx.keys.read.len())];
    let out = read(ctx, conn, vec![single(k)]).await?;
    match out.first().and_then(|r| r.first()).map(|e| &e.value) {
        Some(KvValue::Bytes(b)) if b.len() == ctx.value.len() => Ok(("get", 0)),
        other => Err(format!(
            "get found {other:?} instead of a {}-byte value (seeded?)",
            ctx.value.len()
        )),
    }
}

async fn put(ctx: &Ctx, conn: &Connection, rng: &mut SmallRng) -> Result<Done, String> {
    let mutations = (0..ctx.mutations)
        .map(|_| {
            let k = &ctx.keys.write[rng.random_range(0..ctx.keys.write.len())];
            set(k, KvValue::Bytes(ctx.value.clone()))
        })
        .collect();
    commit(
        ctx,
        conn,
        &pb::AtomicWrite {
            mutations,
            ..Default::default()
        },
    )
    .await?;
    Ok(("set", 0))
}

async fn list(ctx: &Ctx, conn: &Connection) -> Result<Done, String> {
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
        let page = read(ctx, conn, vec![range]).await?;
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

async fn sum(ctx: &Ctx, conn: &Connection) -> Result<Done, String> {
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
        ctx,
        conn,
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

async fn transfer(ctx: &Ctx, conn: &Connection, rng: &mut SmallRng) -> Result<Done, String> {
    let n = ctx.keys.accounts.len();
    let a = rng.random_range(0..n);
    let b = (a + rng.random_range(1..n)) % n;
    let (ka, kb) = (&ctx.keys.accounts[a], &ctx.keys.accounts[b]);
    let mut conflicts = 0;
    loop {
        let out = read(ctx, conn, vec![single(ka), single(kb)]).await?;
        let (bal_a, vs_a) = balance(out.first().map_or(&[], Vec::as_slice))?;
        let (bal_b, vs_b) = balance(out.get(1).map_or(&[], Vec::as_slice))?;
        let amount = rng.random_range(1..=ctx.max_transfer).min(bal_a);
        let new_b = bal_b
            .checked_add(amount)
            .ok_or("balance overflow: the total grew (serializability bug)")?;
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
            ],
            enqueues: vec![],
        };
        match write(ctx, conn, &req).await? {
            Write::Committed => return Ok(("transfer", conflicts)),
            Write::CheckFailed => {
                conflicts += 1;
                if conflicts >= ctx.max_conflicts {
                    return Err(format!("transfer gave up after {conflicts} conflicts"));
                }
            }
        }
    }
}

/// Runs one operation of `workload`.
pub async fn op(
    workload: Workload,
    ctx: &Ctx,
    conn: &Connection,
    rng: &mut SmallRng,
) -> Result<Done, String> {
    match workload {
        Workload::Set => put(ctx, conn, rng).await,
        Workload::Get => get(ctx, conn, rng).await,
        Workload::List => list(ctx, conn).await,
        Workload::Bank => transfer(ctx, conn, rng).await,
        Workload::Sum => sum(ctx, conn).await,
        Workload::Mixed => {
            if rng.random_bool(ctx.read_ratio) {
                get(ctx, conn, rng).await
            } else {
                put(ctx, conn, rng).await
            }
        }
    }
}
