//! Request routing and the handlers of the metadata exchange and the data path.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Body, Frame};
use kv_proto::{self as wire, pb, queue_pb};
use kv_traits::{Consistency, Database, KvEntry, KvError, Limits, QueueLease, WatchKeyOutput};
use prost::Message;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::auth::{bearer_token, TokenAuthority};
use crate::error::ApiError;
use crate::metadata::{self, Endpoint, MetadataResponse, DATA_PATH_PREFIX};

/// Response body type of the server.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// Content type of `/snapshot_read` and `/atomic_write` responses.
pub const PROTOBUF: &str = "application/x-protobuf";
/// Content type of `/watch` responses.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// What the handlers share: the database and the server settings.
pub(crate) struct AppState<D> {
    pub db: Arc<D>,
    pub tokens: TokenAuthority,
    pub database_id: Uuid,
    pub limits: Limits,
    pub max_body_size: usize,
    pub watch_keepalive: std::time::Duration,
    /// Becomes `true` when the server shuts down; watch streams end then.
    pub shutdown: watch::Receiver<bool>,
    /// Set when serving as a read replica.
    pub replica: Option<crate::server::ReplicaSettings>,
    /// Extra `/healthz` lines.
    pub health_report: Option<crate::server::HealthReport>,
}

/// Facts about the connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnInfo {
    pub tls: bool,
    pub peer: std::net::SocketAddr,
}

/// The advertised data-path endpoints: this server, `strong`; or, on a replica, this server as
/// `eventual` followed by the primary (or this server again) as the `strong` endpoint every
/// client requires.
fn endpoints(url: String, replica: Option<&crate::server::ReplicaSettings>) -> Vec<Endpoint> {
    match replica {
        None => vec![Endpoint {
            url,
            consistency: "strong",
        }],
        Some(r) => {
            let strong = r.primary_data_url.clone().unwrap_or_else(|| url.clone());
            vec![
                Endpoint {
                    url,
                    consistency: "eventual",
                },
                Endpoint {
                    url: strong,
                    consistency: "strong",
                },
            ]
        }
    }
}

fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into()).boxed()
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn error_response(err: &ApiError) -> Response<ResponseBody> {
    response(err.status, "text/plain; charset=utf-8", err.message.clone())
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method not allowed; use {allow}."),
    )
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
    let result = AssertUnwindSafe(route(&state, conn, req))
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
    if res.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = if path == "/healthz" {
            "GET, HEAD"
        } else {
            "POST"
        };
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
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

async fn route<D: Database, B>(
    state: &AppState<D>,
    conn: ConnInfo,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path();
    let op = match path.strip_prefix(DATA_PATH_PREFIX) {
        Some("/snapshot_read") => Some(DataOp::SnapshotRead),
        Some("/atomic_write") => Some(DataOp::AtomicWrite),
        Some("/watch") => Some(DataOp::Watch),
        Some("/queue/dequeue") => Some(DataOp::QueueDequeue),
        Some("/queue/finish") => Some(DataOp::QueueFinish),
        _ => None,
    };
    if let Some(op) = op {
        if req.method() != Method::POST {
            return Err(method_not_allowed("POST"));
        }
        return data_path(state, op, req).await;
    }
    match path {
        "/" => {
            if req.method() != Method::POST {
                return Err(method_not_allowed("POST"));
            }
            metadata_exchange(state, conn, req).await
        }
        "/healthz" => {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return Err(method_not_allowed("GET"));
            }
            let mut body = String::from("ok\n");
            if let Some(report) = &state.health_report {
                body.push_str(&report());
            }
            Ok(response(StatusCode::OK, "text/plain; charset=utf-8", body))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "Resource not found.")),
    }
}

/// Reads a request body of at most `max` bytes (413 beyond).
async fn read_body<B>(
    req: Request<B>,
    max: usize,
) -> Result<(http::request::Parts, Bytes), ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is too large (max {max} bytes)."),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "Failed to read the request body: {e}."
        ))),
    }
}

async fn metadata_exchange<D: Database, B>(
    state: &AppState<D>,
    conn: ConnInfo,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let token = bearer_token(req.headers().get(http::header::AUTHORIZATION))?;
    state.tokens.check_access_token(token)?;
    let (parts, body) = read_body(req, 64 * 1024).await?;
    let version = metadata::negotiate_version(&body)?;
    let url = if version == 1 {
        metadata::absolute_endpoint(&parts.uri, &parts.headers, conn.tls)?
    } else {
        DATA_PATH_PREFIX.to_string()
    };
    let (token, expires) = state.tokens.issue(SystemTime::now());
    let meta = MetadataResponse {
        version,
        database_id: state.database_id.hyphenated().to_string(),
        endpoints: endpoints(url, state.replica.as_ref()),
        token,
        expires_at: metadata::rfc3339_utc(expires),
    };
    let json = serde_json::to_vec(&meta).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to encode metadata: {e}"),
        )
    })?;
    let mut res = response(StatusCode::OK, "application/json", json);
    res.headers_mut().insert(
        wire::EXTENSIONS_HEADER,
        HeaderValue::from_static(wire::QUEUE_EXTENSION),
    );
    Ok(res)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataOp {
    SnapshotRead,
    AtomicWrite,
    Watch,
    /// Queue extension `queue-v1`: lease the next ready message (long poll).
    QueueDequeue,
    /// Queue extension `queue-v1`: end a delivery.
    QueueFinish,
}

/// Checks the protocol headers of a data-path request.
///
/// v2/v3 clients send `x-denokv-version: 2|3` and `x-denokv-database-id`; v1 clients send no
/// version header and `x-transaction-domain-id`. Either way the id must be this database's.
fn check_protocol_headers(headers: &HeaderMap, database_id: Uuid) -> Result<(), ApiError> {
    let id_header = match headers.get("x-denokv-version") {
        Some(v) => {
            let v = v.to_str().unwrap_or("").trim();
            if v != "2" && v != "3" {
                return Err(ApiError::bad_request(format!(
                    "Unsupported protocol version {v:?} in the x-denokv-version header; this server speaks 2 and 3 (and 1 without the header)."
                )));
            }
            "x-denokv-database-id"
        }
        None => {
            if headers.contains_key("x-transaction-domain-id") {
                "x-transaction-domain-id"
            } else {
                "x-denokv-database-id"
            }
        }
    };
    let value = headers.get(id_header).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid database id: the {id_header} header is missing."
        ))
    })?;
    let id = value
        .to_str()
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid database id: the {id_header} header is not a UUID."
            ))
        })?;
    if id != database_id {
        return Err(ApiError::bad_request(format!(
            "Invalid database id: {id} is not this database ({database_id}); exchange metadata again."
        )));
    }
    Ok(())
}

fn protobuf_response(msg: &impl Message) -> Response<ResponseBody> {
    response(StatusCode::OK, PROTOBUF, msg.encode_to_vec())
}

async fn data_path<D: Database, B>(
    state: &AppState<D>,
    op: DataOp,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let token = bearer_token(req.headers().get(http::header::AUTHORIZATION))?;
    state.tokens.verify(token, SystemTime::now())?;
    check_protocol_headers(req.headers(), state.database_id)?;
    let (_, body) = read_body(req, state.max_body_size).await?;
    match op {
        DataOp::SnapshotRead => {
            let request: pb::SnapshotRead = wire::decode_request(&body)?;
            let ranges = wire::read_ranges_from_wire(request)?;
            state.limits.validate_read(&ranges).map_err(KvError::from)?;
            let result = state.db.snapshot_read(ranges, Consistency::Strong).await?;
            Ok(response(
                StatusCode::OK,
                PROTOBUF,
                wire::encode_snapshot_read_output(&result),
            ))
        }
        DataOp::AtomicWrite | DataOp::QueueDequeue | DataOp::QueueFinish
            if state.replica.is_some() =>
        {
            let source = state
                .replica
                .as_ref()
                .map(|r| r.source.as_str())
                .unwrap_or("");
            Err(ApiError::bad_request(format!(
                "This database is a read-only replica of {source}; it does not accept writes or queue operations. Send them to the primary."
            )))
        }
        DataOp::AtomicWrite => {
            let request: pb::AtomicWrite = wire::decode_request(&body)?;
            let write = wire::atomic_write_from_wire(request)?;
            state
                .limits
                .validate_write(&write, now_ms())
                .map_err(KvError::from)?;
            match state.db.atomic_write(write).await {
                Ok(result) => Ok(protobuf_response(&wire::atomic_write_output(result))),
                Err(KvError::WriteDisabled) => {
                    Ok(protobuf_response(&wire::atomic_write_disabled_output()))
                }
                Err(e) => Err(e.into()),
            }
        }
        DataOp::QueueDequeue => {
            let request: queue_pb::DequeueRequest = wire::decode_request(&body)?;
            let wait = request.wait_ms.min(wire::MAX_DEQUEUE_WAIT_MS);
            let mut shutdown = state.shutdown.clone();
            let dequeued = tokio::select! {
                r = state.db.dequeue(std::time::Duration::from_millis(u64::from(wait))) => r?,
                _ = stopped(&mut shutdown) => None,
            };
            let out = match dequeued {
                Some(m) => queue_pb::DequeueResponse {
                    lease: m.lease.to_bytes().to_vec(),
                    payload: m.payload,
                    attempt: m.attempt,
                    lease_deadline_ms: i64::try_from(m.lease.deadline_ms).unwrap_or(i64::MAX),
                },
                None => queue_pb::DequeueResponse::default(),
            };
            Ok(protobuf_response(&out))
        }
        DataOp::QueueFinish => {
            let request: queue_pb::FinishRequest = wire::decode_request(&body)?;
            let lease = QueueLease::from_bytes(&request.lease).ok_or_else(|| {
                ApiError::bad_request(
                    "Invalid queue lease: expected the 24-byte token from dequeue.",
                )
            })?;
            state.db.finish(lease, request.success).await?;
            Ok(protobuf_response(&queue_pb::FinishResponse {}))
        }
        DataOp::Watch => {
            let request: pb::Watch = wire::decode_request(&body)?;
            let keys = wire::watch_keys_from_wire(request);
            state.limits.validate_watch(&keys).map_err(KvError::from)?;
            for k in &keys {
                if k.is_empty() {
                    return Err(KvError::from(kv_traits::LimitError::EmptyKey).into());
                }
            }
            let stream = state.db.watch(keys.clone()).await?;
            Ok(watch_response(
                state.db.clone(),
                keys,
                stream,
                state.watch_keepalive,
                state.shutdown.clone(),
            ))
        }
    }
}

/// Completes when the shutdown flag becomes `true` (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Streams watch notifications as `u32 LE length ‖ WatchOutput` frames with a keep-alive frame
/// every `keepalive`, until the client goes away, the database stream ends, or the server
/// shuts down.
///
/// Every frame is a full snapshot: each key is reported `changed = true` with its current entry
/// (absent entry = key missing), in request order. Deno 2.9.6 shows a key reported
/// `changed = false` as missing instead of keeping its previous value, and both clients drop
/// repeated entries by comparing versionstamps, so full frames are what works everywhere.
fn watch_response<D: Database>(
    db: Arc<D>,
    keys: Vec<Vec<u8>>,
    mut stream: kv_traits::WatchStream,
    keepalive: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Response<ResponseBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut snapshot = FullSnapshot {
            db,
            keys,
            last: Vec::new(),
        };
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = tx.closed() => break,
                _ = ticker.tick() => Bytes::from_static(&wire::WATCH_KEEPALIVE_FRAME),
                item = stream.next() => match item {
                    Some(Ok(outputs)) => match snapshot.fill(outputs).await {
                        Ok(full) => Bytes::from(wire::encode_watch_frame(&wire::watch_output(full))),
                        Err(e) => {
                            tracing::warn!(error = %e, "watch read failed; ending the response");
                            break;
                        }
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch stream failed; ending the response");
                        break;
                    }
                    None => break,
                },
            };
            if tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut res = Response::new(BodyExt::boxed(StreamBody::new(body)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
    res
}

/// Turns watch notifications into full snapshots by remembering each key's last entry.
struct FullSnapshot<D> {
    db: Arc<D>,
    keys: Vec<Vec<u8>>,
    /// Last entry delivered per key; `None` = never delivered.
    last: Vec<Option<Option<KvEntry>>>,
}

impl<D: Database> FullSnapshot<D> {
    async fn fill(&mut self, outputs: Vec<WatchKeyOutput>) -> Result<Vec<WatchKeyOutput>, KvError> {
        if self.last.len() != outputs.len() {
            self.last = vec![None; outputs.len()];
        }
        let mut full = Vec::with_capacity(outputs.len());
        for (i, output) in outputs.into_iter().enumerate() {
            let entry = match output {
                WatchKeyOutput::Changed(entry) => entry,
                WatchKeyOutput::Unchanged => match &self.last[i] {
                    Some(entry) => entry.clone(),
                    // The database never reported this key (it should have, in its first
                    // notification): read it.
                    None => {
                        let key = self.keys.get(i).cloned().unwrap_or_default();
                        let ranges = vec![kv_traits::ReadRange::single(&key)];
                        let mut result = self.db.snapshot_read(ranges, Consistency::Strong).await?;
                        result.pop().and_then(|mut r| r.pop())
                    }
                },
            };
            self.last[i] = Some(entry.clone());
            full.push(WatchKeyOutput::Changed(entry));
        }
        Ok(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn protocol_headers() {
        let id = Uuid::from_u128(0x1234);
        let s = id.hyphenated().to_string();
        let upper = s.to_uppercase();
        assert!(check_protocol_headers(
            &headers(&[("x-denokv-version", "3"), ("x-denokv-database-id", &s)]),
            id
        )
        .is_ok());
        assert!(check_protocol_headers(
            &headers(&[("x-denokv-version", "2"), ("x-denokv-database-id", &upper)]),
            id
        )
        .is_ok());
        assert!(check_protocol_headers(&headers(&[("x-transaction-domain-id", &s)]), id).is_ok());
        let bad = [
            headers(&[("x-denokv-version", "4"), ("x-denokv-database-id", &s)]),
            headers(&[("x-denokv-version", "3")]),
            headers(&[("x-denokv-version", "3"), ("x-denokv-database-id", "nope")]),
            headers(&[
                ("x-denokv-version", "3"),
                (
                    "x-denokv-database-id",
                    "00000000-0000-0000-0000-000000000000",
                ),
            ]),
            headers(&[]),
        ];
        for h in bad {
            let e = check_protocol_headers(&h, id).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{h:?}");
        }
    }
}
