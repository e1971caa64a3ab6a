//! A submitted analysis: its queue place, attempts and fencing, as its pool tells it.
//!
//! Every pool update is idempotent by `attempt`, so the pool may send each one again
//! until it is answered. Publishes of a submitted analysis carry the attempt of their
//! lease; only the current leased attempt may write ([`Analysis::check_attempt`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Analysis;
use crate::api::{ApiError, ErrorCode};
use crate::dispatch::wire::DispatchUpdate;
use crate::event::ErrorInfo;
use crate::ids::{NodeId, PoolName};
use crate::snapshot::Status;
use crate::stored::{EdgeEventKind, StoredEvent};

/// The `code` of the `failed` event that ends an analysis whose attempts ran out.
pub const ATTEMPTS_EXHAUSTED: &str = "attempts_exhausted";

/// What the analysis knows of its dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatched {
    pub pool: PoolName,
    pub max_attempts: u8,
    /// The attempt of the latest lease (0 before the first).
    pub attempt: u32,
    /// The node holding the current lease; `None` while queued.
    pub node: Option<NodeId>,
    /// Exact for positions 1..=10; `None` unless queued.
    pub queue_position: Option<u32>,
}

/// Whether a submission may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitCheck {
    /// Nothing here yet.
    Fresh,
    /// Submitted to this pool before: the pool decides whether it is the same submission.
    Again,
}

/// 409 `analysis_exists`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("analysis {analysis_id} already exists (it has events, or was submitted to another pool)")]
pub struct AnalysisExists {
    pub analysis_id: String,
}

impl ApiError for AnalysisExists {
    fn code(&self) -> ErrorCode {
        ErrorCode::AnalysisExists
    }
}

/// 409 `stale_attempt`: a publish from a lease that is no longer current.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StaleAttempt {
    #[error("this analysis was submitted: every publish must carry its lease's `attempt`")]
    Missing,
    #[error(
        "attempt {sent} for an analysis that was not submitted (a direct publish carries no attempt)"
    )]
    NotSubmitted { sent: u32 },
    #[error("attempt {sent} is not current (the current attempt is {current}{held})", held = if *.held { "" } else { ", and it is queued" })]
    NotCurrent { sent: u32, current: u32, held: bool },
}

impl ApiError for StaleAttempt {
    fn code(&self) -> ErrorCode {
        ErrorCode::StaleAttempt
    }
}

/// What a pool update did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// An edge event to store and send.
    Event(StoredEvent),
    /// The snapshot changed (a queue position), nothing to store as an event.
    Changed,
    /// Already applied.
    Unchanged,
}

/// A pool update the analysis cannot take.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpdateRefused {
    /// It ended (the pool should free what it holds).
    #[error("the analysis has ended: {status}")]
    Finished { status: Status },
    /// It was never submitted (its submission did not land here).
    #[error("the analysis was not submitted")]
    NotSubmitted,
}

impl Analysis {
    pub fn dispatched(&self) -> Option<&Dispatched> {
        self.dispatch.as_ref()
    }

    /// May this analysis be submitted to `pool`?
    pub fn check_submit(&self, pool: &PoolName) -> Result<SubmitCheck, AnalysisExists> {
        match &self.dispatch {
            None if self.last_seq == 0 => Ok(SubmitCheck::Fresh),
            Some(d) if &d.pool == pool => Ok(SubmitCheck::Again),
            _ => Err(AnalysisExists {
                analysis_id: self.analysis_id.to_string(),
            }),
        }
    }

    /// Records the submission: the `queued` event, or `None` when already submitted.
    fn queue(
        &mut self,
        pool: PoolName,
        max_attempts: u8,
        position: Option<u32>,
        now_ms: i64,
    ) -> Option<StoredEvent> {
        if self.dispatch.is_some() || self.last_seq > 0 {
            return None;
        }
        let now = self.clock(now_ms);
        self.dispatch = Some(Dispatched {
            pool: pool.clone(),
            max_attempts,
            attempt: 0,
            node: None,
            queue_position: position,
        });
        self.status = Status::Queued;
        let kind = EdgeEventKind::Queued {
            pool,
            position,
            max_attempts,
        };
        Some(self.record_edge(kind, now))
    }

    /// Fencing: may a publish carrying `attempt` write now?
    pub fn check_attempt(&self, attempt: Option<u32>) -> Result<(), StaleAttempt> {
        let Some(d) = &self.dispatch else {
            // A direct analysis is the node's own and takes no attempt; one that carries
            // an attempt comes from a lease whose submission has not landed here.
            return match attempt {
                None => Ok(()),
                Some(sent) => Err(StaleAttempt::NotSubmitted { sent }),
            };
        };
        let sent = attempt.ok_or(StaleAttempt::Missing)?;
        if sent == d.attempt && d.node.is_some() {
            return Ok(());
        }
        Err(StaleAttempt::NotCurrent {
            sent,
            current: d.attempt,
            held: d.node.is_some(),
        })
    }

    /// Applies an update from the pool at `now_ms`.
    pub fn apply_dispatch(
        &mut self,
        update: &DispatchUpdate,
        now_ms: i64,
    ) -> Result<Applied, UpdateRefused> {
        if let DispatchUpdate::Queued {
            pool,
            position,
            max_attempts,
        } = update
        {
            return match (&self.dispatch, self.last_seq) {
                (Some(_), _) => Ok(Applied::Unchanged),
                (None, 0) => {
                    let event = self.queue(pool.clone(), *max_attempts, *position, now_ms);
                    Ok(event.map_or(Applied::Unchanged, Applied::Event))
                }
                // A node published to this id directly: it is not the pool's.
                (None, _) => Err(UpdateRefused::NotSubmitted),
            };
        }
        let Some(d) = &self.dispatch else {
            return Err(UpdateRefused::NotSubmitted);
        };
        let (attempt, held) = (d.attempt, d.node.is_some());
        let finished = self.status.is_terminal();
        let refuse = || {
            Err(UpdateRefused::Finished {
                status: self.status,
            })
        };
        let now = self.clock(now_ms);
        let kind = match update {
            DispatchUpdate::Position { position } => {
                let d = self.dispatch.as_mut().expect("checked above");
                if self.status != Status::Queued || d.queue_position == Some(*position) {
                    return Ok(Applied::Unchanged);
                }
                d.queue_position = Some(*position);
                return Ok(Applied::Changed);
            }
            DispatchUpdate::Leased { .. } | DispatchUpdate::Requeued { .. } if finished => {
                return refuse();
            }
            DispatchUpdate::Leased { node, attempt: a } if *a > attempt => {
                self.on_leased(node.clone(), *a);
                EdgeEventKind::Leased {
                    node: node.clone(),
                    attempt: *a,
                }
            }
            DispatchUpdate::Requeued {
                attempt: a,
                reason,
                node,
            } if *a == attempt && held => {
                self.on_requeued();
                EdgeEventKind::Requeued {
                    attempt: *a,
                    reason: *reason,
                    node: node.clone(),
                }
            }
            DispatchUpdate::Exhausted { attempt: a } if *a == attempt && !finished => {
                let error = exhausted_error(d.max_attempts);
                self.on_ended(Status::Failed, now);
                self.error = Some(error.clone());
                EdgeEventKind::Failed { error }
            }
            DispatchUpdate::Cancelled if !finished => {
                self.on_ended(Status::Cancelled, now);
                EdgeEventKind::Cancelled {
                    reason: "cancelled while queued".to_owned(),
                }
            }
            _ => return Ok(Applied::Unchanged),
        };
        Ok(Applied::Event(self.record_edge(kind, now)))
    }

    /// Replays a stored dispatch event (see [`Analysis::replay`]): `false` when it does
    /// not apply.
    pub(super) fn replay_dispatch(&mut self, kind: &EdgeEventKind, ts: i64) -> bool {
        let update = match kind {
            EdgeEventKind::Queued {
                pool,
                position,
                max_attempts,
            } => {
                return self
                    .queue(pool.clone(), *max_attempts, *position, ts)
                    .is_some();
            }
            EdgeEventKind::Leased { node, attempt } => DispatchUpdate::Leased {
                node: node.clone(),
                attempt: *attempt,
            },
            EdgeEventKind::Requeued {
                attempt,
                reason,
                node,
            } => DispatchUpdate::Requeued {
                attempt: *attempt,
                reason: *reason,
                node: node.clone(),
            },
            EdgeEventKind::Failed { .. } => DispatchUpdate::Exhausted {
                attempt: self.dispatch.as_ref().map_or(0, |d| d.attempt),
            },
            EdgeEventKind::Cancelled { .. } => DispatchUpdate::Cancelled,
            EdgeEventKind::Artifact { .. } => {
                self.artifacts += 1;
                self.record_edge(kind.clone(), ts);
                return true;
            }
            EdgeEventKind::CancelRequested { .. } | EdgeEventKind::Stalled { .. } => return false,
        };
        matches!(self.apply_dispatch(&update, ts), Ok(Applied::Event(_)))
    }

    fn on_leased(&mut self, node: NodeId, attempt: u32) {
        let d = self.dispatch.as_mut().expect("checked by the caller");
        d.attempt = attempt;
        d.node = Some(node);
        d.queue_position = None;
        self.status = Status::Pending;
    }

    /// The next attempt starts over: stages and ETA reset, the log keeps the past.
    fn on_requeued(&mut self) {
        let d = self.dispatch.as_mut().expect("checked by the caller");
        d.node = None;
        self.status = Status::Queued;
        self.stages = Default::default();
        self.eta = Default::default();
        self.heard_ts = None;
    }

    fn on_ended(&mut self, status: Status, now: i64) {
        if let Some(d) = self.dispatch.as_mut() {
            d.node = None;
            d.queue_position = None;
        }
        self.status = status;
        self.terminal_ts = Some(now);
    }
}

fn exhausted_error(max_attempts: u8) -> ErrorInfo {
    ErrorInfo {
        code: ATTEMPTS_EXHAUSTED.to_owned(),
        message: format!("all {max_attempts} attempts were lost to node loss or lease expiry"),
        retryable: false,
    }
}
