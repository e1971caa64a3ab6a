//! The pool as operators read it.

use super::*;

impl Pool {
    /// `GET /v1/pools/{pool}`.
    pub fn view(&self, now_ms: i64) -> PoolView {
        let oldest = self
            .queue
            .iter()
            .filter_map(|(_, _, id)| self.entries.get(id).map(|e| e.submitted_ts))
            .min();
        let served: BTreeSet<&str> = self
            .nodes
            .values()
            .filter(|n| n.connected)
            .flat_map(|n| n.models.iter().map(String::as_str))
            .collect();
        let wanted: BTreeSet<String> = self
            .queue
            .iter()
            .filter_map(|(_, _, id)| self.entries.get(id)?.submission.job.model.clone())
            .filter(|m| !served.contains(m.as_str()))
            .collect();
        PoolView {
            pool: self.name.clone(),
            queued: self.queue.len() as u64,
            leased: self.leased() as u64,
            oldest_queued_ms: oldest.map(|t| u64::try_from(now_ms - t).unwrap_or(0)),
            nodes: self
                .nodes
                .keys()
                .filter_map(|id| self.node_view(id))
                .collect(),
            models_without_nodes: wanted.into_iter().collect(),
        }
    }

    /// `GET /v1/pools/{pool}/analyses`: newest first (queued: next first).
    pub fn analyses(&self, filter: AnalysisFilter, limit: usize) -> Vec<PoolAnalysis> {
        let ids: Vec<&AnalysisId> = match filter {
            AnalysisFilter::Queued => self.queue.iter().map(|(_, _, id)| id).take(limit).collect(),
            AnalysisFilter::Leased => {
                let mut leased: Vec<&Entry> = self
                    .held
                    .values()
                    .flatten()
                    .filter_map(|id| self.entries.get(id))
                    .collect();
                leased.sort_by_key(|e| Reverse(e.submitted_ts));
                leased
                    .into_iter()
                    .map(|e| &e.analysis_id)
                    .take(limit)
                    .collect()
            }
            AnalysisFilter::Finished => self
                .finished
                .iter()
                .rev()
                .map(|(_, id)| id)
                .take(limit)
                .collect(),
        };
        ids.into_iter()
            .filter_map(|id| self.entries.get(id))
            .map(analysis_row)
            .collect()
    }

    /// A node's view, as the pool page shows it.
    pub fn node_view(&self, node_id: &NodeId) -> Option<NodeView> {
        let node = self.nodes.get(node_id)?;
        Some(NodeView {
            node_id: node.node_id.clone(),
            connected: node.connected,
            connected_ts: node.connected_ts,
            last_heartbeat_ts: node.last_heartbeat_ts,
            slots: node.slots,
            running: self
                .held
                .get(node_id)
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default(),
            models: node.models.clone(),
            labels: node.labels.clone(),
            metrics: node.metrics.clone(),
        })
    }

    /// Tells live viewers what the node looks like now (capacity, metrics, connection).
    pub(super) fn watch_node(&self, node_id: &NodeId, effects: &mut Vec<Effect>) {
        if let Some(node) = self.node_view(node_id) {
            effects.push(Effect::Watch(PoolEvent::NodeMetrics { node }));
        }
    }
}

fn analysis_row(entry: &Entry) -> PoolAnalysis {
    let (status, node, finished_ts) = match &entry.state {
        EntryState::Queued => (Status::Queued, None, None),
        EntryState::Leased(lease) => (Status::Pending, Some(lease.node_id.clone()), None),
        EntryState::Finished { status, ts } => (*status, None, Some(*ts)),
    };
    PoolAnalysis {
        analysis_id: entry.analysis_id.clone(),
        status,
        attempt: entry.attempt,
        priority: entry.submission.priority,
        node,
        submitted_ts: entry.submitted_ts,
        finished_ts,
    }
}
