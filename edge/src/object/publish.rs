//! Publishing: a batch over `POST .../events` or a message on a node's publish socket
//! (`GET .../publish`), both taken by one core: rate, fencing, dedupe, order, commit.

use stagecast_shared::api::{ApiError, ErrorBody, ErrorCode, PublishRequest, PublishResponse};
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::publisher::{PublisherReply, parse_publish_message};
use stagecast_shared::validate::parse_publish_body;
use worker::{Request, Response, Result, WebSocket, WebSocketPair};

use super::{AnalysisObject, PUBLISHER};
use crate::clock::now_ms;
use crate::config::Limits;
use crate::forward::Forwarded;
use crate::rate::{Limited, PublishBucket};
use crate::respond::{
    close, error_response, json_response, refuse_websocket, retry_later_response,
    websocket_response,
};
use crate::socket::SocketInfo;

/// Publish sockets one analysis takes: a node holds one per run, so more are stale
/// connections or a misbehaving client.
const MAX_PUBLISHERS: usize = 16;

/// A refused batch: its error body and, when rate limited, how long to wait.
struct Refusal {
    body: ErrorBody,
    limited: Option<Limited>,
}

impl From<ErrorBody> for Refusal {
    fn from(body: ErrorBody) -> Self {
        Self {
            body,
            limited: None,
        }
    }
}

impl AnalysisObject {
    /// Takes one batch: the rate bucket first, then `parse`, fencing, dedupe and the state
    /// machine; a batch it takes is committed before the answer.
    async fn take_batch(
        &self,
        id: &AnalysisId,
        parse: impl FnOnce() -> std::result::Result<PublishRequest, ErrorBody>,
        limits: &Limits,
    ) -> Result<std::result::Result<PublishResponse, Refusal>> {
        let (rate, burst) = (limits.publish_rate, limits.publish_burst());
        let taken = PublishBucket::take_from(&mut self.bucket.borrow_mut(), rate, burst, now_ms());
        if let Err(limited) = taken {
            tracing::info!(
                retry_after_ms = limited.retry_after_ms,
                rate,
                "publish rate limited"
            );
            let body = ErrorBody::new(ErrorCode::RateLimited, limited.message(rate, burst));
            return Ok(Err(Refusal {
                body,
                limited: Some(limited),
            }));
        }
        let request = match parse() {
            Ok(r) => r,
            Err(body) => return Ok(Err(body.into())),
        };
        // Fencing: only the current attempt of a submitted analysis writes.
        if let Err(e) = self.with_analysis(id, |a| a.check_attempt(request.attempt))? {
            tracing::info!(error = %e, "stale attempt refused");
            return Ok(Err(e.body().into()));
        }
        let ids: Vec<&str> = request.events.iter().map(|e| e.id.as_str()).collect();
        let known = self.known_ids(&ids)?;
        let now = now_ms();
        let applied = self.with_analysis(id, |a| {
            a.apply_batch(request.events, now, |id| known.contains(id))
        })?;
        let outcome = match applied {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::info!(error = %e, "publish refused");
                return Ok(Err(e.body().into()));
            }
        };
        self.commit(&outcome.stored, limits)?;
        self.schedule(limits, None).await?;
        if outcome.stored.iter().any(|e| e.event.is_terminal()) {
            self.tell_pool_finished(id).await;
        }
        Ok(Ok(outcome.response()))
    }

    /// `POST /v1/analyses/{id}/events`.
    pub(super) async fn publish(
        &self,
        mut req: Request,
        id: &AnalysisId,
        limits: &Limits,
    ) -> Result<Response> {
        let body = req.bytes().await?;
        let parse = || parse_publish_body(&body).map_err(|e| e.body());
        match self.take_batch(id, parse, limits).await? {
            Ok(response) => json_response(&response, 200),
            Err(Refusal {
                body,
                limited: Some(limited),
            }) => retry_later_response(&body, limited.retry_after_secs()),
            Err(refusal) => error_response(&refusal.body),
        }
    }

    /// `GET /v1/analyses/{id}/publish`: a node's publish socket, hibernating between
    /// messages like a viewer's, and closed with 4010 when its token expires.
    pub(super) async fn open_publisher(
        &self,
        fwd: &Forwarded,
        select_subprotocol: bool,
        limits: &Limits,
    ) -> Result<Response> {
        if self.state.get_websockets_with_tag(PUBLISHER).len() >= MAX_PUBLISHERS {
            let reason = format!("too many publish sockets ({MAX_PUBLISHERS}): try again later");
            return refuse_websocket(CloseCode::TryAgainLater, &reason, select_subprotocol);
        }
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[PUBLISHER]);
        pair.server
            .serialize_attachment(SocketInfo::new(&fwd.analysis_id, &fwd.principal))?;
        tracing::info!(node = %fwd.principal.sub, "publish socket opened");
        self.schedule(limits, Some(fwd.principal.expires_at_ms))
            .await?;
        websocket_response(pair.client, select_subprotocol)
    }

    /// One message on a publish socket: a batch, answered with its request number.
    pub(super) async fn on_publisher_message(
        &self,
        ws: &WebSocket,
        info: &SocketInfo,
        text: &str,
    ) -> Result<()> {
        if info.expired(now_ms()) {
            close(ws, CloseCode::TokenExpired, "");
            return Ok(());
        }
        let mut request = None;
        let reply = match self.limits() {
            Err(body) => PublisherReply::refused(None, body, None),
            Ok(limits) => {
                let parse = || {
                    let parsed = parse_publish_message(text);
                    request = match &parsed {
                        Ok((n, _)) => Some(*n),
                        Err(e) => e.request,
                    };
                    parsed.map(|(_, batch)| batch).map_err(|e| e.error.body())
                };
                match self.take_batch(&info.analysis_id, parse, &limits).await {
                    Ok(Ok(response)) => PublisherReply::Published {
                        request: request.unwrap_or_default(),
                        response,
                    },
                    Ok(Err(refusal)) => PublisherReply::refused(
                        request,
                        refusal.body,
                        refusal.limited.map(|l| l.retry_after_ms),
                    ),
                    // The node hears of it now rather than at its timeout, and retries.
                    Err(e) => {
                        tracing::error!(error = %e, "publish failed");
                        let body = ErrorBody::new(
                            ErrorCode::Internal,
                            "the edge could not take the batch",
                        );
                        PublisherReply::refused(request, body, None)
                    }
                }
            }
        };
        ws.send_with_str(serde_json::to_string(&reply)?)
    }
}
