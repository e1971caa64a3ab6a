//! The state of one analysis as clients see it (`GET /v1/analyses/{id}`, WebSocket hello).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{AnalysisResult, ErrorInfo};
use crate::ids::{NodeId, PoolName};

/// Where an analysis stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// Submitted at the edge, waiting in its pool for a node.
    Queued,
    /// Nothing heard yet (for a submitted analysis: leased, not started yet).
    Pending,
    /// `started` arrived and no terminal event yet.
    Running,
    Completed,
    Failed,
    Cancelled,
    /// Running, but the node has been silent for the stall timeout; its next event
    /// makes it `running` again.
    Stalled,
}

impl Status {
    /// The wire name, e.g. `"running"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Stalled => "stalled",
        }
    }

    /// Completed, failed or cancelled: nothing more is accepted from the node.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stage's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct StageSnapshot {
    pub name: String,
    pub weight: f64,
    /// 0..=1.
    pub progress: f64,
    /// When its first `progress` event arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ts: Option<i64>,
    /// When its progress reached 1, or when the analysis completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ts: Option<i64>,
}

/// Everything a client needs to draw an analysis without its history.
/// Timestamps are the edge's clock (those of the stored events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct Snapshot {
    pub analysis_id: String,
    pub status: Status,
    /// The stage named by the latest `progress` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// 0..=1; never decreases.
    pub overall_progress: f64,
    /// Estimated time left (ms) as of `updated_ts`, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ts: Option<i64>,
    /// The `ts` of the latest stored event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_ts: Option<i64>,
    pub last_seq: u64,
    pub cancel_requested: bool,
    pub stages: Vec<StageSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<AnalysisResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Regions reported so far: the sum over `partial_result` events, then the length of
    /// the final `result.regions` once completed.
    pub regions_count: u64,
    /// The pool of a submitted analysis (absent for one published directly by a node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
    /// While queued: 1 = next. Exact for positions 1..=10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// The current attempt of a submitted analysis (0 before its first lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u8>,
    /// The node holding the current lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
}
