//! Abuse limits: bounds that keep one misbehaving client from taking the server down.
//!
//! # Contract
//!
//! - **Connections** ([`ServerLimits::max_connections`]): a connection accepted while that many
//!   are being served is refused cleanly: it is answered `503 Service Unavailable` with
//!   `Retry-After: 1` and `Connection: close` (HTTP/1.1 or HTTP/2, whichever the client speaks)
//!   and closed; a refused connection gets at most the header read timeout to send its request.
//!   Both Deno and `@deno/kv` retry a 503 (Deno after about 0.25 s, forever; npm up to 10
//!   times), so clients ride out a short overload. Connections already served are unaffected.
//! - **Per-token limits** apply to data-path requests that passed authentication and are keyed
//!   by a [`TokenId`], a hash of the bearer token the request carries (a token's identity, never
//!   the token). With the single access token every metadata exchange issues its own data-path
//!   token, so a token is one client session; a server with named tokens maps a request to its
//!   token's identity instead ([`TokenId::of_name`]).
//!   - **Watch streams** ([`ServerLimits::max_watches_per_token`]): opening one more `/watch`
//!     than the bound is answered `429 Too Many Requests`; each stream holds its slot until it
//!     ends.
//!   - **Request rate** ([`ServerLimits::rate_per_token`], off by default): a token bucket per
//!     token (`governor`, GCRA); a request over it is answered `429` with `Retry-After` (whole
//!     seconds until a request would be admitted, at least 1). Deno 2.9 and `@deno/kv` 0.14 do
//!     not retry a 429 and ignore `Retry-After`: the call fails with the 429's message
//!     (`KV Connect failed to call ... (status=429 ...)` / `Unexpected response status: 429`).
//! - **Slow clients**: an HTTP/1.1 request head must arrive within
//!   [`ServerLimits::header_read_timeout`] (hyper also applies it to an idle keep-alive
//!   connection waiting for its next request); a new connection of either protocol must deliver
//!   its first complete request head within the same time, or it is closed. A request body must
//!   arrive completely within [`ServerLimits::body_read_timeout`] of the request head, else
//!   `408 Request Timeout`. HTTP/2 connections are pinged every
//!   [`ServerLimits::http2_keepalive_interval`] and closed when a ping is not acknowledged
//!   within [`ServerLimits::http2_keepalive_timeout`].
//! - Every refusal is counted in `kv_limit_refusals_total{limit=...}` ([`crate::metrics`]).

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::header::HeaderValue;
use http::StatusCode;
use hyper::body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// The bounds a server enforces (see the module contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; more are refused with 503. Default 10,000.
    pub max_connections: usize,
    /// Concurrent `/watch` streams per token; more get 429. Default 20,000.
    pub max_watches_per_token: usize,
    /// Data-path requests per second per token, with a burst; `None` (the default) is no limit.
    pub rate_per_token: Option<RateLimit>,
    /// Time for a request head (and a new connection's first request head). Default 30 s.
    pub header_read_timeout: Duration,
    /// Time for a whole request body, counted from the request head. Default 30 s.
    pub body_read_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings. Default 30 s.
    pub http2_keepalive_interval: Duration,
    /// Time an HTTP/2 client has to acknowledge a ping before the connection is closed.
    /// Default 20 s.
    pub http2_keepalive_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 10_000,
            max_watches_per_token: 20_000,
            rate_per_token: None,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// A token bucket: `per_second` requests per second sustained, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_second: NonZeroU32,
    /// Bucket size (requests admitted at once after a quiet period).
    pub burst: NonZeroU32,
}

/// The identity of a data-path token, used to key per-token limits: the first 16 bytes of
/// SHA-256 over the token (or over a named token's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenId([u8; 16]);

impl TokenId {
    fn hash(domain: &[u8], bytes: &[u8]) -> TokenId {
        let digest = Sha256::new()
            .chain_update(domain)
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        TokenId(id)
    }

    /// The identity of the bearer token `token`.
    pub fn of_token(token: &str) -> TokenId {
        Self::hash(b"token\0", token.as_bytes())
    }

    /// The identity of a named token (every data-path token issued for it shares it).
    pub fn of_name(name: &str) -> TokenId {
        Self::hash(b"name\0", name.as_bytes())
    }

    /// The identity of the token in a request's `Authorization: Bearer` header (an empty token
    /// when there is none; such a request fails authentication anyway): for a scoped token
    /// (`kvt_...`) and every data-path token issued for it, the token's id, so that its limits
    /// hold across metadata exchanges; otherwise the token itself (the access token's
    /// data-path tokens are one per client session).
    pub(crate) fn of_headers(headers: &http::HeaderMap) -> TokenId {
        let token =
            crate::auth::bearer_token(headers.get(http::header::AUTHORIZATION)).unwrap_or("");
        match crate::access::named_token_id(token) {
            Some(id) => Self::of_name(id),
            None => Self::of_token(token),
        }
    }
}

/// How often (in checks) the rate limiter forgets buckets that are full again.
const RATE_PURGE_EVERY: u64 = 4096;

/// The state behind the limits of one server.
pub(crate) struct Limiter {
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    connections: Arc<Semaphore>,
    watches: Mutex<HashMap<TokenId, usize>>,
    rate: Option<DefaultKeyedRateLimiter<TokenId>>,
    rate_checks: AtomicU64,
}

impl Limiter {
    pub(crate) fn new(limits: ServerLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        let rate = limits
            .rate_per_token
            .map(|r| RateLimiter::keyed(Quota::per_second(r.per_second).allow_burst(r.burst)));
        Arc::new(Limiter {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            metrics,
            watches: Mutex::new(HashMap::new()),
            rate,
            rate_checks: AtomicU64::new(0),
        })
    }

    /// The configured bounds.
    pub(crate) fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// The metrics refusals are counted in.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A slot for a new connection, or `None` when `max_connections` are being served (the
    /// refusal is counted).
    pub(crate) fn admit_connection(&self) -> Option<OwnedSemaphorePermit> {
        match self.connections.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.metrics.limited("connections");
                None
            }
        }
    }

    /// Admits one data-path request of `token` under the rate limit, or answers 429 with
    /// `Retry-After`. `token` is only called when a rate limit is set (it is off by default,
    /// and identifying a token costs a hash).
    pub(crate) fn check_rate(&self, token: impl FnOnce() -> TokenId) -> Result<(), ApiError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        let token = token();
        if self
            .rate_checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(RATE_PURGE_EVERY)
        {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
        match rate.check_key(&token) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                self.metrics.limited("rate");
                let wait = not_until.wait_time_from(rate.clock().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(too_many(
                    format!(
                        "Too many requests for this token (limit {} per second); retry in {} s.",
                        self.limits.rate_per_token.map_or(0, |r| r.per_second.get()),
                        secs.max(1)
                    ),
                    secs.max(1),
                ))
            }
        }
    }

    /// A slot for one more `/watch` stream of `token`, or 429 when it has
    /// `max_watches_per_token` open.
    pub(crate) fn open_watch(self: &Arc<Self>, token: TokenId) -> Result<WatchPermit, ApiError> {
        let mut watches = match self.watches.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let open = watches.entry(token).or_insert(0);
        if *open >= self.limits.max_watches_per_token {
            drop(watches);
            self.metrics.limited("watches");
            return Err(too_many(
                format!(
                    "Too many concurrent watch streams for this token (limit {}); close some first.",
                    self.limits.max_watches_per_token
                ),
                1,
            ));
        }
        *open += 1;
        self.metrics.watch_streams().inc();
        Ok(WatchPermit {
            limiter: self.clone(),
            token,
        })
    }
}

/// A 429 answer with `Retry-After: secs`.
fn too_many(message: String, secs: u64) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message);
    e.retry_after = Some(HeaderValue::from(secs));
    e
}

/// Holds one `/watch` slot of a token until dropped.
pub(crate) struct WatchPermit {
    limiter: Arc<Limiter>,
    token: TokenId,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        self.limiter.metrics.watch_streams().dec();
        let mut watches = match self.limiter.watches.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(open) = watches.get_mut(&self.token) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                watches.remove(&self.token);
            }
        }
    }
}

/// The error of a request body that did not arrive within the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimedOut(pub Duration);

/// The error of a [`TimeoutBody`]: the deadline passed, or the inner body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TimeoutBodyError {
    #[error("{0}")]
    TimedOut(#[from] BodyTimedOut),
    #[error(transparent)]
    Inner(Box<dyn std::error::Error + Send + Sync>),
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passes before it ended.
/// The timer is only armed when the body has to be waited for (a body that arrived with its
/// head, the common case, costs no timer).
pub(crate) struct TimeoutBody<B> {
    inner: Pin<Box<B>>,
    deadline: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
}

impl<B> TimeoutBody<B> {
    /// `inner`, which must end within `timeout` from now.
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        TimeoutBody {
            inner: Box::pin(inner),
            deadline: tokio::time::Instant::now() + timeout,
            sleep: None,
            timeout,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = TimeoutBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TimeoutBodyError>>> {
        if let Poll::Ready(frame) = self.inner.as_mut().poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(|e| TimeoutBodyError::Inner(Box::new(e)))));
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            let timeout = self.timeout;
            return Poll::Ready(Some(Err(BodyTimedOut(timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limits: ServerLimits) -> Arc<Limiter> {
        struct Nothing;
        impl crate::metrics::StatsSource for Nothing {
            fn collect(&self) -> Vec<crate::metrics::DatabaseSample> {
                Vec::new()
            }
        }
        Limiter::new(limits, Arc::new(Metrics::new(Arc::new(Nothing))))
    }

    #[test]
    fn token_ids_differ_by_token_and_kind() {
        assert_eq!(TokenId::of_token("a"), TokenId::of_token("a"));
        assert_ne!(TokenId::of_token("a"), TokenId::of_token("b"));
        assert_ne!(TokenId::of_token("a"), TokenId::of_name("a"));
    }

    #[tokio::test]
    async fn watch_slots_are_per_token_and_freed_on_drop() {
        let l = limiter(ServerLimits {
            max_watches_per_token: 2,
            ..Default::default()
        });
        let (a, b) = (TokenId::of_token("a"), TokenId::of_token("b"));
        let a1 = l.open_watch(a).unwrap();
        let _a2 = l.open_watch(a).unwrap();
        let e = l.open_watch(a).err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after.is_some());
        let _b1 = l.open_watch(b).unwrap();
        drop(a1);
        let _a3 = l.open_watch(a).unwrap();
    }

    #[tokio::test]
    async fn the_rate_limit_is_per_token_with_retry_after() {
        let one = NonZeroU32::new(1).unwrap();
        let l = limiter(ServerLimits {
            rate_per_token: Some(RateLimit {
                per_second: one,
                burst: NonZeroU32::new(2).unwrap(),
            }),
            ..Default::default()
        });
        let (a, b) = (TokenId::of_token("a"), TokenId::of_token("b"));
        assert!(l.check_rate(|| a).is_ok());
        assert!(l.check_rate(|| a).is_ok());
        let e = l.check_rate(|| a).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(HeaderValue::from(1u64)));
        assert!(l.check_rate(|| b).is_ok());
    }

    #[test]
    fn no_connection_slot_beyond_the_bound() {
        let l = limiter(ServerLimits {
            max_connections: 1,
            ..Default::default()
        });
        let first = l.admit_connection();
        assert!(first.is_some());
        assert!(l.admit_connection().is_none());
        drop(first);
        assert!(l.admit_connection().is_some());
    }
}
