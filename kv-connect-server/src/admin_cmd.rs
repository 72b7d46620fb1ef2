//! `kv-connect-server db create|delete|list` and `token create|list|revoke`: against a running
//! server's admin API (`--url`, token from `DENO_KV_ACCESS_TOKEN`), or directly on a data
//! directory (`--data-dir`) or, for tokens in single-database mode, beside the database file
//! (`--path`).
//!
//! Direct database changes are refused while a server serves the directory (it holds the
//! directory's lock): they go through the server then. Direct token changes are always fine:
//! the token file is written atomically and a running server re-reads it on the next request.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kv_connect_server::datadir::DataDir;
use kv_connect_server::registry::{DbName, NameError, RegistryError};
use kv_connect_server::tokens::{NewToken, Scope, TokenError, TokenRecord, TokenStore};

use crate::multidb_cmd::{engine_name, token_file};
use crate::{default_engine, Engine};

/// Errors of the `db` and `token` commands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminCliError {
    #[error("say where: --url URL (a running server), --data-dir DIR, or (tokens of a single-database server) --path FILE")]
    NoTarget,
    #[error("databases live in a data directory: give --url or --data-dir")]
    NoDataDir,
    #[error("the admin token is missing: set DENO_KV_ACCESS_TOKEN (or pass --token)")]
    NoToken,
    #[error("invalid --url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot reach the server at {url}: {source}")]
    Http {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the server refused ({status}): {message}")]
    Refused { status: StatusCode, message: String },
    #[error("unexpected answer from the server: {0}")]
    Answer(String),
    #[error("invalid --expires-in {0:?}: expected a number with a unit s, m, h or d (e.g. 30d)")]
    ExpiresIn(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Where a command acts.
#[derive(Args, Debug, Clone)]
pub(crate) struct Target {
    /// A running server, e.g. `http://127.0.0.1:4512` (its admin API).
    #[arg(long, env = "KV_CONNECT_URL")]
    url: Option<String>,
    /// The admin token for --url: the access token or a scoped admin token.
    #[arg(long, env = "DENO_KV_ACCESS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The data directory of a server with many databases (acted on directly).
    #[arg(long, env = "KV_CONNECT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The database file of a single-database server: its tokens live beside it.
    #[arg(long, env = "KV_CONNECT_PATH")]
    path: Option<PathBuf>,
}

/// `kv-connect-server db ...`
#[derive(Subcommand, Debug)]
pub(crate) enum DbCommand {
    /// Create a database (served at /db/NAME at once).
    Create {
        name: String,
        /// Engine recorded for the database when acting on a data directory directly (must be
        /// the engine the server runs).
        #[arg(long, value_enum, env = "KV_CONNECT_ENGINE", default_value_t = default_engine())]
        engine: Engine,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a database and its data and tokens (a running server closes it first).
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Where a postgres database's schema lives, to drop it when acting on a data
        /// directory directly.
        #[cfg(feature = "postgres")]
        #[command(flatten)]
        postgres: crate::PostgresArgs,
    },
    /// List the databases (JSON).
    List {
        #[command(flatten)]
        target: Target,
    },
}

/// `kv-connect-server token ...`
#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Create a token; prints it (only this once) on stdout, its details on stderr.
    Create {
        /// Its name (unique per database).
        #[arg(long)]
        name: String,
        /// read, write, queue or admin.
        #[arg(long)]
        scope: String,
        /// The database it is for (default: every database).
        #[arg(long)]
        database: Option<String>,
        /// Lifetime, e.g. `3600s`, `90m`, `12h`, `30d` (default: no expiry).
        #[arg(long)]
        expires_in: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List tokens (JSON; hashes only), of one database or all.
    List {
        #[arg(long)]
        database: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token by id or name: it and every data-path token issued for it stop working.
    Revoke {
        /// The token's id or name.
        which: String,
        /// The database of the token (needed when the name is used in several).
        #[arg(long)]
        database: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

fn parse_expires_in(s: &str) -> Result<Duration, AdminCliError> {
    let bad = || AdminCliError::ExpiresIn(s.to_string());
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        "d" => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// One admin API call; returns the answer's body.
async fn call(
    target: &Target,
    url: &str,
    method: Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> Result<Bytes, AdminCliError> {
    let token = target
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or(AdminCliError::NoToken)?;
    let base = url.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(AdminCliError::Url {
            url: url.to_string(),
            reason: "expected http://HOST:PORT (reach a TLS server through its loopback address)"
                .into(),
        });
    }
    let full = format!("{base}{path_and_query}");
    let body = match body {
        Some(v) => Bytes::from(v.to_string()),
        None => Bytes::new(),
    };
    let req = Request::builder()
        .method(method)
        .uri(&full)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| AdminCliError::Url {
            url: full.clone(),
            reason: e.to_string(),
        })?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let http_err = |e: Box<dyn std::error::Error + Send + Sync>| AdminCliError::Http {
        url: base.to_string(),
        source: e,
    };
    let res = client.request(req).await.map_err(|e| http_err(e.into()))?;
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| http_err(e.into()))?
        .to_bytes();
    if !status.is_success() {
        return Err(AdminCliError::Refused {
            status,
            message: String::from_utf8_lossy(&bytes).trim().to_string(),
        });
    }
    Ok(bytes)
}

fn print_json(bytes: &[u8]) -> Result<(), AdminCliError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| AdminCliError::Answer(e.to_string()))?;
    let text =
        serde_json::to_string_pretty(&value).map_err(|e| AdminCliError::Answer(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    Ok(())
}

fn print_value(value: &impl serde::Serialize) -> Result<(), AdminCliError> {
    let bytes = serde_json::to_vec(value).map_err(|e| AdminCliError::Answer(e.to_string()))?;
    print_json(&bytes)
}

/// Runs a `db` command.
pub(crate) async fn run_db(cmd: DbCommand) -> Result<(), AdminCliError> {
    match cmd {
        DbCommand::Create {
            name,
            engine,
            target,
        } => {
            let name = DbName::parse(&name)?;
            if let Some(url) = &target.url {
                let body = serde_json::json!({ "name": name.as_str() });
                print_json(&call(&target, url, Method::POST, "/admin/databases", Some(body)).await?)
            } else {
                let dir = data_dir(&target)?;
                dir.check_no_server()?;
                print_value(&dir.create(&name, engine_name(engine))?)
            }
        }
        DbCommand::Delete {
            name,
            target,
            #[cfg(feature = "postgres")]
            postgres,
        } => {
            let name = DbName::parse(&name)?;
            if let Some(url) = &target.url {
                let path = format!("/admin/databases/{name}");
                print_json(&call(&target, url, Method::DELETE, &path, None).await?)
            } else {
                let dir = data_dir(&target)?;
                dir.check_no_server()?;
                let info = dir
                    .info(&name)?
                    .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
                if info.engine == "postgres" {
                    #[cfg(feature = "postgres")]
                    {
                        let server = crate::DbArgs {
                            engine: Engine::Postgres,
                            path: PathBuf::new(),
                            tuning: Default::default(),
                            postgres,
                        };
                        let args = crate::multidb_cmd::database_args(&dir, &server, &name, &info);
                        crate::multidb_cmd::drop_schema(&args).await?;
                    }
                    #[cfg(not(feature = "postgres"))]
                    tracing::warn!(database = %name, "this binary has no postgres engine: the database's schema is left in place");
                }
                dir.remove(&name)?;
                TokenStore::new(dir.token_file()).remove_database(name.as_str())?;
                print_value(&serde_json::json!({ "deleted": name.as_str() }))
            }
        }
        DbCommand::List { target } => {
            if let Some(url) = &target.url {
                print_json(&call(&target, url, Method::GET, "/admin/databases", None).await?)
            } else {
                print_value(&data_dir(&target)?.list()?)
            }
        }
    }
}

fn data_dir(target: &Target) -> Result<DataDir, AdminCliError> {
    target
        .data_dir
        .as_ref()
        .map(DataDir::new)
        .ok_or(AdminCliError::NoDataDir)
}

/// The token store a direct `token` command acts on.
fn direct_store(target: &Target) -> Result<TokenStore, AdminCliError> {
    match (&target.data_dir, &target.path) {
        (Some(dir), _) => Ok(TokenStore::new(token_file(Some(dir), dir))),
        (None, Some(path)) => Ok(TokenStore::new(token_file(None, path))),
        (None, None) => Err(AdminCliError::NoTarget),
    }
}

/// Runs a `token` command.
pub(crate) async fn run_token(cmd: TokenCommand) -> Result<(), AdminCliError> {
    match cmd {
        TokenCommand::Create {
            name,
            scope,
            database,
            expires_in,
            target,
        } => {
            let scope: Scope = scope.parse()?;
            let database = database.as_deref().map(DbName::parse).transpose()?;
            let now = SystemTime::now();
            let expires_at = expires_in
                .as_deref()
                .map(parse_expires_in)
                .transpose()?
                .map(|d| now + d);
            let (token, record) = if let Some(url) = &target.url {
                let body = serde_json::json!({
                    "name": name,
                    "scope": scope,
                    "database": database.as_ref().map(DbName::as_str),
                    "expires_at_ms": expires_at.map(|t| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)),
                });
                let bytes = call(&target, url, Method::POST, "/admin/tokens", Some(body)).await?;
                #[derive(serde::Deserialize)]
                struct Created {
                    token: String,
                    record: TokenRecord,
                }
                let created: Created = serde_json::from_slice(&bytes)
                    .map_err(|e| AdminCliError::Answer(e.to_string()))?;
                (created.token, created.record)
            } else {
                if let (Some(db), Some(dir)) = (&database, &target.data_dir) {
                    if DataDir::new(dir).info(db)?.is_none() {
                        return Err(RegistryError::NotFound(db.to_string()).into());
                    }
                }
                direct_store(&target)?.create(
                    NewToken {
                        name,
                        scope,
                        database: database.map(|d| d.to_string()),
                        expires_at,
                    },
                    now,
                )?
            };
            let details = serde_json::to_string_pretty(&record)
                .map_err(|e| AdminCliError::Answer(e.to_string()))?;
            let _ = writeln!(
                std::io::stderr().lock(),
                "{details}\nThe token is printed only this once; store it now."
            );
            let _ = writeln!(std::io::stdout().lock(), "{token}");
            Ok(())
        }
        TokenCommand::List { database, target } => {
            let database = database.as_deref().map(DbName::parse).transpose()?;
            if let Some(url) = &target.url {
                let path = match &database {
                    Some(db) => format!("/admin/tokens?database={db}"),
                    None => "/admin/tokens".to_string(),
                };
                print_json(&call(&target, url, Method::GET, &path, None).await?)
            } else {
                let file = direct_store(&target)?.snapshot();
                let tokens: Vec<&TokenRecord> = file
                    .tokens
                    .iter()
                    .filter(|t| {
                        database.is_none()
                            || t.database.as_deref() == database.as_ref().map(DbName::as_str)
                    })
                    .collect();
                print_value(&tokens)
            }
        }
        TokenCommand::Revoke {
            which,
            database,
            target,
        } => {
            let database = database.as_deref().map(DbName::parse).transpose()?;
            if let Some(url) = &target.url {
                let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
                if which.is_empty() || !which.bytes().all(plain) {
                    return Err(TokenError::NotFound(which).into());
                }
                let mut path = format!("/admin/tokens/{which}");
                if let Some(db) = &database {
                    path.push_str(&format!("?database={db}"));
                }
                print_json(&call(&target, url, Method::DELETE, &path, None).await?)
            } else {
                let filter = database.as_ref().map(|d| Some(d.as_str()));
                print_value(&direct_store(&target)?.revoke(&which, filter)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in() {
        assert_eq!(parse_expires_in("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_expires_in("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_expires_in("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        for bad in ["", "5", "d", "0s", "5w", "-1d", "99999999999999999999d"] {
            assert!(parse_expires_in(bad).is_err(), "{bad}");
        }
    }
}
