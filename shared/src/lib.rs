//! Stagecast wire protocol v1 and the sans-IO state machine of one analysis.
//!
//! One source of truth for the edge (wasm32) and the node (native):
//! - [`event`]: what nodes publish; [`stored`]: what the edge stores and sends;
//!   [`snapshot`]: the state clients see; [`api`]: HTTP bodies and error codes;
//!   [`ws`]: WebSocket messages; [`publisher`]: the node's publish socket; [`close`]:
//!   WebSocket close codes.
//! - [`ids`] and [`limits`]: the bounds; [`validate`]: checking and parsing a publish body.
//! - [`machine`]: the [`Analysis`] state machine (order, progress, ETA, cancel, stall, replay).
//! - [`dispatch`]: submissions, a pool's queue and leases ([`dispatch::Pool`]), the
//!   node's pool socket and the pool views.
//! - [`media`]: uploaded inputs and artifacts (names, keys, ranges, answers).
//! - [`token`]: JWT verification against tenant keys, bearer parsing, authorization,
//!   and minting.
//! - Client policies, sans-IO: [`follow`] (resume, dedupe, close code -> action),
//!   [`send`] (linger, batch limit, backoff, refusals) and [`backoff`].
//!
//! The contract itself is `docs/protocol.md`; TypeScript types for browsers are generated
//! from these types into `client/types/protocol.ts` (see the `ts_export` test). With the
//! feature `openapi` (test code only) the wire types derive `utoipa::ToSchema` for the
//! OpenAPI documents in `docs/openapi/`.

pub mod api;
pub mod backoff;
pub mod close;
pub mod dispatch;
pub mod event;
pub mod follow;
pub mod ids;
pub mod limits;
pub mod machine;
pub mod media;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod publisher;
pub mod send;
pub mod snapshot;
pub mod stored;
pub mod token;
pub mod validate;
pub mod ws;

#[cfg(test)]
mod ts_export;

pub use api::{ApiError, ErrorBody, ErrorCode, PublishRequest, PublishResponse};
pub use event::{Event, EventKind};
pub use ids::{AnalysisId, NodeId, PoolName};
pub use machine::{Analysis, BatchOutcome, TransitionError};
pub use snapshot::{Snapshot, Status};
pub use stored::StoredEvent;
pub use validate::parse_publish_body;
