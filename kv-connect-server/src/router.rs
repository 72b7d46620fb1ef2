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
//! | `POST /v2/queue/dequeue` | `routes/queue.rs` | queue extension `queue-v1`: `DequeueRequest` → `DequeueResponse`; long-polls up to 30 s and leases the next ready message |
//! | `POST /v2/queue/finish` | `routes/queue.rs` | queue extension `queue-v1`: `FinishRequest` → `FinishResponse`; ends a delivery (success, or failure to retry) |
//! | `POST /eventual/v2/snapshot_read` | `routes/datapath.rs` | only with an eventual-read database ([`ServerConfig::eventual`](crate::ServerConfig::eventual), else 404): `SnapshotRead` answered from it, `read_is_strongly_consistent = false` |
//! | `POST /eventual/v2/watch` | `routes/watch.rs` | only with an eventual-read database: the same as `/v2/watch` (npm watches through the `eventual` endpoint) |
//! | `POST /eventual/v2/atomic_write`, `/eventual/v2/queue/dequeue`, `/eventual/v2/queue/finish` | `routes/guard.rs` | only with an eventual-read database: 400, writes and queues go to the `strong` endpoint |
//! | `GET`/`HEAD /healthz` | `routes/health.rs` | 200 `ok` (plus the configured health report lines) |
//!
//! # Contract
//!
//! - Every `/v2/...` and `/eventual/v2/...` route first passes the data-path guard of `routes/guard.rs` (data-path
//!   token, protocol headers, body bound); `POST /` checks the access token itself; `/healthz`
//!   is open.
//! - Any other path is 404 `Resource not found.`; a known path with another method is 405 with
//!   an `Allow` header (`POST`, or `GET, HEAD` for `/healthz`), checked before authentication.
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

use crate::body::{error_response, ResponseBody};
use crate::error::ApiError;
use crate::routes::metadata::{DATA_PATH_PREFIX, EVENTUAL_DATA_PATH_PREFIX};
use crate::routes::{datapath, guard, health, metadata, queue, watch};
use crate::state::{AppState, ConnInfo};

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
}

impl Route {
    /// The route of `path`, if any (the table's first column).
    fn of_path(path: &str) -> Option<Route> {
        match path {
            "/" => Some(Route::Metadata),
            "/healthz" => Some(Route::Health),
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
            _ => method == Method::POST,
        }
    }

    /// The method named in a 405 message, and the `Allow` header of a 405.
    fn allowed(self) -> (&'static str, &'static str) {
        match self {
            Route::Health => ("GET", "GET, HEAD"),
            _ => ("POST", "POST"),
        }
    }
}

/// Handles one request; never fails and never panics outward (a panic becomes a 500).
pub(crate) async fn handle<D: Database, B>(
    state: Arc<AppState<D>>,
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
    let route = Route::of_path(&path);
    let result = AssertUnwindSafe(dispatch(&state, conn, route, req))
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
            .insert(ALLOW, HeaderValue::from_static(route.allowed().1));
    }
    let status = res.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
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

/// Runs the handler of `route` (the table's second column).
async fn dispatch<D: Database, B>(
    state: &AppState<D>,
    conn: ConnInfo,
    route: Option<Route>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(route) = route else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Resource not found."));
    };
    if !route.accepts(req.method()) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method not allowed; use {}.", route.allowed().0),
        ));
    }
    match route {
        Route::Metadata => metadata::exchange(state, conn, req).await,
        Route::Health => Ok(health::healthz(state)),
        Route::SnapshotRead => {
            let body = guard::data_request(state, req).await?;
            datapath::snapshot_read(state, &body).await
        }
        Route::AtomicWrite => {
            let body = guard::data_request(state, req).await?;
            datapath::atomic_write(state, &body).await
        }
        Route::Watch => {
            let body = guard::data_request(state, req).await?;
            watch::watch(state, &body).await
        }
        Route::QueueDequeue => {
            let body = guard::data_request(state, req).await?;
            queue::dequeue(state, &body).await
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
            let body = guard::data_request(state, req).await?;
            watch::watch(state, &body).await
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
}
