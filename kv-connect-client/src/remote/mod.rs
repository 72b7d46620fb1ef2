//! [`RemoteDatabase`]: a [`kv_traits::Database`] over KV Connect.
//!
//! - Metadata exchange at open (`POST <url>` with `{"supportedVersions":[1,2,3]}`), protocol
//!   version negotiation (3, or 2 without watch, or 1), the first `strong` endpoint (relative
//!   URLs resolved against the metadata URL), and token refresh: lazily before any call when
//!   less than [`RemoteConfig::refresh_margin`] is left, and in the background once the
//!   metadata is older than [`RemoteConfig::refresh_interval`].
//! - Retries with exponential backoff and jitter: reads (snapshot reads, metadata, dequeue,
//!   watch reconnects) on network errors and 5xx; writes (atomic writes, queue finish) only
//!   when the connection could not be established. A write whose connection failed after it
//!   was sent, that timed out, or that got a 5xx fails with [`KvError::UnknownOutcome`].
//!   A 4xx is [`KvError::Remote`] (a client error), never retried.
//! - [`Database::watch`] reconnects transparently, suppresses repeated notifications, and merges
//!   frames that arrived while the consumer was busy, so a slow watcher gets the latest state.
//! - [`Database::dequeue`] / [`Database::finish`] use the `queue-v1` extension
//!   (`docs/queue-extension.md`).

mod http;
mod metadata;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ::http::{HeaderMap, HeaderValue, StatusCode};
use async_trait::async_trait;
use bytes::Bytes;
use kv_proto::{self as wire, pb, queue_pb as queue_ext};
use kv_traits::{
    AtomicWrite, CommitResult, Consistency, Database, KvEntry, KvError, QueueLease, QueueMessage,
    ReadRange, WatchStream,
};
use prost::Message;
use url::Url;

pub use self::http::HttpVersionPolicy;
use self::http::{HttpFailure, HttpTransport};
use self::metadata::{Metadata, REQUEST_BODY};
pub use crate::backoff::Backoff;
use kv_proto::QUEUE_EXTENSION;

/// The longest long-poll the queue extension allows.
const MAX_DEQUEUE_WAIT: Duration = Duration::from_millis(wire::MAX_DEQUEUE_WAIT_MS as u64);

/// Configuration of a [`RemoteDatabase`].
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The database URL (the metadata endpoint), e.g. `http://127.0.0.1:4512`.
    pub url: String,
    /// The access token sent to the metadata endpoint (`DENO_KV_ACCESS_TOKEN`).
    pub access_token: String,
    /// HTTP versions to use.
    pub http_version: HttpVersionPolicy,
    /// TLS configuration replacing the default one (Mozilla roots via `webpki-roots`, ring).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Retries after the first attempt for retryable failures (`None`: retry forever, like
    /// Deno).
    pub max_retries: Option<u32>,
    /// Delays between retries.
    pub backoff: Backoff,
    /// Time limit of one request (connect, send, complete response).
    pub request_timeout: Duration,
    /// Time limit of establishing a connection.
    pub connect_timeout: Duration,
    /// Refresh the metadata before a call when less than this is left before `expiresAt`.
    pub refresh_margin: Duration,
    /// Refresh the metadata in the background once it is this old (Deno: every 60 s).
    pub refresh_interval: Duration,
    /// A watch stream that receives nothing (not even a keep-alive) for this long reconnects.
    pub watch_idle_timeout: Duration,
    /// Delays between watch reconnects.
    pub watch_backoff: Backoff,
    /// The `user-agent` header.
    pub user_agent: String,
}

impl RemoteConfig {
    /// A configuration with defaults for everything but the URL and the access token.
    pub fn new(url: impl Into<String>, access_token: impl Into<String>) -> Self {
        RemoteConfig {
            url: url.into(),
            access_token: access_token.into(),
            http_version: HttpVersionPolicy::Auto,
            tls: None,
            max_retries: Some(10),
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(60),
            watch_idle_timeout: Duration::from_secs(30),
            watch_backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(8),
            },
            user_agent: concat!("kv-connect-client/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Whether an operation may be resent after it possibly reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Reads and long polls: resent on any network error and on 5xx.
    Read,
    /// Writes: resent only if the request certainly was not sent.
    Write,
}

/// A Deno KV database reached over KV Connect. Cheap to clone (shared state).
#[derive(Clone)]
pub struct RemoteDatabase {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RemoteDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDatabase")
            .field("url", &self.inner.url.as_str())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: RemoteConfig,
    url: Url,
    metadata_uri: ::http::Uri,
    transport: HttpTransport,
    metadata: RwLock<Option<Arc<Metadata>>>,
    refresh_lock: tokio::sync::Mutex<()>,
    refreshing_in_background: AtomicBool,
    closed: AtomicBool,
    /// Becomes `true` on close; wakes long polls and watch streams.
    closed_signal: tokio::sync::watch::Sender<bool>,
    /// Lease tokens as received, by the lease handed out.
    leases: Mutex<HashMap<QueueLease, Vec<u8>>>,
}

impl RemoteDatabase {
    /// Connects with default settings: performs the metadata exchange and returns once it
    /// succeeded (a 4xx or an invalid answer fails at once).
    pub async fn open(
        url: impl Into<String>,
        access_token: impl Into<String>,
    ) -> Result<Self, KvError> {
        Self::open_with(RemoteConfig::new(url, access_token)).await
    }

    /// Connects with `config`; see [`open`](Self::open).
    pub async fn open_with(config: RemoteConfig) -> Result<Self, KvError> {
        let url = Url::parse(&config.url).map_err(|e| {
            KvError::InvalidRequest(format!("invalid database URL {:?}: {e}", config.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(KvError::InvalidRequest(format!(
                "unsupported database URL scheme {:?} (expected http or https)",
                url.scheme()
            )));
        }
        let metadata_uri: ::http::Uri = url.as_str().parse().map_err(|e| {
            KvError::InvalidRequest(format!("invalid database URL {:?}: {e}", config.url))
        })?;
        let transport = HttpTransport::new(
            config.http_version,
            config.tls.clone(),
            config.connect_timeout,
            &config.user_agent,
        )
        .map_err(KvError::Transport)?;
        let db = RemoteDatabase {
            inner: Arc::new(Inner {
                config,
                url,
                metadata_uri,
                transport,
                metadata: RwLock::new(None),
                refresh_lock: tokio::sync::Mutex::new(()),
                refreshing_in_background: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                closed_signal: tokio::sync::watch::channel(false).0,
                leases: Mutex::new(HashMap::new()),
            }),
        };
        let meta = db.inner.exchange_metadata().await?;
        db.inner.store_metadata(meta);
        Ok(db)
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> u32 {
        self.inner.current_metadata().map_or(0, |m| m.version)
    }

    /// The database id from the metadata exchange.
    pub fn database_id(&self) -> String {
        self.inner
            .current_metadata()
            .map(|m| m.database_id.clone())
            .unwrap_or_default()
    }

    /// Whether the server advertises the `queue-v1` extension (remote queues).
    pub fn supports_queues(&self) -> bool {
        self.inner
            .current_metadata()
            .is_some_and(|m| m.has_extension(QUEUE_EXTENSION))
    }

    /// Forces a metadata exchange now (e.g. to pick up new endpoints).
    pub async fn refresh_metadata(&self) -> Result<(), KvError> {
        let _guard = self.inner.refresh_lock.lock().await;
        let meta = self.inner.exchange_metadata().await?;
        self.inner.store_metadata(meta);
        Ok(())
    }
}

impl Inner {
    fn current_metadata(&self) -> Option<Arc<Metadata>> {
        self.metadata.read().ok().and_then(|m| m.clone())
    }

    fn store_metadata(&self, meta: Metadata) {
        if let Ok(mut slot) = self.metadata.write() {
            *slot = Some(Arc::new(meta));
        }
    }

    fn check_open(&self) -> Result<(), KvError> {
        if self.closed.load(Ordering::Acquire) {
            Err(KvError::Closed)
        } else {
            Ok(())
        }
    }

    /// Completes once the database is closed.
    async fn wait_closed(&self) {
        let mut rx = self.closed_signal.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    fn retries_left(&self, attempt: u32) -> bool {
        self.config.max_retries.is_none_or(|max| attempt < max)
    }

    /// One metadata exchange, with retries on network errors and 5xx.
    async fn exchange_metadata(&self) -> Result<Metadata, KvError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ::http::header::AUTHORIZATION,
            bearer(&self.config.access_token)?,
        );
        headers.insert(
            ::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut attempt = 0;
        // Set while probing HTTP/1.1 after HTTP/2 with prior knowledge failed.
        let mut probing_http1 = false;
        let mut probed_http1 = false;
        loop {
            self.check_open()?;
            let result = self
                .transport
                .post(
                    &self.metadata_uri,
                    &headers,
                    Bytes::from_static(REQUEST_BODY.as_bytes()),
                    self.config.request_timeout,
                )
                .await;
            let failure = match result {
                Ok(resp) => {
                    if probing_http1 {
                        tracing::info!(
                            "the server does not speak HTTP/2 with prior knowledge; using HTTP/1.1"
                        );
                    }
                    let ext = resp
                        .headers
                        .get("x-denokv-extensions")
                        .and_then(|v| v.to_str().ok());
                    return Metadata::parse(&resp.body, &self.url, ext).map_err(KvError::Transport);
                }
                Err(HttpFailure::AfterSend(e))
                    if !probed_http1 && self.transport.may_fall_back(&self.metadata_uri) =>
                {
                    // Maybe the server does not speak h2c (an HTTP/1.1-only server answers the
                    // HTTP/2 preface with an error and closes): probe HTTP/1.1 at once.
                    tracing::debug!(error = %e, "HTTP/2 with prior knowledge failed; probing HTTP/1.1");
                    self.transport.set_http1_fallback(true);
                    probing_http1 = true;
                    probed_http1 = true;
                    continue;
                }
                Err(HttpFailure::Status { status, body }) if !status.is_server_error() => {
                    if probing_http1 {
                        tracing::info!(
                            "the server does not speak HTTP/2 with prior knowledge; using HTTP/1.1"
                        );
                    }
                    return Err(status_error(status, body, "metadata endpoint"));
                }
                Err(f) => f,
            };
            if probing_http1 {
                probing_http1 = false;
                if !matches!(failure, HttpFailure::Status { .. }) {
                    // HTTP/1.1 failed too: the problem is elsewhere; stay with HTTP/2.
                    self.transport.set_http1_fallback(false);
                }
            }
            if !self.retries_left(attempt) {
                return Err(KvError::Transport(format!(
                    "metadata exchange with {} failed: {failure}",
                    self.url
                )));
            }
            tracing::warn!(url = %self.url, attempt, error = %failure, "metadata exchange failed; retrying");
            tokio::time::sleep(self.config.backoff.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// Current metadata, refreshed first if it is about to expire; a background refresh is
    /// started when it is merely old.
    async fn metadata(self: &Arc<Self>) -> Result<Arc<Metadata>, KvError> {
        self.check_open()?;
        let now = SystemTime::now();
        if let Some(m) = self.current_metadata() {
            let remaining = m.remaining(now);
            let fresh_enough = remaining > self.config.refresh_margin
                // Never refresh more than once a second, even with a short-lived token.
                || (m.fetched_at.elapsed() < Duration::from_secs(1) && remaining > Duration::ZERO);
            if fresh_enough {
                if m.fetched_at.elapsed() >= self.config.refresh_interval {
                    self.spawn_background_refresh();
                }
                return Ok(m);
            }
        }
        let _guard = self.refresh_lock.lock().await;
        let current = self.current_metadata();
        if let Some(m) = &current {
            if m.fetched_at.elapsed() < Duration::from_secs(1) && m.remaining(now) > Duration::ZERO
            {
                return Ok(m.clone());
            }
        }
        match self.exchange_metadata().await {
            Ok(meta) => {
                self.store_metadata(meta);
                self.current_metadata()
                    .ok_or_else(|| KvError::Transport("metadata lock poisoned".into()))
            }
            Err(e) => match current {
                Some(m) if m.remaining(SystemTime::now()) > Duration::ZERO => {
                    tracing::warn!(error = %e, "metadata refresh failed; using the current token until it expires");
                    Ok(m)
                }
                _ => Err(e),
            },
        }
    }

    fn spawn_background_refresh(self: &Arc<Self>) {
        if self.refreshing_in_background.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.refreshing_in_background
                .store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        handle.spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            let _guard = inner.refresh_lock.lock().await;
            let stale = inner
                .current_metadata()
                .is_none_or(|m| m.fetched_at.elapsed() >= inner.config.refresh_interval);
            if stale {
                match inner.exchange_metadata().await {
                    Ok(meta) => inner.store_metadata(meta),
                    Err(e) => tracing::warn!(error = %e, "background metadata refresh failed"),
                }
            }
            inner
                .refreshing_in_background
                .store(false, Ordering::Release);
        });
    }

    /// The data-path headers for `meta`.
    fn data_headers(meta: &Metadata) -> Result<HeaderMap, KvError> {
        let mut h = HeaderMap::new();
        h.insert(::http::header::AUTHORIZATION, bearer(&meta.token)?);
        h.insert(
            ::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let id = HeaderValue::from_str(&meta.database_id)
            .map_err(|_| KvError::Transport("database id is not a valid header value".into()))?;
        if meta.version == 1 {
            h.insert("x-transaction-domain-id", id);
        } else {
            h.insert("x-denokv-database-id", id);
            h.insert("x-denokv-version", HeaderValue::from(meta.version));
        }
        Ok(h)
    }

    /// Calls a data-path method and returns the response body, retrying per `kind`.
    async fn call(
        self: &Arc<Self>,
        method: &str,
        body: Vec<u8>,
        kind: Kind,
        timeout: Duration,
    ) -> Result<Bytes, KvError> {
        let body = Bytes::from(body);
        let mut attempt = 0;
        loop {
            let meta = self.metadata().await?;
            let url: ::http::Uri = meta.method_url(method).parse().map_err(|e| {
                KvError::Transport(format!(
                    "invalid endpoint URL {}: {e}",
                    meta.method_url(method)
                ))
            })?;
            let headers = Self::data_headers(&meta)?;
            let request = self.transport.post(&url, &headers, body.clone(), timeout);
            let result = match kind {
                // Reads (including long polls) end at once when the database is closed.
                Kind::Read => tokio::select! {
                    r = request => r,
                    _ = self.wait_closed() => return Err(KvError::Closed),
                },
                Kind::Write => request.await,
            };
            let failure = match result {
                Ok(resp) => return Ok(resp.body),
                Err(HttpFailure::Status { status, body }) if !status.is_server_error() => {
                    return Err(status_error(status, body, method));
                }
                Err(f) => f,
            };
            let retryable = match (&failure, kind) {
                (HttpFailure::NotSent(_), _) | (_, Kind::Read) => true,
                (_, Kind::Write) => false,
            };
            if !retryable {
                return Err(KvError::UnknownOutcome(format!("{method}: {failure}")));
            }
            if !self.retries_left(attempt) {
                return Err(match failure {
                    HttpFailure::Status { status, body } => KvError::Remote {
                        status: status.as_u16(),
                        message: body,
                    },
                    f => KvError::Transport(format!("{method}: {f}")),
                });
            }
            tracing::warn!(method, attempt, error = %failure, "KV Connect call failed; retrying");
            tokio::time::sleep(self.config.backoff.delay(attempt)).await;
            attempt += 1;
            self.check_open()?;
        }
    }

    fn remember_lease(&self, raw: Vec<u8>, deadline_ms: i64) -> QueueLease {
        let lease = match QueueLease::from_bytes(&raw) {
            Some(l) => l,
            None => {
                let mut id = [0u8; 16];
                rand::Rng::fill(&mut rand::rng(), &mut id[..]);
                QueueLease {
                    id,
                    deadline_ms: u64::try_from(deadline_ms).unwrap_or(0),
                }
            }
        };
        if let Ok(mut leases) = self.leases.lock() {
            let now = kv_traits::clock::now_ms();
            // Forget leases that expired long ago (their finish would answer 409 anyway).
            leases.retain(|l, _| l.deadline_ms.saturating_add(600_000) > now);
            leases.insert(lease, raw);
        }
        lease
    }

    fn lease_bytes(&self, lease: &QueueLease) -> Vec<u8> {
        self.leases
            .lock()
            .ok()
            .and_then(|l| l.get(lease).cloned())
            .unwrap_or_else(|| lease.to_bytes().to_vec())
    }

    fn forget_lease(&self, lease: &QueueLease) {
        if let Ok(mut l) = self.leases.lock() {
            l.remove(lease);
        }
    }

    async fn queue_metadata(self: &Arc<Self>) -> Result<Arc<Metadata>, KvError> {
        let meta = self.metadata().await?;
        if !meta.has_extension(QUEUE_EXTENSION) {
            return Err(KvError::InvalidRequest(format!(
                "the KV Connect server at {} does not support remote queues (its metadata response does not advertise `x-denokv-extensions: {QUEUE_EXTENSION}`)",
                self.url
            )));
        }
        Ok(meta)
    }
}

fn bearer(token: &str) -> Result<HeaderValue, KvError> {
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        KvError::InvalidRequest("the token contains characters not allowed in a header".into())
    })
}

fn status_error(status: StatusCode, body: String, what: &str) -> KvError {
    let message = if body.is_empty() {
        format!("{what}: {}", status.canonical_reason().unwrap_or("error"))
    } else {
        body
    };
    KvError::Remote {
        status: status.as_u16(),
        message,
    }
}

fn decode<M: Message + Default>(body: &[u8], what: &str) -> Result<M, String> {
    M::decode(body).map_err(|e| format!("KV Connect failed to decode the {what} response: {e}"))
}

#[async_trait]
impl Database for RemoteDatabase {
    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        consistency: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        let req = wire::read_ranges_to_wire(&ranges).encode_to_vec();
        let body = self
            .inner
            .call(
                "snapshot_read",
                req,
                Kind::Read,
                self.inner.config.request_timeout,
            )
            .await?;
        let out: pb::SnapshotReadOutput =
            decode(&body, "snapshot_read").map_err(KvError::Transport)?;
        wire::snapshot_read_result_from_wire(out, ranges.len(), consistency)
    }

    async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitResult, KvError> {
        let req = wire::atomic_write_to_wire(&write).encode_to_vec();
        let body = self
            .inner
            .call(
                "atomic_write",
                req,
                Kind::Write,
                self.inner.config.request_timeout,
            )
            .await?;
        let out: pb::AtomicWriteOutput =
            decode(&body, "atomic_write").map_err(KvError::UnknownOutcome)?;
        wire::commit_result_from_wire(out)
    }

    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        let meta = self.inner.metadata().await?;
        if meta.version < 3 {
            return Err(KvError::InvalidRequest(format!(
                "watch needs KV Connect protocol version 3; the server negotiated version {}",
                meta.version
            )));
        }
        watch::open(self.inner.clone(), keys).await
    }

    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        self.inner.queue_metadata().await?;
        let wait = wait.min(MAX_DEQUEUE_WAIT);
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let req = queue_ext::DequeueRequest { wait_ms }.encode_to_vec();
        let timeout = self.inner.config.request_timeout + wait;
        let body = self
            .inner
            .call("queue/dequeue", req, Kind::Read, timeout)
            .await?;
        let out: queue_ext::DequeueResponse =
            decode(&body, "queue/dequeue").map_err(KvError::Transport)?;
        if out.lease.is_empty() {
            return Ok(None);
        }
        let lease = self.inner.remember_lease(out.lease, out.lease_deadline_ms);
        Ok(Some(QueueMessage {
            lease,
            payload: out.payload,
            attempt: out.attempt,
        }))
    }

    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        self.inner.queue_metadata().await?;
        let req = queue_ext::FinishRequest {
            lease: self.inner.lease_bytes(&lease),
            success,
        }
        .encode_to_vec();
        let result = self
            .inner
            .call(
                "queue/finish",
                req,
                Kind::Write,
                self.inner.config.request_timeout,
            )
            .await;
        match result {
            Ok(_) => {
                self.inner.forget_lease(&lease);
                Ok(())
            }
            Err(KvError::Remote { status: 409, .. }) => {
                self.inner.forget_lease(&lease);
                Err(KvError::LeaseNotFound)
            }
            Err(e) => Err(e),
        }
    }

    async fn close(&self) -> Result<(), KvError> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.closed_signal.send_replace(true);
        Ok(())
    }
}
