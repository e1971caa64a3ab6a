//! The pool and the analyses together, as the edge runs them: a simulated fleet with
//! random node loss, link cuts, edge restarts and cancels, checked after every step.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use stagecast_shared::dispatch::pool::{Entry, EntryState, Meta, Node};
use stagecast_shared::dispatch::{
    Cancelled, Capacity, DispatchUpdate, Effect, Job, JobOptions, Pool, PoolConfig, PoolMessage,
    RequeueReason, Submission, SubmitRefused, Submitted,
};
use stagecast_shared::machine::{Applied, UpdateRefused};
use stagecast_shared::stored::{EdgeEventKind, StoredEventBody};
use stagecast_shared::{Analysis, AnalysisId, NodeId, PoolName, Status, StoredEvent};

use common::{cancelled, completed, started};

const CONFIG: PoolConfig = PoolConfig {
    lease_ms: 30_000,
    heartbeat_ms: 5_000,
    accept_ms: 10_000,
    queue_limit: 1_000,
    keep_finished: 1_000,
};

fn id(s: &str) -> AnalysisId {
    AnalysisId::parse(s).unwrap()
}

fn node_id(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

fn submission(priority: u8, max_attempts: u8) -> Submission {
    Submission {
        job: Job {
            input: "https://media.example/v.mp4".into(),
            model: None,
            options: JobOptions::default(),
        },
        priority,
        max_attempts,
    }
}

/// A node as the simulation runs it.
#[derive(Debug, Default)]
struct SimNode {
    conn: Option<u64>,
    slots: u32,
    inbox: Vec<PoolMessage>,
    /// analysis -> (lease id, attempt, steps left; None until started)
    runs: BTreeMap<AnalysisId, (String, u32, Option<u32>)>,
}

/// The fleet: one pool, its analyses, its nodes, a clock and the pool's stored rows.
struct World {
    pool: Pool,
    analyses: BTreeMap<AnalysisId, Analysis>,
    logs: BTreeMap<AnalysisId, Vec<StoredEvent>>,
    nodes: BTreeMap<NodeId, SimNode>,
    rows: (Meta, BTreeMap<AnalysisId, Entry>, BTreeMap<NodeId, Node>),
    now: i64,
    submitted: u32,
    /// (analysis, attempt) pairs ever leased, to check attempts are never reused.
    leases_seen: BTreeSet<(AnalysisId, u32)>,
}

impl World {
    fn new(nodes: &[u32]) -> Self {
        let mut world = Self {
            pool: Pool::new(PoolName::default_pool(), CONFIG),
            analyses: BTreeMap::new(),
            logs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            rows: (Meta::default(), BTreeMap::new(), BTreeMap::new()),
            now: 1_000_000,
            submitted: 0,
            leases_seen: BTreeSet::new(),
        };
        for (i, slots) in nodes.iter().enumerate() {
            let node = node_id(&format!("n{i}"));
            world.nodes.insert(
                node.clone(),
                SimNode {
                    slots: *slots,
                    ..SimNode::default()
                },
            );
            world.connect(&node);
        }
        world
    }

    fn carry(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if let Effect::ToNode { node, message } = effect {
                if let PoolMessage::Lease {
                    analysis_id,
                    attempt,
                    ..
                } = &message
                {
                    assert!(
                        self.leases_seen.insert((analysis_id.clone(), *attempt)),
                        "attempt {attempt} of {analysis_id} leased twice"
                    );
                }
                let sim = self.nodes.get_mut(&node).expect("a known node");
                // A message to a closed socket is lost, as on the wire.
                if sim.conn.is_some() {
                    sim.inbox.push(message);
                }
            }
        }
        self.deliver();
        self.persist();
    }

    /// The pool's outbox reaches the analysis objects.
    fn deliver(&mut self) {
        loop {
            let pending: Vec<(AnalysisId, Vec<DispatchUpdate>)> = self
                .pool
                .undelivered()
                .map(|e| (e.analysis_id.clone(), e.outbox.clone()))
                .collect();
            if pending.is_empty() {
                return;
            }
            for (analysis_id, updates) in pending {
                let mut effects = Vec::new();
                let analysis = self.analyses.get_mut(&analysis_id).expect("submitted");
                for update in &updates {
                    match analysis.apply_dispatch(update, self.now) {
                        Ok(Applied::Event(event)) => {
                            self.logs.get_mut(&analysis_id).unwrap().push(event)
                        }
                        Ok(Applied::Changed | Applied::Unchanged) => {}
                        Err(UpdateRefused::Finished { status }) => {
                            let attempt = analysis.dispatched().unwrap().attempt;
                            self.pool.finished(
                                &analysis_id,
                                attempt,
                                status,
                                self.now,
                                &mut effects,
                            );
                        }
                        Err(UpdateRefused::NotSubmitted) => panic!("{analysis_id} not submitted"),
                    }
                    // Delivered twice: every update is idempotent.
                    assert!(matches!(
                        analysis.apply_dispatch(update, self.now),
                        Ok(Applied::Unchanged) | Err(UpdateRefused::Finished { .. })
                    ));
                }
                self.pool.delivered(&analysis_id, &updates);
                self.carry_quiet(effects);
            }
        }
    }

    fn carry_quiet(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if let Effect::ToNode { node, message } = effect {
                let sim = self.nodes.get_mut(&node).expect("a known node");
                if sim.conn.is_some() {
                    sim.inbox.push(message);
                }
            }
        }
    }

    fn persist(&mut self) {
        let changes = self.pool.take_changes();
        if let Some(meta) = changes.meta {
            self.rows.0 = meta;
        }
        for (id, row) in changes.entries {
            match row {
                Some(entry) => self.rows.1.insert(id, entry),
                None => self.rows.1.remove(&id),
            };
        }
        for (id, row) in changes.nodes {
            match row {
                Some(node) => self.rows.2.insert(id, node),
                None => self.rows.2.remove(&id),
            };
        }
    }

    /// The edge process dies and comes back: every socket is gone; the pool reloads.
    fn restart_edge(&mut self) {
        self.pool = Pool::load(
            PoolName::default_pool(),
            CONFIG,
            self.rows.0.clone(),
            self.rows.1.values().cloned().collect(),
            self.rows.2.values().cloned().collect(),
        );
        for sim in self.nodes.values_mut() {
            sim.conn = None;
            sim.inbox.clear();
        }
        let mut effects = Vec::new();
        self.pool.reconcile(&[], self.now, &mut effects);
        self.carry(effects);
    }

    fn submit(&mut self, priority: u8, max_attempts: u8) {
        let analysis_id = id(&format!("a{}", self.submitted));
        self.submitted += 1;
        let analysis = Analysis::new(analysis_id.clone());
        assert!(analysis.check_submit(&PoolName::default_pool()).is_ok());
        self.analyses.insert(analysis_id.clone(), analysis);
        self.logs.insert(analysis_id.clone(), Vec::new());
        let mut effects = Vec::new();
        let sub = submission(priority, max_attempts);
        let answer = self
            .pool
            .submit(analysis_id.clone(), sub.clone(), self.now, &mut effects)
            .expect("under the limit");
        assert!(matches!(answer, Submitted::Queued { .. }), "a new id");
        // The same submission again is idempotent; a different one is refused.
        let again = self
            .pool
            .submit(analysis_id.clone(), sub, self.now, &mut effects);
        assert!(matches!(again, Ok(Submitted::Again { .. })));
        let other = self.pool.submit(
            analysis_id,
            submission(priority, max_attempts % 10 + 1),
            self.now,
            &mut effects,
        );
        assert_eq!(other, Err(SubmitRefused::Different));
        self.carry(effects);
    }

    fn connect(&mut self, node: &NodeId) {
        let mut effects = Vec::new();
        let (conn, _) = self.pool.connect(node.clone(), self.now, &mut effects);
        let sim = self.nodes.get_mut(node).unwrap();
        sim.conn = Some(conn);
        let capacity = Capacity {
            slots: sim.slots,
            models: vec!["m".into()],
            labels: BTreeMap::new(),
        };
        self.pool
            .ready(node, conn, capacity, self.now, &mut effects);
        let running: Vec<AnalysisId> = sim.runs.keys().cloned().collect();
        self.pool
            .heartbeat(node, conn, &running, None, self.now, &mut effects);
        self.carry(effects);
    }

    /// The node's link drops (the node keeps running what it runs).
    fn cut(&mut self, node: &NodeId) {
        let sim = self.nodes.get_mut(node).unwrap();
        if let Some(conn) = sim.conn.take() {
            sim.inbox.clear();
            let mut effects = Vec::new();
            self.pool.disconnect(node, conn, self.now, &mut effects);
            self.carry(effects);
        }
    }

    /// The node process dies: its runs are gone.
    fn kill(&mut self, node: &NodeId) {
        self.cut(node);
        self.nodes.get_mut(node).unwrap().runs.clear();
    }

    fn publish(
        &mut self,
        analysis_id: &AnalysisId,
        attempt: u32,
        event: stagecast_shared::Event,
    ) -> bool {
        let analysis = self.analyses.get_mut(analysis_id).unwrap();
        if analysis.check_attempt(Some(attempt)).is_err() {
            return false;
        }
        let log = self.logs.get_mut(analysis_id).unwrap();
        let known: BTreeSet<String> = log.iter().map(|e| e.event.id().to_owned()).collect();
        let Ok(outcome) = analysis.apply_batch(vec![event], self.now, |id| known.contains(id))
        else {
            return false;
        };
        log.extend(outcome.stored);
        if analysis.status().is_terminal() {
            let status = analysis.status();
            let mut effects = Vec::new();
            self.pool
                .finished(analysis_id, attempt, status, self.now, &mut effects);
            self.carry(effects);
        }
        true
    }

    /// The node reads its messages, advances each run one step and heartbeats.
    fn step(&mut self, node: &NodeId, work: u32) {
        let Some(conn) = self.nodes[node].conn else {
            return;
        };
        let inbox = std::mem::take(&mut self.nodes.get_mut(node).unwrap().inbox);
        let mut effects = Vec::new();
        for message in inbox {
            let sim = self.nodes.get_mut(node).unwrap();
            match message {
                PoolMessage::Lease {
                    lease_id,
                    analysis_id,
                    attempt,
                    ..
                } => {
                    sim.runs
                        .insert(analysis_id, (lease_id.clone(), attempt, None));
                    self.pool
                        .accept(node, conn, &lease_id, self.now, &mut effects);
                }
                PoolMessage::Cancel { analysis_id, .. } => {
                    if let Some((_, attempt, _)) = sim.runs.remove(&analysis_id) {
                        let event = cancelled(&format!("{analysis_id}-{attempt}-x"));
                        self.publish(&analysis_id, attempt, event);
                    }
                }
                PoolMessage::Revoked { analysis_id, .. } => {
                    sim.runs.remove(&analysis_id);
                }
                PoolMessage::Welcome { .. } | PoolMessage::Error { .. } => {}
            }
        }
        let runs: Vec<(AnalysisId, u32, Option<u32>)> = self.nodes[node]
            .runs
            .iter()
            .map(|(a, (_, attempt, left))| (a.clone(), *attempt, *left))
            .collect();
        for (analysis_id, attempt, left) in runs {
            let (event, next) = match left {
                None => (
                    started(&format!("{analysis_id}-{attempt}-s"), &[("infer", 1.0)]),
                    Some(work),
                ),
                Some(0) => (completed(&format!("{analysis_id}-{attempt}-c"), 1), None),
                Some(n) => {
                    self.nodes
                        .get_mut(node)
                        .unwrap()
                        .runs
                        .get_mut(&analysis_id)
                        .unwrap()
                        .2 = Some(n - 1);
                    continue;
                }
            };
            let accepted = self.publish(&analysis_id, attempt, event);
            let sim = self.nodes.get_mut(node).unwrap();
            match (accepted, next) {
                // Stale or finished: the node stops that run.
                (false, _) | (true, None) => {
                    sim.runs.remove(&analysis_id);
                }
                (true, Some(n)) => sim.runs.get_mut(&analysis_id).unwrap().2 = Some(n),
            }
        }
        let running: Vec<AnalysisId> = self.nodes[node].runs.keys().cloned().collect();
        if self.nodes[node].conn == Some(conn) {
            self.pool
                .heartbeat(node, conn, &running, None, self.now, &mut effects);
        }
        self.carry(effects);
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        if self.pool.next_deadline().is_some_and(|at| at <= self.now) {
            let mut effects = Vec::new();
            self.pool.tick(self.now, &mut effects);
            self.carry(effects);
        }
    }

    fn cancel(&mut self, n: u32) {
        if self.submitted == 0 {
            return;
        }
        let analysis_id = id(&format!("a{}", n % self.submitted));
        let analysis = self.analyses.get_mut(&analysis_id).unwrap();
        if let Some(event) = analysis.request_cancel("viewer", self.now) {
            self.logs.get_mut(&analysis_id).unwrap().push(event);
            let mut effects = Vec::new();
            let outcome = self.pool.cancel(&analysis_id, self.now, &mut effects);
            assert_ne!(outcome, Cancelled::NotHere, "{analysis_id} is live");
            self.carry(effects);
        }
    }

    /// What must hold after every step.
    fn check(&self) {
        let mut holders: BTreeMap<AnalysisId, NodeId> = BTreeMap::new();
        for node in self.nodes.keys() {
            if let Some(view) = self.pool.node_view(node) {
                assert!(view.running.len() as u32 <= self.nodes[node].slots.max(view.slots));
                for analysis_id in view.running {
                    if let Some(other) = holders.insert(analysis_id.clone(), node.clone()) {
                        panic!("{analysis_id} leased to {other} and {node}");
                    }
                }
            }
        }
        // At most one node can write into an analysis: the holder of its current attempt.
        for (analysis_id, analysis) in &self.analyses {
            let writers = self
                .nodes
                .values()
                .filter_map(|n| n.runs.get(analysis_id))
                .filter(|(_, attempt, _)| analysis.check_attempt(Some(*attempt)).is_ok())
                .count();
            assert!(writers <= 1, "{analysis_id}: {writers} nodes may write");
            let d = analysis.dispatched().unwrap();
            if let Some(entry) = self.pool.entry(analysis_id) {
                assert!(
                    entry.lost <= u32::from(d.max_attempts),
                    "{analysis_id} lost {}",
                    entry.lost
                );
            }
        }
        // The first ten queue positions are exact in every analysis.
        let queued = self
            .pool
            .analyses(stagecast_shared::dispatch::wire::AnalysisFilter::Queued, 10);
        for (position, row) in (1..).zip(queued) {
            let snapshot = self.analyses[&row.analysis_id].snapshot();
            assert_eq!(snapshot.status, Status::Queued);
            assert_eq!(
                snapshot.queue_position,
                Some(position),
                "{}",
                row.analysis_id
            );
        }
    }

    /// Every analysis' log: one terminal event, the last; seqs 1.. without gaps; and it
    /// replays to the same state.
    fn check_ended_once(&self) {
        for (analysis_id, log) in &self.logs {
            let terminal: Vec<&StoredEvent> =
                log.iter().filter(|e| e.event.is_terminal()).collect();
            assert_eq!(
                terminal.len(),
                1,
                "{analysis_id} ended {} times",
                terminal.len()
            );
            assert_eq!(log.last().map(|e| e.seq), terminal.first().map(|e| e.seq));
            let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>());
            let replayed = Analysis::replay(analysis_id.clone(), log).unwrap();
            assert_eq!(&replayed, &self.analyses[analysis_id]);
        }
    }

    /// No more faults: every node up, until everything has ended.
    fn heal(&mut self) {
        let nodes: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for node in &nodes {
            if self.nodes[node].conn.is_none() {
                self.connect(node);
            }
        }
        for _ in 0..2_000 {
            if self.analyses.values().all(|a| a.status().is_terminal()) {
                return;
            }
            for node in &nodes {
                self.step(node, 1);
            }
            self.advance(1_000);
            self.check();
        }
        panic!("not everything ended: {:?}", self.pool.view(self.now));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit { priority: u8, max_attempts: u8 },
    Step { node: usize, work: u32 },
    Advance { ms: i64 },
    Cut { node: usize },
    Kill { node: usize },
    Connect { node: usize },
    RestartEdge,
    Cancel { n: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 1..4u8).prop_map(|(priority, max_attempts)| Op::Submit { priority, max_attempts }),
        6 => (0..3usize, 0..3u32).prop_map(|(node, work)| Op::Step { node, work }),
        3 => (0..20_000i64).prop_map(|ms| Op::Advance { ms }),
        1 => (0..3usize).prop_map(|node| Op::Cut { node }),
        1 => (0..3usize).prop_map(|node| Op::Kill { node }),
        2 => (0..3usize).prop_map(|node| Op::Connect { node }),
        1 => Just(Op::RestartEdge),
        1 => any::<u32>().prop_map(|n| Op::Cancel { n }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Under random node loss, link cuts, edge restarts and cancels: never two holders,
    /// never more lost attempts than allowed, exact first positions, and once the faults
    /// stop every analysis ends exactly once.
    #[test]
    fn every_analysis_ends_exactly_once(ops in prop::collection::vec(op(), 1..80)) {
        let mut world = World::new(&[1, 2, 1]);
        let names: Vec<NodeId> = world.nodes.keys().cloned().collect();
        for op in ops {
            match op {
                Op::Submit { priority, max_attempts } => world.submit(priority, max_attempts),
                Op::Step { node, work } => world.step(&names[node], work),
                Op::Advance { ms } => world.advance(ms),
                Op::Cut { node } => world.cut(&names[node]),
                Op::Kill { node } => world.kill(&names[node]),
                Op::Connect { node } => {
                    if world.nodes[&names[node]].conn.is_none() {
                        world.connect(&names[node]);
                    }
                }
                Op::RestartEdge => world.restart_edge(),
                Op::Cancel { n } => world.cancel(n),
            }
            world.check();
        }
        world.heal();
        world.check_ended_once();
    }
}

#[test]
fn higher_priority_first_then_first_in_first_out() {
    let mut world = World::new(&[]);
    for priority in [0, 2, 0, 1, 2] {
        world.submit(priority, 3);
    }
    let order: Vec<String> = world
        .pool
        .analyses(stagecast_shared::dispatch::wire::AnalysisFilter::Queued, 10)
        .into_iter()
        .map(|a| a.analysis_id.to_string())
        .collect();
    assert_eq!(order, ["a1", "a4", "a3", "a0", "a2"]);
    world.check();
}

#[test]
fn a_lost_node_requeues_at_the_front_and_the_attempt_goes_up() {
    let mut world = World::new(&[1]);
    world.submit(0, 2);
    world.submit(0, 2);
    let n0 = node_id("n0");
    world.step(&n0, 5);
    assert_eq!(world.analyses[&id("a0")].status(), Status::Running);
    world.kill(&n0);
    world.advance(CONFIG.lease_ms as i64 - 1);
    assert_eq!(
        world.analyses[&id("a0")].status(),
        Status::Running,
        "not before lease_ms"
    );
    world.advance(1);
    let a0 = world.analyses[&id("a0")].snapshot();
    assert_eq!(
        (a0.status, a0.queue_position, a0.attempt),
        (Status::Queued, Some(1), Some(1))
    );
    assert!(matches!(
        &world.logs[&id("a0")].last().unwrap().event,
        StoredEventBody::Edge(e) if e.kind == EdgeEventKind::Requeued { attempt: 1, reason: RequeueReason::NodeLost, node: n0.clone() }
    ));
    world.connect(&n0);
    assert_eq!(world.analyses[&id("a0")].snapshot().attempt, Some(2));
    // The last allowed attempt lost: failed, attempts_exhausted.
    world.step(&n0, 5);
    world.kill(&n0);
    world.advance(CONFIG.lease_ms as i64);
    let a0 = world.analyses[&id("a0")].snapshot();
    assert_eq!(a0.status, Status::Failed);
    assert_eq!(a0.error.unwrap().code, "attempts_exhausted");
}

#[test]
fn a_released_lease_costs_no_attempt() {
    let mut world = World::new(&[1]);
    world.submit(0, 1);
    let n0 = node_id("n0");
    world.step(&n0, 5);
    let conn = world.nodes[&n0].conn.unwrap();
    let mut effects = Vec::new();
    world
        .pool
        .ready(&n0, conn, Capacity::default(), world.now, &mut effects);
    world
        .pool
        .release(&n0, conn, "a0:1", world.now, &mut effects);
    world.nodes.get_mut(&n0).unwrap().runs.clear();
    world.carry(effects);
    let a0 = world.analyses[&id("a0")].snapshot();
    assert_eq!((a0.status, a0.attempt), (Status::Queued, Some(1)));
    assert_eq!(world.pool.entry(&id("a0")).unwrap().lost, 0);
}

#[test]
fn a_cut_node_that_comes_back_is_revoked_and_its_publishes_are_stale() {
    let mut world = World::new(&[1, 1]);
    world.submit(0, 3);
    let (n0, n1) = (node_id("n0"), node_id("n1"));
    // a0 goes to n0 (both have one free slot; ties go to the smaller id).
    world.step(&n0, 10);
    world.cut(&n0);
    world.advance(CONFIG.lease_ms as i64);
    assert_eq!(world.analyses[&id("a0")].snapshot().node, Some(n1.clone()));
    world.step(&n1, 10);
    // n0's link returns: its heartbeat lists a0, which it no longer holds.
    let conn = world.pool.connect(n0.clone(), world.now, &mut Vec::new()).0;
    world.nodes.get_mut(&n0).unwrap().conn = Some(conn);
    let before = world.logs[&id("a0")].len();
    assert!(
        !world.publish(&id("a0"), 1, completed("late", 1)),
        "stale attempt refused"
    );
    assert_eq!(world.logs[&id("a0")].len(), before, "nothing stored");
    let mut effects = Vec::new();
    world
        .pool
        .heartbeat(&n0, conn, &[id("a0")], None, world.now, &mut effects);
    assert!(effects.iter().any(|e| matches!(e,
        Effect::ToNode { node, message: PoolMessage::Revoked { analysis_id, lease_id: Some(l), .. } }
            if node == &n0 && analysis_id == &id("a0") && l == "a0:1")));
}

#[test]
fn a_second_socket_of_a_node_replaces_the_first() {
    let mut world = World::new(&[1]);
    let n0 = node_id("n0");
    let old = world.nodes[&n0].conn.unwrap();
    let (new, replaced) = world.pool.connect(n0.clone(), world.now, &mut Vec::new());
    assert!(replaced && new != old);
    // The old socket's close changes nothing.
    world.pool.disconnect(&n0, old, world.now, &mut Vec::new());
    assert!(world.pool.node(&n0).unwrap().connected);
}

#[test]
fn a_full_queue_refuses_and_a_queued_cancel_ends_without_a_node() {
    let mut pool = Pool::new(
        PoolName::default_pool(),
        PoolConfig {
            queue_limit: 2,
            ..CONFIG
        },
    );
    let mut effects = Vec::new();
    for n in 0..2 {
        pool.submit(id(&format!("q{n}")), submission(0, 3), 0, &mut effects)
            .unwrap();
    }
    assert_eq!(
        pool.submit(id("q2"), submission(0, 3), 0, &mut effects),
        Err(SubmitRefused::QueueFull { limit: 2 })
    );
    assert_eq!(
        pool.cancel(&id("q0"), 1, &mut effects),
        Cancelled::FromQueue
    );
    assert_eq!(
        pool.entry(&id("q0")).unwrap().outbox.last(),
        Some(&DispatchUpdate::Cancelled)
    );
    assert!(matches!(
        pool.entry(&id("q0")).unwrap().state,
        EntryState::Finished {
            status: Status::Cancelled,
            ..
        }
    ));
    // q1 moved up to the first place.
    assert_eq!(
        pool.entry(&id("q1")).unwrap().outbox.last(),
        Some(&DispatchUpdate::Position { position: 1 })
    );
}

mod submit_body {
    use stagecast_shared::api::{ApiError, ErrorCode};
    use stagecast_shared::dispatch::parse_submit_body;

    fn code(body: &str) -> (ErrorCode, String) {
        let e = parse_submit_body(body.as_bytes()).unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let submit = parse_submit_body(br#"{"input": "https://media.example/v.mp4"}"#).unwrap();
        assert_eq!(submit.analysis_id, None);
        assert_eq!(submit.pool.as_str(), "default");
        assert_eq!(
            (submit.submission.priority, submit.submission.max_attempts),
            (0, 3)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (
                r#"{"input": "file:///etc/passwd"}"#,
                ErrorCode::InvalidRequest,
                "input",
            ),
            (
                r#"{"input": "ftp://host/x"}"#,
                ErrorCode::InvalidRequest,
                "input",
            ),
            (
                r#"{"input": "https:///x"}"#,
                ErrorCode::InvalidRequest,
                "input",
            ),
            (
                r#"{"input": "/srv/v.mp4"}"#,
                ErrorCode::InvalidRequest,
                "input",
            ),
            (
                r#"{"input": "https://h/x", "options": {"fps": 0}}"#,
                ErrorCode::InvalidRequest,
                "options.fps",
            ),
            (
                r#"{"input": "https://h/x", "options": {"batch_size": 0}}"#,
                ErrorCode::InvalidRequest,
                "options.batch_size",
            ),
            (
                r#"{"input": "https://h/x", "priority": 10}"#,
                ErrorCode::InvalidRequest,
                "priority",
            ),
            (
                r#"{"input": "https://h/x", "max_attempts": 0}"#,
                ErrorCode::InvalidRequest,
                "max_attempts",
            ),
            (
                r#"{"input": "https://h/x", "model": "a b"}"#,
                ErrorCode::InvalidRequest,
                "model",
            ),
            (
                r#"{"input": "https://h/x", "pool": "../other"}"#,
                ErrorCode::InvalidPoolName,
                "pool",
            ),
            (
                r#"{"input": "https://h/x", "analysis_id": ""}"#,
                ErrorCode::InvalidAnalysisId,
                "analysis_id",
            ),
            (
                r#"{"input": "https://h/x", "colour": "red"}"#,
                ErrorCode::InvalidJson,
                "colour",
            ),
            (
                r#"{"input": "https://h/x", "priority": -1}"#,
                ErrorCode::InvalidJson,
                "priority",
            ),
        ];
        for (body, expected, field) in cases {
            let (code, message) = code(body);
            assert_eq!(code, expected, "{body}: {message}");
            assert!(message.contains(field), "{body}: {message:?} names {field}");
        }
        let big = format!(r#"{{"input": "https://h/{}"}}"#, "x".repeat(300 * 1024));
        assert_eq!(code(&big).0, ErrorCode::PayloadTooLarge);
    }
}

#[test]
fn a_direct_analysis_takes_no_attempt_and_no_pool() {
    let mut analysis = Analysis::new(id("direct"));
    assert!(analysis.check_attempt(None).is_ok());
    assert!(
        analysis.check_attempt(Some(1)).is_err(),
        "an attempt means a lease"
    );
    let outcome = analysis.apply_batch(vec![started("s", &[("infer", 1.0)])], 5, |_| false);
    assert!(outcome.is_ok());
    let queued = DispatchUpdate::Queued {
        pool: PoolName::default_pool(),
        position: Some(1),
        max_attempts: 3,
    };
    assert_eq!(
        analysis.apply_dispatch(&queued, 6),
        Err(UpdateRefused::NotSubmitted)
    );
    assert!(analysis.check_submit(&PoolName::default_pool()).is_err());
}

#[test]
fn an_update_queued_while_others_were_on_their_way_stays() {
    let mut pool = Pool::new(PoolName::default_pool(), CONFIG);
    let mut effects = Vec::new();
    pool.submit(id("a"), submission(0, 3), 0, &mut effects)
        .unwrap();
    let first = pool.entry(&id("a")).unwrap().outbox.clone();
    assert!(matches!(first[..], [DispatchUpdate::Queued { .. }]));
    // A node arrives and takes it before the first delivery is answered.
    let (conn, _) = pool.connect(node_id("n"), 1, &mut effects);
    let capacity = Capacity {
        slots: 1,
        models: vec![],
        labels: BTreeMap::new(),
    };
    pool.ready(&node_id("n"), conn, capacity, 1, &mut effects);
    // Two deliveries of the same copy (two operations interleaved) drop it once.
    pool.delivered(&id("a"), &first);
    pool.delivered(&id("a"), &first);
    let left = &pool.entry(&id("a")).unwrap().outbox;
    assert!(
        matches!(left[..], [DispatchUpdate::Leased { attempt: 1, .. }]),
        "{left:?}"
    );
}

#[test]
fn a_heartbeat_listing_every_slot_with_the_longest_ids_fits_a_node_message() {
    use stagecast_shared::dispatch::NodeMessage;
    use stagecast_shared::dispatch::wire::{MAX_NODE_MESSAGE_BYTES, MAX_RUNNING};
    use stagecast_shared::event::Metrics;
    let running: Vec<AnalysisId> = (0..MAX_RUNNING).map(|n| id(&format!("{n:0>64}"))).collect();
    let metrics = Metrics {
        gpu_util: Some(0.5),
        gpu_mem_used_bytes: Some(u64::MAX),
        gpu_mem_total_bytes: Some(u64::MAX),
        cpu_util: Some(0.5),
        rss_bytes: Some(u64::MAX),
        queue_depth: Some(u64::MAX),
    };
    let heartbeat = NodeMessage::Heartbeat {
        metrics: Some(metrics),
        running,
    };
    let text = serde_json::to_string(&heartbeat).unwrap();
    assert!(text.len() <= MAX_NODE_MESSAGE_BYTES, "{} bytes", text.len());
    assert!(NodeMessage::parse(&text).is_ok());
}
