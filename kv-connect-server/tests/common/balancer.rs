//! A round-robin HTTP load balancer in front of several servers, as an operator would put
//! before N `kv-connect-server`s on one database (`real_clients.rs` runs the real-client
//! transcripts through it).
//!
//! Contract:
//! - Listens on a free loopback port and speaks what the servers speak to clients: HTTP/1.1
//!   and HTTP/2 with prior knowledge (h2c), detected per connection.
//! - Every request, whatever connection it came on, goes to the next server in turn
//!   (round-robin per request, so one client's metadata exchange, reads, writes and watches
//!   are spread over all servers), over HTTP/1.1, with the client's `Host` (or HTTP/2
//!   authority) kept, so that absolute URLs a server builds (protocol v1 endpoints) point back
//!   at the balancer. Bodies stream both ways (watch streams too); hop-by-hop headers are
//!   dropped. A server that cannot be reached is answered 502.
//! - [`Balancer::served`] counts the requests forwarded to each server.
//! - It runs on a runtime of its own (usable from synchronous tests) and stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Headers that belong to one connection, not to the request or response.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

type Body = BoxBody<Bytes, hyper::Error>;

struct Shared {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
    served: Vec<AtomicUsize>,
    client: Client<HttpConnector, Incoming>,
}

/// A running balancer; stops when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Balancer {
    /// Starts a balancer over `upstreams` (at least one).
    pub fn start(upstreams: Vec<SocketAddr>) -> Balancer {
        assert!(!upstreams.is_empty(), "a balancer needs servers");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            served: upstreams.iter().map(|_| AtomicUsize::new(0)).collect(),
            upstreams,
            next: AtomicUsize::new(0),
            client: runtime.block_on(async { Client::builder(TokioExecutor::new()).build_http() }),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = shared.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let shared = accept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(forward(&shared, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Balancer {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://ADDR`, the URL clients open.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests forwarded so far to each server, in the order of `upstreams`.
    pub fn served(&self) -> Vec<usize> {
        self.shared
            .served
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Sends `req` to the next server and streams its answer back.
async fn forward(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let i = shared.next.fetch_add(1, Ordering::Relaxed) % shared.upstreams.len();
    shared.served[i].fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match format!("http://{}{path}", shared.upstreams[i]).parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad path: {e}")),
    };
    parts.version = Version::HTTP_11;
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    if let Some(value) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        parts.headers.insert(HOST, value);
    }
    match shared
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("server {} unreachable: {e}", shared.upstreams[i]),
        ),
    }
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    let mut res = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|never| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res
}
