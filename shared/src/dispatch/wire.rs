//! Messages on a node's pool socket (`GET /v1/pools/{pool}/connect`), the pool's updates
//! to its analyses, and the pool views (`GET /v1/pools/{pool}[/analyses|/ws]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::job::Job;
use crate::api::ErrorCode;
use crate::close::CloseCode;
use crate::event::Metrics;
use crate::ids::{AnalysisId, NodeId, PoolName, check_id};
use crate::limits::{MAX_LABEL_LEN, MAX_NAME_LEN};
use crate::snapshot::Status;

/// Largest message a node may send (close 4009 above it): room for a heartbeat listing
/// [`MAX_RUNNING`] ids of the longest length, with its metrics.
pub const MAX_NODE_MESSAGE_BYTES: usize = 32 * 1024;
/// Messages a node may send per second (close 4008 above it).
pub const MAX_NODE_MESSAGES_PER_SECOND: u32 = 50;
/// Most slots, models and labels a node may declare.
pub const MAX_SLOTS: u32 = 256;
pub const MAX_MODELS: usize = 32;
pub const MAX_LABELS: usize = 16;
/// Most analyses a heartbeat may list as running.
pub const MAX_RUNNING: usize = MAX_SLOTS as usize;

/// Node -> edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeMessage {
    /// First, and again whenever capacity changes (`slots: 0` drains).
    Ready {
        slots: u32,
        models: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
    /// Every `heartbeat_ms`: renews every lease the node holds and lists what it runs.
    Heartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<Metrics>,
        #[serde(default)]
        running: Vec<AnalysisId>,
    },
    /// Takes a lease (within the accept window).
    Accept { lease_id: String },
    /// Gives a lease back (shutdown): requeued without using up an attempt.
    Release {
        lease_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// Why a node message was refused.
#[derive(Debug, Error)]
pub enum NodeMessageError {
    /// Close the socket with 4009.
    #[error("message of {len} bytes is over the {max} byte limit", max = MAX_NODE_MESSAGE_BYTES)]
    TooBig { len: usize },
    /// Answer with an `error` message and keep the socket open.
    #[error("not a node message: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("{0}")]
    Bound(String),
}

impl NodeMessageError {
    /// What to send back: a close (too big) or an `error` message.
    pub fn reply(&self) -> Result<PoolMessage, CloseCode> {
        match self {
            Self::TooBig { .. } => Err(CloseCode::TooBig),
            Self::Invalid(_) | Self::Bound(_) => Ok(PoolMessage::Error {
                code: ErrorCode::InvalidMessage,
                message: self.to_string(),
            }),
        }
    }
}

impl NodeMessage {
    /// Parses one text frame: size, JSON, then the bounds.
    pub fn parse(text: &str) -> Result<Self, NodeMessageError> {
        if text.len() > MAX_NODE_MESSAGE_BYTES {
            return Err(NodeMessageError::TooBig { len: text.len() });
        }
        let message: Self = serde_json::from_str(text)?;
        message.check().map_err(NodeMessageError::Bound)?;
        Ok(message)
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Self::Ready {
                slots,
                models,
                labels,
            } => {
                if *slots > MAX_SLOTS {
                    return Err(format!("slots: must be at most {MAX_SLOTS}, got {slots}"));
                }
                if models.len() > MAX_MODELS {
                    return Err(format!("models: must hold at most {MAX_MODELS} items"));
                }
                for (i, model) in models.iter().enumerate() {
                    check_id(model).map_err(|e| format!("models[{i}]: {e}"))?;
                }
                if labels.len() > MAX_LABELS {
                    return Err(format!("labels: must hold at most {MAX_LABELS} items"));
                }
                for (key, value) in labels {
                    let long =
                        key.chars().count() > MAX_NAME_LEN || value.chars().count() > MAX_LABEL_LEN;
                    if key.is_empty() || long {
                        return Err(format!(
                            "labels: keys are 1 to {MAX_NAME_LEN} characters, values at most {MAX_LABEL_LEN}"
                        ));
                    }
                }
                Ok(())
            }
            Self::Heartbeat { running, .. } if running.len() > MAX_RUNNING => {
                Err(format!("running: must hold at most {MAX_RUNNING} items"))
            }
            Self::Accept { lease_id } | Self::Release { lease_id, .. }
                if lease_id.is_empty() || lease_id.len() > MAX_NAME_LEN =>
            {
                Err(format!("lease_id: 1 to {MAX_NAME_LEN} characters"))
            }
            _ => Ok(()),
        }
    }
}

/// Edge -> node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PoolMessage {
    /// Always first.
    Welcome {
        pool: PoolName,
        node_id: NodeId,
        lease_ms: u64,
        heartbeat_ms: u64,
    },
    /// Work for the node; `accept` it before `expires_ts` or it goes to another node.
    Lease {
        lease_id: String,
        analysis_id: AnalysisId,
        /// Every publish of this run carries it (fencing).
        attempt: u32,
        job: Job,
        expires_ts: i64,
    },
    /// A viewer's cancel was accepted: stop this run.
    Cancel {
        analysis_id: AnalysisId,
        lease_id: String,
    },
    /// The node runs something it no longer holds: stop it, publish nothing more for it.
    Revoked {
        analysis_id: AnalysisId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_id: Option<String>,
        reason: RevokeReason,
    },
    /// A bad node message; the socket stays open.
    Error { code: ErrorCode, message: String },
}

/// Why a node lost a lease it thinks it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The lease expired and the analysis went to another attempt.
    Reassigned,
    /// The analysis has ended (or the pool no longer knows it).
    Finished,
}

/// Why a leased analysis went back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RequeueReason {
    /// The node's socket closed and it did not come back within `lease_ms`.
    NodeLost,
    /// The node gave it back (shutdown); no attempt is used up.
    Released,
    /// Not accepted in time, or not heartbeated for two intervals plus `lease_ms`.
    LeaseExpired,
}

impl RequeueReason {
    /// The wire name, e.g. `"node_lost"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeLost => "node_lost",
            Self::Released => "released",
            Self::LeaseExpired => "lease_expired",
        }
    }

    /// Whether the lost attempt counts against `max_attempts`.
    pub fn is_charged(self) -> bool {
        self != Self::Released
    }
}

/// What a pool tells an analysis object (in order, at least once: each is idempotent by
/// `attempt`). The pool's outbox is the only writer of an analysis' dispatch state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DispatchUpdate {
    /// Submitted: the first update, which makes the analysis `queued`.
    Queued {
        pool: PoolName,
        position: Option<u32>,
        max_attempts: u8,
    },
    /// The analysis' place in the queue (sent while it is among the first ten).
    Position {
        position: u32,
    },
    Leased {
        node: NodeId,
        attempt: u32,
    },
    Requeued {
        attempt: u32,
        reason: RequeueReason,
        node: NodeId,
    },
    /// The last allowed attempt was lost: the analysis fails `attempts_exhausted`.
    Exhausted {
        attempt: u32,
    },
    /// Cancelled while queued: the analysis ends `cancelled` without a node.
    Cancelled,
}

/// `GET /v1/pools/{pool}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct PoolView {
    pub pool: PoolName,
    pub queued: u64,
    pub leased: u64,
    /// How long the oldest queued analysis has waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_ms: Option<u64>,
    pub nodes: Vec<NodeView>,
    /// Models that queued analyses ask for and no connected node serves.
    pub models_without_nodes: Vec<String>,
}

/// One node in a pool view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct NodeView {
    pub node_id: NodeId,
    pub connected: bool,
    pub connected_ts: i64,
    pub last_heartbeat_ts: i64,
    pub slots: u32,
    pub running: Vec<AnalysisId>,
    pub models: Vec<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// One analysis in `GET /v1/pools/{pool}/analyses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct PoolAnalysis {
    pub analysis_id: AnalysisId,
    /// `queued`, `pending` (leased, not started yet as the pool sees it), or how it ended.
    pub status: Status,
    pub attempt: u32,
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    pub submitted_ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ts: Option<i64>,
}

/// The `state` filter of `GET /v1/pools/{pool}/analyses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisFilter {
    Queued,
    Leased,
    Finished,
}

/// The live pool view (`GET /v1/pools/{pool}/ws`): a `pool` snapshot first, then these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(optional_fields))]
pub enum PoolEvent {
    Pool {
        view: PoolView,
        server_ts: i64,
    },
    NodeJoined {
        node: NodeView,
    },
    NodeLeft {
        node_id: NodeId,
    },
    NodeMetrics {
        node: NodeView,
    },
    QueueChanged {
        queued: u64,
        leased: u64,
    },
    Leased {
        analysis_id: AnalysisId,
        node: NodeId,
        attempt: u32,
    },
    Finished {
        analysis_id: AnalysisId,
        status: Status,
    },
}
