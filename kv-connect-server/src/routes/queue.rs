//! The queue extension `queue-v1` (advertised in the metadata's `x-denokv-extensions` header):
//! `POST /v2/queue/dequeue` and `POST /v2/queue/finish`, so remote listeners can consume a
//! database's queue.
//!
//! # Contract
//!
//! - Called with the body of a request that passed [`guard::data_request`](super::guard); a
//!   read replica refuses both with a 400 before decoding.
//! - `dequeue` long-polls up to the request's `wait_ms`, capped at
//!   [`kv_proto::MAX_DEQUEUE_WAIT_MS`], and answers an empty `DequeueResponse` when nothing
//!   became ready or the server is shutting down; a message is leased to the caller until the
//!   database's lease deadline. If the caller's token is revoked or expires while it waits,
//!   the poll ends at once with the refusal the next request would get
//!   ([`revocable::refused`]); no message is leased to it.
//! - `finish` ends a delivery by its 24-byte lease token; an unknown or expired lease is a 409.

use std::time::Duration;

use http::Response;
use kv_proto::{self as wire, queue_pb};
use kv_traits::{Database, QueueLease};

use super::guard::refuse_on_replica;
use super::revocable::{self, Reauthorize};
use crate::body::{protobuf_response, ResponseBody};
use crate::error::ApiError;
use crate::state::{stopped, AppState};

/// `DequeueRequest` → `DequeueResponse` (empty when no message became ready in time).
/// `reauthorize` re-checks the caller's credential while the poll waits.
pub(crate) async fn dequeue<D: Database>(
    state: &AppState<D>,
    body: &[u8],
    reauthorize: Reauthorize,
) -> Result<Response<ResponseBody>, ApiError> {
    refuse_on_replica(state)?;
    let request: queue_pb::DequeueRequest = wire::decode_request(body)?;
    let wait = request.wait_ms.min(wire::MAX_DEQUEUE_WAIT_MS);
    let mut shutdown = state.shutdown.clone();
    let dequeued = tokio::select! {
        r = state.db.dequeue(Duration::from_millis(u64::from(wait))) => r?,
        _ = stopped(&mut shutdown) => None,
        refusal = revocable::refused(&reauthorize) => return Err(refusal),
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

/// `FinishRequest` → `FinishResponse`.
pub(crate) async fn finish<D: Database>(
    state: &AppState<D>,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    refuse_on_replica(state)?;
    let request: queue_pb::FinishRequest = wire::decode_request(body)?;
    let lease = QueueLease::from_bytes(&request.lease).ok_or_else(|| {
        ApiError::bad_request("Invalid queue lease: expected the 24-byte token from dequeue.")
    })?;
    state.db.finish(lease, request.success).await?;
    Ok(protobuf_response(&queue_pb::FinishResponse {}))
}
