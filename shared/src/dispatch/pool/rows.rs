//! What the pool stores: one row per analysis ([`Entry`]) and per node ([`Node`]), and
//! its counters ([`Meta`]), each the JSON of these types; and what changed since the last
//! write ([`Changes`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dispatch::job::Submission;
use crate::dispatch::wire::DispatchUpdate;
use crate::event::Metrics;
use crate::ids::{AnalysisId, NodeId};
use crate::snapshot::Status;

/// One analysis the pool knows: one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub analysis_id: AnalysisId,
    pub submission: Submission,
    pub submitted_ts: i64,
    /// Place within its priority: later is larger; requeues take smaller than any.
    pub(super) order: i64,
    /// The attempt of the latest lease (0 before the first).
    pub attempt: u32,
    /// Attempts lost to node loss or lease expiry, counted against `max_attempts`.
    pub lost: u32,
    pub state: EntryState,
    /// The last position told to the analysis while queued.
    pub(super) told_position: Option<u32>,
    /// Updates for the analysis object, oldest first, until it has them.
    pub outbox: Vec<DispatchUpdate>,
    /// Earlier leases: (node, lease id).
    pub(super) past: Vec<(NodeId, String)>,
}

/// Where an analysis is in its pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    Queued,
    Leased(Lease),
    Finished { status: Status, ts: i64 },
}

/// A lease held by a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub lease_id: String,
    pub node_id: NodeId,
    pub leased_ts: i64,
    pub accepted: bool,
    /// Since when the node's heartbeats have not listed it.
    pub missing_since: Option<i64>,
}

/// One node of the pool: one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub node_id: NodeId,
    /// Which of the node's sockets is current: a closed older one is ignored.
    pub conn: u64,
    pub connected: bool,
    pub connected_ts: i64,
    pub last_heartbeat_ts: i64,
    /// When its socket closed.
    pub lost_ts: Option<i64>,
    pub slots: u32,
    pub models: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub metrics: Option<Metrics>,
}

/// What a node declares in `ready`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    pub slots: u32,
    pub models: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Counters that outlive every row: one row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub(super) next_back: i64,
    pub(super) next_front: i64,
    pub(super) next_conn: u64,
}

/// What changed since the last [`Pool::take_changes`]: rows to write (`Some`) or delete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub entries: Vec<(AnalysisId, Option<Entry>)>,
    pub nodes: Vec<(NodeId, Option<Node>)>,
    pub meta: Option<Meta>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.nodes.is_empty() && self.meta.is_none()
    }
}
