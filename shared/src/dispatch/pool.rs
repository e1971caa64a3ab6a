//! The queue and leases of one pool, sans IO: time comes in as `now_ms`, effects come out
//! as values, and what changed is handed to the caller to store ([`Pool::take_changes`]).
//!
//! # Rules
//! - Queue order: higher `priority` first, then first in, first out. A requeued analysis
//!   goes to the front of its priority.
//! - A lease goes to a connected node with a free slot that declared the analysis' model
//!   (any node when the analysis names none); among those, the one with most free slots.
//!   Every lease gets a new `attempt` (the fencing token).
//! - A lease lives while its node heartbeats and lists it as running. It ends lost at the
//!   earliest of: not accepted within `accept_ms`; `lease_ms` after the node's socket
//!   closed (`node_lost`); `lease_ms` after two heartbeat intervals without a heartbeat, or
//!   after a heartbeat that did not list it (`lease_expired`). A lost lease is requeued, or
//!   fails the analysis once `max_attempts` attempts were lost. A released lease is
//!   requeued without using up an attempt.
//! - A node that reconnects (same node id) within `lease_ms` keeps its leases.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::job::Submission;
use super::wire::{
    AnalysisFilter, DispatchUpdate, NodeView, PoolAnalysis, PoolEvent, PoolMessage, PoolView,
    RequeueReason, RevokeReason,
};
use crate::event::Metrics;
use crate::ids::{AnalysisId, NodeId, PoolName};
use crate::snapshot::Status;

/// Queue positions up to this one are kept exact in every analysis.
pub const EXACT_POSITIONS: u32 = 10;
/// Earlier leases remembered per analysis, to revoke a node that comes back with one.
const PAST_LEASES: usize = 16;

/// The pool's timings and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    /// How long a node has to `accept` a lease.
    pub accept_ms: u64,
    /// Most queued analyses (429 beyond).
    pub queue_limit: usize,
    /// Finished analyses kept for the views and for idempotent submissions.
    pub keep_finished: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
            accept_ms: 10_000,
            queue_limit: 10_000,
            keep_finished: 200,
        }
    }
}

/// One analysis the pool knows: one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub analysis_id: AnalysisId,
    pub submission: Submission,
    pub submitted_ts: i64,
    /// Place within its priority: later is larger; requeues take smaller than any.
    order: i64,
    /// The attempt of the latest lease (0 before the first).
    pub attempt: u32,
    /// Attempts lost to node loss or lease expiry, counted against `max_attempts`.
    pub lost: u32,
    pub state: EntryState,
    /// The last position told to the analysis while queued.
    told_position: Option<u32>,
    /// Updates for the analysis object, oldest first, until it has them.
    pub outbox: Vec<DispatchUpdate>,
    /// Earlier leases: (node, lease id).
    past: Vec<(NodeId, String)>,
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
    next_back: i64,
    next_front: i64,
    next_conn: u64,
}

/// What an operation asks the caller to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send to the node's current socket.
    ToNode { node: NodeId, message: PoolMessage },
    /// Send to the pool's live viewers.
    Watch(PoolEvent),
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

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "submitted", rename_all = "snake_case")]
pub enum Submitted {
    /// Newly queued at this position (1 = next).
    Queued { position: u32 },
    /// The same submission was already here: its current position when queued.
    Again { position: Option<u32> },
}

/// A submission the pool refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refused", rename_all = "snake_case")]
pub enum SubmitRefused {
    #[error("the pool already holds this analysis with a different submission")]
    Different,
    #[error("the pool's queue is full ({limit} analyses)")]
    QueueFull { limit: usize },
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cancelled {
    /// It was queued: it ended `cancelled` (the analysis gets [`DispatchUpdate::Cancelled`]).
    FromQueue,
    /// It is leased: the node was told.
    Pushed,
    /// The pool holds no live lease or queue place for it.
    NotHere,
}

/// The queue key: priority descending, then order.
type QueueKey = (Reverse<u8>, i64, AnalysisId);

/// One pool's queue, leases and nodes.
#[derive(Debug, Clone)]
pub struct Pool {
    name: PoolName,
    config: PoolConfig,
    meta: Meta,
    entries: BTreeMap<AnalysisId, Entry>,
    nodes: BTreeMap<NodeId, Node>,
    // Indexes, rebuilt on load.
    queue: BTreeSet<QueueKey>,
    held: BTreeMap<NodeId, BTreeSet<AnalysisId>>,
    finished: BTreeSet<(i64, AnalysisId)>,
    // Rows to write.
    dirty_entries: BTreeSet<AnalysisId>,
    dirty_nodes: BTreeSet<NodeId>,
    dirty_meta: bool,
}

impl Pool {
    /// An empty pool.
    pub fn new(name: PoolName, config: PoolConfig) -> Self {
        Self::load(name, config, Meta::default(), Vec::new(), Vec::new())
    }

    /// A pool from its stored rows.
    pub fn load(
        name: PoolName,
        config: PoolConfig,
        meta: Meta,
        entries: Vec<Entry>,
        nodes: Vec<Node>,
    ) -> Self {
        let mut pool = Self {
            name,
            config,
            meta,
            entries: BTreeMap::new(),
            nodes: nodes.into_iter().map(|n| (n.node_id.clone(), n)).collect(),
            queue: BTreeSet::new(),
            held: BTreeMap::new(),
            finished: BTreeSet::new(),
            dirty_entries: BTreeSet::new(),
            dirty_nodes: BTreeSet::new(),
            dirty_meta: false,
        };
        for entry in entries {
            pool.index(&entry);
            pool.entries.insert(entry.analysis_id.clone(), entry);
        }
        pool
    }

    pub fn name(&self) -> &PoolName {
        &self.name
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub fn entry(&self, id: &AnalysisId) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Analyses waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Analyses held by nodes.
    pub fn leased(&self) -> usize {
        self.held.values().map(BTreeSet::len).sum()
    }

    /// Analyses whose updates have not reached them yet.
    pub fn undelivered(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| !e.outbox.is_empty())
    }

    /// Queues a submission received at `now_ms`.
    pub fn submit(
        &mut self,
        id: AnalysisId,
        submission: Submission,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<Submitted, SubmitRefused> {
        if let Some(entry) = self.entries.get(&id) {
            if entry.submission != submission {
                return Err(SubmitRefused::Different);
            }
            let position = matches!(entry.state, EntryState::Queued).then(|| self.position(entry));
            return Ok(Submitted::Again { position });
        }
        if self.queue.len() >= self.config.queue_limit {
            return Err(SubmitRefused::QueueFull {
                limit: self.config.queue_limit,
            });
        }
        let order = self.meta.next_back;
        self.meta.next_back += 1;
        self.dirty_meta = true;
        let entry = Entry {
            analysis_id: id.clone(),
            submission,
            submitted_ts: now_ms,
            order,
            attempt: 0,
            lost: 0,
            state: EntryState::Queued,
            told_position: None,
            outbox: Vec::new(),
            past: Vec::new(),
        };
        let position = self.position(&entry);
        self.index(&entry);
        self.entries.insert(id.clone(), entry);
        let max_attempts = self.entries[&id].submission.max_attempts;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.told_position = Some(position);
        }
        let queued = DispatchUpdate::Queued {
            pool: self.name.clone(),
            position: Some(position),
            max_attempts,
        };
        self.push_update(&id, queued);
        self.after(now_ms, effects);
        Ok(Submitted::Queued { position })
    }

    /// A node's socket opened: returns its connection number (kept with the socket) and
    /// whether an older socket of the same node is open (close it with 4409).
    pub fn connect(
        &mut self,
        node_id: NodeId,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> (u64, bool) {
        self.meta.next_conn += 1;
        self.dirty_meta = true;
        let conn = self.meta.next_conn;
        let replaced = match self.nodes.get_mut(&node_id) {
            Some(node) => {
                let was_open = node.connected;
                node.conn = conn;
                node.connected = true;
                node.connected_ts = now_ms;
                node.last_heartbeat_ts = now_ms;
                node.lost_ts = None;
                was_open
            }
            None => {
                self.nodes.insert(
                    node_id.clone(),
                    Node {
                        node_id: node_id.clone(),
                        conn,
                        connected: true,
                        connected_ts: now_ms,
                        last_heartbeat_ts: now_ms,
                        lost_ts: None,
                        slots: 0,
                        models: Vec::new(),
                        labels: BTreeMap::new(),
                        metrics: None,
                    },
                );
                false
            }
        };
        self.dirty_nodes.insert(node_id.clone());
        if let Some(view) = self.node_view(&node_id) {
            effects.push(Effect::Watch(PoolEvent::NodeJoined { node: view }));
        }
        (conn, replaced)
    }

    /// `ready`: the node's capacity and models.
    pub fn ready(
        &mut self,
        node_id: &NodeId,
        conn: u64,
        capacity: Capacity,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(node) = self.current(node_id, conn) else {
            return;
        };
        node.slots = capacity.slots;
        node.models = capacity.models;
        node.labels = capacity.labels;
        self.dirty_nodes.insert(node_id.clone());
        self.after(now_ms, effects);
    }

    /// `heartbeat`: renews the node's leases and revokes what it runs without a lease.
    pub fn heartbeat(
        &mut self,
        node_id: &NodeId,
        conn: u64,
        running: &[AnalysisId],
        metrics: Option<Metrics>,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(node) = self.current(node_id, conn) else {
            return;
        };
        node.last_heartbeat_ts = now_ms;
        node.metrics = metrics;
        self.dirty_nodes.insert(node_id.clone());
        let held = self.held.get(node_id).cloned().unwrap_or_default();
        for id in &held {
            let listed = running.contains(id);
            if let Some(EntryState::Leased(lease)) = self.entries.get_mut(id).map(|e| &mut e.state)
            {
                let before = (lease.accepted, lease.missing_since);
                if listed {
                    lease.accepted = true;
                    lease.missing_since = None;
                } else if lease.accepted {
                    lease.missing_since.get_or_insert(now_ms);
                }
                if before != (lease.accepted, lease.missing_since) {
                    self.dirty_entries.insert(id.clone());
                }
            }
        }
        for id in running.iter().filter(|id| !held.contains(*id)) {
            effects.push(self.revoke(node_id, id));
        }
        if let Some(view) = self.node_view(node_id) {
            effects.push(Effect::Watch(PoolEvent::NodeMetrics { node: view }));
        }
        self.after(now_ms, effects);
    }

    /// `accept`: the node took the lease.
    pub fn accept(
        &mut self,
        node_id: &NodeId,
        conn: u64,
        lease_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        if self.current(node_id, conn).is_none() {
            return;
        }
        match self.held_lease(node_id, lease_id) {
            Some(id) => {
                if let Some(EntryState::Leased(lease)) =
                    self.entries.get_mut(&id).map(|e| &mut e.state)
                {
                    lease.accepted = true;
                    lease.missing_since = None;
                }
                self.touch(&id);
            }
            None => effects.extend(self.revoke_lease_id(node_id, lease_id)),
        }
        self.after(now_ms, effects);
    }

    /// `release`: the node gives a lease back; requeued without using up an attempt.
    pub fn release(
        &mut self,
        node_id: &NodeId,
        conn: u64,
        lease_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        if self.current(node_id, conn).is_none() {
            return;
        }
        if let Some(id) = self.held_lease(node_id, lease_id) {
            self.lose(&id, RequeueReason::Released, now_ms, effects);
        }
        self.after(now_ms, effects);
    }

    /// A node's socket closed. An older socket of a node that reconnected is ignored.
    pub fn disconnect(
        &mut self,
        node_id: &NodeId,
        conn: u64,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(node) = self.current(node_id, conn) else {
            return;
        };
        node.connected = false;
        node.lost_ts = Some(now_ms);
        self.dirty_nodes.insert(node_id.clone());
        self.after(now_ms, effects);
    }

    /// After a restart: every node marked connected whose socket is not in `live`
    /// (node id, connection) lost it now.
    pub fn reconcile(&mut self, live: &[(NodeId, u64)], now_ms: i64, effects: &mut Vec<Effect>) {
        let gone: Vec<(NodeId, u64)> = self
            .nodes
            .values()
            .filter(|n| n.connected && !live.contains(&(n.node_id.clone(), n.conn)))
            .map(|n| (n.node_id.clone(), n.conn))
            .collect();
        for (node_id, conn) in gone {
            self.disconnect(&node_id, conn, now_ms, effects);
        }
    }

    /// The analysis ended (`status`) in `attempt`, as its object says: frees the slot.
    /// Returns whether the pool held it (queued or in that attempt).
    pub fn finished(
        &mut self,
        id: &AnalysisId,
        attempt: u32,
        status: Status,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let holds = match self.entries.get(id).map(|e| (&e.state, e.attempt)) {
            Some((EntryState::Queued, _)) => true,
            Some((EntryState::Leased(_), current)) => current == attempt,
            _ => false,
        };
        if holds {
            self.end(id, status, now_ms, effects);
            self.after(now_ms, effects);
        }
        holds
    }

    /// A viewer's cancel, accepted by the analysis object.
    pub fn cancel(&mut self, id: &AnalysisId, now_ms: i64, effects: &mut Vec<Effect>) -> Cancelled {
        let outcome = match self.entries.get(id).map(|e| &e.state) {
            Some(EntryState::Queued) => {
                self.end(id, Status::Cancelled, now_ms, effects);
                self.push_update(id, DispatchUpdate::Cancelled);
                Cancelled::FromQueue
            }
            Some(EntryState::Leased(lease)) => {
                effects.push(Effect::ToNode {
                    node: lease.node_id.clone(),
                    message: PoolMessage::Cancel {
                        analysis_id: id.clone(),
                        lease_id: lease.lease_id.clone(),
                    },
                });
                Cancelled::Pushed
            }
            _ => Cancelled::NotHere,
        };
        self.after(now_ms, effects);
        outcome
    }

    /// The alarm: ends every lease past its deadline, then leases what it can.
    pub fn tick(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let expired: Vec<(AnalysisId, RequeueReason)> = self
            .held
            .values()
            .flatten()
            .filter_map(|id| {
                let (deadline, reason) = self.deadline(id)?;
                (deadline <= now_ms).then(|| (id.clone(), reason))
            })
            .collect();
        for (id, reason) in expired {
            self.lose(&id, reason, now_ms, effects);
        }
        self.after(now_ms, effects);
    }

    /// When [`Self::tick`] has work: the earliest lease deadline.
    pub fn next_deadline(&self) -> Option<i64> {
        self.held
            .values()
            .flatten()
            .filter_map(|id| self.deadline(id).map(|(at, _)| at))
            .min()
    }

    /// The analysis has the updates `sent` (a copy of its outbox taken earlier): they leave
    /// the outbox as far as it still starts with them. Matching by value, not by count, keeps
    /// an update queued while they were on their way.
    pub fn delivered(&mut self, id: &AnalysisId, sent: &[DispatchUpdate]) {
        if let Some(entry) = self.entries.get_mut(id) {
            let count = entry
                .outbox
                .iter()
                .zip(sent)
                .take_while(|(queued, sent)| queued == sent)
                .count();
            entry.outbox.drain(..count);
            self.touch(id);
            self.prune();
        }
    }

    /// The rows to write since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let entries = std::mem::take(&mut self.dirty_entries)
            .into_iter()
            .map(|id| {
                let row = self.entries.get(&id).cloned();
                (id, row)
            })
            .collect();
        let nodes = std::mem::take(&mut self.dirty_nodes)
            .into_iter()
            .map(|id| {
                let row = self.nodes.get(&id).cloned();
                (id, row)
            })
            .collect();
        let meta = std::mem::take(&mut self.dirty_meta).then(|| self.meta.clone());
        Changes {
            entries,
            nodes,
            meta,
        }
    }

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

    /// The node, if `conn` is its current socket.
    fn current(&mut self, node_id: &NodeId, conn: u64) -> Option<&mut Node> {
        self.nodes
            .get_mut(node_id)
            .filter(|n| n.conn == conn && n.connected)
    }

    /// The analysis of `lease_id` if `node_id` holds that lease now.
    fn held_lease(&self, node_id: &NodeId, lease_id: &str) -> Option<AnalysisId> {
        self.held
            .get(node_id)?
            .iter()
            .find_map(|id| match &self.entries.get(id)?.state {
                EntryState::Leased(lease) if lease.lease_id == lease_id => Some(id.clone()),
                _ => None,
            })
    }

    /// `revoked` for a node that runs `id` without holding its lease.
    fn revoke(&self, node_id: &NodeId, id: &AnalysisId) -> Effect {
        let entry = self.entries.get(id);
        let lease_id = entry.and_then(|e| {
            e.past
                .iter()
                .rev()
                .find(|(node, _)| node == node_id)
                .map(|(_, lease)| lease.clone())
        });
        let reason = match entry.map(|e| &e.state) {
            Some(EntryState::Finished { .. }) | None => RevokeReason::Finished,
            _ => RevokeReason::Reassigned,
        };
        Effect::ToNode {
            node: node_id.clone(),
            message: PoolMessage::Revoked {
                analysis_id: id.clone(),
                lease_id,
                reason,
            },
        }
    }

    /// `revoked` for an `accept` of a lease the node does not hold.
    fn revoke_lease_id(&self, node_id: &NodeId, lease_id: &str) -> Option<Effect> {
        let (id, _) = lease_id.rsplit_once(':')?;
        let id = AnalysisId::parse(id).ok()?;
        match self.revoke(node_id, &id) {
            Effect::ToNode {
                node,
                message: PoolMessage::Revoked { reason, .. },
            } => Some(Effect::ToNode {
                node,
                message: PoolMessage::Revoked {
                    analysis_id: id,
                    lease_id: Some(lease_id.to_owned()),
                    reason,
                },
            }),
            _ => None,
        }
    }

    /// The earliest moment the lease of `id` is lost, and why.
    fn deadline(&self, id: &AnalysisId) -> Option<(i64, RequeueReason)> {
        let EntryState::Leased(lease) = &self.entries.get(id)?.state else {
            return None;
        };
        let lease_ms = ms(self.config.lease_ms);
        let mut candidates = Vec::with_capacity(3);
        if !lease.accepted {
            candidates.push((
                lease.leased_ts + ms(self.config.accept_ms),
                RequeueReason::LeaseExpired,
            ));
        }
        if let Some(since) = lease.missing_since {
            candidates.push((since + lease_ms, RequeueReason::LeaseExpired));
        }
        match self.nodes.get(&lease.node_id) {
            Some(node) if node.connected => candidates.push((
                node.last_heartbeat_ts + 2 * ms(self.config.heartbeat_ms) + lease_ms,
                RequeueReason::LeaseExpired,
            )),
            Some(node) => candidates.push((
                node.lost_ts.unwrap_or(lease.leased_ts) + lease_ms,
                RequeueReason::NodeLost,
            )),
            None => candidates.push((lease.leased_ts, RequeueReason::NodeLost)),
        }
        candidates.into_iter().min_by_key(|(at, _)| *at)
    }

    /// The current lease of `id` ended without a result: requeue, or fail when the lost
    /// attempts reach `max_attempts`.
    fn lose(
        &mut self,
        id: &AnalysisId,
        reason: RequeueReason,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let EntryState::Leased(lease) = &entry.state else {
            return;
        };
        let node = lease.node_id.clone();
        entry.past.push((node.clone(), lease.lease_id.clone()));
        if entry.past.len() > PAST_LEASES {
            entry.past.remove(0);
        }
        if reason.is_charged() {
            entry.lost += 1;
        }
        let attempt = entry.attempt;
        let exhausted = entry.lost >= u32::from(entry.submission.max_attempts);
        if let Some(held) = self.held.get_mut(&node) {
            held.remove(id);
        }
        if exhausted {
            self.end(id, Status::Failed, now_ms, effects);
            self.push_update(id, DispatchUpdate::Exhausted { attempt });
        } else {
            self.meta.next_front -= 1;
            self.dirty_meta = true;
            let order = self.meta.next_front;
            let entry = self.entries.get_mut(id).expect("checked above");
            entry.order = order;
            entry.state = EntryState::Queued;
            entry.told_position = None;
            let priority = entry.submission.priority;
            self.queue.insert((Reverse(priority), order, id.clone()));
            self.push_update(
                id,
                DispatchUpdate::Requeued {
                    attempt,
                    reason,
                    node,
                },
            );
        }
        self.touch(id);
    }

    /// Ends `id` with `status` wherever it is.
    fn end(&mut self, id: &AnalysisId, status: Status, now_ms: i64, effects: &mut Vec<Effect>) {
        self.set_finished(id, status, now_ms);
        effects.push(Effect::Watch(PoolEvent::Finished {
            analysis_id: id.clone(),
            status,
        }));
    }

    fn set_finished(&mut self, id: &AnalysisId, status: Status, ts: i64) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        let key = (Reverse(entry.submission.priority), entry.order, id.clone());
        self.queue.remove(&key);
        if let EntryState::Leased(lease) = &entry.state
            && let Some(held) = self.held.get_mut(&lease.node_id)
        {
            held.remove(id);
        }
        let entry = self.entries.get_mut(id).expect("checked above");
        entry.state = EntryState::Finished { status, ts };
        entry.told_position = None;
        self.finished.insert((ts, id.clone()));
        self.touch(id);
    }

    /// Runs after every operation: leases what it can, forgets what it may, keeps the
    /// first positions exact, tells viewers how the queue stands.
    fn after(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let (queued, leased) = (self.queue.len(), self.leased());
        self.schedule(now_ms, effects);
        self.forget_nodes(effects);
        self.prune();
        self.tell_positions();
        if (queued, leased) != (self.queue.len(), self.leased()) {
            effects.push(Effect::Watch(PoolEvent::QueueChanged {
                queued: self.queue.len() as u64,
                leased: self.leased() as u64,
            }));
        }
    }

    /// Leases queued analyses to free slots, in queue order.
    fn schedule(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let mut free: Vec<(NodeId, u32)> = self
            .nodes
            .values()
            .filter(|n| n.connected)
            .filter_map(|n| {
                let held = self.held.get(&n.node_id).map_or(0, BTreeSet::len);
                let free = (n.slots as usize).saturating_sub(held);
                (free > 0).then(|| (n.node_id.clone(), free as u32))
            })
            .collect();
        let mut picks = Vec::new();
        for (_, _, id) in &self.queue {
            if free.is_empty() {
                break;
            }
            let model = self.entries[id].submission.job.model.as_deref();
            let best = free
                .iter_mut()
                .filter(|(node, _)| {
                    model.is_none_or(|m| self.nodes[node].models.iter().any(|n| n == m))
                })
                .max_by_key(|(node, free)| (*free, Reverse(node.clone())));
            if let Some((node, slots)) = best {
                *slots -= 1;
                picks.push((id.clone(), node.clone()));
            }
            free.retain(|(_, slots)| *slots > 0);
        }
        for (id, node) in picks {
            self.lease(&id, node, now_ms, effects);
        }
    }

    fn lease(&mut self, id: &AnalysisId, node_id: NodeId, now_ms: i64, effects: &mut Vec<Effect>) {
        let entry = self.entries.get_mut(id).expect("queued entries exist");
        self.queue
            .remove(&(Reverse(entry.submission.priority), entry.order, id.clone()));
        entry.attempt += 1;
        let attempt = entry.attempt;
        let lease_id = format!("{id}:{attempt}");
        entry.state = EntryState::Leased(Lease {
            lease_id: lease_id.clone(),
            node_id: node_id.clone(),
            leased_ts: now_ms,
            accepted: false,
            missing_since: None,
        });
        entry.told_position = None;
        let job = entry.submission.job.clone();
        self.held
            .entry(node_id.clone())
            .or_default()
            .insert(id.clone());
        self.push_update(
            id,
            DispatchUpdate::Leased {
                node: node_id.clone(),
                attempt,
            },
        );
        self.touch(id);
        effects.push(Effect::ToNode {
            node: node_id.clone(),
            message: PoolMessage::Lease {
                lease_id,
                analysis_id: id.clone(),
                attempt,
                job,
                expires_ts: now_ms + ms(self.config.accept_ms),
            },
        });
        effects.push(Effect::Watch(PoolEvent::Leased {
            analysis_id: id.clone(),
            node: node_id,
            attempt,
        }));
    }

    /// Drops nodes that are gone and hold nothing.
    fn forget_nodes(&mut self, effects: &mut Vec<Effect>) {
        let gone: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| !n.connected && self.held.get(&n.node_id).is_none_or(BTreeSet::is_empty))
            .map(|n| n.node_id.clone())
            .collect();
        for node_id in gone {
            self.nodes.remove(&node_id);
            self.held.remove(&node_id);
            self.dirty_nodes.insert(node_id.clone());
            effects.push(Effect::Watch(PoolEvent::NodeLeft { node_id }));
        }
    }

    /// Forgets the oldest finished analyses beyond `keep_finished` once they have their
    /// updates.
    fn prune(&mut self) {
        while self.finished.len() > self.config.keep_finished {
            let Some(oldest) = self
                .finished
                .iter()
                .find(|(_, id)| self.entries.get(id).is_none_or(|e| e.outbox.is_empty()))
                .cloned()
            else {
                return;
            };
            self.finished.remove(&oldest);
            self.entries.remove(&oldest.1);
            self.dirty_entries.insert(oldest.1);
        }
    }

    /// Tells each of the first [`EXACT_POSITIONS`] queued analyses its position when it moved.
    fn tell_positions(&mut self) {
        let firsts: Vec<(AnalysisId, u32)> = self
            .queue
            .iter()
            .take(EXACT_POSITIONS as usize)
            .zip(1..)
            .map(|((_, _, id), position)| (id.clone(), position))
            .collect();
        for (id, position) in firsts {
            let entry = self.entries.get_mut(&id).expect("queued entries exist");
            if entry.told_position != Some(position) {
                entry.told_position = Some(position);
                self.push_update(&id, DispatchUpdate::Position { position });
            }
        }
    }

    /// Queues an update for the analysis; a newer position replaces an unsent one.
    fn push_update(&mut self, id: &AnalysisId, update: DispatchUpdate) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if matches!(update, DispatchUpdate::Position { .. })
            && let Some(last @ DispatchUpdate::Position { .. }) = entry.outbox.last_mut()
        {
            *last = update;
        } else {
            entry.outbox.push(update);
        }
        self.touch(id);
    }

    /// 1-based position of a queued entry.
    fn position(&self, entry: &Entry) -> u32 {
        let key = (
            Reverse(entry.submission.priority),
            entry.order,
            entry.analysis_id.clone(),
        );
        u32::try_from(self.queue.range(..key).count() + 1).unwrap_or(u32::MAX)
    }

    fn index(&mut self, entry: &Entry) {
        let id = entry.analysis_id.clone();
        match &entry.state {
            EntryState::Queued => {
                self.queue
                    .insert((Reverse(entry.submission.priority), entry.order, id));
            }
            EntryState::Leased(lease) => {
                self.held
                    .entry(lease.node_id.clone())
                    .or_default()
                    .insert(id);
            }
            EntryState::Finished { ts, .. } => {
                self.finished.insert((*ts, id));
            }
        }
    }

    fn touch(&mut self, id: &AnalysisId) {
        self.dirty_entries.insert(id.clone());
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

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / 4)
}
