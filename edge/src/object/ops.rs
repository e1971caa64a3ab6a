//! What the analysis object does for each operation the Worker forwards, for its alarm and
//! for each client message on a socket.

use stagecast_shared::api::{CancelResponse, ErrorBody, ErrorCode};
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::stored::EventsPage;
use stagecast_shared::ws::ServerMessage;
use worker::{Request, Response, Result, WebSocket, WebSocketPair};

use super::{AnalysisObject, VIEWER};
use crate::clock::now_ms;
use crate::config::Limits;
use crate::deadline::retention_over;
use crate::forward::{Forwarded, Op};
use crate::respond::{close, error_response, json_response, refuse_websocket, websocket_response};
use crate::socket::{Reply, SocketInfo, next_expiry};
use crate::store::Frame;

/// How often clients should ping; they treat 45 s of silence as a dead connection.
const HEARTBEAT_MS: u64 = 15_000;

fn send(ws: &WebSocket, message: &ServerMessage) -> Result<()> {
    ws.send_with_str(serde_json::to_string(message)?)
}

impl AnalysisObject {
    /// Records a cancel by `by` once, tells every socket and, for a submitted analysis,
    /// the pool (which ends a queued one, or pushes the cancel to the node).
    async fn request_cancel(
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
                self.tell_pool_cancel(id).await?;
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

    /// Whether a new subscriber (socket or stream) would be one too many.
    pub(super) fn subscribers_full(&self, limits: &Limits) -> bool {
        self.viewers().len() + self.streams.len() >= limits.max_sockets
    }

    /// The hello of a new subscriber and the frames to replay after it. Send both with no
    /// await in between, so no event can slip past.
    pub(super) fn greeting(
        &self,
        id: &AnalysisId,
        since: Option<u64>,
        limits: &Limits,
    ) -> Result<(ServerMessage, Vec<Frame>)> {
        let snapshot = self.with_analysis(id, |a| a.snapshot())?;
        let (frames, recovered) = match since {
            None => (Vec::new(), true),
            Some(since) => {
                self.store()
                    .frames_after(since, snapshot.last_seq, limits.history_limit)?
            }
        };
        let hello = ServerMessage::Hello {
            analysis_id: id.to_string(),
            snapshot,
            server_ts: now_ms(),
            heartbeat_ms: HEARTBEAT_MS,
            resumed_from: since,
            recovered,
        };
        Ok((hello, frames))
    }

    async fn subscribe(
        &self,
        fwd: &Forwarded,
        since: Option<u64>,
        select_subprotocol: bool,
        limits: &Limits,
    ) -> Result<Response> {
        if self.subscribers_full(limits) {
            let reason = format!(
                "too many subscribers ({}): try again later",
                limits.max_sockets
            );
            return refuse_websocket(CloseCode::TryAgainLater, &reason, select_subprotocol);
        }
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[VIEWER]);
        self.forget_viewers();
        pair.server
            .serialize_attachment(SocketInfo::new(&fwd.analysis_id, &fwd.principal))?;
        let (hello, frames) = self.greeting(&fwd.analysis_id, since, limits)?;
        send(&pair.server, &hello)?;
        for frame in &frames {
            pair.server.send_with_str(&frame.text)?;
        }
        self.schedule(limits, Some(fwd.principal.expires_at_ms))
            .await?;
        websocket_response(pair.client, select_subprotocol)
    }

    pub(super) async fn handle(&self, req: Request, fwd: Forwarded) -> Result<Response> {
        *self.tenant.borrow_mut() = Some(fwd.principal.tenant.clone());
        let limits = match self.limits() {
            Ok(l) => l,
            Err(body) => return error_response(&body),
        };
        let id = &fwd.analysis_id;
        match &fwd.op {
            Op::Publish => self.publish(req, id, &limits).await,
            Op::PublishSocket { select_subprotocol } => {
                self.open_publisher(&fwd, *select_subprotocol, &limits)
                    .await
            }
            Op::Snapshot => json_response(&self.with_analysis(id, |a| a.snapshot())?, 200),
            Op::Events { since, limit } => {
                let last_seq = self.with_analysis(id, |a| a.last_seq())?;
                let events =
                    self.store()
                        .events_after(*since, *limit, last_seq, limits.history_limit)?;
                json_response(&EventsPage { events, last_seq }, 200)
            }
            Op::Cancel => match self.request_cancel(id, &fwd.principal.sub, &limits).await? {
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
            Op::Stream { since } => self.open_stream(&fwd, *since, &limits).await,
            Op::Submit { pool, submission } => {
                self.submit(id, pool.clone(), submission.clone(), &limits)
                    .await
            }
            Op::Dispatch { updates } => {
                json_response(&self.apply_updates(id, updates, &limits)?, 200)
            }
            Op::UploadCheck => self.upload_check(id),
            Op::InputStored { input } => self.input_stored(id, input.clone(), &limits).await,
            Op::InputFor { node } => self.input_for(id, node),
            op @ Op::PutArtifact { .. } => self.put_artifact(req, id, op, &limits).await,
        }
    }

    pub(super) async fn on_alarm(&self) -> Result<Response> {
        // The alarm that woke us is spent: the next deadline needs a new one.
        self.alarm_at.set(Some(None));
        let Ok(limits) = self.limits() else {
            return Response::ok("misconfigured");
        };
        let now = now_ms();
        if self.with_stored(|a| retention_over(a, &limits, now))? == Some(true) {
            tracing::info!("retention over: deleting the analysis");
            if let Some(id) = self.with_stored(|a| a.analysis_id().clone())? {
                self.delete_media(&id).await?;
            }
            self.store().wipe()?;
            self.forget_state();
            self.streams.end_all();
            // The stored tenant went with the rest; the next commit writes it again.
            self.tenant_saved.set(false);
            self.forget_viewers();
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
        self.forget_viewers();
        let mut live = Vec::new();
        for ws in self.state.get_websockets() {
            match ws.deserialize_attachment::<SocketInfo>() {
                Ok(Some(info)) if info.expired(now) => close(&ws, CloseCode::TokenExpired, ""),
                Ok(Some(info)) => live.push(info),
                _ => {}
            }
        }
        self.schedule(&limits, next_expiry(&live, now)).await?;
        Response::ok("ok")
    }

    pub(super) async fn on_socket_message(
        &self,
        ws: &WebSocket,
        mut info: SocketInfo,
        text: &str,
    ) -> Result<()> {
        let reply = match info.on_message(text, now_ms()) {
            Ok(reply) => reply,
            Err(code) => {
                close(ws, code, "");
                self.forget_viewers();
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
                        .request_cancel(&info.analysis_id, &info.sub, &limits)
                        .await?
                        .err(),
                    Err(body) => Some(body),
                };
                refused.map_or(Ok(()), |body| send(ws, &body.into()))
            }
        }
    }
}
