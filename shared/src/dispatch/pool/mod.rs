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

mod leasing;
mod rows;
mod updates;
mod view;

pub use rows::{Capacity, Changes, Entry, EntryState, Lease, Meta, Node};

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

/// What an operation asks the caller to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send to the node's current socket.
    ToNode { node: NodeId, message: PoolMessage },
    /// Send to the pool's live viewers.
    Watch(PoolEvent),
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
        self.watch_node(node_id, effects);
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
        self.watch_node(node_id, effects);
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
        self.watch_node(node_id, effects);
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
