//! An analysis' state on the node, computed by the shared state machine from the very
//! events the node publishes: what `GET /v1/analyses/{id}` and `analyze --json` show is
//! what the edge will show.

use stagecast_shared::event::{Event, EventKind};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::machine::Analysis;
use stagecast_shared::snapshot::Snapshot;

use crate::clock::now_ms;

#[derive(Debug)]
pub struct Tracker {
    analysis: Analysis,
    recorded: u64,
}

impl Tracker {
    pub fn new(id: AnalysisId) -> Self {
        Self {
            analysis: Analysis::new(id),
            recorded: 0,
        }
    }

    pub fn record(&mut self, kind: EventKind) {
        self.recorded += 1;
        let event = Event {
            id: self.recorded.to_string(),
            ts: None,
            kind,
        };
        if let Err(e) = self.analysis.apply_batch(vec![event], now_ms(), |_| false) {
            // the edge would refuse it too: a pipeline bug worth a loud line
            tracing::error!(analysis = %self.analysis.analysis_id(), "the pipeline broke the contract's order: {e}");
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.analysis.snapshot()
    }
}
