//! What the Worker tells an analysis's object: the operation and the verified principal,
//! in headers that only the Worker can set (objects are not reachable from outside).

use serde::{Deserialize, Serialize};
use stagecast_shared::ids::AnalysisId;

use crate::auth::Principal;

pub const OP_HEADER: &str = "x-stagecast-op";

/// One operation on an analysis, already authorized and bounded by the Worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Publish,
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
}

/// The header value the object reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub analysis_id: AnalysisId,
    pub principal: Principal,
    #[serde(flatten)]
    pub op: Op,
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
    }
}
