//! The state machine of one analysis, sans IO: the caller passes time in (`now_ms`, ms
//! since the Unix epoch) and stores what comes out. No clock, no I/O, no randomness.
//!
//! # Clock
//! Everything is timed with the caller's clock (the edge's receive time), never with
//! the node's `ts`: a node with a skewed clock cannot reorder events, break the ETA or
//! dodge the stall timer. The node's `ts` is kept as sent, inside the stored event.
//! Time never goes back: a `now_ms` earlier than the latest stored event counts as that
//! event's time. A stored event's `ts` is that (clamped) receive time, which is what lets
//! [`Analysis::replay`] rebuild the exact same state from stored events alone.
//!
//! # Order
//! `pending -> started -> (progress | partial_result | heartbeat)* -> completed | failed
//! | cancelled`. Nothing after a terminal event; a stage's progress never goes back; a
//! stage must be named in `started`. The edge adds `cancel_requested` (once, not after a
//! terminal event) and `stalled` (running and silent for the stall timeout); the next
//! node event after `stalled` makes the analysis `running` again.
//!
//! # Using it at the edge
//! 1. Load the [`Analysis`] (it is serde-serializable, one row) or create it with
//!    [`Analysis::new`].
//! 2. [`Analysis::apply_batch`] with the parsed events, `now_ms` and a duplicate test
//!    against stored event ids; on `Ok`, store `outcome.stored` and the new state in one
//!    transaction, fan the events out, answer with [`BatchOutcome::response`].
//! 3. Schedule an alarm at the earliest of [`Analysis::next_deadline`] and
//!    [`Analysis::terminal_ts`] + retention; on the alarm call [`Analysis::check_stall`].

mod dispatch;
mod eta;
mod media;
mod progress;

pub use dispatch::{
    ATTEMPTS_EXHAUSTED, AnalysisExists, Applied, Dispatched, StaleAttempt, SubmitCheck,
    UpdateRefused,
};
pub use media::{ArtifactCheck, ArtifactRefused};

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ApiError, ErrorCode, PublishResponse};
use crate::event::{AnalysisResult, ErrorInfo, Event, EventKind};
use crate::ids::AnalysisId;
use crate::snapshot::{Snapshot, Status};
use crate::stored::{EdgeEvent, EdgeEventKind, StoredEvent, StoredEventBody, edge_event_id};
use crate::validate::{ValidationError, validate_event};

use eta::Eta;
use progress::Stages;

/// One analysis. Holds no event ids: duplicates are found through the `is_known`
/// callback of [`Analysis::apply_batch`], so the state stays small however long the
/// analysis runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    analysis_id: AnalysisId,
    status: Status,
    stages: Stages,
    eta: Eta,
    last_seq: u64,
    cancel_requested: bool,
    started_ts: Option<i64>,
    /// The `ts` of the latest stored event; the clock never goes back past it.
    updated_ts: Option<i64>,
    /// When the node was last heard from (any stored node event).
    heard_ts: Option<i64>,
    terminal_ts: Option<i64>,
    result: Option<AnalysisResult>,
    error: Option<ErrorInfo>,
    regions_count: u64,
    /// Set when the analysis was submitted at the edge (absent in rows written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispatch: Option<Dispatched>,
    /// The uploaded input, until retention (absent in rows written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<crate::media::InputRecord>,
    /// Artifacts stored so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    artifacts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// The events to store and send, in seq order.
    pub stored: Vec<StoredEvent>,
    /// Events dropped because their id was known or repeated in the batch.
    pub duplicates: u32,
    pub last_seq: u64,
    pub cancel_requested: bool,
}

impl BatchOutcome {
    /// The 200 answer to the publish.
    pub fn response(&self) -> PublishResponse {
        PublishResponse {
            // A batch holds at most MAX_EVENTS_PER_BATCH events.
            accepted: u32::try_from(self.stored.len()).unwrap_or(u32::MAX),
            duplicates: self.duplicates,
            last_seq: self.last_seq,
            cancel_requested: self.cancel_requested,
        }
    }
}

/// Why an event is not allowed now.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TransitionKind {
    /// The event breaks a bound (a 400, not a 409): callers that skipped
    /// [`crate::validate`] still cannot corrupt the state.
    #[error(transparent)]
    Invalid(ValidationError),
    #[error("`{event_type}` before `started`: the first event must be `started`")]
    NotStarted { event_type: &'static str },
    #[error("a second `started`: the analysis has already started")]
    AlreadyStarted,
    #[error("the analysis is {status}: nothing is accepted after completed, failed or cancelled")]
    Finished { status: Status },
    #[error("stage {stage:?} went back from {from} to {to}")]
    ProgressBackwards { stage: String, from: f64, to: f64 },
    #[error("stage {stage:?} was not declared by `started`")]
    UnknownStage { stage: String },
}

/// A batch refused: the event at `index` is not allowed. Nothing of the batch applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionError {
    pub index: usize,
    pub kind: TransitionKind,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            // Its path already names the event.
            TransitionKind::Invalid(e) => e.fmt(f),
            kind => write!(f, "events[{}]: {kind}", self.index),
        }
    }
}

impl std::error::Error for TransitionError {}

impl ApiError for TransitionError {
    /// 409 codes, except `invalid_event` (400) for an event that breaks a bound.
    fn code(&self) -> ErrorCode {
        match self.kind {
            TransitionKind::Invalid(_) => ErrorCode::InvalidEvent,
            TransitionKind::NotStarted { .. } => ErrorCode::NotStarted,
            TransitionKind::AlreadyStarted => ErrorCode::AlreadyStarted,
            TransitionKind::Finished { .. } => ErrorCode::AnalysisFinished,
            TransitionKind::ProgressBackwards { .. } => ErrorCode::ProgressBackwards,
            TransitionKind::UnknownStage { .. } => ErrorCode::UnknownStage,
        }
    }

    fn index(&self) -> Option<u32> {
        u32::try_from(self.index).ok()
    }
}

/// Stored events that do not rebuild an analysis.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ReplayError {
    #[error("found seq {found} where seq {expected} was due")]
    Gap { expected: u64, found: u64 },
    #[error("seq {seq}: {source}")]
    Transition {
        seq: u64,
        #[source]
        source: TransitionError,
    },
    #[error("seq {seq}: `{event_type}` does not apply in status {status}")]
    Unexpected {
        seq: u64,
        event_type: &'static str,
        status: Status,
    },
}

impl Analysis {
    /// A pending analysis with nothing stored.
    pub fn new(analysis_id: AnalysisId) -> Self {
        Self {
            analysis_id,
            status: Status::Pending,
            stages: Stages::default(),
            eta: Eta::default(),
            last_seq: 0,
            cancel_requested: false,
            started_ts: None,
            updated_ts: None,
            heard_ts: None,
            terminal_ts: None,
            result: None,
            error: None,
            regions_count: 0,
            dispatch: None,
            input: None,
            artifacts: 0,
        }
    }

    /// Rebuilds an analysis from all its stored events, in seq order from 1. The result
    /// equals the analysis that produced them.
    pub fn replay<I>(analysis_id: AnalysisId, stored: I) -> Result<Self, ReplayError>
    where
        I: IntoIterator,
        I::Item: Borrow<StoredEvent>,
    {
        Self::new(analysis_id).resume(stored)
    }

    /// Brings a saved analysis (a checkpoint) up to date with the events stored after it,
    /// in seq order from `last_seq + 1`. The result equals the analysis that stored them.
    pub fn resume<I>(self, stored: I) -> Result<Self, ReplayError>
    where
        I: IntoIterator,
        I::Item: Borrow<StoredEvent>,
    {
        let mut analysis = self;
        for item in stored {
            let stored: &StoredEvent = item.borrow();
            let seq = stored.seq;
            let expected = analysis.last_seq + 1;
            if seq != expected {
                return Err(ReplayError::Gap {
                    expected,
                    found: seq,
                });
            }
            let unexpected = |analysis: &Self, event_type| ReplayError::Unexpected {
                seq,
                event_type,
                status: analysis.status,
            };
            match &stored.event {
                StoredEventBody::Node(event) => {
                    analysis
                        .apply_batch(vec![event.clone()], stored.ts, |_| false)
                        .map_err(|source| ReplayError::Transition { seq, source })?;
                }
                StoredEventBody::Edge(EdgeEvent {
                    kind: EdgeEventKind::CancelRequested { by },
                    ..
                }) => {
                    if analysis.request_cancel(by, stored.ts).is_none() {
                        return Err(unexpected(&analysis, "cancel_requested"));
                    }
                }
                StoredEventBody::Edge(EdgeEvent {
                    kind: EdgeEventKind::Stalled { .. },
                    ..
                }) => {
                    // The stall was due when it was stored: a zero timeout re-creates it.
                    if analysis.check_stall(stored.ts, 0).is_none() {
                        return Err(unexpected(&analysis, "stalled"));
                    }
                }
                StoredEventBody::Edge(EdgeEvent { kind, .. }) => {
                    if !analysis.replay_dispatch(kind, stored.ts) {
                        return Err(unexpected(&analysis, kind.type_name()));
                    }
                }
            }
        }
        Ok(analysis)
    }

    /// Applies a batch of node events received at `now_ms`, all or nothing.
    ///
    /// An event whose id `is_known` (already stored) or that repeats an earlier id of
    /// the batch is a duplicate: dropped and counted, never checked against the order
    /// (a retried batch is answered as if it succeeded again). Every other event must be
    /// valid ([`validate_event`]) and allowed now; otherwise the error names the first
    /// offending event and nothing changes. The stored events get seq `last_seq + 1...`
    /// and `ts` = `now_ms` (clamped, see the module docs).
    pub fn apply_batch(
        &mut self,
        events: Vec<Event>,
        now_ms: i64,
        is_known: impl Fn(&str) -> bool,
    ) -> Result<BatchOutcome, TransitionError> {
        for (index, event) in events.iter().enumerate() {
            validate_event(event, index).map_err(|e| TransitionError {
                index,
                kind: TransitionKind::Invalid(e),
            })?;
        }
        // Work on a copy so that an error leaves `self` untouched.
        let mut next = self.clone();
        let now = next.clock(now_ms);
        let mut seen = HashSet::with_capacity(events.len());
        let mut stored = Vec::with_capacity(events.len());
        let mut duplicates = 0;
        for (index, event) in events.into_iter().enumerate() {
            if seen.contains(event.id.as_str()) || is_known(&event.id) {
                duplicates += 1;
                continue;
            }
            next.apply_node_event(&event, now)
                .map_err(|kind| TransitionError { index, kind })?;
            seen.insert(event.id.clone());
            stored.push(next.record(StoredEventBody::Node(event), now));
        }
        *self = next;
        Ok(BatchOutcome {
            stored,
            duplicates,
            last_seq: self.last_seq,
            cancel_requested: self.cancel_requested,
        })
    }

    /// Records a cancel request by `by` (the requester's token `sub`): the
    /// `cancel_requested` event to store and send, or `None` when one was already
    /// recorded or the analysis has finished. Works while pending too.
    pub fn request_cancel(&mut self, by: &str, now_ms: i64) -> Option<StoredEvent> {
        if self.cancel_requested || self.status.is_terminal() {
            return None;
        }
        let now = self.clock(now_ms);
        self.cancel_requested = true;
        Some(self.record_edge(EdgeEventKind::CancelRequested { by: by.to_owned() }, now))
    }

    /// Marks a running analysis stalled when its node has been silent for at least
    /// `stall_timeout_ms`: the `stalled` event to store and send, or `None` (not due,
    /// not running, or already stalled). Call it from the alarm at [`Self::next_deadline`].
    pub fn check_stall(&mut self, now_ms: i64, stall_timeout_ms: u64) -> Option<StoredEvent> {
        if self.status != Status::Running {
            return None;
        }
        let heard = self.heard_ts?;
        let now = self.clock(now_ms);
        let silent_ms = u64::try_from(now - heard).unwrap_or(0);
        if silent_ms < stall_timeout_ms {
            return None;
        }
        self.status = Status::Stalled;
        Some(self.record_edge(EdgeEventKind::Stalled { silent_ms }, now))
    }

    /// When [`Self::check_stall`] would next fire: while running, the last time the node
    /// was heard plus the timeout. `None` when no stall can come.
    pub fn next_deadline(&self, stall_timeout_ms: u64) -> Option<i64> {
        if self.status != Status::Running {
            return None;
        }
        let timeout = i64::try_from(stall_timeout_ms).unwrap_or(i64::MAX);
        Some(self.heard_ts?.saturating_add(timeout))
    }

    /// When the analysis finished (completed, failed or cancelled), for retention.
    pub fn terminal_ts(&self) -> Option<i64> {
        self.terminal_ts
    }

    /// The seq of the latest stored event (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn analysis_id(&self) -> &AnalysisId {
        &self.analysis_id
    }

    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// What clients see.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            analysis_id: self.analysis_id.to_string(),
            status: self.status,
            stage: self.stages.current_name().map(str::to_owned),
            overall_progress: self.stages.overall(),
            eta_ms: self.eta_ms(),
            started_ts: self.started_ts,
            updated_ts: self.updated_ts,
            last_seq: self.last_seq,
            cancel_requested: self.cancel_requested,
            stages: self.stages.snapshot(),
            result: self.result.clone(),
            error: self.error.clone(),
            regions_count: self.regions_count,
            pool: self.dispatch.as_ref().map(|d| d.pool.clone()),
            queue_position: self.dispatch.as_ref().and_then(|d| d.queue_position),
            attempt: self.dispatch.as_ref().map(|d| d.attempt),
            max_attempts: self.dispatch.as_ref().map(|d| d.max_attempts),
            node: self.dispatch.as_ref().and_then(|d| d.node.clone()),
        }
    }

    /// `now_ms`, but never earlier than the latest stored event.
    fn clock(&self, now_ms: i64) -> i64 {
        self.updated_ts.map_or(now_ms, |t| now_ms.max(t))
    }

    /// The ETA is only meaningful while the node is making progress.
    fn eta_ms(&self) -> Option<u64> {
        (self.status == Status::Running)
            .then(|| self.eta.eta_ms(self.stages.overall()))
            .flatten()
    }

    fn apply_node_event(&mut self, event: &Event, now: i64) -> Result<(), TransitionKind> {
        if self.status.is_terminal() {
            return Err(TransitionKind::Finished {
                status: self.status,
            });
        }
        match &event.kind {
            EventKind::Started { stages, .. } => {
                if self.status != Status::Pending {
                    return Err(TransitionKind::AlreadyStarted);
                }
                self.stages = Stages::new(stages);
                self.started_ts = Some(now);
                self.eta.observe(now, 0.0);
            }
            kind if matches!(self.status, Status::Pending | Status::Queued) => {
                return Err(TransitionKind::NotStarted {
                    event_type: kind.type_name(),
                });
            }
            EventKind::Progress {
                stage,
                stage_progress,
                ..
            } => {
                self.stages.advance(stage, *stage_progress, now)?;
                self.eta.observe(now, self.stages.overall());
            }
            EventKind::PartialResult { regions, .. } => {
                self.regions_count = self.regions_count.saturating_add(regions.len() as u64);
            }
            EventKind::Heartbeat { .. } => {}
            EventKind::Completed { result } => {
                self.stages.complete(now);
                self.regions_count = result.regions.len() as u64;
                self.result = Some(result.clone());
            }
            EventKind::Failed { error } => self.error = Some(error.clone()),
            EventKind::Cancelled { .. } => {}
        }
        self.status = match &event.kind {
            EventKind::Completed { .. } => Status::Completed,
            EventKind::Failed { .. } => Status::Failed,
            EventKind::Cancelled { .. } => Status::Cancelled,
            // Started, or any event of a running or stalled analysis: it is alive.
            _ => Status::Running,
        };
        if self.status.is_terminal() {
            self.terminal_ts = Some(now);
        }
        self.heard_ts = Some(now);
        Ok(())
    }

    fn record_edge(&mut self, kind: EdgeEventKind, now: i64) -> StoredEvent {
        let id = edge_event_id(self.last_seq + 1);
        self.record(StoredEventBody::Edge(EdgeEvent { id, kind }), now)
    }

    /// Assigns the next seq and stamps the event with the state it leaves behind.
    fn record(&mut self, event: StoredEventBody, now: i64) -> StoredEvent {
        self.last_seq += 1;
        self.updated_ts = Some(now);
        StoredEvent {
            seq: self.last_seq,
            ts: now,
            event,
            overall_progress: self.stages.overall(),
            eta_ms: self.eta_ms(),
        }
    }
}
