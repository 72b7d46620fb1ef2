//! The web console: a page at `/console` to browse keys, open values as trees, edit them with a
//! versionstamp check, watch a key live, and see queue counts, backups and health. On only when
//! [`ServerConfig::console`](crate::ServerConfig) is set (`--console` on the binary).
//!
//! | route | what |
//! |---|---|
//! | `GET /console`, `GET /console/` | the page (`console/index.html`) |
//! | `GET /console/app.js`, `GET /console/app.css`, `GET /console/icon.svg` | its assets, embedded in the binary |
//! | `GET /console/api/status` | health, limits, replica, queue counts, backup state |
//! | `GET /console/api/backup` | the backup's settings and its newest recovery points |
//! | `POST /console/api/list` | `{prefix, cursor?, limit?}` → a page of entries under a typed-part prefix |
//! | `POST /console/api/get` | `{key}` → the entry: value tree, edit notation, versionstamp |
//! | `POST /console/api/set` | `{key, value, versionstamp}` → written only if the key still has `versionstamp` (`null`: absent) |
//! | `POST /console/api/delete` | `{key, versionstamp}` → deleted only if the key still has `versionstamp` |
//! | `POST /console/api/watch` | `{key}` → `text/event-stream` of the key's entry, one event per change |
//!
//! # Contract
//!
//! - Off (no [`ConsoleConfig`]): every `/console` path is 404 `Resource not found.`, exactly as
//!   an unknown path. It serves the single database of a server; on a server with many
//!   databases (`--data-dir`) the API answers 404 saying so.
//! - The page and its assets need no token (they hold no data). Every `/console/api/...` call
//!   needs `Authorization: Bearer <token>` with an admin token (the access token, or a scoped
//!   token with scope `admin`; others get 403): the page asks for it in a
//!   sign-in form, keeps it in `sessionStorage` and sends it as that header. A token in the
//!   query string is refused (400), never read; cookies are never used, so a cross-site request
//!   cannot carry the credential (module `guard`).
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
//! - Reads and writes go through the generic [`Database`] only. Queue counts and backup state
//!   come from the optional reports of [`ConsoleConfig`] (the binary supplies them from `kv-db`
//!   and `kv-pitr`).

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
use crate::state::{ConnInfo, Databases, Front};

/// A JSON report computed when the console asks for it (queue counts, backup state); an `Err`
/// is shown as that section's error.
pub type ConsoleReport =
    Arc<dyn Fn() -> BoxFuture<'static, Result<serde_json::Value, String>> + Send + Sync>;

/// Settings of the web console.
#[derive(Clone, Default)]
pub struct ConsoleConfig {
    /// Queue counts (e.g. `{"ready": 1, "delayed": 0, "leased": 2}`), if the database can count.
    pub queues: Option<ConsoleReport>,
    /// Backup settings and recovery points, if the server ships a backup.
    pub backup: Option<ConsoleReport>,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("queues", &self.queues.is_some())
            .field("backup", &self.backup.is_some())
            .finish()
    }
}

/// A route of the console's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConsoleRoute {
    Asset(assets::Asset),
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
            ConsoleRoute::Asset(_) | ConsoleRoute::Status | ConsoleRoute::Backup => Method::GET,
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
    guard::check_api_request(&front.template.access, conn, &req)?;
    let state = match &front.databases {
        Databases::Single(state) => state.clone(),
        Databases::Many(_) => return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "The console serves a single database (--path); it is not available with --data-dir.",
        )),
    };
    let state = &*state;
    match route {
        ConsoleRoute::Asset(_) => Err(ApiError::new(StatusCode::NOT_FOUND, "Resource not found.")),
        ConsoleRoute::Status => Ok(api::status(state, config).await),
        ConsoleRoute::Backup => api::backup(config).await,
        ConsoleRoute::List => api::list(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Get => api::get(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Set => api::set(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Delete => api::delete(state, guard::json_body(state, req).await?).await,
        ConsoleRoute::Watch => watch::watch(state, guard::json_body(state, req).await?).await,
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
        assert_eq!(ConsoleRoute::Status.method(), Method::GET);
        assert_eq!(ConsoleRoute::Set.method(), Method::POST);
    }
}
