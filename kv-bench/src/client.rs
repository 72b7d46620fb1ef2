//! A minimal KV Connect client made for load: the metadata exchange, then `snapshot_read` and
//! `atomic_write` over raw hyper connections (h2c with prior knowledge, or HTTP/1.1).
//!
//! Unlike `kv-connect-client`, it never retries, pools or refreshes anything: every request is
//! one HTTP exchange on a connection the caller chose, so a failure shows up as an error and the
//! measured latency is the server's plus the wire's.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kv_proto::{pb, queue_pb};
use prost::Message;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// HTTP version spoken on every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// HTTP/2 with prior knowledge (h2c), what Deno uses; requests multiplex on a connection.
    H2,
    /// HTTP/1.1; a connection carries one request at a time.
    Http1,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is malformed or uses an unsupported scheme.
    #[error("invalid URL {0:?}: {1}")]
    Url(String, String),
    /// The target is not a loopback address.
    #[error("refusing to load {0}: only loopback targets are allowed")]
    NotLoopback(String),
    /// TCP connect failed.
    #[error("connecting to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// HTTP-level failure (handshake, reset stream, closed connection…).
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    /// Building a request failed (a header or URI the server sent is unusable).
    #[error("bad request parts: {0}")]
    Request(String),
    /// The server answered with a non-200 status.
    #[error("status {status}: {body}")]
    Status {
        /// The status code.
        status: StatusCode,
        /// The (plain text) body, truncated.
        body: String,
    },
    /// The response body is not the expected protobuf message.
    #[error("undecodable response: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The metadata answer is unusable.
    #[error("metadata exchange: {0}")]
    Metadata(String),
    /// No answer within the request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
}

/// The data-path coordinates learnt from the metadata exchange.
#[derive(Debug)]
pub struct Endpoint {
    /// Address the data-path connections go to.
    pub addr: SocketAddr,
    /// Negotiated protocol version (2 or 3).
    pub version: u32,
    /// The `strong` endpoint URL, without trailing slash.
    pub url: String,
    snapshot_read_uri: Uri,
    atomic_write_uri: Uri,
    watch_uri: Uri,
    dequeue_uri: Uri,
    finish_uri: Uri,
    host: HeaderValue,
    authorization: HeaderValue,
    database_id: HeaderValue,
    version_header: HeaderValue,
    timeout: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataJson {
    version: u32,
    database_id: String,
    endpoints: Vec<EndpointJson>,
    token: String,
}

#[derive(Deserialize)]
struct EndpointJson {
    url: String,
    consistency: String,
}

/// Parses `url` and checks it is `http://` on a loopback host; returns the URL and the address.
///
/// This tool is for measuring a local server, not for loading somebody else's.
pub fn parse_target(url: &str) -> Result<(url::Url, SocketAddr), ClientError> {
    let bad = |m: &str| ClientError::Url(url.to_owned(), m.to_owned());
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(bad("only http:// (h2c or HTTP/1.1) is supported"));
    }
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .collect(),
    };
    match addrs.first() {
        Some(first) if addrs.iter().all(|a| a.ip().is_loopback()) => Ok((parsed, *first)),
        _ => Err(ClientError::NotLoopback(url.to_owned())),
    }
}

fn header(v: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(v).map_err(|e| ClientError::Request(format!("{v:?}: {e}")))
}

fn uri(v: &str) -> Result<Uri, ClientError> {
    v.parse::<Uri>()
        .map_err(|e| ClientError::Request(format!("{v:?}: {e}")))
}

/// Posts the metadata exchange (`{"supportedVersions":[2,3]}`) to `url` and returns the first
/// `strong` endpoint with its token.
pub async fn exchange_metadata(
    url: &str,
    access_token: &str,
    mode: HttpMode,
    timeout: Duration,
) -> Result<Arc<Endpoint>, ClientError> {
    let (parsed, addr) = parse_target(url)?;
    let conn = Connection::open(addr, mode).await?;
    let host = header(&host_of(&parsed))?;
    let mut req = Request::post(uri(parsed.as_str())?)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, header(&format!("Bearer {access_token}"))?);
    if mode == HttpMode::Http1 {
        req = req.header(HOST, host);
    }
    let req = req
        .body(Full::new(Bytes::from_static(
            br#"{"supportedVersions":[2,3]}"#,
        )))
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let body = conn.send(req, timeout).await?;
    let meta: MetadataJson = serde_json::from_slice(&body)
        .map_err(|e| ClientError::Metadata(format!("invalid JSON: {e}")))?;
    if !(2..=3).contains(&meta.version) {
        return Err(ClientError::Metadata(format!(
            "server chose protocol version {} (offered 2 and 3)",
            meta.version
        )));
    }
    let strong = meta
        .endpoints
        .iter()
        .find(|e| e.consistency == "strong")
        .ok_or_else(|| ClientError::Metadata("no strong endpoint".into()))?;
    let joined = parsed
        .join(&strong.url)
        .map_err(|e| ClientError::Metadata(format!("endpoint {:?}: {e}", strong.url)))?;
    let (data_url, data_addr) = parse_target(joined.as_str())?;
    let base = data_url.as_str().trim_end_matches('/').to_owned();
    let path = data_url.path().trim_end_matches('/').to_owned();
    // HTTP/1.1 requests use the origin form plus `Host`; h2 needs the absolute URI for the
    // `:scheme` and `:authority` pseudo-headers.
    let target = |method: &str| match mode {
        HttpMode::H2 => uri(&format!("{base}/{method}")),
        HttpMode::Http1 => uri(&format!("{path}/{method}")),
    };
    Ok(Arc::new(Endpoint {
        addr: data_addr,
        version: meta.version,
        snapshot_read_uri: target("snapshot_read")?,
        atomic_write_uri: target("atomic_write")?,
        watch_uri: target("watch")?,
        dequeue_uri: target("queue/dequeue")?,
        finish_uri: target("queue/finish")?,
        url: base,
        host: header(&host_of(&data_url))?,
        authorization: header(&format!("Bearer {}", meta.token))?,
        database_id: header(&meta.database_id)?,
        version_header: header(&meta.version.to_string())?,
        timeout,
    }))
}

fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    }
}

#[derive(Clone)]
enum Sender {
    H2(http2::SendRequest<Full<Bytes>>),
    H1(Arc<Mutex<http1::SendRequest<Full<Bytes>>>>),
}

/// One TCP connection (cheap to clone; clones share it).
#[derive(Clone)]
pub struct Connection {
    sender: Sender,
}

impl Connection {
    /// Opens a TCP connection (`TCP_NODELAY`) and performs the HTTP handshake.
    pub async fn open(addr: SocketAddr, mode: HttpMode) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(addr, e))?;
        tcp.set_nodelay(true)
            .map_err(|e| ClientError::Connect(addr, e))?;
        let io = TokioIo::new(tcp);
        let sender = match mode {
            HttpMode::H2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("h2 connection ended: {e}");
                    }
                });
                Sender::H2(sender)
            }
            HttpMode::Http1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("http1 connection ended: {e}");
                    }
                });
                Sender::H1(Arc::new(Mutex::new(sender)))
            }
        };
        Ok(Connection { sender })
    }

    /// Sends one request and returns the body of a 200 answer.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let exchange = async {
            let resp = match &self.sender {
                Sender::H2(s) => s.clone().send_request(req).await?,
                Sender::H1(s) => {
                    let mut s = s.lock().await;
                    s.ready().await?;
                    let resp = s.send_request(req).await?;
                    // Read the body while holding the connection: HTTP/1.1 has one exchange at
                    // a time.
                    let status = resp.status();
                    let body = resp.into_body().collect().await?.to_bytes();
                    return Ok((status, body));
                }
            };
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        if status != StatusCode::OK {
            let mut text = String::from_utf8_lossy(&body).into_owned();
            text.truncate(300);
            return Err(ClientError::Status { status, body: text });
        }
        Ok(body)
    }

    fn data_request<M: Message>(
        &self,
        endpoint: &Endpoint,
        target: &Uri,
        msg: &M,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut req = Request::post(target.clone())
            .header(AUTHORIZATION, endpoint.authorization.clone())
            .header("x-denokv-database-id", endpoint.database_id.clone())
            .header("x-denokv-version", endpoint.version_header.clone())
            .header(CONTENT_TYPE, "application/x-protobuf");
        if matches!(self.sender, Sender::H1(_)) {
            req = req.header(HOST, endpoint.host.clone());
        }
        req.body(Full::new(Bytes::from(msg.encode_to_vec())))
            .map_err(|e| ClientError::Request(e.to_string()))
    }

    async fn post<M: Message, R: Message + Default>(
        &self,
        endpoint: &Endpoint,
        target: &Uri,
        msg: &M,
    ) -> Result<R, ClientError> {
        let req = self.data_request(endpoint, target, msg)?;
        let body = self.send(req, endpoint.timeout).await?;
        Ok(R::decode(body)?)
    }

    /// `POST <endpoint>/snapshot_read`.
    pub async fn snapshot_read(
        &self,
        endpoint: &Endpoint,
        req: &pb::SnapshotRead,
    ) -> Result<pb::SnapshotReadOutput, ClientError> {
        self.post(endpoint, &endpoint.snapshot_read_uri, req).await
    }

    /// `POST <endpoint>/watch`: the response body, a stream of `u32 LE length ‖ WatchOutput`
    /// frames, once the server answered 200 (within the request timeout). HTTP/2 only: a
    /// watch holds its stream open, which an HTTP/1.1 connection of this client cannot share.
    pub async fn watch(
        &self,
        endpoint: &Endpoint,
        req: &pb::Watch,
    ) -> Result<hyper::body::Incoming, ClientError> {
        let Sender::H2(sender) = &self.sender else {
            return Err(ClientError::Request("watch streams need --http h2".into()));
        };
        let req = self.data_request(endpoint, &endpoint.watch_uri, req)?;
        let mut sender = sender.clone();
        let resp = tokio::time::timeout(endpoint.timeout, async {
            sender.ready().await?;
            sender.send_request(req).await
        })
        .await
        .map_err(|_| ClientError::Timeout(endpoint.timeout))??;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = resp.into_body().collect().await?.to_bytes();
            let mut text = String::from_utf8_lossy(&body).into_owned();
            text.truncate(300);
            return Err(ClientError::Status { status, body: text });
        }
        Ok(resp.into_body())
    }

    /// `POST <endpoint>/atomic_write`.
    pub async fn atomic_write(
        &self,
        endpoint: &Endpoint,
        req: &pb::AtomicWrite,
    ) -> Result<pb::AtomicWriteOutput, ClientError> {
        self.post(endpoint, &endpoint.atomic_write_uri, req).await
    }

    /// `POST <endpoint>/queue/dequeue` (queue extension `queue-v1`): long-polls up to the
    /// request's `wait_ms`; the request timeout must be longer than that.
    pub async fn dequeue(
        &self,
        endpoint: &Endpoint,
        req: &queue_pb::DequeueRequest,
    ) -> Result<queue_pb::DequeueResponse, ClientError> {
        self.post(endpoint, &endpoint.dequeue_uri, req).await
    }

    /// `POST <endpoint>/queue/finish` (queue extension `queue-v1`).
    pub async fn finish(
        &self,
        endpoint: &Endpoint,
        req: &queue_pb::FinishRequest,
    ) -> Result<queue_pb::FinishResponse, ClientError> {
        self.post(endpoint, &endpoint.finish_uri, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_targets() {
        assert!(parse_target("http://127.0.0.1:4512").is_ok());
        assert!(parse_target("http://[::1]:4512/db").is_ok());
        assert!(matches!(
            parse_target("http://10.1.2.3:4512"),
            Err(ClientError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_target("https://127.0.0.1:4512"),
            Err(ClientError::Url(..))
        ));
        assert!(matches!(
            parse_target("not a url"),
            Err(ClientError::Url(..))
        ));
    }
}
