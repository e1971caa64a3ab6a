//! Events as the edge stores and sends them: node events and the edge's own events,
//! each with a per-analysis `seq`.

use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

use crate::dispatch::wire::RequeueReason;
use crate::event::{ErrorInfo, Event};
use crate::ids::{NodeId, PoolName};
use crate::media::ArtifactName;

/// An event the edge appends itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeEvent {
    /// `edge:<seq>`: the `:` keeps it apart from node-chosen ids.
    #[cfg_attr(feature = "openapi", schema(pattern = "^edge:[0-9]+$"))]
    pub id: String,
    #[serde(flatten)]
    pub kind: EdgeEventKind,
}

/// The `type` of an edge event and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub enum EdgeEventKind {
    /// A cancel was accepted (once per analysis); `by` is the requester's token `sub`.
    CancelRequested { by: String },
    /// A running analysis heard nothing from its node for `silent_ms`.
    Stalled { silent_ms: u64 },
    /// Submitted at the edge: waiting in `pool` at `position` (1 = next; absent when a
    /// node already took it by the time it was recorded).
    Queued {
        pool: PoolName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<u32>,
        max_attempts: u8,
    },
    /// A node took it; its publishes carry `attempt`.
    Leased { node: NodeId, attempt: u32 },
    /// The lease of `attempt` ended without a result; back in the queue.
    Requeued {
        attempt: u32,
        reason: RequeueReason,
        node: NodeId,
    },
    /// The edge ended it (its attempts ran out: `attempts_exhausted`).
    Failed { error: ErrorInfo },
    /// The edge ended it (cancelled while queued, so no node was involved).
    Cancelled { reason: String },
    /// An artifact was stored: `GET /v1/analyses/{id}/artifacts/{name}` serves it.
    Artifact {
        name: ArtifactName,
        content_type: String,
        bytes: u64,
        /// The frame it shows, for a key frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame: Option<u64>,
        /// What it is: `key_frame` (of a partial result), `result`, or the node's own word.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
    },
}

impl EdgeEventKind {
    /// The wire name of this type, e.g. `"requeued"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::CancelRequested { .. } => "cancel_requested",
            Self::Stalled { .. } => "stalled",
            Self::Queued { .. } => "queued",
            Self::Leased { .. } => "leased",
            Self::Requeued { .. } => "requeued",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
            Self::Artifact { .. } => "artifact",
        }
    }

    /// The edge's own `failed` and `cancelled` end an analysis.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::Cancelled { .. })
    }
}

/// The id of the edge event stored at `seq`: `edge:<seq>`.
///
/// The `:` is outside the charset of node event ids, so an edge id never collides
/// with (or is mistaken for a duplicate of) an id a node chose.
pub fn edge_event_id(seq: u64) -> String {
    format!("{EDGE_ID_PREFIX}{seq}")
}

const EDGE_ID_PREFIX: &str = "edge:";

/// The `event` of a stored event: from the node or from the edge, told apart by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StoredEventBody {
    Node(Event),
    Edge(EdgeEvent),
}

impl StoredEventBody {
    /// The event's id (node-chosen, or `edge:<seq>`).
    pub fn id(&self) -> &str {
        match self {
            Self::Node(event) => &event.id,
            Self::Edge(event) => &event.id,
        }
    }

    /// The event's `type`, e.g. `"progress"` or `"requeued"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Node(event) => event.kind.type_name(),
            Self::Edge(event) => event.kind.type_name(),
        }
    }

    /// Completed, failed or cancelled, from the node or the edge: the last event.
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::Node(event) => event.kind.is_terminal(),
            Self::Edge(event) => event.kind.is_terminal(),
        }
    }
}

impl<'de> Deserialize<'de> for StoredEventBody {
    /// Dispatches on the id (edge ids are `edge:<seq>`; the edge's `failed` and
    /// `cancelled` share their type with the node's) so that an unknown type reads as
    /// one clear error, rather than serde's "did not match any variant of untagged enum".
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let is_edge = value
            .get("id")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|id| id.starts_with(EDGE_ID_PREFIX));
        let body = if is_edge {
            serde_json::from_value(value).map(Self::Edge)
        } else {
            serde_json::from_value(value).map(Self::Node)
        };
        body.map_err(D::Error::custom)
    }
}

/// An event as stored and sent by the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct StoredEvent {
    /// 1, 2, 3... per analysis, no gaps.
    pub seq: u64,
    /// The edge's clock when it stored the event (ms since the Unix epoch), never
    /// earlier than the previous event's. The node's own clock stays in `event.ts`.
    pub ts: i64,
    pub event: StoredEventBody,
    /// Overall progress (0..=1) once this event applied.
    pub overall_progress: f64,
    /// Estimated time left (ms) from `ts`, while running and once there is a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
}

/// `GET /v1/analyses/{id}/events?since=S&limit=L`: stored events with `seq > S`, and
/// the analysis' current `last_seq` (more may follow when it is larger than the last event's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
    pub last_seq: u64,
}
