//! The data path proper: `POST /v2/snapshot_read`, `POST /eventual/v2/snapshot_read` and
//! `POST /v2/atomic_write`.
//!
//! # Contract
//!
//! - Called with the body of a request that passed [`guard::data_request`](super::guard).
//! - The body is decoded from protobuf (malformed → 400) and handed to the database as is: the
//!   database validates it against its own limits, and its errors map to HTTP through
//!   [`crate::error`] (limit violations → 400 with the database's message).
//! - Reads on `/v2` are always served `Strong` from this server's database (a replica's endpoint
//!   is advertised `eventual` in the metadata instead). Reads on `/eventual/v2` are served
//!   `Eventual` from the eventual-read database and say `read_is_strongly_consistent = false`.
//! - A write refused because the database is read-only is not an error but the protocol's
//!   `AW_WRITE_DISABLED` status; a read replica refuses writes with a 400 before decoding.
//! - A write whose outcome is unknown (a shared store lost its connection at commit and could
//!   not find out whether the commit applied) is answered `AW_UNSPECIFIED`: clients report it
//!   and never retry it, where a 5xx would make them re-send a write that may have applied.

use http::{Response, StatusCode};
use kv_proto::{self as wire, pb};
use kv_traits::{BackendError, Consistency, Database, KvError};

use super::guard::refuse_on_replica;
use crate::body::{protobuf_response, response, ResponseBody, PROTOBUF};
use crate::error::ApiError;
use crate::state::AppState;

/// `SnapshotRead` → `SnapshotReadOutput`.
pub(crate) async fn snapshot_read<D: Database>(
    state: &AppState<D>,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let request: pb::SnapshotRead = wire::decode_request(body)?;
    let ranges = wire::read_ranges_from_wire(request)?;
    let result = state.db.snapshot_read(ranges, Consistency::Strong).await?;
    Ok(response(
        StatusCode::OK,
        PROTOBUF,
        wire::encode_snapshot_read_output(&result),
    ))
}

/// `SnapshotRead` → `SnapshotReadOutput` on the `eventual` endpoint: answered by the
/// eventual-read database (e.g. a PostgreSQL read replica), `read_is_strongly_consistent =
/// false`.
pub(crate) async fn eventual_snapshot_read(
    db: &dyn Database,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let request: pb::SnapshotRead = wire::decode_request(body)?;
    let ranges = wire::read_ranges_from_wire(request)?;
    let result = db.snapshot_read(ranges, Consistency::Eventual).await?;
    Ok(response(
        StatusCode::OK,
        PROTOBUF,
        wire::encode_eventual_snapshot_read_output(&result),
    ))
}

/// `AtomicWrite` → `AtomicWriteOutput`.
pub(crate) async fn atomic_write<D: Database>(
    state: &AppState<D>,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    refuse_on_replica(state)?;
    let request: pb::AtomicWrite = wire::decode_request(body)?;
    let write = wire::atomic_write_from_wire(request)?;
    match state.db.atomic_write(write).await {
        Ok(result) => Ok(protobuf_response(&wire::atomic_write_output(result))),
        Err(KvError::WriteDisabled) => Ok(protobuf_response(&wire::atomic_write_disabled_output())),
        Err(
            e @ (KvError::UnknownOutcome(_) | KvError::Backend(BackendError::UnknownOutcome(_))),
        ) => {
            tracing::error!(error = %e, "a write's outcome is unknown; answered AW_UNSPECIFIED");
            Ok(protobuf_response(
                &wire::atomic_write_unknown_outcome_output(),
            ))
        }
        Err(e) => Err(e.into()),
    }
}
