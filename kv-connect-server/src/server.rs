//! The listener: accepts TCP (optionally TLS) connections, serves HTTP/1.1 and HTTP/2 on them,
//! hands every request to the [router](crate::router), and shuts down gracefully.
//!
//! # Contract
//!
//! - One port speaks HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN `h2` with TLS), detected per
//!   connection from the client preface. A TLS handshake has 10 s, an HTTP/1.1 request head
//!   30 s; HTTP/2 connections are pinged every 30 s and carry up to
//!   [`Http2Settings`](crate::http2::Http2Settings)`::max_concurrent_streams` streams at once.
//! - [`KvConnectServer::handle`] serves one request in-process exactly as a connection would.
//! - Shutdown: stop accepting, end `/watch` streams and dequeue long polls, let in-flight
//!   requests finish for up to `shutdown_timeout`, then close the database (its error is the
//!   result of [`BoundServer::serve_with_shutdown`]).

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
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

use crate::body::ResponseBody;
use crate::config::ServerConfig;
use crate::router::handle;
use crate::state::{stopped, AppState, ConnInfo};

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
    db: Arc<D>,
    config: ServerConfig,
    /// Keeps the `/watch` streams of [`handle`](KvConnectServer::handle) running; they end when
    /// this server value is dropped (or bound).
    in_process_stop: watch::Sender<bool>,
}

impl<D: Database> KvConnectServer<D> {
    /// A server for `db` with `config`.
    pub fn new(db: D, config: ServerConfig) -> Self {
        Self::from_arc(Arc::new(db), config)
    }

    /// A server for a database that is shared with other code.
    pub fn from_arc(db: Arc<D>, config: ServerConfig) -> Self {
        KvConnectServer {
            db,
            config,
            in_process_stop: watch::channel(false).0,
        }
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
        let state = AppState::new(&self.db, &self.config, self.in_process_stop.subscribe());
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
        let limits = self.db.limits();
        if self.config.max_body_size < limits.max_total_mutation_size {
            tracing::warn!(
                max_body_size = self.config.max_body_size,
                max_total_mutation_size = limits.max_total_mutation_size,
                "the request body bound is below the database's atomic-write size limit: valid large writes will be refused with 413"
            );
        }
        Ok(BoundServer {
            listener,
            local_addr,
            db: self.db,
            config: self.config,
        })
    }
}

/// A server whose socket is bound; [`serve`](BoundServer::serve) runs it.
pub struct BoundServer<D> {
    listener: TcpListener,
    local_addr: SocketAddr,
    db: Arc<D>,
    config: ServerConfig,
}

impl<D: Database> BoundServer<D> {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        let state = AppState::new(&self.db, &self.config, stop_rx.clone());
        // Every connection task holds a clone; `recv` returns `None` once all have ended.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        tracing::info!(addr = %self.local_addr, tls = tls.is_some(), database_id = %state.database_id, "serving KV Connect");
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
            tokio::spawn(async move {
                serve_tcp(stream, peer, tls, state, stop).await;
                drop(alive);
            });
        }
        drop(self.listener);
        tracing::info!("shutting down: no longer accepting connections");
        let _ = stop_tx.send(true);
        drop(alive_tx);
        if tokio::time::timeout(self.config.shutdown_timeout, alive_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; closing anyway");
        }
        drop(state);
        self.db.close().await?;
        tracing::info!("database closed");
        Ok(())
    }
}

async fn serve_tcp<D: Database>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState<D>>,
    stop: watch::Receiver<bool>,
) {
    match tls {
        None => serve_connection(stream, ConnInfo { tls: false, peer }, state, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    serve_connection(tls_stream, ConnInfo { tls: true, peer }, state, stop).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves one connection, HTTP/1.1 or HTTP/2 (detected from the client preface), until it ends
/// or the server stops.
async fn serve_connection<D, S>(
    io: S,
    conn: ConnInfo,
    state: Arc<AppState<D>>,
    mut stop: watch::Receiver<bool>,
) where
    D: Database,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http2 = state.http2;
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, conn, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    http2.apply(&mut builder.http2());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
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
