//! The tables, their SQL, and the format check at open.
//!
//! Format 1 is three tables in one schema:
//!
//! - `kv (k bytea PRIMARY KEY, v bytea NOT NULL)`: the keyspace. `bytea` compares with `memcmp`
//!   and then by length, the unsigned bytewise order the [`kv_traits::Backend`] contract
//!   requires, and the primary-key B-tree serves both ascending and descending range scans;
//! - `kv_meta (key text PRIMARY KEY, value text NOT NULL)`: `format_version` = [`FORMAT_VERSION`];
//! - `kv_outcomes (id bytea PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())`: one random id
//!   per committed write transaction, kept for `PostgresOptions::outcome_retention`, to resolve
//!   commits whose connection was lost (see `outcome.rs`).
//!
//! At open, under the schema's writer lock (so processes opening at once do not race): the
//! schema and tables are created when none of the tables exist; a store of this format is used
//! as it is; a newer or unknown `format_version` is refused with
//! [`BackendError::UnsupportedFormat`] and a schema holding some of the tables but no
//! `kv_meta` with [`BackendError::Corrupt`], both without modifying anything.
//!
//! A read-only open (`PostgresOptions::read_only`, e.g. on a hot standby) takes no lock and
//! only reads: the same checks, and a store that is not there is reported to the caller
//! instead of created.

use kv_traits::BackendError;
use tokio_postgres::Client;

use crate::error::pg_err;

/// The format version this build writes and reads (`kv_meta.format_version`).
pub const FORMAT_VERSION: u64 = 1;

pub(crate) const TABLES: [&str; 3] = ["kv", "kv_meta", "kv_outcomes"];

/// The qualified table names of one store, the SQL built from them, and its writer lock key.
#[derive(Debug)]
pub(crate) struct Names {
    pub schema: String,
    pub meta: String,
    pub outcomes: String,
    /// The `pg_advisory_xact_lock` key serializing this store's write transactions.
    pub lock_key: i64,
    pub get: String,
    pub scan_asc: String,
    pub scan_desc: String,
    pub commit: String,
    pub commit_and_purge: String,
    pub probe: String,
    /// The `LISTEN`/`NOTIFY` channel of this store's commits (a quoted identifier).
    pub channel: String,
    /// `NOTIFY` on [`Names::channel`] followed by `COMMIT`: one round trip.
    pub notify_commit: String,
    /// The session-level advisory lock (two-`int4` form, so never the writer lock) that every
    /// read-write backend's listening connection holds shared while it serves the store; a
    /// restore replacing the store takes it exclusively (see `admin.rs`).
    pub serving_key: (i32, i32),
}

impl Names {
    pub fn new(schema: &str) -> Names {
        let s = quote_ident(schema);
        let kv = format!("{s}.kv");
        let meta = format!("{s}.kv_meta");
        let outcomes = format!("{s}.kv_outcomes");
        let writes = format!(
            "WITH up AS (INSERT INTO {kv} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v), \
             del AS (DELETE FROM {kv} WHERE k = ANY($3::bytea[]))"
        );
        Names {
            schema: schema.to_string(),
            get: format!("SELECT v FROM {kv} WHERE k = $1"),
            scan_asc: format!(
                "SELECT k, v FROM {kv} WHERE k >= $1 AND k < $2 ORDER BY k ASC LIMIT $3"
            ),
            scan_desc: format!(
                "SELECT k, v FROM {kv} WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3"
            ),
            commit: format!("{writes} INSERT INTO {outcomes} (id) VALUES ($4)"),
            commit_and_purge: format!(
                "{writes}, purge AS (DELETE FROM {outcomes} WHERE at < now() - \
                 make_interval(secs => $5::float8)) INSERT INTO {outcomes} (id) VALUES ($4)"
            ),
            probe: format!(
                "INSERT INTO {outcomes} (id) VALUES ($1) ON CONFLICT (id) DO NOTHING RETURNING 1"
            ),
            channel: channel(schema),
            notify_commit: format!("NOTIFY {}; COMMIT", channel(schema)),
            lock_key: lock_key(schema),
            serving_key: serving_key(schema),
            meta,
            outcomes,
        }
    }
}

/// `ident` as a quoted SQL identifier.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The notification channel of the store in `schema`: derived from the schema name like the
/// lock key, so stores in different schemas do not wake each other.
fn channel(schema: &str) -> String {
    format!("\"kv_commits_{:016x}\"", lock_key(schema) as u64)
}

/// The writer lock key of a schema: FNV-1a of a fixed prefix and the schema name, so stores in
/// different schemas of one database do not serialize each other's writes.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"kv-engine-postgres writer\0"
        .iter()
        .chain(schema.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The serving lock key of a schema: the two halves of its writer lock key. Advisory locks of
/// one `bigint` and of two `int4` keys are separate spaces, so it never meets the writer lock.
pub(crate) fn serving_key(schema: &str) -> (i32, i32) {
    let k = lock_key(schema) as u64;
    ((k >> 32) as u32 as i32, k as u32 as i32)
}

/// The store's tables present in its schema.
pub(crate) async fn present_tables(
    client: &Client,
    names: &Names,
    what: &str,
) -> Result<Vec<String>, BackendError> {
    Ok(client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2::text[])",
            &[&names.schema, &&TABLES[..]],
        )
        .await
        .map_err(|e| pg_err(what, e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Checks a store whose tables include `kv_meta` (`present`): its format must be
/// [`FORMAT_VERSION`] and all its tables there. Only reads.
async fn check_existing(
    client: &Client,
    names: &Names,
    present: &[String],
    what: &str,
) -> Result<(), BackendError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT value FROM {} WHERE key = 'format_version'",
                names.meta
            ),
            &[],
        )
        .await
        .map_err(|e| pg_err(what, e))?;
    let Some(row) = row else {
        return Err(BackendError::Corrupt(
            format!(
                "{} has no format_version row; not a kv-engine-postgres store",
                names.meta
            )
            .into(),
        ));
    };
    let text: String = row.get(0);
    let found: u64 = text.trim().parse().map_err(|_| {
        BackendError::Corrupt(
            format!("{} holds an unreadable format_version {text:?}", names.meta).into(),
        )
    })?;
    // Future format versions add migrations from older versions here.
    if found != FORMAT_VERSION {
        return Err(BackendError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    if present.len() != TABLES.len() {
        return Err(BackendError::Corrupt(
            format!(
                "schema {:?} has {} but not all of {TABLES:?}",
                names.schema,
                present.join(", ")
            )
            .into(),
        ));
    }
    Ok(())
}

/// The refusal of a schema holding some of the tables but no `kv_meta`.
fn foreign_tables(names: &Names, present: &[String]) -> BackendError {
    BackendError::Corrupt(
        format!(
            "schema {:?} has table(s) {} but no kv_meta: not a kv-engine-postgres store; \
             refusing to use it",
            names.schema,
            present.join(", ")
        )
        .into(),
    )
}

/// Checks the store in `schema` without writing anything (a read-only open, e.g. on a hot
/// standby): `Ok(true)` when it is there and of this format, `Ok(false)` when none of its
/// tables exist (yet), and the same errors as [`open`] otherwise.
pub(crate) async fn check_read_only(client: &Client, names: &Names) -> Result<bool, BackendError> {
    let what = "checking the store (read-only)";
    let present = present_tables(client, names, what).await?;
    if present.iter().any(|t| t == "kv_meta") {
        check_existing(client, names, &present, what).await?;
        return Ok(true);
    }
    if !present.is_empty() {
        return Err(foreign_tables(names, &present));
    }
    Ok(false)
}

/// Creates or checks the store in `schema` (see the module docs). Runs its own transaction on
/// `client`; on error the caller discards the connection.
pub(crate) async fn open(client: &Client, names: &Names) -> Result<(), BackendError> {
    let what = "opening the store";
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
            names.lock_key
        ))
        .await
        .map_err(|e| pg_err(what, e))?;
    let present = present_tables(client, names, what).await?;
    if present.iter().any(|t| t == "kv_meta") {
        check_existing(client, names, &present, what).await?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_err(what, e))?;
        return Ok(());
    }
    if !present.is_empty() {
        return Err(foreign_tables(names, &present));
    }
    let schema_exists = client
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&names.schema],
        )
        .await
        .map_err(|e| pg_err(what, e))?
        .is_some();
    let s = quote_ident(&names.schema);
    let mut ddl = String::new();
    if !schema_exists {
        ddl.push_str(&format!("CREATE SCHEMA {s};"));
    }
    ddl.push_str(&format!(
        "CREATE TABLE {s}.kv (k bytea PRIMARY KEY, v bytea NOT NULL);
         CREATE TABLE {s}.kv_outcomes (id bytea PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
         CREATE INDEX ON {s}.kv_outcomes (at);
         CREATE TABLE {s}.kv_meta (key text PRIMARY KEY, value text NOT NULL);
         INSERT INTO {s}.kv_meta (key, value) VALUES ('format_version', '{FORMAT_VERSION}');
         COMMIT;"
    ));
    client
        .batch_execute(&ddl)
        .await
        .map_err(|e| pg_err("creating the store's tables", e))?;
    tracing::info!(
        schema = %names.schema,
        format = FORMAT_VERSION,
        "initialized a new kv-engine-postgres store"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_keys_differ_per_schema() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_ne!(lock_key("a"), lock_key("b"));
        assert_eq!(lock_key("a"), lock_key("a"));
        let n = Names::new("my schema");
        assert_eq!(n.meta, "\"my schema\".kv_meta");
        assert!(n.scan_desc.contains("ORDER BY k DESC"));
    }
}
