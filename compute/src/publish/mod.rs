//! Getting an analysis' events to the edge without losing one.
//!
//! A [`Publication`] takes the pipeline's events, coalesces progress ([`coalesce`]),
//! gives each event its id and timestamp, makes it durable in the [`outbox`], and
//! publishes batches through the [`client`] until the edge confirms them, when and how
//! [`stagecast_shared::send::SendPolicy`] says (linger, batch limit, backoff with full
//! jitter, `Retry-After`, refusals), over the analysis' publish [`socket`] or, where it
//! will not open, HTTP. Every answer's `cancel_requested` fires the analysis'
//! cancellation token.
//!
//! A run the pool leased publishes under its attempt ([`Publication::start_leased`]):
//! every batch carries it, and once its [`Fence`] fires (the pool revoked the lease, or
//! the edge answered `stale_attempt`) the run is cancelled and its unsent events are
//! dropped and counted, never retried.
//!
//! Artifacts go beside the events, best effort ([`artifacts`]).

pub mod artifacts;
pub mod client;
pub mod coalesce;
mod fence;
pub mod outbox;
mod probe;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use stagecast_shared::event::{ErrorInfo, Event, EventKind};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::send::{Answer, SendConfig, SendPolicy, Step};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use artifacts::Uploads;
pub use client::{EdgeClient, EdgeClientError, NodeIdentity, PublishError, PublishOver};
pub use coalesce::Coalescer;
pub use fence::{Fence, StaleReason};
pub use outbox::{Outbox, OutboxError, Queue};
pub use probe::{Probe, cpu_seconds};
pub use socket::PublishSocket;

use crate::clock::{now_ms, now_s};
use client::TokenCache;

/// A heartbeat goes out this often while the analysis runs.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// How a publication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
pub struct Delivered {
    /// Events the edge stored or had already stored.
    pub confirmed: u64,
    /// Events the edge refused for good (400, 409, 413), logged as errors.
    pub refused: u64,
    /// Events dropped unsent because their attempt was no longer current (a leased run).
    #[serde(skip_serializing_if = "is_zero")]
    pub stale: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum PublicationError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("the publication task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The lease a run publishes under.
#[derive(Debug, Clone)]
pub struct Fencing {
    /// The lease's attempt, carried by every batch.
    pub attempt: u32,
    pub fence: Fence,
}

/// The queue depth a heartbeat reports, read when it is sent.
pub type QueueDepth = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One analysis being published. Send events with [`Publication::send`]; dropping the
/// sender side ([`Publication::finish`]) lets the task drain the outbox and end.
pub struct Publication {
    events: UnboundedSender<EventKind>,
    task: JoinHandle<Result<Delivered, OutboxError>>,
    /// Whom artifacts go to, and under which attempt and fence.
    edge: Arc<EdgeClient>,
    analysis: AnalysisId,
    attempt: Option<u32>,
    fence: Fence,
}

impl Publication {
    /// Starts publishing `analysis`, after whatever an earlier run left in its outbox.
    pub fn start(
        edge: Arc<EdgeClient>,
        outbox: &Outbox,
        analysis: AnalysisId,
        cancel: CancellationToken,
        queue_depth: QueueDepth,
    ) -> Result<Self, OutboxError> {
        let run = Run {
            analysis,
            cancel,
            attempt: None,
            fence: Fence::new(),
        };
        Self::spawn(edge, outbox, run, queue_depth)
    }

    /// Starts publishing a run the pool leased: every batch carries `fencing.attempt`, and
    /// once `fencing.fence` fires, `cancel` fires too and nothing more is sent.
    pub fn start_leased(
        edge: Arc<EdgeClient>,
        outbox: &Outbox,
        analysis: AnalysisId,
        cancel: CancellationToken,
        queue_depth: QueueDepth,
        fencing: Fencing,
    ) -> Result<Self, OutboxError> {
        let run = Run {
            analysis,
            cancel,
            attempt: Some(fencing.attempt),
            fence: fencing.fence,
        };
        Self::spawn(edge, outbox, run, queue_depth)
    }

    fn spawn(
        edge: Arc<EdgeClient>,
        outbox: &Outbox,
        run: Run,
        queue_depth: QueueDepth,
    ) -> Result<Self, OutboxError> {
        let queue = outbox.open(&run.analysis)?;
        let (events, rx) = unbounded_channel();
        let (analysis, attempt, fence) = (run.analysis.clone(), run.attempt, run.fence.clone());
        let span = tracing::info_span!("publish", analysis = %run.analysis, attempt = run.attempt);
        let task = tokio::spawn(
            Sender {
                edge: edge.clone(),
                analysis: run.analysis,
                attempt: run.attempt,
                fence: run.fence,
                queue,
                cancel: run.cancel,
                queue_depth,
                ids: EventIds::new(),
                coalescer: Coalescer::default(),
                tokens: TokenCache::default(),
                socket: edge.publish_socket(&analysis),
                policy: SendPolicy::new(SendConfig::default()),
                origin: Instant::now(),
                delivered: Delivered {
                    confirmed: 0,
                    refused: 0,
                    stale: 0,
                },
            }
            .run(rx)
            .instrument(span),
        );
        Ok(Self {
            events,
            task,
            edge,
            analysis,
            attempt,
            fence,
        })
    }

    /// Sends what an earlier run of this node left in `analysis`' outbox. A run that
    /// started and never ended (the node died under it) ends as `failed` with the
    /// retryable code `node_restarted`, so its watchers are not left waiting. (Of a run
    /// the pool leased, the edge takes none of it: the batches carry no attempt, so they
    /// are answered `stale_attempt` and dropped, and the pool runs the analysis again.)
    pub fn resume(
        edge: Arc<EdgeClient>,
        outbox: &Outbox,
        analysis: AnalysisId,
        queue_depth: QueueDepth,
    ) -> Result<Self, OutboxError> {
        let publication = Self::start(
            edge,
            outbox,
            analysis,
            CancellationToken::new(),
            queue_depth,
        )?;
        publication.send(EventKind::Failed {
            error: ErrorInfo {
                code: "node_restarted".into(),
                message: "the node restarted while this analysis ran; submit it again".into(),
                retryable: true,
            },
        });
        Ok(publication)
    }

    /// Queues one event (coalesced if it is progress). Never blocks.
    pub fn send(&self, kind: EventKind) {
        let _ = self.events.send(kind);
    }

    /// Starts sending this run's artifacts, under its attempt and fence.
    pub fn artifact_uploads(&self) -> Uploads {
        Uploads::start(
            self.edge.clone(),
            self.analysis.clone(),
            self.attempt,
            self.fence.clone(),
        )
    }

    /// Stops publishing now; what is unsent stays in the outbox for the next start.
    pub fn abort(self) {
        self.task.abort();
    }

    /// Waits until every event sent so far is confirmed or refused for good.
    pub async fn finish(self) -> Result<Delivered, PublicationError> {
        drop(self.events);
        Ok(self.task.await??)
    }
}

/// `<run>-<n>`: unique within the analysis across retries (same id) and across
/// re-runs of the same analysis id (a new run nonce).
struct EventIds {
    run: u32,
    next: u64,
}

impl EventIds {
    fn new() -> Self {
        Self {
            run: fastrand::u32(..),
            next: 0,
        }
    }

    fn next(&mut self, kind: EventKind) -> Event {
        self.next += 1;
        Event {
            id: format!("{:08x}-{}", self.run, self.next),
            ts: Some(now_ms()),
            kind,
        }
    }
}

/// Who a publication publishes for.
struct Run {
    analysis: AnalysisId,
    cancel: CancellationToken,
    /// The lease's attempt, for a run the pool leased.
    attempt: Option<u32>,
    fence: Fence,
}

struct Sender {
    edge: Arc<EdgeClient>,
    analysis: AnalysisId,
    attempt: Option<u32>,
    fence: Fence,
    queue: Queue,
    cancel: CancellationToken,
    queue_depth: QueueDepth,
    ids: EventIds,
    coalescer: Coalescer,
    tokens: TokenCache,
    /// The publish socket, unless the client publishes over HTTP only.
    socket: Option<PublishSocket>,
    policy: SendPolicy,
    /// The zero of the policy's monotonic milliseconds.
    origin: Instant,
    delivered: Delivered,
}

impl Sender {
    async fn run(mut self, mut rx: UnboundedReceiver<EventKind>) -> Result<Delivered, OutboxError> {
        // a run that already ended (resumed outbox) takes no new events
        let mut open = !self.queue.ended();
        let mut probe = Probe::new();
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
        let fence = self.fence.clone();
        loop {
            if let Some(reason) = fence.reason() {
                return Ok(self.drop_stale(reason, rx).await);
            }
            self.queue.sync()?;
            // the end of a run goes at once (unless backing off)
            let urgent = !open || self.queue.ended();
            let publish_at = self
                .policy
                .send_at(self.elapsed_ms(), self.queue.len(), urgent)
                .map(|ms| self.origin + Duration::from_millis(ms));
            if publish_at.is_some_and(|at| Instant::now() >= at) {
                self.publish_once().await?;
                // take what the pipeline sent meanwhile before the next batch
                self.drain(&mut rx)?;
                continue;
            }
            if !open && self.queue.is_empty() {
                self.close_socket().await;
                return Ok(self.delivered);
            }
            let deadline = self.coalescer.deadline().map(instant_of_ms);
            tokio::select! {
                kind = rx.recv(), if open => match kind {
                    Some(kind) => {
                        self.push(kind)?;
                        self.drain(&mut rx)?;
                    }
                    None => {
                        open = false;
                        if let Some(kind) = self.coalescer.flush() {
                            self.append(kind)?;
                        }
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if let Some(kind) = self.coalescer.poll(now_ms()) {
                        self.append(kind)?;
                    }
                }
                _ = heartbeat.tick(), if open && !self.coalescer.finished() => {
                    let mut metrics = probe.sample();
                    metrics.queue_depth = Some((self.queue_depth)());
                    self.push(EventKind::Heartbeat { metrics: Some(metrics) })?;
                }
                _ = sleep_until(publish_at), if publish_at.is_some() => {}
                _ = fence.fired() => {}
                else => {}
            }
        }
    }

    /// The attempt is stale: the run stops, and neither what is unsent nor what it still
    /// sends goes anywhere. Logged once, counted in `stagecast_publish_stale_events_total`.
    async fn drop_stale(
        mut self,
        reason: StaleReason,
        mut rx: UnboundedReceiver<EventKind>,
    ) -> Delivered {
        self.cancel.cancel();
        self.close_socket().await;
        let held = u64::from(self.coalescer.flush().is_some());
        let unsent = match self.queue.discard() {
            Ok(n) => n as u64,
            Err(e) => {
                tracing::error!("{e}");
                0
            }
        };
        tracing::warn!(
            reason = reason.as_str(),
            unsent = unsent + held,
            "this attempt is no longer current: the run stops and its unsent events are dropped"
        );
        let mut dropped = unsent + held;
        while rx.recv().await.is_some() {
            dropped += 1;
        }
        metrics::counter!("stagecast_publish_stale_events_total").increment(dropped);
        self.delivered.stale = dropped;
        self.delivered
    }

    async fn close_socket(&mut self) {
        if let Some(socket) = self.socket.as_mut() {
            socket.close().await;
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Everything the pipeline sent that is waiting, so one sync covers it all.
    fn drain(&mut self, rx: &mut UnboundedReceiver<EventKind>) -> Result<(), OutboxError> {
        while let Ok(kind) = rx.try_recv() {
            self.push(kind)?;
        }
        Ok(())
    }

    fn push(&mut self, kind: EventKind) -> Result<(), OutboxError> {
        for kind in self.coalescer.push(kind, now_ms()) {
            self.append(kind)?;
        }
        Ok(())
    }

    fn append(&mut self, kind: EventKind) -> Result<(), OutboxError> {
        let event = self.ids.next(kind);
        self.queue.push(&event)
    }

    /// Sends one batch and applies the policy's verdict on the edge's answer.
    async fn publish_once(&mut self) -> Result<(), OutboxError> {
        let Some((body, count)) = self
            .queue
            .next_body(self.policy.batch_limit(), self.attempt)
        else {
            return Ok(());
        };
        // a revoke does not wait for the request in flight
        let fence = self.fence.clone();
        let answer = tokio::select! {
            answer = self.send(body, count) => answer,
            _ = fence.fired() => return Ok(()),
        };
        if fence.reason().is_some() {
            return Ok(());
        }
        let step = self
            .policy
            .on_answer(answer, count, self.elapsed_ms(), fastrand::f64());
        let acked = match step {
            Step::Confirmed(n) => {
                self.delivered.confirmed += n as u64;
                self.queue.ack(n)
            }
            Step::DropFirst => {
                // The edge will never take this event: keep the rest flowing and say so.
                tracing::error!("event dropped: the edge refused it for good");
                metrics::counter!("stagecast_events_refused_total").increment(1);
                self.delivered.refused += 1;
                self.queue.ack(1)
            }
            Step::RetryAt(_) => {
                metrics::counter!("stagecast_publish_retries_total").increment(1);
                Ok(())
            }
            Step::SendFirst(_) => Ok(()),
        };
        if let Err(e) = acked {
            // confirmed at the edge but not on disk: a restart would resend them, which
            // the edge drops as duplicates by id; nothing is lost
            tracing::error!("{e}");
            self.policy.on_answer(
                Answer::Failed {
                    retry_after_ms: None,
                },
                count,
                self.elapsed_ms(),
                fastrand::f64(),
            );
        }
        Ok(())
    }

    /// One request to the edge, its answer in the policy's terms.
    async fn send(&mut self, body: String, count: usize) -> Answer {
        let token = match self
            .tokens
            .get(self.edge.identity(), &self.analysis, now_s())
        {
            Ok(token) => token.to_owned(),
            Err(e) => {
                tracing::error!("cannot sign a node token: {e}");
                return Answer::Failed {
                    retry_after_ms: None,
                };
            }
        };
        let over_socket = match self.socket.as_mut() {
            Some(socket) => socket.publish(&token, &body).await,
            None => None,
        };
        let answer = match over_socket {
            Some(answer) => answer,
            None => self.edge.publish(&self.analysis, &token, body).await,
        };
        match answer {
            Ok(response) => {
                tracing::debug!(count, last_seq = response.last_seq, "published");
                if response.cancel_requested && !self.cancel.is_cancelled() {
                    tracing::info!("the edge asks to cancel");
                    self.cancel.cancel();
                }
                Answer::Stored
            }
            Err(e) if e.is_stale_attempt() => {
                // the run's loop drops everything once it sees the fence
                self.fence.fire(StaleReason::StaleAttempt);
                Answer::Refused { index: None }
            }
            Err(e) if e.is_permanent() => {
                let index = match &e {
                    PublishError::Refused { index, .. } => *index,
                    _ => None,
                };
                tracing::warn!(index, "the edge refused the batch: {e}");
                Answer::Refused { index }
            }
            Err(e) => {
                let retry_after_ms = match &e {
                    PublishError::Refused { retry_after, .. } => {
                        retry_after.map(|d| d.as_millis() as u64)
                    }
                    _ => None,
                };
                tracing::warn!(
                    pending = self.queue.len(),
                    "publish failed, will retry: {e}"
                );
                Answer::Failed { retry_after_ms }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn instant_of_ms(ms: i64) -> Instant {
    let wait = (ms - now_ms()).max(0) as u64;
    Instant::now() + Duration::from_millis(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_unique_within_a_run_and_differ_between_runs() {
        let (mut a, mut b) = (EventIds::new(), EventIds::new());
        while b.run == a.run {
            b = EventIds::new();
        }
        let beat = || EventKind::Heartbeat { metrics: None };
        let (a1, a2, b1) = (a.next(beat()), a.next(beat()), b.next(beat()));
        assert_ne!(a1.id, a2.id);
        assert_ne!(a1.id, b1.id);
        assert!(a1.id.len() <= stagecast_shared::limits::MAX_ID_LEN);
    }
}
