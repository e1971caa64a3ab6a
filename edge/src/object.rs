//! The Durable Object of one analysis: the shared state machine over SQLite storage, with
//! subscribers on the hibernation API. Socket facts live in attachments and the state in
//! SQL, so an evicted object rebuilt by `new()` loses nothing.

use std::cell::{Cell, RefCell};

use serde::{Deserialize, Serialize};
use stagecast_shared::Analysis;
use stagecast_shared::api::{ApiError, CancelResponse, ErrorBody, ErrorCode};
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::limits::MAX_CLIENT_MESSAGES_PER_SECOND;
use stagecast_shared::stored::{EventsPage, StoredEvent};
use stagecast_shared::validate::parse_publish_body;
use stagecast_shared::ws::{ClientMessage, ServerMessage};
use worker::{
    DurableObject, Env, Request, Response, Result, ScheduledTime, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair, durable_object,
};

use crate::auth::parse_object_name;
use crate::config::Limits;
use crate::forward::{Forwarded, OP_HEADER, Op};
use crate::rate::PublishBucket;
use crate::respond::{
    error_response, json_response, rate_limited_response, refuse_websocket_with, truncate_reason,
    websocket_response,
};
use crate::store::Store;

/// How often clients should ping; they treat 45 s of silence as a dead connection.
const HEARTBEAT_MS: u64 = 15_000;
/// Standard "try again later" close code, for a full analysis.
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// What the object remembers about each socket, in its attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SocketInfo {
    analysis_id: String,
    sub: String,
    can_cancel: bool,
    expires_at_ms: i64,
    window_start_ms: i64,
    window_count: u32,
}

fn now_ms() -> i64 {
    worker::Date::now().as_millis() as i64
}

fn frame(message: &ServerMessage) -> Result<String> {
    Ok(serde_json::to_string(message)?)
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

    /// Remembers the tenant a request was verified for (an object's tenant never changes:
    /// it is part of the object's name).
    fn remember_tenant(&self, tenant: &str) {
        if self.tenant.borrow().as_deref() != Some(tenant) {
            *self.tenant.borrow_mut() = Some(tenant.to_owned());
        }
    }

    /// The tenant this object belongs to: remembered, from the object's name
    /// (`tenant/analysis`), or from storage; "unknown" only if all of them fail.
    fn tenant(&self) -> String {
        if let Some(tenant) = self.tenant.borrow().as_ref() {
            return tenant.clone();
        }
        let found = self
            .state
            .id()
            .name()
            .and_then(|name| parse_object_name(&name).map(|(t, _)| t.to_owned()))
            .or_else(|| self.store().load_tenant().ok().flatten());
        match found {
            Some(tenant) => {
                *self.tenant.borrow_mut() = Some(tenant.clone());
                tenant
            }
            None => "unknown".to_owned(),
        }
    }

    /// Takes a publish token, or answers how long to wait.
    fn take_publish_token(
        &self,
        limits: &Limits,
        now: i64,
    ) -> std::result::Result<(), crate::rate::Limited> {
        let (rate, burst) = (limits.publish_rate, limits.publish_burst());
        let mut cell = self.bucket.borrow_mut();
        // A changed setting starts a new, full bucket.
        if cell
            .as_ref()
            .is_none_or(|b| (b.rate(), b.burst()) != (rate, burst))
        {
            *cell = Some(PublishBucket::new(rate, burst, now));
        }
        cell.as_mut().expect("set just above").take(now)
    }

    fn limits(&self) -> std::result::Result<Limits, ErrorBody> {
        Limits::from_vars(|name| self.env.var(name).ok().map(|v| v.to_string())).map_err(|e| {
            tracing::error!(error = %e, "edge misconfigured");
            ErrorBody::new(ErrorCode::Internal, "the edge is misconfigured")
        })
    }

    /// Runs `f` on the analysis (created pending when `id` is given and none is stored).
    fn with_analysis<R>(
        &self,
        id: Option<&str>,
        f: impl FnOnce(&mut Analysis) -> R,
    ) -> Result<Option<R>> {
        let mut cell = self.analysis.borrow_mut();
        if cell.is_none() {
            *cell = match self.store().load_analysis()? {
                Some(a) => Some(a),
                None => match id {
                    Some(id) => Some(Analysis::new(
                        AnalysisId::parse(id)
                            .map_err(|e| worker::Error::RustError(e.to_string()))?,
                    )),
                    None => None,
                },
            };
        }
        Ok(cell.as_mut().map(f))
    }

    /// Stores new events and the state, then sends each event to every socket, in order.
    fn commit(&self, stored: &[StoredEvent], history_limit: u64) -> Result<()> {
        let store = self.store();
        let mut frames = Vec::with_capacity(stored.len());
        let written = (|| {
            for event in stored {
                let text = frame(&ServerMessage::Event(event.clone()))?;
                store.insert_event(event, &text)?;
                frames.push(text);
            }
            if !self.tenant_saved.get()
                && let Some(tenant) = self.tenant.borrow().as_deref()
            {
                store.save_tenant(tenant)?;
            }
            if let Some(analysis) = self.analysis.borrow().as_ref() {
                store.save_analysis(analysis)?;
                store.trim_history(analysis.last_seq(), history_limit)?;
            }
            Ok::<(), worker::Error>(())
        })();
        if let Err(e) = written {
            // Reload from storage next time rather than trust a state storage did not take.
            *self.analysis.borrow_mut() = None;
            return Err(e);
        }
        if self.tenant.borrow().is_some() {
            self.tenant_saved.set(true);
        }
        let sockets = self.state.get_websockets();
        for text in &frames {
            for ws in &sockets {
                // A socket closing concurrently may refuse the frame; it will resume with since.
                let _ = ws.send_with_str(text);
            }
        }
        Ok(())
    }

    /// Makes sure the one alarm fires by the earliest of the pending deadlines.
    async fn schedule(
        &self,
        limits: &Limits,
        socket_deadline: Option<i64>,
        replace: bool,
    ) -> Result<()> {
        let deadline = self
            .with_analysis(None, |a| {
                let retention = a
                    .terminal_ts()
                    .map(|t| t.saturating_add(limits.retention_ms));
                [a.next_deadline(limits.stall_timeout_ms as u64), retention]
                    .into_iter()
                    .flatten()
                    .min()
            })?
            .flatten()
            .into_iter()
            .chain(socket_deadline)
            .min();
        let Some(deadline) = deadline else {
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
        fwd: &Forwarded,
        limits: &Limits,
    ) -> Result<Response> {
        if let Err(limited) = self.take_publish_token(limits, now_ms()) {
            let retry_after = limited.retry_after_secs();
            tracing::info!(
                retry_after_ms = limited.retry_after_ms,
                rate = limits.publish_rate,
                "publish rate limited"
            );
            return rate_limited_response(
                format!(
                    "this analysis takes at most {} publish batches a second (bursts of {}): retry after {retry_after} s",
                    limits.publish_rate,
                    limits.publish_burst()
                ),
                retry_after,
            );
        }
        let body = req.bytes().await?;
        let request = match parse_publish_body(&body) {
            Ok(r) => r,
            Err(e) => return error_response(&e.body()),
        };
        let now = now_ms();
        let store = self.store();
        let applied = self
            .with_analysis(Some(&fwd.analysis_id), |a| {
                a.apply_batch(request.events, now, |id| {
                    store.has_event(id).unwrap_or(false)
                })
            })?
            .expect("created on demand");
        match applied {
            Err(e) => {
                tracing::info!(error = %e, "publish refused");
                error_response(&e.body())
            }
            Ok(outcome) => {
                self.commit(&outcome.stored, limits.history_limit)?;
                self.schedule(limits, None, false).await?;
                json_response(&outcome.response(), 200)
            }
        }
    }

    /// Records a cancel by `by` once, and tells every socket.
    fn request_cancel(
        &self,
        id: &str,
        by: &str,
        limits: &Limits,
    ) -> Result<std::result::Result<(), ErrorBody>> {
        let now = now_ms();
        let outcome = self
            .with_analysis(Some(id), |a| (a.request_cancel(by, now), a.status()))?
            .expect("created on demand");
        match outcome {
            (Some(event), _) => {
                tracing::info!(by, "cancel requested");
                self.commit(&[event], limits.history_limit)?;
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
            return refuse_websocket_with(CLOSE_TRY_AGAIN_LATER, &reason, select_subprotocol);
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        pair.server.serialize_attachment(SocketInfo {
            analysis_id: fwd.analysis_id.clone(),
            sub: fwd.principal.sub.clone(),
            can_cancel: fwd.principal.can_cancel,
            expires_at_ms: fwd.principal.expires_at_ms,
            window_start_ms: 0,
            window_count: 0,
        })?;
        // Hello and the replay go out with no await in between: no event can slip past.
        let snapshot = self
            .with_analysis(Some(&fwd.analysis_id), |a| a.snapshot())?
            .expect("created on demand");
        let (frames, recovered) = match since {
            None => (Vec::new(), true),
            Some(since) => self.store().frames_after(since, snapshot.last_seq)?,
        };
        pair.server.send_with_str(frame(&ServerMessage::Hello {
            analysis_id: fwd.analysis_id.clone(),
            snapshot,
            server_ts: now_ms(),
            heartbeat_ms: HEARTBEAT_MS,
            resumed_from: since,
            recovered,
        })?)?;
        for text in &frames {
            pair.server.send_with_str(text)?;
        }
        self.schedule(limits, Some(fwd.principal.expires_at_ms), false)
            .await?;
        websocket_response(pair.client, select_subprotocol)
    }

    /// Closes sockets whose token expired; returns the earliest expiry still ahead.
    fn expire_sockets(&self, now: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        for ws in self.state.get_websockets() {
            let Ok(Some(info)) = ws.deserialize_attachment::<SocketInfo>() else {
                continue;
            };
            if info.expires_at_ms <= now {
                let code = CloseCode::TokenExpired;
                let _ = ws.close(Some(code.code()), Some(code.reason()));
            } else {
                next = Some(next.map_or(info.expires_at_ms, |n| n.min(info.expires_at_ms)));
            }
        }
        next
    }

    fn send(ws: &WebSocket, message: &ServerMessage) -> Result<()> {
        ws.send_with_str(frame(message)?)
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
        let _enter = span.enter();
        self.remember_tenant(&fwd.principal.tenant);
        let limits = match self.limits() {
            Ok(l) => l,
            Err(body) => return error_response(&body),
        };
        match &fwd.op {
            Op::Publish => self.publish(req, &fwd, &limits).await,
            Op::Snapshot => {
                let snapshot = self.with_analysis(Some(&fwd.analysis_id), |a| a.snapshot())?;
                json_response(&snapshot, 200)
            }
            Op::Events { since, limit } => {
                let last_seq = self
                    .with_analysis(Some(&fwd.analysis_id), |a| a.last_seq())?
                    .unwrap_or(0);
                let events = self.store().events_after(*since, *limit)?;
                json_response(&EventsPage { events, last_seq }, 200)
            }
            Op::Cancel => {
                match self.request_cancel(&fwd.analysis_id, &fwd.principal.sub, &limits)? {
                    Ok(()) => json_response(
                        &CancelResponse {
                            cancel_requested: true,
                        },
                        202,
                    ),
                    Err(body) => error_response(&body),
                }
            }
            Op::Subscribe {
                since,
                select_subprotocol,
            } => {
                self.subscribe(&fwd, *since, *select_subprotocol, &limits)
                    .await
            }
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let id = self
            .with_analysis(None, |a| a.analysis_id().as_str().to_owned())?
            .unwrap_or_default();
        let span = tracing::info_span!("alarm", tenant = %self.tenant(), analysis_id = %id);
        let _enter = span.enter();
        let limits = match self.limits() {
            Ok(l) => l,
            Err(_) => return Response::ok("misconfigured"),
        };
        let now = now_ms();
        let expired = self
            .with_analysis(None, |a| {
                a.terminal_ts()
                    .is_some_and(|t| t.saturating_add(limits.retention_ms) <= now)
            })?
            .unwrap_or(false);
        if expired {
            tracing::info!("retention over: deleting the analysis");
            self.store().wipe()?;
            *self.analysis.borrow_mut() = None;
            // The stored tenant went with the rest; the next commit writes it again.
            self.tenant_saved.set(false);
            for ws in self.state.get_websockets() {
                let _ = ws.close(
                    Some(1000),
                    Some("analysis deleted after its retention period"),
                );
            }
            return Response::ok("deleted");
        }
        let stalled = self
            .with_analysis(None, |a| a.check_stall(now, limits.stall_timeout_ms as u64))?
            .flatten();
        if let Some(event) = stalled {
            tracing::info!("stalled");
            self.commit(&[event], limits.history_limit)?;
        }
        let next_expiry = self.expire_sockets(now);
        self.schedule(&limits, next_expiry, true).await?;
        Response::ok("ok")
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let Some(mut info) = ws.deserialize_attachment::<SocketInfo>()? else {
            return Ok(());
        };
        let span =
            tracing::info_span!("socket", tenant = %self.tenant(), analysis_id = %info.analysis_id);
        let _enter = span.enter();
        let now = now_ms();
        if info.expires_at_ms <= now {
            let code = CloseCode::TokenExpired;
            return ws.close(Some(code.code()), Some(code.reason()));
        }
        if now - info.window_start_ms >= 1000 {
            info.window_start_ms = now;
            info.window_count = 0;
        }
        info.window_count += 1;
        if info.window_count > MAX_CLIENT_MESSAGES_PER_SECOND {
            let code = CloseCode::TooFast;
            return ws.close(Some(code.code()), Some(code.reason()));
        }
        ws.serialize_attachment(&info)?;
        let text = match message {
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        match ClientMessage::parse(&text) {
            Err(e) => match e.reply() {
                Ok(reply) => Self::send(&ws, &reply),
                Err(code) => ws.close(Some(code.code()), Some(code.reason())),
            },
            Ok(ClientMessage::Ping) => Self::send(&ws, &ServerMessage::Pong),
            Ok(ClientMessage::Snapshot) => {
                let snapshot = self
                    .with_analysis(Some(&info.analysis_id), |a| a.snapshot())?
                    .expect("created on demand");
                Self::send(&ws, &ServerMessage::Snapshot { snapshot })
            }
            Ok(ClientMessage::Cancel) if !info.can_cancel => Self::send(
                &ws,
                &ServerMessage::Error {
                    code: ErrorCode::InsufficientScope,
                    message: "this token lacks scope cancel".into(),
                },
            ),
            Ok(ClientMessage::Cancel) => {
                let limits = match self.limits() {
                    Ok(l) => l,
                    Err(body) => {
                        return Self::send(
                            &ws,
                            &ServerMessage::Error {
                                code: body.error.code,
                                message: body.error.message,
                            },
                        );
                    }
                };
                match self.request_cancel(&info.analysis_id, &info.sub, &limits)? {
                    Ok(()) => Ok(()),
                    Err(body) => Self::send(
                        &ws,
                        &ServerMessage::Error {
                            code: body.error.code,
                            message: body.error.message,
                        },
                    ),
                }
            }
        }
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
            .map(|info| info.analysis_id)
            .unwrap_or_default();
        let span =
            tracing::info_span!("socket", tenant = %self.tenant(), analysis_id = %analysis_id);
        let _enter = span.enter();
        tracing::info!(error = %error, "socket error");
        Ok(())
    }
}
