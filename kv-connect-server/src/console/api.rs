//! The console's JSON API handlers (the routes of [`super`]'s table), over the generic
//! [`Database`].
//!
//! # Contract
//!
//! - `list`: entries under a typed-part prefix, in key order, `limit` (1..=500, default 50) per
//!   page; `cursor` is the hex of the last key of the previous page (the next page starts right
//!   after it) and is `null` on the last page. A cursor outside the prefix is a 400.
//! - `get`: the entry at a key, or 404 `{"error"}` when absent.
//! - `set` / `delete`: one atomic write with a check that the key still has the versionstamp
//!   the caller read (`null`: the key must be absent), so a concurrent change is never
//!   overwritten: on a failed check nothing is written and the answer is 409
//!   `{"error", "conflict": true, "current": <entry or null>}`.
//! - Every entry is `{key, key_hex, versionstamp, encoding, size, tree, notation}` (`get`) or
//!   `{key, key_hex, versionstamp, encoding, size, summary}` (`list`), where `key` is the typed
//!   parts of [`super::keys`] (`null` if the key does not decode) and `encoding` is `v8`,
//!   `bytes` or `u64`.

use http::{Response, StatusCode};
use kv_traits::{
    AtomicWrite, Check, CommitResult, Consistency, Database, KvEntry, KvValue, Mutation, ReadRange,
    Versionstamp,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::guard::json_response;
use super::keys::{self, PartJson};
use super::values;
use super::{ConsoleConfig, ConsoleReport};
use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::registry::DatabaseInfo;
use crate::state::AppState;

/// Default and largest page size of `list`.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// Body of `list`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListRequest {
    #[serde(default)]
    prefix: Vec<PartJson>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Body of `get` and `watch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRequest {
    pub key: Vec<PartJson>,
}

/// Body of `set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetRequest {
    key: Vec<PartJson>,
    value: Value,
    /// The versionstamp read; `None` (or missing): the key must be absent.
    #[serde(default)]
    versionstamp: Option<String>,
}

/// Body of `delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteRequest {
    key: Vec<PartJson>,
    versionstamp: String,
}

/// The JSON of a stored entry; `full` adds the tree and the edit notation, else a summary.
pub(super) fn entry_json(entry: &KvEntry, full: bool) -> Value {
    let encoding = match entry.value {
        KvValue::V8(_) => "v8",
        KvValue::Bytes(_) => "bytes",
        KvValue::U64(_) => "u64",
    };
    let tree = values::tree(&entry.value);
    let mut out = json!({
        "key": keys::to_json(&entry.key),
        "key_hex": hex::encode(&entry.key),
        "versionstamp": entry.versionstamp.to_string(),
        "encoding": encoding,
        "size": entry.value.encoded_len(),
    });
    if full {
        out["notation"] = values::notation(&entry.value);
        out["tree"] = tree;
    } else {
        out["summary"] = Value::String(values::summary(&tree));
    }
    out
}

/// Reads the entry at `key` (strong).
pub(super) async fn read_entry<D: Database>(
    db: &D,
    key: &[u8],
) -> Result<Option<KvEntry>, ApiError> {
    let mut ranges = db
        .snapshot_read(vec![ReadRange::single(key)], Consistency::Strong)
        .await?;
    Ok(ranges.pop().and_then(|mut r| r.pop()))
}

fn ok(value: &Value) -> Result<Response<ResponseBody>, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

/// `GET /console/api/databases`: `None` on a single-database server, else the databases the
/// caller may see.
pub(super) fn databases(seen: Option<&[DatabaseInfo]>) -> Response<ResponseBody> {
    let out = match seen {
        None => json!({ "many": false }),
        Some(list) => json!({ "many": true, "databases": list }),
    };
    json_response(StatusCode::OK, &out)
}

/// The queue section of `status` (module contract of [`super`]): the counters, or the scan
/// report where they are not exact, with the dead letters from the counters either way.
async fn queue_counts<D: Database>(state: &AppState<D>, config: &ConsoleConfig) -> Value {
    let counters = state.db.stats().map(|s| s.queue);
    let mut out = match (&config.queues, &counters) {
        (Some(scan), _) => match scan().await {
            Ok(v) => v,
            Err(e) => return json!({ "error": e }),
        },
        (None, Some(q)) => json!({ "waiting": q.ready, "leased": q.leased }),
        (None, None) => return Value::Null,
    };
    if let (Some(q), Some(map)) = (&counters, out.as_object_mut()) {
        map.insert("dead_lettered".into(), json!(q.dead_lettered_total));
        map.insert("dropped".into(), json!(q.dropped_total));
        let source = match (&config.queues, config.shared_store) {
            (Some(_), _) => "scan; dead letters: this server's counters since opening",
            (None, true) => "this server's counters since opening (not other servers')",
            (None, false) => "counters since the database was opened",
        };
        map.insert("source".into(), json!(source));
    }
    out
}

/// `GET /console/api/status`; `backup` tells whether the database ships a backup.
pub(super) async fn status<D: Database>(
    state: &AppState<D>,
    config: &ConsoleConfig,
    backup: bool,
) -> Response<ResponseBody> {
    let mut health = serde_json::Map::new();
    if let Some(report) = &state.health_report {
        for line in report().lines() {
            if let Some((k, v)) = line.split_once(':') {
                health.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
        }
    }
    let queues = queue_counts(state, config).await;
    let l = state.db.limits();
    let out = json!({
        "ok": true,
        "database": state.database.as_ref().map(|d| d.as_str()),
        "database_id": state.database_id.to_string(),
        "health": health,
        "replica": state.replica.as_ref().map(|r| json!({
            "source": r.source,
            "primary_data_url": r.primary_data_url,
        })),
        "backup": backup,
        "queues": queues,
        "limits": {
            "max_write_key_size": l.max_write_key_size,
            "max_value_size": l.max_value_size,
            "max_read_entries": l.max_read_entries,
            "max_total_mutation_size": l.max_total_mutation_size,
        },
    });
    json_response(StatusCode::OK, &out)
}

/// `GET /console/api/backup`.
pub(super) async fn backup(
    report: Option<&ConsoleReport>,
) -> Result<Response<ResponseBody>, ApiError> {
    match report {
        Some(f) => match f().await {
            Ok(v) => ok(&json!({ "enabled": true, "backup": v })),
            Err(e) => ok(&json!({ "enabled": true, "error": e })),
        },
        None => ok(&json!({ "enabled": false })),
    }
}

/// `POST /console/api/list`.
pub(super) async fn list<D: Database>(
    state: &AppState<D>,
    req: ListRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let prefix = keys::from_json(&req.prefix)?;
    let limit = req.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE} (got {limit})."
        )));
    }
    let mut range = ReadRange::prefix(&prefix, limit);
    if let Some(cursor) = &req.cursor {
        let last =
            hex::decode(cursor).map_err(|_| ApiError::bad_request("The cursor is not hex."))?;
        if !last.starts_with(&prefix) || last.len() <= prefix.len() {
            return Err(ApiError::bad_request(
                "The cursor does not belong to this prefix; list again from the start.",
            ));
        }
        let mut start = last;
        start.push(0);
        range.start = start;
    }
    let mut out = state
        .db
        .snapshot_read(vec![range], Consistency::Strong)
        .await?;
    let entries = out.pop().unwrap_or_default();
    let cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| hex::encode(&e.key)))
        .flatten();
    ok(&json!({
        "prefix_hex": hex::encode(&prefix),
        "entries": entries.iter().map(|e| entry_json(e, false)).collect::<Vec<_>>(),
        "cursor": cursor,
    }))
}

/// `POST /console/api/get`.
pub(super) async fn get<D: Database>(
    state: &AppState<D>,
    req: KeyRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let key = keys::from_json(&req.key)?;
    match read_entry(&*state.db, &key).await? {
        Some(entry) => ok(&entry_json(&entry, true)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No entry at this key.",
        )),
    }
}

fn parse_versionstamp(text: &str) -> Result<Versionstamp, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(format!("The versionstamp {text:?} is not 20 hex digits."))
    })
}

/// Writes `mutation` if `key` still has `expected` (module contract).
async fn checked_write<D: Database>(
    state: &AppState<D>,
    key: Vec<u8>,
    expected: Option<Versionstamp>,
    mutation: Mutation,
) -> Result<Response<ResponseBody>, ApiError> {
    let write = AtomicWrite {
        checks: vec![Check {
            key: key.clone(),
            versionstamp: expected,
        }],
        mutations: vec![mutation],
        enqueues: Vec::new(),
    };
    match state.db.atomic_write(write).await? {
        CommitResult::Committed(vs) => ok(&json!({ "versionstamp": vs.to_string() })),
        CommitResult::CheckFailed(_) => {
            let current = read_entry(&*state.db, &key).await?;
            let now = match &current {
                Some(e) => format!("it now has versionstamp {}", e.versionstamp),
                None => "it has been deleted".to_string(),
            };
            let expected = match expected {
                Some(vs) => format!("versionstamp {vs}"),
                None => "no entry".to_string(),
            };
            let body = json!({
                "error": format!(
                    "Conflict: the entry changed since it was read (expected {expected}; {now}). Nothing was written."
                ),
                "conflict": true,
                "current": current.as_ref().map(|e| entry_json(e, true)),
            });
            Ok(json_response(StatusCode::CONFLICT, &body))
        }
    }
}

/// `POST /console/api/set`.
pub(super) async fn set<D: Database>(
    state: &AppState<D>,
    req: SetRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let key = keys::from_json(&req.key)?;
    if key.is_empty() {
        return Err(ApiError::bad_request("The key needs at least one part."));
    }
    let expected = req
        .versionstamp
        .as_deref()
        .map(parse_versionstamp)
        .transpose()?;
    let value = values::from_notation(&req.value)?;
    checked_write(state, key.clone(), expected, Mutation::set(key, value)).await
}

/// `POST /console/api/delete`.
pub(super) async fn delete<D: Database>(
    state: &AppState<D>,
    req: DeleteRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let key = keys::from_json(&req.key)?;
    let expected = parse_versionstamp(&req.versionstamp)?;
    checked_write(state, key.clone(), Some(expected), Mutation::delete(key)).await
}
