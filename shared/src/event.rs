//! Events a node publishes (`POST /v1/analyses/{id}/events`).
//!
//! Unknown fields are ignored (the contract may grow); an unknown `type` is an error
//! naming the types this version knows. Optional fields are left out when `None`.
//! These types carry no bounds of their own: [`crate::validate`] checks them.

use serde::{Deserialize, Serialize};

/// One event from a node: an `id` chosen by the node (unique within the analysis),
/// an optional `ts`, and the fields of its `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct Event {
    // the rule of docs/protocol.md §2, which keeps it apart from the edge's `edge:<seq>`
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    /// The node's clock (ms since the Unix epoch). Informational only: the edge orders,
    /// times and estimates with its own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The `type` of a node event and its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub enum EventKind {
    /// The pipeline began; the stage weights give overall progress.
    Started {
        stages: Vec<StageSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_frames: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// A stage advanced. `stage_progress` is in 0..=1 and never goes back; 1 finishes the stage.
    Progress {
        stage: String,
        stage_progress: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frames_done: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frames_total: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Findings so far: each event carries new regions (they add up in `regions_count`)
    /// and, optionally, the scores of the frames it covers, for a score-over-time chart.
    PartialResult {
        regions: Vec<Region>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scores: Option<Vec<FrameScore>>,
    },
    /// Success.
    Completed { result: AnalysisResult },
    /// Failure.
    Failed { error: ErrorInfo },
    /// The node stopped on request.
    Cancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Node liveness; resets the stall timer like any other event.
    Heartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<Metrics>,
    },
}

impl EventKind {
    /// The wire name of this type, e.g. `"partial_result"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Progress { .. } => "progress",
            Self::PartialResult { .. } => "partial_result",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
            Self::Heartbeat { .. } => "heartbeat",
        }
    }

    /// Completed, failed or cancelled: the last event of an analysis.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed { .. } | Self::Failed { .. } | Self::Cancelled { .. }
        )
    }
}

/// A stage declared by `started`. Overall progress is the weight-averaged stage progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageSpec {
    pub name: String,
    /// Relative weight, finite and > 0.
    pub weight: f64,
}

/// A box found in one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct Region {
    pub frame: u64,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// What `x, y, w, h` are measured in; absent means pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Units>,
    /// Confidence in 0..=1.
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Landmarks inside the box as `[x, y]` pairs in the box's units (a face's eyes, nose
    /// and mouth corners, in that order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<[f64; 2]>>,
}

/// One frame's score (0..=1), as the analysis' score is the best of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FrameScore {
    pub frame: u64,
    pub score: f64,
}

/// Units of a region's box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Units {
    /// Pixels of the frame (the default).
    Px,
    /// Fractions of the frame's width and height, each in 0..=1.
    Normalized,
}

/// The outcome of a completed analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct AnalysisResult {
    /// 0..=1.
    pub score: f64,
    pub flagged: bool,
    pub frames_processed: u64,
    pub total_frames: u64,
    /// The final list of regions; it replaces what partial results reported.
    pub regions: Vec<Region>,
    pub validation_required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The analysed frames' size in pixels, so pixel regions can be drawn to scale
    /// (an extension of v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_width: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_height: Option<u64>,
}

/// Why an analysis failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    /// Whether running the analysis again may succeed.
    pub retryable: bool,
}

/// Node health carried by heartbeats. Utilizations are fractions in 0..=1
/// (`cpu_util` of the whole machine, not per core).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_util: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
}
