//! The admin API: databases and scoped tokens, for `kv-connect-server db|token ... --url`.
//!
//! | route | what | needs `admin` on |
//! |---|---|---|
//! | `GET /admin/databases` | `[DatabaseInfo]` | the server |
//! | `POST /admin/databases` `{"name"}` | creates it: 201 `DatabaseInfo` | the server |
//! | `GET /admin/databases/<name>` | `DatabaseInfo` | the database |
//! | `DELETE /admin/databases/<name>` | closes and deletes it and its tokens: 200 `{"deleted": name}` | the database |
//! | `GET /admin/tokens[?database=<name>]` | `[TokenRecord]` (hashes only), of one database or all | the database, or the server |
//! | `POST /admin/tokens` `{"name","scope","database"?,"expires_at_ms"?}` | 201 `{"token", "record"}`: the token is shown only here | its database, or the server |
//! | `DELETE /admin/tokens/<id or name>[?database=<name>]` | revokes it: 200 `TokenRecord` | its database, or the server |
//!
//! # Contract
//!
//! - Authorization: `Authorization: Bearer` the access token (admin everywhere) or a scoped
//!   `admin` token; "the server" means a token for every database. Missing or bad credentials
//!   401, too little scope 403 (checked before the request body is read).
//! - Bodies are JSON of at most 64 KiB; answers are JSON, errors plain text: bad input 400 (bad
//!   names, unknown scope, duplicate token names), unknown database or token 404, a taken
//!   database name 409, database management on a single-database server 400, token routes
//!   without a token file 404.
//! - Changes take effect for the very next request: a created database is served at once, a
//!   deleted one is closed first ([`crate::registry`]), a revoked token's data-path tokens stop
//!   working at once ([`crate::access`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body;
use kv_traits::Database;
use serde::{Deserialize, Serialize};

use crate::access::require;
use crate::auth::bearer_token;
use crate::body::{read_body, response, ResponseBody};
use crate::error::ApiError;
use crate::registry::{DbName, RegistryError};
use crate::state::{Databases, Front};
use crate::tokens::{describe_database, NewToken, Scope, TokenError, TokenRecord, TokenStore};

const MAX_ADMIN_BODY: usize = 64 * 1024;

/// `POST /admin/databases`.
#[derive(Deserialize)]
struct CreateDatabase {
    name: String,
}

/// `POST /admin/tokens`.
#[derive(Deserialize)]
struct CreateToken {
    name: String,
    scope: String,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    expires_at_ms: Option<u64>,
}

/// Answer of `POST /admin/tokens`.
#[derive(Serialize)]
struct CreatedToken<'a> {
    token: &'a str,
    record: &'a TokenRecord,
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match &err {
            TokenError::Invalid(m) => ApiError::bad_request(format!("{m}.")),
            TokenError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("No such token: {err}."))
            }
            TokenError::Io { .. } | TokenError::Corrupt { .. } => {
                tracing::error!(error = %err, "token store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The token store failed; see the server log.",
                )
            }
        }
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Result<Response<ResponseBody>, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to encode the answer: {e}"),
        )
    })?;
    Ok(response(status, "application/json", body))
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method not allowed; use {allowed}."),
    )
}

/// The `database` query parameter, validated.
fn database_param(query: Option<&str>) -> Result<Option<DbName>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("database=") {
            return Ok(Some(DbName::parse(value)?));
        }
    }
    Ok(None)
}

async fn json_body<T: for<'de> Deserialize<'de>, B>(req: Request<B>) -> Result<T, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (_, body) = read_body(req, MAX_ADMIN_BODY).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "The request body is not valid JSON for this route: {e}."
        ))
    })
}

/// Handles `/admin/...` (see the module contract).
pub(crate) async fn handle<D: Database, B>(
    front: &Front<D>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let method = req.method().clone();
    let segments: Vec<&str> = path
        .trim_start_matches("/admin")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // The database a request is about (`None` = the server), known before the body is read.
    let (allowed, target): (&str, Option<DbName>) = match segments.as_slice() {
        ["databases"] => ("GET, POST", None),
        ["databases", name] => ("GET, DELETE", Some(DbName::parse(name)?)),
        ["tokens"] => ("GET, POST", database_param(query.as_deref())?),
        ["tokens", _] => ("DELETE", database_param(query.as_deref())?),
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "Resource not found.")),
    };
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        return Err(method_not_allowed(allowed));
    }
    let token = bearer_token(req.headers().get(http::header::AUTHORIZATION))?.to_string();
    let token = token.as_str();
    let access = &front.template.access;
    let now = SystemTime::now();
    // Creating a token for a database is authorized against that database, which is only
    // known from the body: read it first (bounded), then authorize.
    if segments.as_slice() == ["tokens"] && method == Method::POST {
        let body: CreateToken = json_body(req).await?;
        let database = body.database.as_deref().map(DbName::parse).transpose()?;
        let grant = access.credential(token, database.as_ref(), now)?;
        require(grant.scope, Scope::Admin)?;
        return create_token(front, body, database, now).await;
    }
    let grant = access.credential(token, target.as_ref(), now)?;
    require(grant.scope, Scope::Admin)?;
    match (segments.as_slice(), method) {
        (["databases"], Method::GET) => json(StatusCode::OK, &registry(front)?.list()?),
        (["databases"], _) => {
            let body: CreateDatabase = json_body(req).await?;
            let name = DbName::parse(&body.name)?;
            let info = registry(front)?.create(&name).await?;
            json(StatusCode::CREATED, &info)
        }
        (["databases", _], Method::GET) => {
            let name = target
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("No database."))?;
            let info = registry(front)?
                .info(name)?
                .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
            json(StatusCode::OK, &info)
        }
        (["databases", _], _) => {
            let name = target
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("No database."))?;
            registry(front)?.delete(name).await?;
            if let Some(store) = access.store() {
                store.remove_database(name.as_str())?;
            }
            json(
                StatusCode::OK,
                &serde_json::json!({ "deleted": name.as_str() }),
            )
        }
        (["tokens"], _) => {
            let store = store(front)?;
            let file = store.snapshot();
            let tokens: Vec<&TokenRecord> = file
                .tokens
                .iter()
                .filter(|t| {
                    target.is_none() || t.database.as_deref() == target.as_ref().map(DbName::as_str)
                })
                .collect();
            json(StatusCode::OK, &tokens)
        }
        (["tokens", which], _) => {
            let store = store(front)?;
            let database = target.as_ref().map(|d| Some(d.as_str()));
            json(StatusCode::OK, &store.revoke(which, database)?)
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "Resource not found.")),
    }
}

fn registry<D>(front: &Front<D>) -> Result<&crate::registry::Registry<D>, ApiError> {
    match &front.databases {
        Databases::Many(registry) => Ok(registry),
        Databases::Single(_) => Err(RegistryError::SingleDatabase.into()),
    }
}

fn store<D>(front: &Front<D>) -> Result<&TokenStore, ApiError> {
    front.template.access.store().map(|s| &**s).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Scoped tokens are not enabled on this server (it has no token file).",
        )
    })
}

async fn create_token<D: Database>(
    front: &Front<D>,
    body: CreateToken,
    database: Option<DbName>,
    now: SystemTime,
) -> Result<Response<ResponseBody>, ApiError> {
    let store = store(front)?;
    let scope: Scope = body.scope.parse()?;
    match (&front.databases, &database) {
        (Databases::Single(_), Some(_)) => return Err(RegistryError::SingleDatabase.into()),
        (Databases::Many(registry), Some(name)) if registry.info(name)?.is_none() => {
            return Err(RegistryError::NotFound(name.to_string()).into());
        }
        _ => {}
    }
    let (token, record) = store.create(
        NewToken {
            name: body.name,
            scope,
            database: database.map(|d| d.to_string()),
            expires_at: body
                .expires_at_ms
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        },
        now,
    )?;
    tracing::info!(id = %record.id, name = %record.name, scope = %record.scope, database = %describe_database(record.database.as_deref()), "token created");
    json(
        StatusCode::CREATED,
        &CreatedToken {
            token: &token,
            record: &record,
        },
    )
}
