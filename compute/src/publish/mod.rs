//! Getting an analysis' events to the edge without losing one.
//!
//! A [`Publication`] takes the pipeline's events, coalesces progress ([`coalesce`]),
//! gives each event its id and timestamp, makes it durable in the [`outbox`], and
//! publishes batches through the [`client`] with exponential backoff and full jitter
//! until the edge confirms them. Every answer's `cancel_requested` fires the analysis'
//! cancellation token.

pub mod client;
pub mod coalesce;
pub mod outbox;
mod probe;

use std::sync::Arc;
use std::time::Duration;

use stagecast_shared::event::{ErrorInfo, Event, EventKind};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::limits::MAX_EVENTS_PER_BATCH;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use client::{EdgeLink, LinkError, NodeIdentity, PublishError};
pub use coalesce::Coalescer;
pub use outbox::{Outbox, OutboxError, Queue};
pub use probe::{Probe, cpu_seconds};

use client::TokenCache;

/// A heartbeat goes out this often while the analysis runs.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// How long the first unsent event waits for others to share its request: fewer
/// requests for the node and the edge, at most this much later on screen.
const LINGER: Duration = Duration::from_millis(50);
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Short enough that a node notices a recovered edge within seconds.
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// How a publication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Delivered {
    /// Events the edge stored or had already stored.
    pub confirmed: u64,
    /// Events the edge refused for good (400, 409, 413), logged as errors.
    pub refused: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublicationError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("the publication task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The queue depth a heartbeat reports, read when it is sent.
pub type QueueDepth = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One analysis being published. Send events with [`Publication::send`]; dropping the
/// sender side ([`Publication::finish`]) lets the task drain the outbox and end.
pub struct Publication {
    events: UnboundedSender<EventKind>,
    task: JoinHandle<Result<Delivered, OutboxError>>,
}

impl Publication {
    /// Starts publishing `analysis`, after whatever an earlier run left in its outbox.
    pub fn start(
        link: Arc<EdgeLink>,
        outbox: &Outbox,
        analysis: AnalysisId,
        cancel: CancellationToken,
        queue_depth: QueueDepth,
    ) -> Result<Self, OutboxError> {
        let queue = outbox.open(&analysis)?;
        let (events, rx) = unbounded_channel();
        let span = tracing::info_span!("publish", analysis = %analysis);
        let task = tokio::spawn(
            Worker {
                link,
                analysis,
                queue,
                cancel,
                queue_depth,
                ids: EventIds::new(),
                coalescer: Coalescer::default(),
                tokens: TokenCache::default(),
                delivered: Delivered {
                    confirmed: 0,
                    refused: 0,
                },
            }
            .run(rx)
            .instrument(span),
        );
        Ok(Self { events, task })
    }

    /// Sends what an earlier run of this node left in `analysis`' outbox. A run that
    /// started and never ended (the node died under it) ends as `failed` with the
    /// retryable code `node_restarted`, so its watchers are not left waiting.
    pub fn resume(
        link: Arc<EdgeLink>,
        outbox: &Outbox,
        analysis: AnalysisId,
        queue_depth: QueueDepth,
    ) -> Result<Self, OutboxError> {
        let publication = Self::start(
            link,
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

struct Worker {
    link: Arc<EdgeLink>,
    analysis: AnalysisId,
    queue: Queue,
    cancel: CancellationToken,
    queue_depth: QueueDepth,
    ids: EventIds,
    coalescer: Coalescer,
    tokens: TokenCache,
    delivered: Delivered,
}

impl Worker {
    async fn run(mut self, mut rx: UnboundedReceiver<EventKind>) -> Result<Delivered, OutboxError> {
        // a run that already ended (resumed outbox) takes no new events
        let mut open = !self.queue.ended();
        let mut probe = Probe::new();
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
        let mut attempt = 0u32;
        let mut retry_at: Option<Instant> = None;
        // when the oldest unsent event may go: events that come close together share a batch
        let mut linger: Option<Instant> = None;
        // after a refusal naming event i > 0, the events before it go alone
        let mut limit = MAX_EVENTS_PER_BATCH;
        loop {
            self.queue.sync()?;
            if self.queue.is_empty() {
                linger = None;
            } else if linger.is_none() {
                linger = Some(Instant::now() + LINGER);
            }
            // the end of a run, or a full batch, goes at once (unless backing off)
            let urgent = !open || self.queue.ended() || self.queue.len() >= MAX_EVENTS_PER_BATCH;
            let publish_at = linger.map(|at| {
                let at = if urgent { Instant::now() } else { at };
                retry_at.map_or(at, |retry| retry.max(at))
            });
            if publish_at.is_some_and(|at| Instant::now() >= at) {
                retry_at = None;
                match self.publish_once(limit).await {
                    Ok(()) => {
                        attempt = 0;
                        limit = MAX_EVENTS_PER_BATCH;
                    }
                    Err(Retry::Fewer(n)) => limit = n,
                    Err(Retry::Later(after)) => {
                        attempt += 1;
                        metrics::counter!("stagecast_publish_retries_total").increment(1);
                        retry_at = Some(Instant::now() + after.unwrap_or_else(|| backoff(attempt)));
                    }
                }
                // take what the pipeline sent meanwhile before the next batch
                self.drain(&mut rx)?;
                continue;
            }
            if !open && self.queue.is_empty() {
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
                else => {}
            }
        }
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

    async fn publish_once(&mut self, limit: usize) -> Result<(), Retry> {
        let Some((body, count)) = self.queue.next_body(limit) else {
            return Ok(());
        };
        let token = match self
            .tokens
            .get(self.link.identity(), &self.analysis, now_s())
        {
            Ok(token) => token.to_owned(),
            Err(e) => {
                tracing::error!("cannot sign a node token: {e}");
                return Err(Retry::Later(None));
            }
        };
        match self.link.publish(&self.analysis, &token, body).await {
            Ok(response) => {
                tracing::debug!(count, last_seq = response.last_seq, "published");
                self.delivered.confirmed += count as u64;
                self.ack(count)?;
                if response.cancel_requested && !self.cancel.is_cancelled() {
                    tracing::info!("the edge asks to cancel");
                    self.cancel.cancel();
                }
                Ok(())
            }
            Err(e) if e.is_permanent() => {
                let index = match &e {
                    PublishError::Refused { index, .. } => index.unwrap_or(0) as usize,
                    _ => 0,
                };
                if index > 0 && index < count {
                    return Err(Retry::Fewer(index));
                }
                // The edge will never take this event: keep the rest flowing and say so.
                tracing::error!("event dropped, the edge refused it: {e}");
                metrics::counter!("stagecast_events_refused_total").increment(1);
                self.delivered.refused += 1;
                self.ack(1)?;
                Ok(())
            }
            Err(e) => {
                let retry_after = match &e {
                    PublishError::Refused { retry_after, .. } => *retry_after,
                    _ => None,
                };
                tracing::warn!(
                    pending = self.queue.len(),
                    "publish failed, will retry: {e}"
                );
                Err(Retry::Later(retry_after))
            }
        }
    }

    fn ack(&mut self, n: usize) -> Result<(), Retry> {
        self.queue.ack(n).map_err(|e| {
            // confirmed at the edge but not on disk: a restart would resend them, which
            // the edge drops as duplicates by id; nothing is lost
            tracing::error!("{e}");
            Retry::Later(None)
        })
    }
}

enum Retry {
    /// Send only the first `n` events next.
    Fewer(usize),
    /// Wait (the edge's Retry-After, else the backoff) and send again.
    Later(Option<Duration>),
}

/// Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)].
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(fastrand::f64())
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

/// The wall clock, ms since the Unix epoch (event `ts`, token times).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now_s() -> i64 {
    now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_ceiling_capped_at_five_seconds() {
        for attempt in 0..40 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << attempt.min(16))
                .min(BACKOFF_CAP);
            for _ in 0..50 {
                assert!(backoff(attempt) <= ceiling);
            }
        }
        // full jitter: not always the ceiling
        assert!((0..50).any(|_| backoff(10) < BACKOFF_CAP / 2));
    }

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
