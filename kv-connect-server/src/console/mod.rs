//! The web console: a page at `/console` to browse keys, open values as trees, edit them with a
//! versionstamp check, watch a key live, and see queue counts, backups and health. On only when
//! [`ServerConfig::console`](crate::ServerConfig) is set (`--console` on the binary).
//!
//! | route | what |
//! |---|---|
//! | `GET /console`, `GET /console/` | the page (`console/index.html`) |
//! | `GET /console/app.js`, `GET /console/app.css`, `GET /console/icon.svg` | its assets, embedded in the binary |
//! | `GET /console/api/databases` | the databases the token may see: `{"many": false}` on a single-database server, else `{"many": true, "databases": [{name, database_id, created_at_ms, engine}]}` |
//! | `GET /console/api/status` | health, limits, replica, queue counts, backup state |
//! | `GET /console/api/backup` | the backup's settings and its newest recovery points |
//! | `POST /console/api/list` | `{prefix, cursor?, limit?}` → a page of entries under a typed-part prefix |
//! | `POST /console/api/get` | `{key}` → the entry: value tree, edit notation, versionstamp |
//! | `POST /console/api/set` | `{key, value, versionstamp}` → written only if the key still has `versionstamp` (`null`: absent) |
//! | `POST /console/api/delete` | `{key, versionstamp}` → deleted only if the key still has `versionstamp` |
//! | `POST /console/api/watch` | `{key}` → `text/event-stream` of the key's entry, one event per change; ends (at the next event or keep-alive) once the token is revoked or expires |
//!
//! # Contract
//!
//! - Off (no [`ConsoleConfig`]): every `/console` path is 404 `Resource not found.`, exactly as
//!   an unknown path.
//! - The page and its assets need no token (they hold no data). Every `/console/api/...` call
//!   needs `Authorization: Bearer <token>` with an admin token (the access token, or a scoped
//!   token with scope `admin`; others get 403): the page asks for it in a
//!   sign-in form, keeps it in `sessionStorage` and sends it as that header. A token in the
//!   query string is refused (400), never read; cookies are never used, so a cross-site request
//!   cannot carry the credential (module `guard`).
//! - On a server with many databases (`--data-dir`) every call but `databases` names its
//!   database as `?database=<name>` (missing: 400; unknown: 404); the token must be an admin
//!   token for that database (a scoped token bound to another database gets 403), and
//!   `databases` lists only the databases the token may see (the page's picker). On a
//!   single-database server `?database=` is a 400.
//! - Queue counts come from the database's counters ([`Database::stats`]: waiting, leased,
//!   dead-lettered and dropped since the database was opened), read without touching the
//!   store; only a database whose counters are not exact (a shared store) is counted by the
//!   scan report of [`ConsoleConfig::queues`], its dead letters still from the counters.
//! - Cross-origin calls are refused (403): an `Origin` header must name this server's `Host`
//!   (host and port; the scheme may differ behind a TLS-terminating proxy), `Sec-Fetch-Site` must be `same-origin` or `none` when present, and `POST` bodies
//!   must be `application/json` (a cross-site form cannot send that without a preflight, which
//!   is never answered with CORS headers).
//! - Every console answer carries a strict `Content-Security-Policy` (scripts, styles and
//!   fetches from this origin only, no framing), `X-Frame-Options: DENY`,
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and
//!   `Cache-Control: no-store`.
//! - API errors are JSON `{"error": message}` with a 4xx status for every bad input (no or
//!   wrong token 401, cross-origin 403, unknown path 404, wrong method 405 with `Allow`,
//!   malformed JSON, key or value 400, conflict 409, body too large 413, not JSON 415);
//!   database failures keep the statuses of [`crate::error`].
//! - Reads and writes go through the generic [`Database`] only. The queue scan and the backup
//!   state come from the optional reports of [`ConsoleConfig`] and, with many databases, of
//!   each database's provider (the binary supplies them from `kv-db` and `kv-pitr`).

mod api;
mod assets;
mod guard;
mod keys;
mod values;
mod watch;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{HeaderValue, ALLOW};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body;
use kv_traits::Database;

use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::registry::DbName;
use crate::state::{ConnInfo, Databases, Front};

/// A JSON report computed when the console asks for it (queue counts, backup state); an `Err`
/// is shown as that section's error.
pub type ConsoleReport =
    Arc<dyn Fn() -> BoxFuture<'static, Result<serde_json::Value, String>> + Send + Sync>;

/// Settings of the web console.
#[derive(Clone, Default)]
pub struct ConsoleConfig {
    /// Queue counts by a scan of the queue (e.g. `{"ready": 1, "delayed": 0, "leased": 2}`),
    /// for a database whose queue counters ([`kv_traits::Database::stats`]) are not exact (a
    /// store shared with other servers); otherwise the console reads the counters.
    pub queues: Option<ConsoleReport>,
    /// Backup settings and recovery points of the single database, if it ships a backup (with
    /// many databases each database's comes from its provider).
    pub backup: Option<ConsoleReport>,
    /// The databases live in a store other servers write too (PostgreSQL): their queue
    /// counters see this server's work only, and the console says so.
    pub shared_store: bool,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("queues", &self.queues.is_some())
            .field("backup", &self.backup.is_some())
            .field("shared_store", &self.shared_store)
            .finish()
    }
}

/// A route of the console's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConsoleRoute {
    Asset(assets::Asset),
    Databases,
    Status,
    Backup,
    List,
    Get,
    Set,
    Delete,
    Watch,
}

impl ConsoleRoute {
    fn of_path(path: &str) -> Option<ConsoleRoute> {
        if let Some(asset) = assets::Asset::of_path(path) {
            return Some(ConsoleRoute::Asset(asset));
        }
        Some(match path.strip_prefix("/console/api/")? {
            "databases" => ConsoleRoute::Databases,
            "status" => ConsoleRoute::Status,
            "backup" => ConsoleRoute::Backup,
            "list" => ConsoleRoute::List,
            "get" => ConsoleRoute::Get,
            "set" => ConsoleRoute::Set,
            "delete" => ConsoleRoute::Delete,
            "watch" => ConsoleRoute::Watch,
            _ => return None,
        })
    }

    /// The one method the route takes.
    fn method(self) -> Method {
        match self {
            ConsoleRoute::Asset(_)
            | ConsoleRoute::Databases
            | ConsoleRoute::Status
            | ConsoleRoute::Backup => Method::GET,
            _ => Method::POST,
        }
    }
}

/// Answers a request to `/console` or below (see the module contract).
pub(crate) async fn handle<D: Database, B>(
    front: &Front<D>,
    conn: ConnInfo,
    req: Request<B>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(config) = &front.template.console else {
        return crate::body::error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            "Resource not found.",
        ));
    };
    let mut res = match route(front, config, conn, req).await {
        Ok(res) => res,
        Err(err) => guard::json_error(&err),
    };
    guard::secure_headers(res.headers_mut());
    res
}

async fn route<D: Database, B>(
    front: &Front<D>,
    config: &ConsoleConfig,
    conn: ConnInfo,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let route = ConsoleRoute::of_path(req.uri().path())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Resource not found."))?;
    let method = route.method();
    let head_of_get = method == Method::GET && req.method() == Method::HEAD;
    if req.method() != method && !head_of_get {
        let mut res = guard::json_error(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method not allowed; use {method}."),
        ));
        let allow = if method == Method::GET {
            "GET, HEAD"
        } else {
            "POST"
        };
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return Ok(res);
    }
    if let ConsoleRoute::Asset(asset) = route {
        return Ok(assets::serve(asset));
    }
    let token = guard::check_api_request(conn, &req)?;
    let access = &front.template.access;
    let asked = guard::database_param(&req)?;
    let (state, backup) = match (&front.databases, asked) {
        (Databases::Single(state), None) => {
            guard::authorize(access, &token, None)?;
            if route == ConsoleRoute::Databases {
                return Ok(api::databases(None));
            }
            (state.clone(), config.backup.clone())
        }
        (Databases::Single(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "This server serves a single database: leave out ?database=.",
            ))
        }
        (Databases::Many(registry), None) if route == ConsoleRoute::Databases => {
            guard::authenticate(access, &token)?;
            let mut seen = registry.list()?;
            seen.retain(|info| {
                DbName::parse(&info.name)
                    .is_ok_and(|name| guard::authorize(access, &token, Some(&name)).is_ok())
            });
            return Ok(api::databases(Some(&seen)));
        }
        (Databases::Many(_), None) => {
            return Err(ApiError::bad_request(
                "This server serves several databases: pick one with ?database=<name> \
                 (GET /console/api/databases lists those your token may see).",
            ))
        }
        (Databases::Many(registry), Some(name)) => {
            guard::authorize(access, &token, Some(&name))?;
            let state = registry.state(&name, &front.template).await?;
            (state, registry.console_backup(&name))
        }
    };
    let state = &*state;
    match route {
        ConsoleRoute::Asset(_) | ConsoleRoute::Databases => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "Resource not found."))
        }
        ConsoleRoute::Status => Ok(api::status(state, config, backup.is_some()).await),
        ConsoleRoute::Backup => api::backup(backup.as_ref()).await,
        ConsoleRoute::List => api::list(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Get => api::get(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Set => api::set(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Delete => api::delete(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Watch => {
            let res = watch::watch(state, guard::json_body(state, req).await?).await?;
            // Like a data-path watch, the stream ends once its token may no longer see the
            // database (revoked, expired).
            let (access, database) = (access.clone(), state.database.clone());
            Ok(crate::routes::revocable::end_when_invalid(res, move || {
                guard::authorize(&access, &token, database.as_ref()).is_ok()
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_maps_every_console_path() {
        assert_eq!(
            ConsoleRoute::of_path("/console"),
            Some(ConsoleRoute::Asset(assets::Asset::Page))
        );
        assert_eq!(
            ConsoleRoute::of_path("/console/"),
            Some(ConsoleRoute::Asset(assets::Asset::Page))
        );
        assert_eq!(
            ConsoleRoute::of_path("/console/api/list"),
            Some(ConsoleRoute::List)
        );
        assert_eq!(
            ConsoleRoute::of_path("/console/api/watch"),
            Some(ConsoleRoute::Watch)
        );
        for path in [
            "/console/api",
            "/console/api/",
            "/console/api/list/x",
            "/console/index.html",
            "/console/../healthz",
        ] {
            assert_eq!(ConsoleRoute::of_path(path), None, "{path}");
        }
        assert_eq!(
            ConsoleRoute::of_path("/console/api/databases"),
            Some(ConsoleRoute::Databases)
        );
        assert_eq!(ConsoleRoute::Status.method(), Method::GET);
        assert_eq!(ConsoleRoute::Databases.method(), Method::GET);
        assert_eq!(ConsoleRoute::Set.method(), Method::POST);
    }
}
