//! What the Worker (or another object) tells an object: the operation and the verified
//! principal, in a header only the Worker and objects can set (objects are not reachable
//! from outside). Analysis objects take [`Forwarded`], pool objects [`PoolForwarded`].

use serde::{Deserialize, Serialize};
use stagecast_shared::dispatch::wire::AnalysisFilter;
use stagecast_shared::dispatch::{DispatchUpdate, Submission, SubmitRefused, Submitted};
use stagecast_shared::ids::{AnalysisId, NodeId, PoolName};
use stagecast_shared::media::{ArtifactName, InputRecord};
use stagecast_shared::snapshot::Status;

use crate::auth::Principal;

pub const OP_HEADER: &str = "x-stagecast-op";

/// One operation on an analysis, already authorized and bounded by the Worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Publish,
    /// A node's publish socket.
    PublishSocket {
        select_subprotocol: bool,
    },
    Snapshot,
    Events {
        since: u64,
        limit: usize,
    },
    Cancel,
    Subscribe {
        since: Option<u64>,
        select_subprotocol: bool,
    },
    /// The socket's Server-Sent Events fallback.
    Stream {
        since: Option<u64>,
    },
    /// `POST /v1/analyses`, checked by the Worker.
    Submit {
        pool: PoolName,
        submission: Submission,
    },
    /// From the analysis' pool: what happened to it, in order.
    Dispatch {
        updates: Vec<DispatchUpdate>,
    },
    /// May an upload set the input now? Asked before the body is streamed.
    UploadCheck,
    /// An upload is in the bucket: record it (or refuse, and the Worker deletes it).
    InputStored {
        input: InputRecord,
    },
    /// Which input the node `node` may read (the lease holder's only).
    InputFor {
        node: String,
    },
    /// An artifact, the body: checked, stored in the bucket and announced by the object.
    PutArtifact {
        name: ArtifactName,
        content_type: String,
        attempt: Option<u32>,
        frame: Option<u64>,
        kind: Option<String>,
    },
}

/// The header value the analysis object reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forwarded {
    pub analysis_id: AnalysisId,
    pub principal: Principal,
    #[serde(flatten)]
    pub op: Op,
}

/// One operation on a pool: from the Worker (views, sockets) or from an analysis object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PoolOp {
    Submit {
        analysis_id: AnalysisId,
        submission: Submission,
    },
    /// The analysis ended in `attempt`.
    Finished {
        analysis_id: AnalysisId,
        attempt: u32,
        status: Status,
    },
    Cancel {
        analysis_id: AnalysisId,
    },
    View,
    Analyses {
        filter: AnalysisFilter,
        limit: usize,
    },
    /// A node's socket (`sub` is the node id).
    Connect {
        node_id: NodeId,
        expires_at_ms: i64,
        select_subprotocol: bool,
    },
    /// The live view.
    Watch {
        expires_at_ms: i64,
        select_subprotocol: bool,
    },
}

/// The header value the pool object reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolForwarded {
    pub tenant: String,
    pub pool: PoolName,
    #[serde(flatten)]
    pub op: PoolOp,
}

/// A pool's answer to [`PoolOp::Submit`]. The analysis' own updates (`queued`, maybe
/// `leased`) reach it through its pool's outbox before this answer does.
pub type SubmitReply = Result<Submitted, SubmitRefused>;

/// An analysis object's answer to [`Op::Dispatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchReply {
    /// Set when the analysis has ended: the pool frees what it holds.
    pub finished: Option<(u32, Status)>,
    /// The analysis has events of its own (a node published to it directly): the pool
    /// drops its entry.
    pub disowned: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_round_trips_through_a_header_value() {
        let f = Forwarded {
            analysis_id: AnalysisId::parse("a1").unwrap(),
            principal: Principal {
                tenant: "t".into(),
                sub: "s".into(),
                can_cancel: true,
                expires_at_ms: 5,
            },
            op: Op::Subscribe {
                since: Some(3),
                select_subprotocol: true,
            },
        };
        let header = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Forwarded>(&header).unwrap(), f);
        let p = PoolForwarded {
            tenant: "t".into(),
            pool: PoolName::default_pool(),
            op: PoolOp::Connect {
                node_id: NodeId::parse("n1").unwrap(),
                expires_at_ms: 9,
                select_subprotocol: false,
            },
        };
        let header = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PoolForwarded>(&header).unwrap(), p);
    }
}
