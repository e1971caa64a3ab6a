//! The Durable Object of one analysis: the shared state machine over SQLite storage, with
//! subscribers on the hibernation API. Socket facts live in attachments ([`crate::socket`])
//! and the state in SQL ([`crate::store`]), so an evicted object rebuilt by `new()` loses
//! nothing. This file is the runtime's entry points; [`state`] keeps the state machine in
//! step with storage, [`ops`] answers each operation, [`publish`] takes batches (HTTP and the
//! node's publish socket), [`dispatch`] the pool's part and [`media`] the input and
//! artifacts, [`stream`] the Server-Sent Events fallback.

mod dispatch;
mod media;
mod ops;
mod publish;
mod state;
mod stream;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use stagecast_shared::Analysis;
use stagecast_shared::api::{ErrorBody, ErrorCode};
use stagecast_shared::media::ArtifactName;
use stagecast_shared::ws::{ClientMessage, ServerMessage};
use tracing::Instrument;
use worker::{
    DurableObject, Env, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage,
    durable_object,
};

use crate::auth::parse_object_name;
use crate::forward::{Forwarded, OP_HEADER};
use crate::rate::PublishBucket;
use crate::respond::{error_response, message_text, truncate_reason};
use crate::socket::SocketInfo;
use crate::store::Store;
use crate::usage::Usage;

/// The tag of a viewer's socket, which gets every event.
const VIEWER: &str = "viewer";
/// The tag of a node's publish socket, which gets only the answers to its batches.
const PUBLISHER: &str = "publisher";

#[durable_object]
pub struct AnalysisObject {
    state: State,
    env: Env,
    /// The state machine, loaded from storage on first use after (re)construction.
    analysis: RefCell<Option<Analysis>>,
    /// The seq storage's checkpoint of the state was saved at (None: none saved yet).
    checkpoint_seq: Cell<Option<u64>>,
    /// The id of every stored event, read from the log by the first publish after
    /// (re)construction: a publish dedupes in memory, with no query.
    event_ids: RefCell<Option<HashSet<String>>>,
    /// The publish rate limit; in memory only, so a rebuilt object starts it full.
    bucket: RefCell<Option<PublishBucket>>,
    /// The verified tenant, for log lines outside a request (alarm, socket events).
    tenant: RefCell<Option<String>>,
    /// Whether storage holds the tenant: it is written with the first commit, so a
    /// read-only visit never leaves storage behind.
    tenant_saved: Cell<bool>,
    /// Artifact names being stored now: a second upload of one waits its turn.
    artifacts_in_flight: RefCell<HashSet<ArtifactName>>,
    /// The alarm this instance knows storage holds (None: none), so a publish need not ask
    /// storage for it; unknown (None) until it read or set one.
    alarm_at: Cell<Option<Option<i64>>>,
    /// The limits, read from the Worker's vars once: they change only with a deploy, which
    /// starts new instances.
    limits: RefCell<Option<crate::config::Limits>>,
    /// The open Server-Sent Events streams: unlike sockets they do not hibernate, so they
    /// live (and die) with this instance.
    streams: stream::Streams,
    /// What this instance has billed so far, logged at the analysis' end.
    usage: Rc<Usage>,
    /// The viewers' sockets as the runtime last listed them: asking again makes a wrapper
    /// per socket, on every publish. Forgotten whenever a viewer opens, closes or fails.
    viewer_sockets: RefCell<Option<Rc<[WebSocket]>>>,
}

impl DurableObject for AnalysisObject {
    fn new(state: State, env: Env) -> Self {
        crate::log::init();
        let usage = Rc::new(Usage::default());
        if let Err(e) = Store::new(state.storage().sql(), usage.clone()).migrate() {
            let name = state.id().name().unwrap_or_default();
            let (tenant, analysis_id) = parse_object_name(&name).unwrap_or(("unknown", ""));
            tracing::error!(tenant, analysis_id, error = %e, "schema migration failed");
        }
        // Pings are answered by the runtime without waking the object.
        let ping = serde_json::to_string(&ClientMessage::Ping).unwrap_or_default();
        let pong = serde_json::to_string(&ServerMessage::Pong).unwrap_or_default();
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new(&ping, &pong) {
            state.set_websocket_auto_response(&pair);
        }
        Self {
            state,
            env,
            analysis: RefCell::new(None),
            checkpoint_seq: Cell::new(None),
            event_ids: RefCell::new(None),
            bucket: RefCell::new(None),
            tenant: RefCell::new(None),
            tenant_saved: Cell::new(false),
            artifacts_in_flight: RefCell::new(HashSet::new()),
            alarm_at: Cell::new(None),
            limits: RefCell::new(None),
            streams: stream::Streams::default(),
            usage,
            viewer_sockets: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.usage.request();
        let Some(header) = req.headers().get(OP_HEADER)? else {
            return error_response(&ErrorBody::new(ErrorCode::NotFound, "not an edge request"));
        };
        let fwd: Forwarded = serde_json::from_str(&header)?;
        let span = tracing::info_span!("object", tenant = %fwd.principal.tenant, analysis_id = %fwd.analysis_id);
        self.handle(req, fwd).instrument(span).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.usage.request();
        let id = self
            .with_stored(|a| a.analysis_id().to_string())?
            .unwrap_or_default();
        let span = tracing::info_span!("alarm", tenant = %self.tenant(), analysis_id = %id);
        self.on_alarm().instrument(span).await
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.usage.message_in();
        let Some(info) = ws.deserialize_attachment::<SocketInfo>()? else {
            return Ok(());
        };
        let span =
            tracing::info_span!("socket", tenant = %self.tenant(), analysis_id = %info.analysis_id);
        let text = message_text(message);
        if self.state.get_tags(&ws).iter().any(|t| t == PUBLISHER) {
            return self
                .on_publisher_message(&ws, &info, &text)
                .instrument(span)
                .await;
        }
        self.on_socket_message(&ws, info, &text)
            .instrument(span)
            .await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.forget_viewers();
        // Reciprocate; 1005 and 1006 are reserved and may not be sent.
        let code = if code == 1000 || (3000..=4999).contains(&code) {
            code as u16
        } else {
            1000
        };
        let _ = ws.close(Some(code), Some(truncate_reason(&reason)));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        self.forget_viewers();
        let analysis_id = ws
            .deserialize_attachment::<SocketInfo>()
            .ok()
            .flatten()
            .map(|info| info.analysis_id.to_string())
            .unwrap_or_default();
        tracing::info!(tenant = %self.tenant(), analysis_id, error = %error, "socket error");
        Ok(())
    }
}
