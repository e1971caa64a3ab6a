//! A publication's socket to its analysis (`GET /v1/analyses/{id}/publish`): the batches
//! the HTTP route would take, as messages, which bill a twentieth of a request each. One
//! batch is in flight at a time, as over HTTP. It opens on the first batch and again with
//! each new token; when a handshake fails (an older edge, a proxy that breaks sockets)
//! the publication goes over HTTP for [`HTTP_SPELL`] before it tries again.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use stagecast_shared::api::PublishResponse;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::publisher::{PublisherReply, publish_message};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::PublishError;
use crate::edge_socket::{self, Ws, ws_url};

/// How long a publication stays on HTTP after a failed handshake.
pub const HTTP_SPELL: Duration = Duration::from_secs(60);
/// The reply to a batch is as late as an HTTP answer may be.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket, opened on demand.
pub struct PublishSocket {
    url: Url,
    /// The socket and the token it opened with.
    open: Option<(Ws, String)>,
    next_request: u64,
    /// After a failed handshake: publish over HTTP until then.
    http_until: Option<Instant>,
}

impl PublishSocket {
    pub fn new(edge: &Url, analysis: &AnalysisId) -> Self {
        Self {
            url: ws_url(edge, &format!("v1/analyses/{analysis}/publish")),
            open: None,
            next_request: 0,
            http_until: None,
        }
    }

    /// Publishes `body` (a publish body) with `token` and waits for the reply; `None`
    /// when the socket is unavailable and the batch should go over HTTP.
    pub async fn publish(
        &mut self,
        token: &str,
        body: &str,
    ) -> Option<Result<PublishResponse, PublishError>> {
        if self.http_until.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        if self
            .open
            .as_ref()
            .is_some_and(|(_, opened_with)| opened_with != token)
        {
            // the token changed: the old one would expire under the socket
            self.close().await;
        }
        if self.open.is_none() {
            match edge_socket::dial(&self.url, token).await {
                Ok(ws) => self.open = Some((ws, token.to_owned())),
                Err(e) => {
                    tracing::warn!(
                        "the publish socket did not open ({e}): publishing over HTTP for {} s",
                        HTTP_SPELL.as_secs()
                    );
                    self.http_until = Some(Instant::now() + HTTP_SPELL);
                    return None;
                }
            }
        }
        self.next_request += 1;
        let request = self.next_request;
        let (ws, _) = self.open.as_mut().expect("opened above");
        let answer = tokio::time::timeout(REPLY_TIMEOUT, exchange(ws, request, body)).await;
        let answer = answer.unwrap_or_else(|_| Err(socket_error("no reply in time")));
        if matches!(answer, Err(PublishError::Socket(_))) {
            // whatever was in flight is retried; the edge drops what it already stored
            self.open = None;
        }
        Some(answer)
    }

    /// Closes the socket, if open, with a normal close.
    pub async fn close(&mut self) {
        if let Some((mut ws, _)) = self.open.take() {
            let _ = ws.close(None).await;
        }
    }
}

/// Sends batch `request` and reads until its reply.
async fn exchange(ws: &mut Ws, request: u64, body: &str) -> Result<PublishResponse, PublishError> {
    let text = publish_message(request, body);
    ws.send(Message::text(text)).await.map_err(socket_error)?;
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            // pings are answered by tungstenite
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => return Err(socket_error("a binary frame")),
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map_or_else(
                    || "closed".to_owned(),
                    |f| format!("closed {} {}", f.code, f.reason),
                );
                return Err(socket_error(why));
            }
            Some(Err(e)) => return Err(socket_error(e)),
            None => return Err(socket_error("closed")),
        };
        let reply: PublisherReply = serde_json::from_str(&text)
            .map_err(|e| socket_error(format!("not a publish reply: {e}")))?;
        match reply {
            PublisherReply::Published {
                request: r,
                response,
            } if r == request => {
                return Ok(response);
            }
            PublisherReply::Refused {
                request: r,
                status,
                error,
                retry_after_ms,
            } if r.is_none_or(|r| r == request) => {
                let retry_after = retry_after_ms.map(Duration::from_millis);
                return Err(PublishError::refused(status, error, retry_after));
            }
            // the reply to an earlier batch that timed out: its events are being resent
            _ => continue,
        }
    }
}

fn socket_error(e: impl std::fmt::Display) -> PublishError {
    PublishError::Socket(e.to_string())
}
