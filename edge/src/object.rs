//! The Durable Object of one analysis: the shared state machine over SQLite storage, with
//! subscribers on the hibernation API. Socket facts live in attachments ([`crate::socket`])
//! and the state in SQL ([`crate::store`]), so an evicted object rebuilt by `new()` loses
//! nothing; the deadlines are [`crate::deadline`]'s.

use std::cell::{Cell, RefCell};

use stagecast_shared::Analysis;
use stagecast_shared::api::{ApiError, CancelResponse, ErrorBody, ErrorCode};
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::stored::{EventsPage, StoredEvent};
use stagecast_shared::validate::parse_publish_body;
use stagecast_shared::ws::{ClientMessage, ServerMessage};
use tracing::Instrument;
use worker::{
    DurableObject, Env, Request, Response, Result, ScheduledTime, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair, durable_object,
};

use crate::auth::parse_object_name;
use crate::clock::now_ms;
use crate::config::Limits;
use crate::deadline::{next_alarm, retention_over};
use crate::forward::{Forwarded, OP_HEADER, Op};
use crate::rate::PublishBucket;
use crate::respond::{
    close, error_response, json_response, rate_limited_response, refuse_websocket, truncate_reason,
    websocket_response,
};
use crate::socket::{Reply, SocketInfo, next_expiry};
use crate::store::Store;

/// How often clients should ping; they treat 45 s of silence as a dead connection.
const HEARTBEAT_MS: u64 = 15_000;

fn send(ws: &WebSocket, message: &ServerMessage) -> Result<()> {
    ws.send_with_str(serde_json::to_string(message)?)
}

#[durable_object]
pub struct AnalysisObject {
    state: State,
    env: Env,
    /// The state machine, loaded from storage on first use after (re)construction.
    analysis: RefCell<Option<Analysis>>,
    /// The publish rate limit; in memory only, so a rebuilt object starts it full.
    bucket: RefCell<Option<PublishBucket>>,
    /// The verified tenant, for log lines outside a request (alarm, socket events).
    tenant: RefCell<Option<String>>,
    /// Whether storage holds the tenant: it is written with the first commit, so a
    /// read-only visit never leaves storage behind.
    tenant_saved: Cell<bool>,
}

impl AnalysisObject {
    fn store(&self) -> Store {
        Store::new(self.state.storage().sql())
    }

    /// The tenant this object belongs to: from a request, the object's name
    /// (`tenant/analysis`) or storage; "unknown" only if all of them fail.
    fn tenant(&self) -> String {
        let mut cell = self.tenant.borrow_mut();
        if cell.is_none() {
            *cell = (self.state.id().name())
                .and_then(|name| parse_object_name(&name).map(|(t, _)| t.to_owned()))
                .or_else(|| self.store().load_tenant().ok().flatten());
        }
        cell.clone().unwrap_or_else(|| "unknown".to_owned())
    }

    fn limits(&self) -> std::result::Result<Limits, ErrorBody> {
        Limits::from_vars(|name| self.env.var(name).ok().map(|v| v.to_string())).map_err(|e| {
            tracing::error!(error = %e, "edge misconfigured");
            ErrorBody::new(ErrorCode::Internal, "the edge is misconfigured")
        })
    }

    /// Runs `f` on the stored analysis, if there is one.
    fn with_stored<R>(&self, f: impl FnOnce(&mut Analysis) -> R) -> Result<Option<R>> {
        let mut cell = self.analysis.borrow_mut();
        if cell.is_none() {
            *cell = self.store().load_analysis()?;
        }
        Ok(cell.as_mut().map(f))
    }

    /// Runs `f` on analysis `id`, pending if nothing is stored yet.
    fn with_analysis<R>(&self, id: &AnalysisId, f: impl FnOnce(&mut Analysis) -> R) -> Result<R> {
        let mut cell = self.analysis.borrow_mut();
        if cell.is_none() {
            *cell = self.store().load_analysis()?;
        }
        Ok(f(cell.get_or_insert_with(|| Analysis::new(id.clone()))))
    }

    /// Stores new events and the state, then sends each event to every socket, in order.
    /// Nothing awaits in between, so the writes commit together or not at all.
    fn commit(&self, stored: &[StoredEvent], limits: &Limits) -> Result<()> {
        let store = self.store();
        let written = (|| {
            let mut frames = Vec::with_capacity(stored.len());
            for event in stored {
                let text = serde_json::to_string(&ServerMessage::Event(event.clone()))?;
                store.insert_event(event, &text)?;
                frames.push(text);
            }
            if !self.tenant_saved.get() {
                store.save_tenant(&self.tenant())?;
            }
            if let Some(analysis) = self.analysis.borrow().as_ref() {
                store.save_analysis(analysis)?;
                store.trim_history(analysis.last_seq(), limits.history_limit)?;
            }
            Ok::<_, worker::Error>(frames)
        })();
        let frames = written.inspect_err(|_| {
            // Reload from storage next time rather than trust a state storage did not take.
            *self.analysis.borrow_mut() = None;
        })?;
        self.tenant_saved.set(true);
        let sockets = self.state.get_websockets();
        for text in &frames {
            for ws in &sockets {
                // A socket closing concurrently may refuse the frame; it will resume with since.
                let _ = ws.send_with_str(text);
            }
        }
        Ok(())
    }

    /// Makes sure the one alarm fires by the earliest pending deadline; `replace` drops
    /// the current alarm first (the alarm handler, which consumed it).
    async fn schedule(
        &self,
        limits: &Limits,
        socket_expiry: Option<i64>,
        replace: bool,
    ) -> Result<()> {
        let analysis = self.analysis.borrow().clone();
        let Some(deadline) = next_alarm(analysis.as_ref(), limits, socket_expiry) else {
            return Ok(());
        };
        let storage = self.state.storage();
        let current = if replace {
            None
        } else {
            storage.get_alarm().await?
        };
        if current.is_none_or(|c| deadline < c) {
            let at = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(deadline as f64));
            storage.set_alarm(ScheduledTime::new(at)).await?;
        }
        Ok(())
    }

    async fn publish(
        &self,
        mut req: Request,
        id: &AnalysisId,
        limits: &Limits,
    ) -> Result<Response> {
        let (rate, burst) = (limits.publish_rate, limits.publish_burst());
        if let Err(limited) =
            PublishBucket::take_from(&mut self.bucket.borrow_mut(), rate, burst, now_ms())
        {
            let retry_after = limited.retry_after_secs();
            tracing::info!(
                retry_after_ms = limited.retry_after_ms,
                rate,
                "publish rate limited"
            );
            return rate_limited_response(
                format!(
                    "this analysis takes at most {rate} publish batches a second (bursts of {burst}): retry after {retry_after} s"
                ),
                retry_after,
            );
        }
        let request = match parse_publish_body(&req.bytes().await?) {
            Ok(r) => r,
            Err(e) => return error_response(&e.body()),
        };
        let ids: Vec<&str> = request.events.iter().map(|e| e.id.as_str()).collect();
        let known = self.store().known_ids(&ids)?;
        let now = now_ms();
        let applied = self.with_analysis(id, |a| {
            a.apply_batch(request.events, now, |id| known.contains(id))
        })?;
        match applied {
            Err(e) => {
                tracing::info!(error = %e, "publish refused");
                error_response(&e.body())
            }
            Ok(outcome) => {
                self.commit(&outcome.stored, limits)?;
                self.schedule(limits, None, false).await?;
                json_response(&outcome.response(), 200)
            }
        }
    }

    /// Records a cancel by `by` once, and tells every socket.
    fn request_cancel(
        &self,
        id: &AnalysisId,
        by: &str,
        limits: &Limits,
    ) -> Result<std::result::Result<(), ErrorBody>> {
        let now = now_ms();
        match self.with_analysis(id, |a| (a.request_cancel(by, now), a.status()))? {
            (Some(event), _) => {
                tracing::info!(by, "cancel requested");
                self.commit(&[event], limits)?;
                Ok(Ok(()))
            }
            (None, status) if status.is_terminal() => Ok(Err(ErrorBody::new(
                ErrorCode::AnalysisFinished,
                format!(
                    "the analysis is {}: there is nothing to cancel",
                    status.as_str()
                ),
            ))),
            // Already requested: asking again changes nothing.
            (None, _) => Ok(Ok(())),
        }
    }

    async fn subscribe(
        &self,
        fwd: &Forwarded,
        since: Option<u64>,
        select_subprotocol: bool,
        limits: &Limits,
    ) -> Result<Response> {
        if self.state.get_websockets().len() >= limits.max_sockets {
            let reason = format!(
                "too many subscribers ({}): try again later",
                limits.max_sockets
            );
            return refuse_websocket(CloseCode::TryAgainLater, &reason, select_subprotocol);
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        pair.server
            .serialize_attachment(SocketInfo::new(&fwd.analysis_id, &fwd.principal))?;
        // Hello and the replay go out with no await in between: no event can slip past.
        let snapshot = self.with_analysis(&fwd.analysis_id, |a| a.snapshot())?;
        let (frames, recovered) = match since {
            None => (Vec::new(), true),
            Some(since) => self.store().frames_after(since, snapshot.last_seq)?,
        };
        let hello = ServerMessage::Hello {
            analysis_id: fwd.analysis_id.to_string(),
            snapshot,
            server_ts: now_ms(),
            heartbeat_ms: HEARTBEAT_MS,
            resumed_from: since,
            recovered,
        };
        send(&pair.server, &hello)?;
        for text in &frames {
            pair.server.send_with_str(text)?;
        }
        self.schedule(limits, Some(fwd.principal.expires_at_ms), false)
            .await?;
        websocket_response(pair.client, select_subprotocol)
    }

    async fn handle(&self, req: Request, fwd: Forwarded) -> Result<Response> {
        *self.tenant.borrow_mut() = Some(fwd.principal.tenant.clone());
        let limits = match self.limits() {
            Ok(l) => l,
            Err(body) => return error_response(&body),
        };
        let id = &fwd.analysis_id;
        match &fwd.op {
            Op::Publish => self.publish(req, id, &limits).await,
            Op::Snapshot => json_response(&self.with_analysis(id, |a| a.snapshot())?, 200),
            Op::Events { since, limit } => {
                let last_seq = self.with_analysis(id, |a| a.last_seq())?;
                let events = self.store().events_after(*since, *limit)?;
                json_response(&EventsPage { events, last_seq }, 200)
            }
            Op::Cancel => match self.request_cancel(id, &fwd.principal.sub, &limits)? {
                Ok(()) => json_response(
                    &CancelResponse {
                        cancel_requested: true,
                    },
                    202,
                ),
                Err(body) => error_response(&body),
            },
            Op::Subscribe {
                since,
                select_subprotocol,
            } => {
                self.subscribe(&fwd, *since, *select_subprotocol, &limits)
                    .await
            }
        }
    }

    async fn on_alarm(&self) -> Result<Response> {
        let Ok(limits) = self.limits() else {
            return Response::ok("misconfigured");
        };
        let now = now_ms();
        if self.with_stored(|a| retention_over(a, &limits, now))? == Some(true) {
            tracing::info!("retention over: deleting the analysis");
            self.store().wipe()?;
            *self.analysis.borrow_mut() = None;
            // The stored tenant went with the rest; the next commit writes it again.
            self.tenant_saved.set(false);
            for ws in self.state.get_websockets() {
                close(
                    &ws,
                    CloseCode::Normal,
                    "analysis deleted after its retention period",
                );
            }
            return Response::ok("deleted");
        }
        if let Some(event) = self
            .with_stored(|a| a.check_stall(now, limits.stall_timeout_ms as u64))?
            .flatten()
        {
            tracing::info!("stalled");
            self.commit(&[event], &limits)?;
        }
        // Close sockets whose token expired; wake again for the next expiry.
        let mut live = Vec::new();
        for ws in self.state.get_websockets() {
            match ws.deserialize_attachment::<SocketInfo>() {
                Ok(Some(info)) if info.expired(now) => close(&ws, CloseCode::TokenExpired, ""),
                Ok(Some(info)) => live.push(info),
                _ => {}
            }
        }
        self.schedule(&limits, next_expiry(&live, now), true)
            .await?;
        Response::ok("ok")
    }

    fn on_socket_message(&self, ws: &WebSocket, mut info: SocketInfo, text: &str) -> Result<()> {
        let reply = match info.on_message(text, now_ms()) {
            Ok(reply) => reply,
            Err(code) => {
                close(ws, code, "");
                return Ok(());
            }
        };
        ws.serialize_attachment(&info)?;
        match reply {
            Reply::Send(message) => send(ws, &message),
            Reply::Snapshot => {
                let snapshot = self.with_analysis(&info.analysis_id, |a| a.snapshot())?;
                send(ws, &ServerMessage::Snapshot { snapshot })
            }
            Reply::Cancel => {
                let refused = match self.limits() {
                    Ok(limits) => self
                        .request_cancel(&info.analysis_id, &info.sub, &limits)?
                        .err(),
                    Err(body) => Some(body),
                };
                refused.map_or(Ok(()), |body| send(ws, &body.into()))
            }
        }
    }
}

impl DurableObject for AnalysisObject {
    fn new(state: State, env: Env) -> Self {
        crate::log::init();
        if let Err(e) = Store::new(state.storage().sql()).migrate() {
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
            bucket: RefCell::new(None),
            tenant: RefCell::new(None),
            tenant_saved: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let Some(header) = req.headers().get(OP_HEADER)? else {
            return error_response(&ErrorBody::new(ErrorCode::NotFound, "not an edge request"));
        };
        let fwd: Forwarded = serde_json::from_str(&header)?;
        let span = tracing::info_span!("object", tenant = %fwd.principal.tenant, analysis_id = %fwd.analysis_id);
        self.handle(req, fwd).instrument(span).await
    }

    async fn alarm(&self) -> Result<Response> {
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
        let Some(info) = ws.deserialize_attachment::<SocketInfo>()? else {
            return Ok(());
        };
        let span =
            tracing::info_span!("socket", tenant = %self.tenant(), analysis_id = %info.analysis_id);
        let _enter = span.enter(); // no await below
        let text = match message {
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        self.on_socket_message(&ws, info, &text)
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        _clean: bool,
    ) -> Result<()> {
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
