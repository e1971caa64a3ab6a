//! The loop that owns the pool socket: it connects (and reconnects after any drop, with
//! full-jitter backoff), answers the pool's messages through [`Leases`], heartbeats every
//! `heartbeat_ms` from the welcome, and notices runs ending and models loading.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use stagecast_shared::backoff::Backoff;
use stagecast_shared::dispatch::wire::{MAX_MODELS, MAX_RUNNING};
use stagecast_shared::dispatch::{NodeMessage, PoolMessage};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::token::Scope;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::drain::Drain;
use super::leases::{Action, Leases};
use super::socket::{self, Next};
use super::{PoolConfig, PoolError};
use crate::clock::now_s;
use crate::edge_socket::{self, DialError, Ws};
use crate::jobs::{Jobs, Leased};
use crate::publish::{EdgeClient, Probe};

/// Reconnects back off from 0.5 s doubling to 30 s, with full jitter, so a fleet that
/// lost its edge together does not come back together.
const RECONNECT: Backoff = Backoff {
    base_ms: 500,
    cap_ms: 30_000,
};
/// Lifetime of the pool token; the edge closes the socket with 4010 after it, and the
/// link reconnects with a new one.
const TOKEN_TTL_S: i64 = 3600;
/// A shorter heartbeat interval from the edge would flood its rate limit.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// How long a closing socket waits for the edge's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long an open socket may go without a welcome.
const WELCOME_WAIT: Duration = Duration::from_secs(10);
/// Heartbeat intervals of silence from the edge (not even a pong) that end the socket: a
/// half-open connection (a NAT that forgot it, an edge gone without a FIN) is noticed.
const SILENT_INTERVALS: u32 = 3;

pub(super) struct Link {
    pub(super) config: PoolConfig,
    jobs: Arc<Jobs>,
    edge: Arc<EdgeClient>,
    url: Url,
    pub(super) leases: Leases,
    /// Each leased run, to its end (published, or dropped as stale).
    runs: JoinSet<()>,
    run_ids: HashMap<tokio::task::Id, (AnalysisId, u32)>,
    ws: Option<Ws>,
    /// Set by the welcome: the socket is up and the node has said `ready`.
    heartbeat: Option<Interval>,
    /// When the edge was last heard on this socket, and how long it may be silent.
    heard: Instant,
    silence_limit: Duration,
    models: watch::Receiver<Vec<String>>,
    token: Option<String>,
    /// Connections in a row that failed before a welcome.
    failures: u32,
    /// A 4001 (or 401) since the last welcome: the next one is final.
    unauthorized: bool,
    reconnect_at: Instant,
    pub(super) drain: Option<Drain>,
    probe: Probe,
}

impl Link {
    pub(super) fn new(config: PoolConfig, jobs: Arc<Jobs>, edge: Arc<EdgeClient>) -> Self {
        Self {
            url: socket::connect_url(edge.base(), &config.pool),
            models: jobs.loaded_models(),
            config,
            jobs,
            edge,
            leases: Leases::new(),
            runs: JoinSet::new(),
            run_ids: HashMap::new(),
            ws: None,
            heartbeat: None,
            heard: Instant::now(),
            silence_limit: WELCOME_WAIT,
            token: None,
            failures: 0,
            unauthorized: false,
            reconnect_at: Instant::now(),
            drain: None,
            probe: Probe::new(),
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) -> Result<(), PoolError> {
        loop {
            if self.leases.draining() && self.leases.is_idle() && self.runs.is_empty() {
                self.close().await;
                tracing::info!(pool = %self.config.pool, "drained: left the pool");
                return Ok(());
            }
            if self.ws.is_none()
                && Instant::now() >= self.reconnect_at
                && let Err(e) = self.connect().await
            {
                return self.give_up(e).await;
            }
            let drain_due = self.drain.as_ref().and_then(Drain::due);
            let silent_at = self.ws.is_some().then(|| self.heard + self.silence_limit);
            let step = tokio::select! {
                message = next_message(&mut self.ws) => self.on_message(message).await,
                _ = tick(&mut self.heartbeat) => {
                    self.send_heartbeat().await;
                    Ok(())
                }
                Some(ended) = self.runs.join_next_with_id() => {
                    self.on_run_ended(ended).await;
                    Ok(())
                }
                Ok(()) = self.models.changed() => {
                    self.send_ready().await;
                    Ok(())
                }
                _ = shutdown.cancelled(), if self.drain.is_none() => {
                    self.begin_drain().await;
                    Ok(())
                }
                _ = sleep_until(drain_due) => {
                    self.end_drain().await;
                    Ok(())
                }
                _ = tokio::time::sleep_until(self.reconnect_at), if self.ws.is_none() => Ok(()),
                _ = sleep_until(silent_at) => {
                    let silent_s = self.silence_limit.as_secs_f64();
                    self.dropped();
                    self.backoff(&format!("the edge said nothing for {silent_s} s"));
                    Ok(())
                }
            };
            if let Err(e) = step {
                return self.give_up(e).await;
            }
        }
    }

    fn node_id(&self) -> &str {
        &self.edge.identity().node_id
    }

    /// The socket's token: scope `node`, `sub` the node id, no analyses (publishes carry
    /// their own, per analysis).
    fn token(&mut self) -> Result<String, PoolError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let token = self
            .edge
            .identity()
            .token(&[Scope::Node], &[], now_s(), TOKEN_TTL_S)?;
        self.token = Some(token.clone());
        Ok(token)
    }

    async fn connect(&mut self) -> Result<(), PoolError> {
        let token = self.token()?;
        match edge_socket::dial(&self.url, &token).await {
            Ok(ws) => {
                tracing::debug!(url = %self.url, "pool socket open; waiting for the welcome");
                self.ws = Some(ws);
                self.heard = Instant::now();
                self.silence_limit = WELCOME_WAIT;
                Ok(())
            }
            Err(DialError::Refused(status)) => {
                let why = format!("the handshake was answered HTTP {status}");
                self.after(socket::after_status(status), why)
            }
            Err(DialError::Failed(e)) => {
                self.backoff(&format!("cannot reach {}: {e}", self.url));
                Ok(())
            }
        }
    }

    /// What a close or a refusal leads to; `Err` when the link must give up.
    fn after(&mut self, next: Next, why: String) -> Result<(), PoolError> {
        match next {
            Next::Backoff => self.backoff(&why),
            Next::Expired => {
                self.token = None;
                self.backoff(&format!("{why}: reconnecting with a new token"));
            }
            Next::Unauthorized if !self.unauthorized => {
                self.unauthorized = true;
                self.token = None;
                self.backoff(&format!("{why}: trying once with a new token"));
            }
            Next::Unauthorized | Next::Fatal => {
                return Err(PoolError::Refused {
                    pool: self.config.pool.clone(),
                    node_id: self.node_id().to_owned(),
                    reason: why,
                });
            }
            Next::Replaced => {
                return Err(PoolError::Replaced {
                    pool: self.config.pool.clone(),
                    node_id: self.node_id().to_owned(),
                });
            }
        }
        Ok(())
    }

    fn backoff(&mut self, why: &str) {
        let wait = RECONNECT.delay_ms(self.failures, fastrand::f64());
        self.failures = self.failures.saturating_add(1);
        self.reconnect_at = Instant::now() + Duration::from_millis(wait);
        tracing::warn!(pool = %self.config.pool, retry_in_ms = wait, "pool link down: {why}");
    }

    fn dropped(&mut self) {
        self.ws = None;
        self.heartbeat = None;
    }

    async fn on_message(
        &mut self,
        message: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), PoolError> {
        if matches!(message, Some(Ok(_))) {
            self.heard = Instant::now();
        }
        match message {
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<PoolMessage>(&text) {
                    Ok(message) => self.on_pool_message(message).await,
                    // the answer to our ping: it has done its work by arriving
                    Err(_) if text.as_str() == PONG.as_str() => {}
                    Err(e) => tracing::warn!("not a pool message ({e}): {text}"),
                }
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => {
                self.dropped();
                let code = frame.as_ref().map(|f| u16::from(f.code));
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                let why = match code {
                    Some(code) => format!("the edge closed the socket: {code} {reason}"),
                    None => "the edge closed the socket".to_owned(),
                };
                self.after(socket::after_close(code), why)
            }
            // pings are answered by tungstenite; the edge sends no binary frames
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => {
                self.dropped();
                self.backoff(&format!("the socket failed: {e}"));
                Ok(())
            }
            None => {
                self.dropped();
                self.backoff("the socket ended without a close frame");
                Ok(())
            }
        }
    }

    async fn on_pool_message(&mut self, message: PoolMessage) {
        let actions = match message {
            PoolMessage::Welcome {
                pool,
                node_id,
                lease_ms,
                heartbeat_ms,
            } => {
                if node_id.as_str() != self.node_id() {
                    tracing::warn!(%node_id, "the edge names this node differently");
                }
                tracing::info!(%pool, %node_id, lease_ms, heartbeat_ms, "joined the pool");
                let every = Duration::from_millis(heartbeat_ms).max(MIN_HEARTBEAT);
                self.silence_limit = every * SILENT_INTERVALS;
                let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
                heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
                self.heartbeat = Some(heartbeat);
                self.failures = 0;
                self.unauthorized = false;
                self.send_ready().await;
                // at once: after a reconnect it keeps the leases still running here
                self.send_heartbeat().await;
                return;
            }
            PoolMessage::Lease {
                lease_id,
                analysis_id,
                attempt,
                job,
                ..
            } => {
                tracing::info!(analysis = %analysis_id, attempt, %lease_id, "leased");
                self.leases.on_lease(lease_id, analysis_id, attempt, job)
            }
            PoolMessage::Cancel {
                analysis_id,
                lease_id,
            } => {
                tracing::info!(analysis = %analysis_id, "the pool asks to cancel");
                self.leases.on_cancel(&analysis_id, &lease_id)
            }
            PoolMessage::Revoked {
                analysis_id,
                lease_id,
                reason,
            } => {
                tracing::info!(analysis = %analysis_id, ?reason, "lease revoked");
                self.leases.on_revoked(&analysis_id, lease_id.as_deref())
            }
            PoolMessage::Error { code, message } => {
                tracing::warn!(?code, "the edge refused a pool message: {message}");
                return;
            }
        };
        self.apply(actions).await;
    }

    /// Carries out `actions` in order (starting a run may give its lease back).
    pub(super) async fn apply(&mut self, actions: Vec<Action>) {
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Accept { lease_id } => self.send(NodeMessage::Accept { lease_id }).await,
                Action::Release { lease_id, reason } => {
                    tracing::info!(%lease_id, reason, "lease released");
                    let reason = Some(reason.to_owned());
                    self.send(NodeMessage::Release { lease_id, reason }).await;
                }
                Action::Start {
                    analysis_id,
                    attempt,
                    job,
                } => {
                    let leased = Leased {
                        analysis_id: analysis_id.clone(),
                        attempt,
                        job,
                    };
                    match self.jobs.run_leased(leased) {
                        Ok(run) => {
                            let task = self.runs.spawn(run);
                            self.run_ids.insert(task.id(), (analysis_id, attempt));
                        }
                        Err(e) => {
                            tracing::error!(analysis = %analysis_id, "leased run not started: {e}");
                            actions.extend(self.leases.on_start_failed(&analysis_id, attempt));
                        }
                    }
                }
                Action::Cancel { analysis_id } => {
                    self.jobs.cancel(analysis_id.as_str());
                }
                Action::Stop {
                    analysis_id,
                    reason,
                } => {
                    self.jobs.revoke(analysis_id.as_str(), reason);
                }
            }
        }
    }

    async fn on_run_ended(&mut self, ended: Result<(tokio::task::Id, ()), JoinError>) {
        let task = match &ended {
            Ok((task, ())) => *task,
            Err(e) => {
                tracing::error!("a leased run failed: {e}");
                e.id()
            }
        };
        if let Some((analysis_id, attempt)) = self.run_ids.remove(&task) {
            let actions = self.leases.on_ended(&analysis_id, attempt);
            self.apply(actions).await;
        }
    }

    /// `ready`, once welcomed: the slots (none while draining or loading models) and the
    /// loaded models.
    pub(super) async fn send_ready(&mut self) {
        // marked seen even before the welcome, which sends it anyway
        let mut models = self.models.borrow_and_update().clone();
        if self.heartbeat.is_none() {
            return;
        }
        models.truncate(MAX_MODELS);
        let slots = self.leases.slots(self.config.slots, !models.is_empty());
        tracing::info!(slots, ?models, "ready");
        self.send(NodeMessage::Ready {
            slots,
            models,
            labels: Default::default(),
        })
        .await;
    }

    async fn send_heartbeat(&mut self) {
        // Nothing heard for an interval: a ping, which the edge's runtime answers without
        // waking the pool, tells a quiet link from a dead one.
        if self.heard.elapsed() >= self.silence_limit / SILENT_INTERVALS {
            self.send_text(PING.clone()).await;
        }
        let mut metrics = self.probe.sample();
        metrics.queue_depth = Some(self.jobs.queue_depth() as u64);
        let mut running = self.leases.running();
        running.truncate(MAX_RUNNING);
        self.send(NodeMessage::Heartbeat {
            metrics: Some(metrics),
            running,
        })
        .await;
    }

    /// Sends `message` if the socket is up; a failed send drops the socket.
    async fn send(&mut self, message: NodeMessage) {
        let text = serde_json::to_string(&message).expect("node messages serialize");
        self.send_text(text).await;
    }

    async fn send_text(&mut self, text: String) {
        let Some(ws) = &mut self.ws else {
            tracing::debug!(text, "pool link down: not sent");
            return;
        };
        if let Err(e) = ws.send(Message::Text(text.into())).await {
            self.dropped();
            self.backoff(&format!("cannot send: {e}"));
        }
    }

    /// A normal close, waiting a little for the edge's answer.
    async fn close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
            let rest = async { while ws.next().await.is_some() {} };
            let _ = tokio::time::timeout(CLOSE_WAIT, rest).await;
        }
        self.heartbeat = None;
    }

    /// The link ends for good: every leased run stops (the leases are not this node's to
    /// hold any more) before the error goes up.
    async fn give_up(mut self, error: PoolError) -> Result<(), PoolError> {
        tracing::error!("{error}");
        let actions = self.leases.lose_all();
        self.apply(actions).await;
        self.close().await;
        // each stops within a batch
        while self.runs.join_next().await.is_some() {}
        Err(error)
    }
}

/// `{"type":"ping"}`: the edge answers it `{"type":"pong"}` from the runtime.
static PING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    serde_json::to_string(&stagecast_shared::ws::ClientMessage::Ping).expect("serializes")
});

static PONG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    serde_json::to_string(&stagecast_shared::ws::ServerMessage::Pong).expect("serializes")
});

async fn next_message(ws: &mut Option<Ws>) -> Option<Result<Message, tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn tick(heartbeat: &mut Option<Interval>) {
    match heartbeat {
        Some(heartbeat) => {
            heartbeat.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
