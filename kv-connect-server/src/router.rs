//! The route table: every path the server answers, the methods it accepts and the handler it
//! reaches. This is the only place that routes (its items are internal; the module is public
//! for this table).
//!
//! | route | handler | what |
//! |---|---|---|
//! | `POST /` | [`metadata`] | metadata exchange: protocol versions 1, 2, 3 (highest common wins); answers the database id, the data-path endpoints (`/v2`, absolute for v1; `strong`, or `eventual` + `strong` on a replica), a data-path token and its expiry, and the header `x-denokv-extensions: queue-v1` |
//! | `POST /v2/snapshot_read` | `routes/datapath.rs` | `SnapshotRead` → `SnapshotReadOutput` (`application/x-protobuf`) |
//! | `POST /v2/atomic_write` | `routes/datapath.rs` | `AtomicWrite` → `AtomicWriteOutput` (`application/x-protobuf`); enqueues are accepted and stored |
//! | `POST /v2/watch` | `routes/watch.rs` | `Watch` → endless `application/octet-stream` of `u32 LE length ‖ WatchOutput` frames, keep-alive every 5 s; every frame is a full snapshot (all keys `changed`, in request order) |
//! | `POST /v2/queue/dequeue` | `routes/queue.rs` | queue extension `queue-v1`: `DequeueRequest` → `DequeueResponse`; long-polls up to 30 s and leases the next ready message; re-authorized while it waits (`routes/revocable.rs`) |
//! | `POST /v2/queue/finish` | `routes/queue.rs` | queue extension `queue-v1`: `FinishRequest` → `FinishResponse`; ends a delivery (success, or failure to retry) |
//! | `POST /eventual/v2/snapshot_read` | `routes/datapath.rs` | only with an eventual-read database ([`ServerConfig::eventual`](crate::ServerConfig::eventual), else 404): `SnapshotRead` answered from it, `read_is_strongly_consistent = false` |
//! | `POST /eventual/v2/watch` | `routes/watch.rs` | only with an eventual-read database: the same as `/v2/watch` (npm watches through the `eventual` endpoint) |
//! | `POST /eventual/v2/atomic_write`, `/eventual/v2/queue/dequeue`, `/eventual/v2/queue/finish` | `routes/guard.rs` | only with an eventual-read database: 400, writes and queues go to the `strong` endpoint |
//! | `GET`/`HEAD /healthz` | `routes/health.rs` | 200 `ok` (plus the configured health report lines) |
//! | `POST /db/<name>`, `POST /db/<name>/v2/...` | as `POST /` and `/v2/...` | with `--data-dir`: the same routes for database `<name>` ([`crate::registry`]); its metadata advertises `/db/<name>/v2` |
//! | `/admin/...` | `routes/admin.rs` | the admin API: databases and scoped tokens (its module docs list the routes) |
//! | `GET /metrics` | `routes/metrics.rs` | Prometheus metrics (OpenMetrics text) of every database; needs `Authorization: Bearer <access token>` |
//! | `/console`, `/console/...` | [`crate::console`] | the web console (only with [`ServerConfig::console`](crate::ServerConfig)); it has its own table, methods, admin auth and JSON errors |
//!
//! # Contract
//!
//! - In single-database mode the database is served at `/` and `/db/...` is 404; with many
//!   databases `/` is 404 (naming the `/db/<name>` URL to use instead). A database name that
//!   [`DbName`] refuses is 400; an unknown database 404.
//! - Every database route is authorized here before its handler runs (`access.rs`):
//!   `POST /` (and `/db/<name>`) accepts the access token or any scoped token of the database;
//!   `/v2/...` a data-path token whose scope allows the route (`read`: snapshot_read, watch;
//!   `write`: atomic_write; `queue`: dequeue, finish); a bad credential is 401, a valid one
//!   lacking the scope or the database 403 (`/eventual/v2/...` needs what `/v2/...` needs). Then every
//!   `/v2/...` and `/eventual/v2/...` route passes the data-path
//!   guard of `routes/guard.rs` (protocol headers, per-token rate limit, body bound; `/v2/watch`
//!   also takes a slot of its token's watch-stream bound, see [`crate::limits`]); `/metrics`
//!   checks the access token itself; `/healthz` is open.
//! - Every request body must arrive within the body read timeout (408 otherwise).
//! - Every answered request is counted in the metrics by route name (the table's path without
//!   the prefix: `metadata`, `snapshot_read`, ..., `admin`, `console`, `unknown` for a 404 path), status and
//!   database (`default` in single-database mode; `none` when no database was resolved, so that
//!   made-up names cannot grow the label set), with its latency.
//! - Any other path is 404 `Resource not found.`; a known path with another method is 405 with
//!   an `Allow` header (`POST`; `GET, HEAD` for `/healthz`; `GET` for `/metrics`), checked before
//!   authentication.
//! - The request handler never fails and never panics outward: handler errors become their
//!   [`ApiError`] response, a panicking handler a 500; every request is logged
//!   once (failures at info/warn, successes at debug).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use http::header::{HeaderValue, ALLOW};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body;
use kv_traits::Database;

use crate::access::Grant;
use crate::auth::bearer_token;
use crate::body::{error_response, ResponseBody};
use crate::error::ApiError;
use crate::limits::{TimeoutBody, TokenId};
use crate::metrics::{DatabaseLabel, DEFAULT_DATABASE};
use crate::registry::DbName;
use crate::routes::metadata::{DATA_PATH_PREFIX, EVENTUAL_DATA_PATH_PREFIX};
use crate::routes::{admin, datapath, guard, health, metadata, metrics, queue, revocable, watch};
use crate::state::{AppState, ConnInfo, Databases, Front};
use crate::tokens::Scope;

/// Path prefix of the databases of a server with many (`/db/<name>`).
pub const DATABASES_PREFIX: &str = "/db";

/// Path prefix of the admin API.
pub const ADMIN_PREFIX: &str = "/admin";

/// Path prefix of the web console.
pub const CONSOLE_PREFIX: &str = "/console";

/// Where a path leads: a route of a database (`None` = the single one) or the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target<'p> {
    Database(Option<&'p str>, Route),
    Admin,
    Console,
}

impl<'p> Target<'p> {
    fn of_path(path: &'p str) -> Option<Target<'p>> {
        if path == ADMIN_PREFIX || path.starts_with("/admin/") {
            return Some(Target::Admin);
        }
        if path == CONSOLE_PREFIX || path.starts_with("/console/") {
            return Some(Target::Console);
        }
        let Some(rest) = path
            .strip_prefix(DATABASES_PREFIX)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Route::of_path(path).map(|r| Target::Database(None, r));
        };
        let (name, rest) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let route = match rest {
            "" | "/" => Route::Metadata,
            _ => match Route::of_path(rest)? {
                Route::Metadata | Route::Health | Route::Metrics => return None,
                r => r,
            },
        };
        Some(Target::Database(Some(name), route))
    }
}

/// A route of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metadata,
    SnapshotRead,
    AtomicWrite,
    Watch,
    QueueDequeue,
    QueueFinish,
    EventualSnapshotRead,
    EventualWatch,
    /// Writes and queue calls sent to the `eventual` endpoint.
    EventualRefused,
    Health,
    Metrics,
}

impl Route {
    /// The route of `path`, if any (the table's first column).
    fn of_path(path: &str) -> Option<Route> {
        match path {
            "/" => Some(Route::Metadata),
            "/healthz" => Some(Route::Health),
            "/metrics" => Some(Route::Metrics),
            _ if path.starts_with(EVENTUAL_DATA_PATH_PREFIX) => {
                match &path[EVENTUAL_DATA_PATH_PREFIX.len()..] {
                    "/snapshot_read" => Some(Route::EventualSnapshotRead),
                    "/watch" => Some(Route::EventualWatch),
                    "/atomic_write" | "/queue/dequeue" | "/queue/finish" => {
                        Some(Route::EventualRefused)
                    }
                    _ => None,
                }
            }
            _ => match path.strip_prefix(DATA_PATH_PREFIX)? {
                "/snapshot_read" => Some(Route::SnapshotRead),
                "/atomic_write" => Some(Route::AtomicWrite),
                "/watch" => Some(Route::Watch),
                "/queue/dequeue" => Some(Route::QueueDequeue),
                "/queue/finish" => Some(Route::QueueFinish),
                _ => None,
            },
        }
    }

    /// Whether the route accepts `method`.
    fn accepts(self, method: &Method) -> bool {
        match self {
            Route::Health => method == Method::GET || method == Method::HEAD,
            Route::Metrics => method == Method::GET,
            _ => method == Method::POST,
        }
    }

    /// The scope a token needs for the route (the metadata exchange accepts any).
    fn needed_scope(self) -> Scope {
        match self {
            Route::AtomicWrite => Scope::Write,
            Route::QueueDequeue | Route::QueueFinish => Scope::Queue,
            _ => Scope::Read,
        }
    }

    /// The route's name in metrics.
    fn name(route: Option<Route>) -> &'static str {
        match route {
            None => "unknown",
            Some(Route::Metadata) => "metadata",
            Some(Route::SnapshotRead) => "snapshot_read",
            Some(Route::AtomicWrite) => "atomic_write",
            Some(Route::Watch) => "watch",
            Some(Route::QueueDequeue) => "queue_dequeue",
            Some(Route::QueueFinish) => "queue_finish",
            Some(Route::EventualSnapshotRead) => "eventual_snapshot_read",
            Some(Route::EventualWatch) => "eventual_watch",
            Some(Route::EventualRefused) => "eventual_refused",
            Some(Route::Health) => "healthz",
            Some(Route::Metrics) => "metrics",
        }
    }

    /// The method named in a 405 message, and the `Allow` header of a 405.
    fn allowed(self) -> (&'static str, &'static str) {
        match self {
            Route::Health => ("GET", "GET, HEAD"),
            Route::Metrics => ("GET", "GET"),
            _ => ("POST", "POST"),
        }
    }
}

/// Handles one request; never fails and never panics outward (a panic becomes a 500).
pub(crate) async fn handle<D: Database, B>(
    front: Arc<Front<D>>,
    conn: ConnInfo,
    req: Request<B>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let version = req.version();
    let target = Target::of_path(&path);
    let route = match target {
        Some(Target::Database(_, route)) => Some(route),
        _ => None,
    };
    let route_name = match target {
        Some(Target::Admin) => "admin",
        Some(Target::Console) => "console",
        _ => Route::name(route),
    };
    let limiter = front.template.limiter.clone();
    let body_timeout = limiter.limits().body_read_timeout;
    let req = req.map(|body| TimeoutBody::new(body, body_timeout));
    let mut label = None;
    let result = AssertUnwindSafe(resolve(&front, conn, target, &mut label, req))
        .catch_unwind()
        .await;
    let mut res = match result {
        Ok(Ok(res)) => res,
        Ok(Err(err)) => error_response(&err),
        Err(_) => {
            tracing::error!(%method, %path, "request handler panicked");
            error_response(&ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An internal server error occurred.",
            ))
        }
    };
    if let (StatusCode::METHOD_NOT_ALLOWED, Some(route)) = (res.status(), route) {
        res.headers_mut()
            .entry(ALLOW)
            .or_insert(HeaderValue::from_static(route.allowed().1));
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let latency_us = elapsed.as_micros() as u64;
    let metrics = limiter.metrics();
    if status == StatusCode::REQUEST_TIMEOUT.as_u16() {
        metrics.limited("body_timeout");
    }
    let label = label.unwrap_or_else(|| match front.databases {
        Databases::Single(_) => DatabaseLabel::new(DEFAULT_DATABASE),
        Databases::Many(_) => DatabaseLabel::new(NO_DATABASE),
    });
    metrics.request(route_name, status, &label, elapsed.as_secs_f64());
    // One line per request costs real CPU at tens of thousands of requests per second: successes
    // are logged at debug level (RUST_LOG=kv_connect_server=debug), failures always.
    if res.status().is_server_error() {
        tracing::warn!(%method, %path, status, latency_us, ?version, peer = %conn.peer, "request");
    } else if res.status().is_client_error() {
        tracing::info!(%method, %path, status, latency_us, ?version, peer = %conn.peer, "request");
    } else {
        tracing::debug!(%method, %path, status, latency_us, ?version, peer = %conn.peer, "request");
    }
    res
}

/// The `database` metrics label of requests that reached no database (server-wide routes,
/// unknown or unauthorized names).
const NO_DATABASE: &str = "none";

/// Finds the database of the request and authorizes it (see the contract), then dispatches;
/// sets `label` to the database's metrics label once it is resolved.
async fn resolve<D: Database, B>(
    front: &Front<D>,
    conn: ConnInfo,
    target: Option<Target<'_>>,
    label: &mut Option<DatabaseLabel>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "Resource not found.");
    let (name, route) = match target {
        None => return Err(not_found()),
        Some(Target::Admin) => return admin::handle(front, req).await,
        Some(Target::Console) => return Ok(crate::console::handle(front, conn, req).await),
        Some(Target::Database(name, route)) => (name, route),
    };
    if !route.accepts(req.method()) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method not allowed; use {}.", route.allowed().0),
        ));
    }
    if route == Route::Health {
        let mut res = health::healthz(front.template.health_report.as_ref());
        if let Databases::Many(registry) = &front.databases {
            res = health::append(res, registry.health_lines()).await;
        }
        return Ok(res);
    }
    if route == Route::Metrics {
        let template = &front.template;
        return metrics::metrics(&template.access, template.limiter.metrics(), req.headers());
    }
    let database = name.map(DbName::parse).transpose()?;
    match (&front.databases, &database) {
        (Databases::Single(_), Some(_)) => return Err(not_found()),
        (Databases::Many(_), None) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "This server serves several databases: open http://HOST:PORT/db/<name>.",
            ))
        }
        _ => {}
    }
    let access = &front.template.access;
    let token = bearer_token(req.headers().get(http::header::AUTHORIZATION))?;
    let now = std::time::SystemTime::now();
    let grant = if route == Route::Metadata {
        Some(access.credential(token, database.as_ref(), now)?)
    } else {
        access.data_path(token, database.as_ref(), route.needed_scope(), now)?;
        None
    };
    let still_valid = matches!(route, Route::Watch | Route::EventualWatch)
        .then(|| access.still_valid(token))
        .flatten();
    let state = match (&front.databases, &database) {
        (Databases::Many(registry), Some(name)) => registry.state(name, &front.template).await?,
        (Databases::Single(state), _) => state.clone(),
        (Databases::Many(_), None) => return Err(not_found()),
    };
    *label = Some(state.database_name.clone());
    // A dequeue long poll re-authorizes while it waits (routes/revocable.rs).
    let reauthorize: Option<revocable::Reauthorize> = (route == Route::QueueDequeue).then(|| {
        let (access, token, database) = (access.clone(), token.to_string(), database.clone());
        Box::new(move || {
            access
                .data_path(
                    &token,
                    database.as_ref(),
                    Scope::Queue,
                    std::time::SystemTime::now(),
                )
                .map(drop)
                .map_err(ApiError::from)
        }) as revocable::Reauthorize
    });
    let res = dispatch(&state, conn, route, grant, reauthorize, req).await?;
    Ok(match still_valid {
        Some(check) => revocable::end_when_invalid(res, check),
        None => res,
    })
}

/// Runs the handler of `route` (the table's second column) on an authorized request; `grant`
/// is the metadata exchange's caller, `reauthorize` re-checks a dequeue's credential.
async fn dispatch<D: Database, B>(
    state: &AppState<D>,
    conn: ConnInfo,
    route: Route,
    grant: Option<Grant>,
    reauthorize: Option<revocable::Reauthorize>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match route {
        Route::Metadata => match grant {
            Some(grant) => metadata::exchange(state, conn, &grant, req).await,
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "Not authorized.")),
        },
        Route::Health => Ok(health::healthz(state.health_report.as_ref())),
        Route::Metrics => metrics::metrics(&state.access, &state.metrics, req.headers()),
        Route::SnapshotRead => {
            let body = guard::data_request(state, req).await?;
            datapath::snapshot_read(state, &body).await
        }
        Route::AtomicWrite => {
            let body = guard::data_request(state, req).await?;
            datapath::atomic_write(state, &body).await
        }
        Route::Watch => {
            let token = TokenId::of_headers(req.headers());
            let version = req.version();
            let body = guard::data_request(state, req).await?;
            watch::watch(state, token, version, &body).await
        }
        Route::QueueDequeue => {
            let body = guard::data_request(state, req).await?;
            let reauthorize = reauthorize.unwrap_or_else(|| Box::new(|| Ok(())));
            queue::dequeue(state, &body, reauthorize).await
        }
        Route::QueueFinish => {
            let body = guard::data_request(state, req).await?;
            queue::finish(state, &body).await
        }
        Route::EventualSnapshotRead => {
            let eventual = guard::eventual_database(state)?;
            let body = guard::data_request(state, req).await?;
            datapath::eventual_snapshot_read(&**eventual, &body).await
        }
        Route::EventualWatch => {
            guard::eventual_database(state)?;
            let token = TokenId::of_headers(req.headers());
            let version = req.version();
            let body = guard::data_request(state, req).await?;
            watch::watch(state, token, version, &body).await
        }
        Route::EventualRefused => {
            guard::eventual_database(state)?;
            guard::data_request(state, req).await?;
            Err(guard::refused_on_eventual())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_maps_every_route_and_nothing_else() {
        let table = [
            ("/", Route::Metadata),
            ("/healthz", Route::Health),
            ("/metrics", Route::Metrics),
            ("/v2/snapshot_read", Route::SnapshotRead),
            ("/v2/atomic_write", Route::AtomicWrite),
            ("/v2/watch", Route::Watch),
            ("/v2/queue/dequeue", Route::QueueDequeue),
            ("/v2/queue/finish", Route::QueueFinish),
            ("/eventual/v2/snapshot_read", Route::EventualSnapshotRead),
            ("/eventual/v2/watch", Route::EventualWatch),
            ("/eventual/v2/atomic_write", Route::EventualRefused),
            ("/eventual/v2/queue/dequeue", Route::EventualRefused),
            ("/eventual/v2/queue/finish", Route::EventualRefused),
        ];
        for (path, route) in table {
            assert_eq!(Route::of_path(path), Some(route), "{path}");
        }
        for path in [
            "",
            "/v2",
            "/v2/",
            "/v2/queue",
            "/v3/snapshot_read",
            "//snapshot_read",
            "/v2/snapshot_read/x",
            "/healthz/",
            "/eventual/v2",
            "/eventual/v2/",
            "/eventual/v3/snapshot_read",
            "/eventual/v2/nope",
        ] {
            assert_eq!(Route::of_path(path), None, "{path}");
        }
        assert!(Route::Health.accepts(&Method::HEAD));
        assert!(!Route::Health.accepts(&Method::POST));
        assert!(Route::Watch.accepts(&Method::POST));
        assert!(!Route::Metadata.accepts(&Method::GET));
    }

    #[test]
    fn database_paths() {
        let db = |name, route| Some(Target::Database(Some(name), route));
        assert_eq!(Target::of_path("/db/app"), db("app", Route::Metadata));
        assert_eq!(Target::of_path("/db/app/"), db("app", Route::Metadata));
        assert_eq!(
            Target::of_path("/db/app/v2/snapshot_read"),
            db("app", Route::SnapshotRead)
        );
        assert_eq!(
            Target::of_path("/db/a/v2/queue/finish"),
            db("a", Route::QueueFinish)
        );
        // Names are validated later (400), not routed away.
        assert_eq!(Target::of_path("/db/A..b"), db("A..b", Route::Metadata));
        assert_eq!(Target::of_path("/db/app/healthz"), None);
        assert_eq!(Target::of_path("/db/app/v2"), None);
        assert_eq!(Target::of_path("/db/app/x"), None);
        assert_eq!(Target::of_path("/db"), None);
        assert_eq!(Target::of_path("/dbx"), None);
        assert_eq!(Target::of_path("/admin/tokens"), Some(Target::Admin));
        assert_eq!(Target::of_path("/console"), Some(Target::Console));
        assert_eq!(Target::of_path("/console/api/list"), Some(Target::Console));
        assert_eq!(Target::of_path("/consoles"), None);
        assert_eq!(Target::of_path("/db/app/console"), None);
        assert_eq!(
            Target::of_path("/v2/watch"),
            Some(Target::Database(None, Route::Watch))
        );
    }
}
