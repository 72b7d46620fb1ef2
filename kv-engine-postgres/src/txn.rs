//! The read and write transactions.
//!
//! - [`PgReadTxn`]: a `REPEATABLE READ READ ONLY` transaction on a pooled connection; its
//!   snapshot is taken when it begins. Dropping it rolls it back (see `conn.rs`).
//! - [`PgWriteTxn`]: a `READ COMMITTED` transaction holding the store's advisory lock, so write
//!   transactions of all processes are serialized and each sees every earlier commit. Puts and
//!   deletes are buffered in memory (reads see them first, scans merge them, see `merge.rs`) and
//!   sent at commit in one statement: a multi-row upsert from `unnest`, one `DELETE ... = ANY`,
//!   and the insert of the transaction's outcome id; then `COMMIT`. A lost `COMMIT` is resolved
//!   (see `outcome.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use kv_traits::{BackendError, KvPair, ReadTxn, WriteTxn};

use crate::backend::{outcome_result, Shared};
use crate::conn::Conn;
use crate::error::{is_connection_error, pg_err};
use crate::merge::{self, Overlay};
use crate::outcome;

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

async fn db_get(conn: &Conn, shared: &Shared, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
    let client = conn.client()?;
    let stmt = client
        .prepare_cached(&shared.names.get)
        .await
        .map_err(|e| pg_err("reading a key", e))?;
    let row = client
        .query_opt(&stmt, &[&key])
        .await
        .map_err(|e| pg_err("reading a key", e))?;
    Ok(row.map(|r| r.get(0)))
}

async fn db_scan(
    conn: &Conn,
    shared: &Shared,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Result<Vec<KvPair>, BackendError> {
    if start >= end || limit == 0 {
        return Ok(Vec::new());
    }
    let client = conn.client()?;
    let sql = if reverse {
        &shared.names.scan_desc
    } else {
        &shared.names.scan_asc
    };
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| pg_err("scanning a range", e))?;
    let rows = client
        .query(&stmt, &[&start, &end, &sql_limit(limit)])
        .await
        .map_err(|e| pg_err("scanning a range", e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A snapshot read transaction.
pub(crate) struct PgReadTxn {
    conn: Conn,
    shared: Arc<Shared>,
}

impl PgReadTxn {
    pub fn new(conn: Conn, shared: Arc<Shared>) -> Self {
        PgReadTxn { conn, shared }
    }
}

#[async_trait]
impl ReadTxn for PgReadTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        db_get(&self.conn, &self.shared, key).await
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        db_scan(&self.conn, &self.shared, start, end, limit, reverse).await
    }
}

/// The write transaction.
pub(crate) struct PgWriteTxn {
    conn: Conn,
    shared: Arc<Shared>,
    overlay: Overlay,
}

impl PgWriteTxn {
    pub fn new(conn: Conn, shared: Arc<Shared>) -> Self {
        PgWriteTxn {
            conn,
            shared,
            overlay: Overlay::new(),
        }
    }
}

#[async_trait]
impl ReadTxn for PgWriteTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        db_get(&self.conn, &self.shared, key).await
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let fetch = merge::db_limit(&self.overlay, start, end, limit);
        let rows = db_scan(&self.conn, &self.shared, start, end, fetch, reverse).await?;
        Ok(merge::merge(
            &self.overlay,
            rows,
            fetch,
            start,
            end,
            limit,
            reverse,
        ))
    }
}

#[async_trait]
impl WriteTxn for PgWriteTxn {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.overlay.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        self.overlay.insert(key.to_vec(), None);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), BackendError> {
        let PgWriteTxn {
            mut conn,
            shared,
            overlay,
        } = *self;
        if overlay.is_empty() {
            // Nothing to write: ending the transaction either way leaves the store as it was.
            return Ok(()); // `conn` rolls back when dropped
        }
        let mut put_keys: Vec<&[u8]> = Vec::new();
        let mut put_values: Vec<&[u8]> = Vec::new();
        let mut deletes: Vec<&[u8]> = Vec::new();
        for (k, v) in &overlay {
            match v {
                Some(v) => {
                    put_keys.push(k);
                    put_values.push(v);
                }
                None => deletes.push(k),
            }
        }
        let id: [u8; 16] = rand::random();
        let id_ref: &[u8] = &id;
        let purge = shared.commits.fetch_add(1, Ordering::Relaxed) % 256 == 0;
        let client = conn.client()?;
        let what = "writing the transaction";
        let res = if purge {
            let stmt = client
                .prepare_cached(&shared.names.commit_and_purge)
                .await
                .map_err(|e| pg_err(what, e))?;
            client
                .execute(
                    &stmt,
                    &[
                        &put_keys,
                        &put_values,
                        &deletes,
                        &id_ref,
                        &shared.retention_secs,
                    ],
                )
                .await
        } else {
            let stmt = client
                .prepare_cached(&shared.names.commit)
                .await
                .map_err(|e| pg_err(what, e))?;
            client
                .execute(&stmt, &[&put_keys, &put_values, &deletes, &id_ref])
                .await
        };
        // Nothing is committed yet: an error here leaves the store as it was.
        res.map_err(|e| not_applied(pg_err(what, e)))?;
        match client.batch_execute(&shared.names.notify_commit).await {
            Ok(()) => {
                conn.in_txn = false;
                Ok(())
            }
            Err(e) if is_connection_error(&e) => {
                let cause = pg_err("COMMIT", e).to_string();
                tracing::warn!(%cause, "connection lost during COMMIT; resolving the outcome");
                conn.discard();
                let outcome = outcome::resolve(&shared.pool, &shared.names, &id).await;
                outcome_result(outcome, &cause)
            }
            // The server answered with an error: it rolled the transaction back.
            Err(e) => Err(not_applied(pg_err("COMMIT", e))),
        }
    }
}

/// The error of a commit that provably did not apply: [`BackendError::Conflict`] ("nothing was
/// written; retrying is safe"), so that the semantics layer answers it as a transient failure
/// instead of poisoning the database (see the shared-store part of the `Backend` contract).
fn not_applied(e: BackendError) -> BackendError {
    match e {
        BackendError::Closed => BackendError::Closed,
        BackendError::Conflict(m) => BackendError::Conflict(m),
        other => BackendError::Conflict(kv_traits::Cause::with_source(
            format!("the commit was not applied: {other}"),
            other,
        )),
    }
}
