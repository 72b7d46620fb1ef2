//! The handlers, one module per route family. Which path and method reaches which handler is
//! decided in one place only, the table of [`crate::router`]; the modules here never route and
//! never import the router.
//!
//! | module | routes |
//! |---|---|
//! | [`metadata`] | `POST /` (the metadata exchange) |
//! | [`datapath`] | `POST /v2/snapshot_read`, `POST /eventual/v2/snapshot_read`, `POST /v2/atomic_write` |
//! | [`watch`] | `POST /v2/watch`, `POST /eventual/v2/watch` |
//! | [`watch_frames`] | what `POST /v2/watch` streams of the same keys share: their encoded frames |
//! | [`queue`] | `POST /v2/queue/dequeue`, `POST /v2/queue/finish` (extension `queue-v1`) |
//! | [`health`] | `GET /healthz` |
//! | [`admin`] | `/admin/...` (databases and scoped tokens) |
//! | [`revocable`] | what `POST /v2/watch` streams pass through and dequeue long polls wait beside: they end when their scoped token is revoked |
//! | [`metrics`] | `GET /metrics` (Prometheus; access token required) |
//! | [`guard`] | what every data-path route passes first: token, protocol headers, body bound; the refusals of writes on a replica and on the `eventual` endpoint |

pub(crate) mod admin;
pub(crate) mod datapath;
pub(crate) mod guard;
pub(crate) mod health;
pub mod metadata;
pub(crate) mod metrics;
pub(crate) mod queue;
pub(crate) mod revocable;
pub(crate) mod watch;
pub(crate) mod watch_frames;
