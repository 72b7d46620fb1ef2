//! The listener: accepts TCP (optionally TLS) connections, serves HTTP/1.1 and HTTP/2 on them,
//! hands every request to the [router](crate::router), and shuts down gracefully.
//!
//! # Contract
//!
//! - One port speaks HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN `h2` with TLS), detected per
//!   connection from the client preface. A TLS handshake has 10 s; the bounds on connections,
//!   slow request heads and bodies, and unresponsive HTTP/2 peers are those of
//!   [`ServerLimits`](crate::ServerLimits) (see [`crate::limits`]): a connection over
//!   `max_connections` is answered 503 and closed, one that sends no complete request head
//!   within `header_read_timeout` is closed.
//! - With [`ServerConfig::metrics_addr`], a second listener serves `GET /metrics` (only) without
//!   authentication; it stops with the server.
//! - HTTP/2 connections carry up to
//!   [`Http2Settings`](crate::http2::Http2Settings)`::max_concurrent_streams` streams at once
//!   (thousands of watches on one connection), each with a bounded send buffer.
//! - [`KvConnectServer::handle`] serves one request in-process exactly as a connection would.
//! - It serves one database ([`KvConnectServer::new`]) at `/`, or the databases of a
//!   [`Registry`] at `/db/<name>` ([`KvConnectServer::with_registry`]).
//! - Shutdown: stop accepting, end `/watch` streams and dequeue long polls, let in-flight
//!   requests finish for up to `shutdown_timeout`, then close the database(s) (the first error
//!   is the result of [`BoundServer::serve_with_shutdown`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use kv_traits::Database;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

use crate::body::ResponseBody;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::limits::Limiter;
use crate::metrics::{Metrics, SingleDatabase, StatsSource, DEFAULT_DATABASE};
use crate::registry::Registry;
use crate::router::handle;
use crate::routes::metrics as metrics_route;
use crate::state::{stopped, ConnInfo, Databases, Front, StateTemplate};

/// What a server serves.
enum Served<D> {
    Single(Arc<D>),
    Many(Arc<Registry<D>>),
}

impl<D> Clone for Served<D> {
    fn clone(&self) -> Self {
        match self {
            Served::Single(db) => Served::Single(db.clone()),
            Served::Many(r) => Served::Many(r.clone()),
        }
    }
}

impl<D: Database> Served<D> {
    /// The router's starting point, stopping streams when `stop` turns `true`.
    fn front(
        &self,
        config: &ServerConfig,
        limiter: &Arc<Limiter>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Front<D>> {
        let template = StateTemplate::new(config, limiter);
        let databases = match self {
            Served::Single(db) => Databases::Single(template.state(
                db.clone(),
                None,
                config.resolved_database_id(),
                stop,
            )),
            Served::Many(registry) => Databases::Many(registry.clone()),
        };
        Arc::new(Front {
            template,
            databases,
        })
    }
}

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The bound listener cannot tell its own address.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// Closing the database at shutdown failed.
    #[error("closing the database failed: {0}")]
    Close(#[from] kv_traits::KvError),
}

/// A KV Connect server over a [`Database`].
pub struct KvConnectServer<D> {
    served: Served<D>,
    config: ServerConfig,
    /// Keeps the `/watch` streams of [`handle`](KvConnectServer::handle) running; they end when
    /// this server value is dropped (or bound).
    in_process_stop: watch::Sender<bool>,
    /// The abuse limits' state and, through it, the metrics.
    limiter: Arc<Limiter>,
}

impl<D: Database> KvConnectServer<D> {
    /// A server for `db` with `config`.
    pub fn new(db: D, config: ServerConfig) -> Self {
        Self::from_arc(Arc::new(db), config)
    }

    /// A server for a database that is shared with other code.
    pub fn from_arc(db: Arc<D>, config: ServerConfig) -> Self {
        let source =
            SingleDatabase::new(DEFAULT_DATABASE, db.clone(), config.metrics_report.clone());
        let limiter = Limiter::new(
            config.limits.clone(),
            Arc::new(Metrics::new(Arc::new(source))),
        );
        KvConnectServer {
            served: Served::Single(db),
            config,
            in_process_stop: watch::channel(false).0,
            limiter,
        }
    }

    /// A server for the databases of `registry`, each at `/db/<name>` (see
    /// [`crate::registry`]).
    pub fn with_registry(registry: Arc<Registry<D>>, config: ServerConfig) -> Self {
        let limiter = Limiter::new(
            config.limits.clone(),
            Arc::new(Metrics::new(registry.clone())),
        );
        KvConnectServer {
            served: Served::Many(registry),
            config,
            in_process_stop: watch::channel(false).0,
            limiter,
        }
    }

    /// Reports the databases of `source` in `/metrics` instead of this server's one database
    /// (labelled `default`): for a server that serves many databases.
    pub fn stats_source(mut self, source: Arc<dyn StatsSource>) -> Self {
        self.limiter = Limiter::new(self.config.limits.clone(), Arc::new(Metrics::new(source)));
        self
    }

    /// The server's metrics (what `GET /metrics` renders).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.limiter.metrics().clone()
    }

    /// The database id the server advertises.
    pub fn database_id(&self) -> Uuid {
        self.config.resolved_database_id()
    }

    /// Handles one HTTP request in-process, without a socket: the same routing, authentication,
    /// limits and handlers (and the same panic-to-500 guard) as a request on a served
    /// connection, as if it arrived over plaintext from `127.0.0.1`. Meant for tests and fuzzing
    /// (`fuzz/`); never fails, errors are answered as responses.
    ///
    /// A `/watch` response body streams until it is dropped or this server value is dropped.
    /// Must be called inside a tokio runtime.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<ResponseBody> {
        let state = self.served.front(
            &self.config,
            &self.limiter,
            self.in_process_stop.subscribe(),
        );
        let conn = ConnInfo {
            tls: false,
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (parts, body) = req.into_parts();
        handle(state, conn, Request::from_parts(parts, Full::new(body))).await
    }

    /// Binds the listening socket (`127.0.0.1:0` picks a free port).
    pub async fn bind(self, addr: SocketAddr) -> Result<BoundServer<D>, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        self.with_listener(listener)
    }

    /// Uses an already bound listener.
    pub fn with_listener(self, listener: TcpListener) -> Result<BoundServer<D>, ServeError> {
        if self.config.access_token.is_empty() {
            return Err(ServeError::Config(
                "the access token must not be empty".into(),
            ));
        }
        let local_addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        let limits = match &self.served {
            Served::Single(db) => db.limits(),
            Served::Many(_) => kv_traits::Limits::default(),
        };
        if self.config.max_body_size < limits.max_total_mutation_size {
            tracing::warn!(
                max_body_size = self.config.max_body_size,
                max_total_mutation_size = limits.max_total_mutation_size,
                "the request body bound is below the database's atomic-write size limit: valid large writes will be refused with 413"
            );
        }
        let metrics_listener = match self.config.metrics_addr {
            Some(addr) => Some(bind_metrics(addr)?),
            None => None,
        };
        Ok(BoundServer {
            listener,
            local_addr,
            served: self.served,
            config: self.config,
            limiter: self.limiter,
            metrics_listener,
        })
    }
}

/// Binds the metrics listener (synchronously: [`KvConnectServer::with_listener`] is not async).
fn bind_metrics(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bind_error = |source| ServeError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    std_listener.set_nonblocking(true).map_err(bind_error)?;
    let local = std_listener.local_addr().map_err(ServeError::LocalAddr)?;
    let listener = TcpListener::from_std(std_listener).map_err(bind_error)?;
    Ok((listener, local))
}

/// A server whose socket is bound; [`serve`](BoundServer::serve) runs it.
pub struct BoundServer<D> {
    listener: TcpListener,
    local_addr: SocketAddr,
    served: Served<D>,
    config: ServerConfig,
    limiter: Arc<Limiter>,
    metrics_listener: Option<(TcpListener, SocketAddr)>,
}

impl<D: Database> BoundServer<D> {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the unauthenticated metrics listener, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, a)| *a)
    }

    /// The database id the server advertises.
    pub fn database_id(&self) -> Uuid {
        self.config.resolved_database_id()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully (see
    /// [`serve_with_shutdown`](Self::serve_with_shutdown)).
    pub async fn serve(self) -> Result<(), ServeError> {
        self.serve_with_shutdown(shutdown_signal()).await
    }

    /// Serves until `signal` completes, then stops accepting connections, ends watch streams,
    /// lets in-flight requests finish (up to `shutdown_timeout`) and closes the database.
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tls = self.config.tls.clone().map(TlsAcceptor::from);
        let state = self
            .served
            .front(&self.config, &self.limiter, stop_rx.clone());
        if let Some((listener, addr)) = self.metrics_listener {
            tracing::info!(%addr, "serving /metrics");
            tokio::spawn(serve_metrics(
                listener,
                self.limiter.clone(),
                stop_rx.clone(),
            ));
        }
        // Every connection task holds a clone; `recv` returns `None` once all have ended.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        match &state.databases {
            Databases::Single(db) => {
                tracing::info!(addr = %self.local_addr, tls = tls.is_some(), database_id = %db.database_id, "serving KV Connect")
            }
            Databases::Many(_) => {
                tracing::info!(addr = %self.local_addr, tls = tls.is_some(), "serving KV Connect: many databases at /db/<name>")
            }
        }
        tokio::pin!(signal);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut signal => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let stop = stop_rx.clone();
            let alive = alive_tx.clone();
            let tls = tls.clone();
            state.template.limiter.metrics().connection_accepted();
            let slot = state.template.limiter.admit_connection();
            tokio::spawn(async move {
                match slot {
                    Some(slot) => {
                        let open = state.template.limiter.metrics().connections_open().clone();
                        open.inc();
                        serve_tcp(stream, peer, tls, state, stop, Mode::Serve).await;
                        open.dec();
                        drop(slot);
                    }
                    None => {
                        tracing::debug!(%peer, "refusing a connection over the connection limit");
                        serve_tcp(stream, peer, tls, state, stop, Mode::Refuse).await;
                    }
                }
                drop(alive);
            });
        }
        drop(self.listener);
        tracing::info!("shutting down: no longer accepting connections");
        let _ = stop_tx.send(true);
        if let Served::Many(registry) = &self.served {
            registry.end_streams();
        }
        drop(alive_tx);
        if tokio::time::timeout(self.config.shutdown_timeout, alive_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; closing anyway");
        }
        drop(state);
        let closed = match &self.served {
            Served::Single(db) => db.close().await,
            Served::Many(registry) => registry.close_all().await,
        };
        if let Some(eventual) = &self.config.eventual {
            if let Err(e) = eventual.close().await {
                tracing::warn!(error = %e, "closing the eventual-read database failed");
            }
        }
        closed?;
        tracing::info!("database closed");
        Ok(())
    }
}

async fn serve_tcp<D: Database>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<Front<D>>,
    stop: watch::Receiver<bool>,
    mode: Mode,
) {
    match tls {
        None => serve_connection(stream, ConnInfo { tls: false, peer }, state, stop, mode).await,
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let conn = ConnInfo { tls: true, peer };
                    serve_connection(tls_stream, conn, state, stop, mode).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// What a connection gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Served.
    Serve,
    /// Over the connection limit: its first request is answered 503, then it is closed.
    Refuse,
}

/// Serves one connection, HTTP/1.1 or HTTP/2 (detected from the client preface), until it ends
/// or the server stops; one that sends no complete request head within the header read
/// timeout is closed.
async fn serve_connection<D, S>(
    io: S,
    conn: ConnInfo,
    state: Arc<Front<D>>,
    mut stop: watch::Receiver<bool>,
    mode: Mode,
) where
    D: Database,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = state.template.limiter.limits().clone();
    let metrics = state.template.limiter.metrics().clone();
    // Raised on every request head; the first one ends the first-request deadline.
    let request_seen = Arc::new(Notify::new());
    let seen = request_seen.clone();
    let http2 = state.template.http2;
    let service = service_fn(move |req| {
        let state = state.clone();
        seen.notify_one();
        async move {
            Ok::<_, Infallible>(match mode {
                Mode::Serve => handle(state, conn, req).await,
                Mode::Refuse => refusal(req.version()),
            })
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(mode == Mode::Serve);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    http2.apply(&mut builder.http2());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let first_request = tokio::time::timeout(limits.header_read_timeout, request_seen.notified());
    tokio::pin!(first_request);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        seen = &mut first_request => match (seen, mode) {
            (Err(_), _) => {
                metrics.limited("header_timeout");
                tracing::debug!(peer = %conn.peer, "no request head in time; closing the connection");
                return;
            }
            (Ok(()), Mode::Refuse) => {
                // Answer this request, then close.
                connection.as_mut().graceful_shutdown();
                match tokio::time::timeout(limits.header_read_timeout, connection).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
            (Ok(()), Mode::Serve) => tokio::select! {
                r = connection.as_mut() => r,
                _ = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            },
        },
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            metrics.limited("header_timeout");
        }
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// The answer on a connection over the limit: 503 with `Retry-After: 1` (both clients retry
/// it), closing the connection.
fn refusal(version: http::Version) -> Response<ResponseBody> {
    let mut res = crate::body::error_response(&ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "The server is serving as many connections as it allows; try again shortly.",
    ));
    res.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    if version == http::Version::HTTP_11 {
        res.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    res
}

/// Serves `GET /metrics` without authentication on the metrics listener until the server stops.
async fn serve_metrics(
    listener: TcpListener,
    limiter: Arc<Limiter>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let limiter = limiter.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let header_timeout = limiter.limits().header_read_timeout;
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = limiter.metrics().clone();
                async move {
                    Ok::<_, Infallible>(match (req.method(), req.uri().path()) {
                        (&http::Method::GET, "/metrics") => metrics_route::render(&metrics),
                        _ => crate::body::error_response(&ApiError::new(
                            http::StatusCode::NOT_FOUND,
                            "Resource not found; this listener serves GET /metrics.",
                        )),
                    })
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
///
/// On Unix the handlers are installed by this call, not when the future is first polled, so a
/// signal that arrives at any time after it (e.g. right after the server printed that it
/// listens) shuts down gracefully instead of killing the process. Call it inside a Tokio
/// runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn wait(s: std::io::Result<Signal>, name: &'static str) {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        }
        let int = wait(signal(SignalKind::interrupt()), "SIGINT");
        let term = wait(signal(SignalKind::terminate()), "SIGTERM");
        async move {
            tokio::select! {
                _ = int => tracing::info!("received SIGINT"),
                _ = term => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("received Ctrl-C");
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn handle_serves_requests_without_a_socket() {
        let db = kv_db::Db::open(
            kv_engine_memory::MemoryBackend::new(),
            kv_db::DbConfig::default(),
        )
        .await
        .unwrap();
        let server = KvConnectServer::new(db, ServerConfig::new("secret"));
        let get = |uri: &str| Request::get(uri).body(Bytes::new()).unwrap();
        let res = server.handle(get("/healthz")).await;
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok\n");
        assert_eq!(server.handle(get("/nope")).await.status(), 404);
        let meta = |token: &str| {
            Request::post("/")
                .header("authorization", format!("Bearer {token}"))
                .body(Bytes::from_static(br#"{"supportedVersions":[2,3]}"#))
                .unwrap()
        };
        assert_eq!(server.handle(meta("wrong")).await.status(), 401);
        let res = server.handle(meta("secret")).await;
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["version"], 3);
    }

    /// A data-path request authenticated with the access token itself.
    fn data_request(
        server: &KvConnectServer<kv_db::Db>,
        op: &str,
        body: Vec<u8>,
    ) -> Request<Bytes> {
        Request::post(format!("/v2/{op}"))
            .header("authorization", "Bearer secret")
            .header("x-denokv-version", "3")
            .header("x-denokv-database-id", server.database_id().to_string())
            .body(Bytes::from(body))
            .unwrap()
    }

    async fn memory_db(config: kv_db::DbConfig) -> kv_db::Db {
        kv_db::Db::open(kv_engine_memory::MemoryBackend::new(), config)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_databases_limits_are_the_only_ones() {
        use prost::Message;
        let watch = |n: usize| {
            kv_proto::pb::Watch {
                keys: (0..n)
                    .map(|i| kv_proto::pb::WatchKey {
                        key: vec![2, b'k', i as u8, 0],
                    })
                    .collect(),
            }
            .encode_to_vec()
        };
        // A database allowing more watched keys than the default: the server does not refuse
        // what the database accepts.
        let limits = kv_traits::Limits {
            max_watched_keys: 20,
            ..Default::default()
        };
        let db = memory_db(kv_db::DbConfig {
            limits,
            ..Default::default()
        })
        .await;
        assert_eq!(kv_traits::Database::limits(&db).max_watched_keys, 20);
        let server = KvConnectServer::new(db, ServerConfig::new("secret"));
        let res = server
            .handle(data_request(&server, "watch", watch(15)))
            .await;
        assert_eq!(res.status(), 200);
        drop(res);
        // And what the database refuses is answered with the database's message.
        let res = server
            .handle(data_request(&server, "watch", watch(21)))
            .await;
        assert_eq!(res.status(), 400);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("max 20"), "{text}");
    }

    #[tokio::test]
    async fn an_over_limit_write_to_a_read_only_database_is_a_400() {
        use prost::Message;
        let db = memory_db(kv_db::DbConfig {
            read_only: true,
            ..Default::default()
        })
        .await;
        let server = KvConnectServer::new(db, ServerConfig::new("secret"));
        let write = kv_proto::pb::AtomicWrite {
            mutations: vec![kv_proto::pb::Mutation {
                key: vec![2; 3000],
                value: Some(kv_proto::pb::KvValue {
                    data: b"x".to_vec(),
                    encoding: kv_proto::pb::ValueEncoding::VeBytes as i32,
                }),
                mutation_type: kv_proto::pb::MutationType::MSet as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let res = server
            .handle(data_request(&server, "atomic_write", write.encode_to_vec()))
            .await;
        assert_eq!(res.status(), 400);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("key size limit"), "{text}");
    }
}
