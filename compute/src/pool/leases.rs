//! The node's side of its leases, sans IO: what it holds from the pool, what it runs,
//! and what to do on each pool message, run end and drain step. The socket loop carries
//! out the [`Action`]s in order.

use std::collections::BTreeMap;

use stagecast_shared::dispatch::Job;
use stagecast_shared::ids::AnalysisId;

use crate::publish::StaleReason;

/// The `reason` of a `release` sent while draining.
pub const SHUTDOWN: &str = "shutdown";
/// The `reason` of a `release` for a lease this node cannot run now.
pub const BUSY: &str = "busy";

/// What the socket loop does, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send `accept`.
    Accept { lease_id: String },
    /// Send `release`.
    Release {
        lease_id: String,
        reason: &'static str,
    },
    /// Start the leased run.
    Start {
        analysis_id: AnalysisId,
        attempt: u32,
        job: Job,
    },
    /// Cancel the run (it publishes `cancelled` under its attempt).
    Cancel { analysis_id: AnalysisId },
    /// Stop the run and drop what it has not published: its attempt is stale.
    Stop {
        analysis_id: AnalysisId,
        reason: StaleReason,
    },
}

/// A lease the pool gave this node.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    lease_id: String,
    attempt: u32,
    /// Not started yet: an older attempt of the same analysis still winds down here.
    waiting: Option<Job>,
    /// A cancel came while it waited: cancel it once it starts.
    cancelled: bool,
}

#[derive(Debug, Default)]
pub struct Leases {
    /// What the pool leased to this node and it has not given back: heartbeats list it.
    held: BTreeMap<AnalysisId, Held>,
    /// The attempt of each run alive on this node (it ends when its events are published
    /// or dropped), held or not.
    live: BTreeMap<AnalysisId, u32>,
    draining: bool,
}

impl Leases {
    pub fn new() -> Self {
        Self::default()
    }

    /// `lease`: accepted at once and started, unless the node drains (given back) or an
    /// older attempt of the same analysis still runs here (stopped first, then started).
    pub fn on_lease(
        &mut self,
        lease_id: String,
        analysis_id: AnalysisId,
        attempt: u32,
        job: Job,
    ) -> Vec<Action> {
        if self.draining {
            return vec![Action::Release {
                lease_id,
                reason: SHUTDOWN,
            }];
        }
        let mut actions = vec![Action::Accept {
            lease_id: lease_id.clone(),
        }];
        let waiting = match self.live.get(&analysis_id) {
            // sent again (the edge may repeat itself): taken already, not run twice
            Some(&live) if live == attempt => return actions,
            Some(_) => {
                actions.push(Action::Stop {
                    analysis_id: analysis_id.clone(),
                    reason: StaleReason::Revoked,
                });
                Some(job)
            }
            None => {
                self.live.insert(analysis_id.clone(), attempt);
                actions.push(Action::Start {
                    analysis_id: analysis_id.clone(),
                    attempt,
                    job,
                });
                None
            }
        };
        self.held.insert(
            analysis_id,
            Held {
                lease_id,
                attempt,
                waiting,
                cancelled: false,
            },
        );
        actions
    }

    /// `cancel`: of the lease this node holds for the analysis.
    pub fn on_cancel(&mut self, analysis_id: &AnalysisId, lease_id: &str) -> Vec<Action> {
        match self.held.get_mut(analysis_id) {
            Some(held) if held.lease_id == lease_id => {
                if held.waiting.is_some() {
                    held.cancelled = true;
                    Vec::new()
                } else {
                    vec![Action::Cancel {
                        analysis_id: analysis_id.clone(),
                    }]
                }
            }
            _ => Vec::new(),
        }
    }

    /// `revoked`: the node no longer holds the analysis (that lease, when named).
    pub fn on_revoked(&mut self, analysis_id: &AnalysisId, lease_id: Option<&str>) -> Vec<Action> {
        let Some(held) = self.held.get(analysis_id) else {
            return Vec::new();
        };
        if lease_id.is_some_and(|l| l != held.lease_id) {
            // about a lease this node gave up already
            return Vec::new();
        }
        let held = self.held.remove(analysis_id).expect("found above");
        if self.live.get(analysis_id) == Some(&held.attempt) {
            vec![Action::Stop {
                analysis_id: analysis_id.clone(),
                reason: StaleReason::Revoked,
            }]
        } else {
            Vec::new()
        }
    }

    /// The run of `attempt` ended (published, or dropped as stale). A lease that waited
    /// for it starts now.
    pub fn on_ended(&mut self, analysis_id: &AnalysisId, attempt: u32) -> Vec<Action> {
        if self.live.get(analysis_id) != Some(&attempt) {
            return Vec::new();
        }
        self.live.remove(analysis_id);
        let Some(held) = self.held.get_mut(analysis_id) else {
            return Vec::new();
        };
        if held.attempt == attempt {
            self.held.remove(analysis_id);
            return Vec::new();
        }
        let Some(job) = held.waiting.take() else {
            return Vec::new();
        };
        if self.draining {
            let held = self.held.remove(analysis_id).expect("found above");
            return vec![Action::Release {
                lease_id: held.lease_id,
                reason: SHUTDOWN,
            }];
        }
        self.live.insert(analysis_id.clone(), held.attempt);
        let mut actions = vec![Action::Start {
            analysis_id: analysis_id.clone(),
            attempt: held.attempt,
            job,
        }];
        if held.cancelled {
            actions.push(Action::Cancel {
                analysis_id: analysis_id.clone(),
            });
        }
        actions
    }

    /// The node could not start the run: the lease goes back.
    pub fn on_start_failed(&mut self, analysis_id: &AnalysisId, attempt: u32) -> Vec<Action> {
        if self.live.get(analysis_id) == Some(&attempt) {
            self.live.remove(analysis_id);
        }
        match self.held.get(analysis_id) {
            Some(held) if held.attempt == attempt => {
                let held = self.held.remove(analysis_id).expect("found above");
                vec![Action::Release {
                    lease_id: held.lease_id,
                    reason: BUSY,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// SIGTERM: no new leases; what runs may finish.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The drain's time is up: every lease goes back and its run stops, publishing
    /// nothing more (a `cancelled` would end the analysis instead of requeueing it).
    pub fn release_all(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (analysis_id, held) in std::mem::take(&mut self.held) {
            // stopped first, so nothing of it goes out once the pool requeued it
            if self.live.get(&analysis_id) == Some(&held.attempt) {
                actions.push(Action::Stop {
                    analysis_id,
                    reason: StaleReason::Released,
                });
            }
            actions.push(Action::Release {
                lease_id: held.lease_id,
                reason: SHUTDOWN,
            });
        }
        actions
    }

    /// The link ended for good: no lease is this node's any more; every run stops.
    pub fn lose_all(&mut self) -> Vec<Action> {
        self.held.clear();
        self.live
            .keys()
            .map(|analysis_id| Action::Stop {
                analysis_id: analysis_id.clone(),
                reason: StaleReason::LinkLost,
            })
            .collect()
    }

    /// What a heartbeat lists: every lease held, running or about to.
    pub fn running(&self) -> Vec<AnalysisId> {
        self.held.keys().cloned().collect()
    }

    /// Whether no lease is held and no run is alive: a drain is done.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.live.is_empty()
    }

    /// The `slots` of `ready`: none while draining or before a model is loaded.
    pub fn slots(&self, capacity: u32, has_models: bool) -> u32 {
        if self.draining || !has_models {
            0
        } else {
            capacity
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagecast_shared::dispatch::JobOptions;

    fn id(s: &str) -> AnalysisId {
        AnalysisId::parse(s).unwrap()
    }

    fn job() -> Job {
        Job {
            input: "https://media.example/v.mp4".into(),
            model: None,
            options: JobOptions::default(),
        }
    }

    fn accept(lease: &str) -> Action {
        Action::Accept {
            lease_id: lease.into(),
        }
    }

    fn start(a: &str, attempt: u32) -> Action {
        Action::Start {
            analysis_id: id(a),
            attempt,
            job: job(),
        }
    }

    fn stop(a: &str, reason: StaleReason) -> Action {
        Action::Stop {
            analysis_id: id(a),
            reason,
        }
    }

    fn release(lease: &str, reason: &'static str) -> Action {
        Action::Release {
            lease_id: lease.into(),
            reason,
        }
    }

    #[test]
    fn a_lease_is_accepted_then_started_and_listed_until_its_run_ends() {
        let mut l = Leases::new();
        assert_eq!(
            l.on_lease("l1".into(), id("a1"), 1, job()),
            [accept("l1"), start("a1", 1)]
        );
        // a repeated lease is accepted again, not run twice
        assert_eq!(l.on_lease("l1".into(), id("a1"), 1, job()), [accept("l1")]);
        l.on_lease("l2".into(), id("a2"), 4, job());
        assert_eq!(l.running(), [id("a1"), id("a2")]);
        // a stray end (another attempt) changes nothing
        assert!(l.on_ended(&id("a1"), 7).is_empty());
        assert!(l.on_ended(&id("a1"), 1).is_empty());
        assert_eq!(l.running(), [id("a2")]);
        assert!(!l.is_idle());
        l.on_ended(&id("a2"), 4);
        assert!(l.is_idle() && l.running().is_empty());
    }

    #[test]
    fn cancel_reaches_the_run_of_that_lease_only() {
        let mut l = Leases::new();
        l.on_lease("l1".into(), id("a1"), 1, job());
        assert!(l.on_cancel(&id("a1"), "old").is_empty());
        assert!(l.on_cancel(&id("zz"), "l1").is_empty());
        assert_eq!(
            l.on_cancel(&id("a1"), "l1"),
            [Action::Cancel {
                analysis_id: id("a1")
            }]
        );
        // still listed: the run publishes its `cancelled`, which ends the lease
        assert_eq!(l.running(), [id("a1")]);
    }

    #[test]
    fn revoked_stops_the_run_and_unlists_it_at_once() {
        let mut l = Leases::new();
        l.on_lease("l1".into(), id("a1"), 2, job());
        assert!(l.on_revoked(&id("a1"), Some("other")).is_empty());
        assert_eq!(
            l.on_revoked(&id("a1"), Some("l1")),
            [stop("a1", StaleReason::Revoked)]
        );
        assert!(l.running().is_empty());
        // alive until its run says it ended
        assert!(!l.is_idle());
        assert!(l.on_revoked(&id("a1"), None).is_empty());
        l.on_ended(&id("a1"), 2);
        assert!(l.is_idle());
    }

    #[test]
    fn a_newer_attempt_waits_for_the_older_run_to_stop() {
        let mut l = Leases::new();
        l.on_lease("l1".into(), id("a1"), 1, job());
        assert_eq!(
            l.on_lease("l2".into(), id("a1"), 2, job()),
            [accept("l2"), stop("a1", StaleReason::Revoked)]
        );
        assert_eq!(l.running(), [id("a1")]);
        // cancelled while it waits: started, then cancelled
        assert!(l.on_cancel(&id("a1"), "l2").is_empty());
        assert_eq!(
            l.on_ended(&id("a1"), 1),
            [
                start("a1", 2),
                Action::Cancel {
                    analysis_id: id("a1")
                }
            ]
        );
        assert!(l.on_ended(&id("a1"), 2).is_empty());
        assert!(l.is_idle());
    }

    #[test]
    fn a_lease_waiting_when_the_drain_began_goes_back_once_the_older_run_ends() {
        let mut l = Leases::new();
        l.on_lease("l1".into(), id("a1"), 1, job());
        l.on_lease("l2".into(), id("a1"), 2, job());
        l.drain();
        assert_eq!(l.on_ended(&id("a1"), 1), [release("l2", SHUTDOWN)]);
        assert!(l.is_idle());
    }

    #[test]
    fn a_run_that_cannot_start_gives_its_lease_back() {
        let mut l = Leases::new();
        l.on_lease("l1".into(), id("a1"), 1, job());
        assert_eq!(l.on_start_failed(&id("a1"), 1), [release("l1", BUSY)]);
        assert!(l.is_idle());
    }

    #[test]
    fn draining_refuses_new_leases_and_at_the_deadline_releases_and_stops_the_rest() {
        let mut l = Leases::new();
        assert_eq!(l.slots(3, false), 0);
        assert_eq!(l.slots(3, true), 3);
        l.on_lease("l1".into(), id("a1"), 1, job());
        l.on_lease("l2".into(), id("a2"), 1, job());
        l.on_lease("l3".into(), id("a3"), 5, job());
        l.on_lease("l4".into(), id("a3"), 6, job()); // waits for attempt 5
        l.drain();
        assert!(l.draining());
        assert_eq!(l.slots(3, true), 0);
        assert_eq!(
            l.on_lease("l5".into(), id("a5"), 1, job()),
            [release("l5", SHUTDOWN)]
        );
        // a1 finished in time
        l.on_ended(&id("a1"), 1);
        assert_eq!(
            l.release_all(),
            [
                stop("a2", StaleReason::Released),
                release("l2", SHUTDOWN),
                // a3's live run is attempt 5, stopped already; attempt 6 never starts
                release("l4", SHUTDOWN),
            ]
        );
        assert!(l.running().is_empty());
        assert!(l.on_ended(&id("a3"), 5).is_empty());
        assert!(!l.is_idle());
        l.on_ended(&id("a2"), 1);
        assert!(l.is_idle());
    }

    #[test]
    fn losing_the_link_stops_every_live_run() {
        let mut l = Leases::new();
        l.on_lease("l1".into(), id("a1"), 1, job());
        l.on_lease("l2".into(), id("a2"), 3, job());
        l.on_revoked(&id("a2"), None);
        assert_eq!(
            l.lose_all(),
            [
                stop("a1", StaleReason::LinkLost),
                stop("a2", StaleReason::LinkLost)
            ]
        );
        assert!(l.running().is_empty());
    }
}
