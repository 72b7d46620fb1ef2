//! The HTTP transport: hyper 1.x clients for HTTP/2 with prior knowledge (h2c), HTTP/1.1 and
//! TLS (rustls, ALPN `h2`/`http/1.1`), and a classification of failures by whether the request
//! may have reached the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Which HTTP versions the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HttpVersionPolicy {
    /// `http://`: HTTP/2 with prior knowledge (what Deno does), falling back to HTTP/1.1 for good
    /// if the server does not answer the first exchange over HTTP/2. `https://`: ALPN offering
    /// `h2` and `http/1.1`.
    #[default]
    Auto,
    /// HTTP/2 only (h2c prior knowledge on `http://`, ALPN `h2` and `http/1.1` on `https://`
    /// but an HTTP/1.1 answer is used as negotiated).
    Http2Only,
    /// HTTP/1.1 only (`http://` and `https://`; TLS offers only `http/1.1`).
    Http1Only,
}

/// Largest error body kept for messages.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why an HTTP exchange did not produce a 2xx response.
#[derive(Debug)]
pub(crate) enum HttpFailure {
    /// The request certainly did not reach the server (the connection could not be
    /// established), so resending is always safe.
    NotSent(String),
    /// The request may have reached the server: the connection failed after sending, the
    /// response was cut short, or the request timed out.
    AfterSend(String),
    /// The server answered a non-2xx status.
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The body as text (lossy UTF-8, truncated).
        body: String,
    },
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpFailure::NotSent(e) => write!(f, "could not connect: {e}"),
            HttpFailure::AfterSend(e) => write!(f, "request failed after it was sent: {e}"),
            HttpFailure::Status { status, body } => write!(f, "server answered {status}: {body}"),
        }
    }
}

/// A complete 2xx response.
#[derive(Debug)]
pub(crate) struct FullResponse {
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

type HyperClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The clients for every protocol choice, sharing nothing but the TLS configuration.
pub(crate) struct HttpTransport {
    /// HTTP/2 with prior knowledge for `http://` (h2 only).
    h2c: HyperClient,
    /// HTTP/1.1 for `http://`, ALPN-negotiated for `https://`.
    negotiated: HyperClient,
    policy: HttpVersionPolicy,
    /// Set once `Auto` found that the server does not speak h2c.
    fell_back_to_http1: AtomicBool,
    user_agent: HeaderValue,
}

impl HttpTransport {
    /// Builds the clients. `tls` replaces the default configuration (Mozilla roots, ring).
    pub(crate) fn new(
        policy: HttpVersionPolicy,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        user_agent: &str,
    ) -> Result<Self, String> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls_builder = match tls {
            Some(cfg) => builder.with_tls_config((*cfg).clone()),
            None => builder
                .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| format!("TLS configuration failed: {e}"))?,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = match policy {
            HttpVersionPolicy::Http1Only => tls_builder
                .https_or_http()
                .enable_http1()
                .wrap_connector(http.clone()),
            _ => tls_builder
                .https_or_http()
                .enable_all_versions()
                .wrap_connector(http.clone()),
        };
        let mut h2c_builder = Client::builder(TokioExecutor::new());
        h2c_builder
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90));
        let h2c = h2c_builder.build(connector.clone());
        let mut negotiated_builder = Client::builder(TokioExecutor::new());
        negotiated_builder.pool_idle_timeout(Duration::from_secs(90));
        let negotiated = negotiated_builder.build(connector);
        let user_agent = HeaderValue::from_str(user_agent)
            .unwrap_or_else(|_| HeaderValue::from_static("kv-connect-client"));
        Ok(HttpTransport {
            h2c,
            negotiated,
            policy,
            fell_back_to_http1: AtomicBool::new(false),
            user_agent,
        })
    }

    /// Whether requests to `url` currently go over h2c.
    fn uses_h2c(&self, url: &http::Uri) -> bool {
        let plain = url.scheme_str() == Some("http");
        plain
            && match self.policy {
                HttpVersionPolicy::Http1Only => false,
                HttpVersionPolicy::Http2Only => true,
                HttpVersionPolicy::Auto => !self.fell_back_to_http1.load(Ordering::Relaxed),
            }
    }

    /// True if `Auto` currently sends `url`'s requests over h2c and may switch to HTTP/1.1.
    pub(crate) fn may_fall_back(&self, url: &http::Uri) -> bool {
        self.policy == HttpVersionPolicy::Auto && self.uses_h2c(url)
    }

    /// Switches `Auto` to HTTP/1.1 for plaintext URLs (or back).
    pub(crate) fn set_http1_fallback(&self, on: bool) {
        self.fell_back_to_http1.store(on, Ordering::Relaxed);
    }

    /// Sends a POST and returns the streaming response if its status is 2xx. The headers'
    /// wait is bounded by `timeout`.
    pub(crate) async fn post_streaming(
        &self,
        url: &http::Uri,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<Incoming>, HttpFailure> {
        let mut req = Request::post(url.clone())
            .body(Full::new(body))
            .map_err(|e| HttpFailure::NotSent(format!("invalid request: {e}")))?;
        *req.headers_mut() = headers.clone();
        req.headers_mut()
            .insert(http::header::USER_AGENT, self.user_agent.clone());
        let client = if self.uses_h2c(url) {
            &self.h2c
        } else {
            &self.negotiated
        };
        let resp = match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => {
                return Err(HttpFailure::AfterSend(format!(
                    "no response within {timeout:?}"
                )))
            }
            Ok(Err(e)) if e.is_connect() => return Err(HttpFailure::NotSent(error_chain(&e))),
            Ok(Err(e)) => return Err(HttpFailure::AfterSend(error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = match tokio::time::timeout(timeout, resp.into_body().collect()).await {
            Ok(Ok(b)) => {
                let b = b.to_bytes();
                let cut = &b[..b.len().min(MAX_ERROR_BODY)];
                String::from_utf8_lossy(cut).trim().to_string()
            }
            _ => String::new(),
        };
        Err(HttpFailure::Status { status, body })
    }

    /// Sends a POST and reads the whole 2xx response, all within `timeout`.
    pub(crate) async fn post(
        &self,
        url: &http::Uri,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<FullResponse, HttpFailure> {
        let started = tokio::time::Instant::now();
        let resp = self.post_streaming(url, headers, body, timeout).await?;
        let (parts, body) = resp.into_parts();
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, body.collect()).await {
            Err(_) => Err(HttpFailure::AfterSend(format!(
                "response body not received within {timeout:?}"
            ))),
            Ok(Err(e)) => Err(HttpFailure::AfterSend(format!(
                "reading the response body failed: {e}"
            ))),
            Ok(Ok(collected)) => Ok(FullResponse {
                headers: parts.headers,
                body: collected.to_bytes(),
            }),
        }
    }
}

/// An error and its sources, joined with `: `.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}
