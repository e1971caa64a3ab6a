//! What the analysis object knows about each subscriber socket, kept in the socket's
//! attachment so it survives hibernation, and what a client message asks of the object.
//! Pure: the object serializes it and acts on the answers.

use serde::{Deserialize, Serialize};
use stagecast_shared::api::ErrorCode;
use stagecast_shared::close::CloseCode;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::limits::MAX_CLIENT_MESSAGES_PER_SECOND;
use stagecast_shared::ws::{ClientMessage, ServerMessage};

use crate::auth::Principal;

/// A socket's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    pub analysis_id: AnalysisId,
    pub sub: String,
    pub can_cancel: bool,
    pub expires_at_ms: i64,
    #[serde(flatten)]
    window: RateWindow,
}

/// The one-second window of a socket's message rate limit, kept in its attachment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    #[serde(rename = "window_start_ms")]
    start_ms: i64,
    #[serde(rename = "window_count")]
    count: u32,
}

impl RateWindow {
    /// Counts a message at `now_ms`: false when it is over `max` in its second.
    pub fn admit(&mut self, now_ms: i64, max: u32) -> bool {
        if now_ms - self.start_ms >= 1000 {
            self.start_ms = now_ms;
            self.count = 0;
        }
        self.count += 1;
        self.count <= max
    }
}

/// What the object does with one client message when the socket stays open.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Send this (boxed: the other replies carry nothing).
    Send(Box<ServerMessage>),
    /// Send a fresh snapshot.
    Snapshot,
    /// Record a cancel by this socket's `sub`.
    Cancel,
}

impl SocketInfo {
    pub fn new(analysis_id: &AnalysisId, principal: &Principal) -> Self {
        Self {
            analysis_id: analysis_id.clone(),
            sub: principal.sub.clone(),
            can_cancel: principal.can_cancel,
            expires_at_ms: principal.expires_at_ms,
            window: RateWindow::default(),
        }
    }

    /// Whether the socket's token has expired at `now_ms` (close with 4010).
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// The answer to client message `text` at `now_ms`, or the code to close with. Counts
    /// the message against the rate window, so store the attachment again afterwards.
    pub fn on_message(&mut self, text: &str, now_ms: i64) -> Result<Reply, CloseCode> {
        if self.expired(now_ms) {
            return Err(CloseCode::TokenExpired);
        }
        if !self.window.admit(now_ms, MAX_CLIENT_MESSAGES_PER_SECOND) {
            return Err(CloseCode::TooFast);
        }
        Ok(match ClientMessage::parse(text) {
            Err(e) => Reply::Send(Box::new(e.reply()?)),
            Ok(ClientMessage::Ping) => Reply::Send(Box::new(ServerMessage::Pong)),
            Ok(ClientMessage::Snapshot) => Reply::Snapshot,
            Ok(ClientMessage::Cancel) if !self.can_cancel => {
                Reply::Send(Box::new(ServerMessage::Error {
                    code: ErrorCode::InsufficientScope,
                    message: "this token lacks scope cancel".into(),
                }))
            }
            Ok(ClientMessage::Cancel) => Reply::Cancel,
        })
    }
}

/// The earliest token expiry of `sockets` still ahead at `now_ms`.
pub fn next_expiry<'a>(
    sockets: impl IntoIterator<Item = &'a SocketInfo>,
    now_ms: i64,
) -> Option<i64> {
    sockets
        .into_iter()
        .filter(|s| !s.expired(now_ms))
        .map(|s| s.expires_at_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(can_cancel: bool, expires_at_ms: i64) -> SocketInfo {
        let principal = Principal {
            tenant: "t".into(),
            sub: "alice".into(),
            can_cancel,
            expires_at_ms,
        };
        SocketInfo::new(&AnalysisId::parse("a1").unwrap(), &principal)
    }

    const PING: &str = r#"{"type":"ping"}"#;

    fn pong() -> Result<Reply, CloseCode> {
        Ok(Reply::Send(Box::new(ServerMessage::Pong)))
    }

    #[test]
    fn messages_get_their_replies() {
        let mut s = socket(false, 10_000);
        assert_eq!(s.on_message(PING, 0), pong());
        assert_eq!(
            s.on_message(r#"{"type":"snapshot"}"#, 0),
            Ok(Reply::Snapshot)
        );
        let error_code = |reply| match reply {
            Ok(Reply::Send(message)) => match *message {
                ServerMessage::Error { code, .. } => Some(code),
                _ => None,
            },
            _ => None,
        };
        assert_eq!(
            error_code(s.on_message(r#"{"type":"cancel"}"#, 0)),
            Some(ErrorCode::InsufficientScope)
        );
        assert_eq!(
            error_code(s.on_message("nonsense", 0)),
            Some(ErrorCode::InvalidMessage)
        );
        let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(5000));
        assert_eq!(s.on_message(&big, 0), Err(CloseCode::TooBig));
        assert_eq!(
            socket(true, 10_000).on_message(r#"{"type":"cancel"}"#, 0),
            Ok(Reply::Cancel)
        );
    }

    #[test]
    fn an_expired_token_closes_with_4010() {
        let mut s = socket(true, 5_000);
        assert_eq!(s.on_message(PING, 4_999), pong());
        assert_eq!(s.on_message(PING, 5_000), Err(CloseCode::TokenExpired));
    }

    #[test]
    fn the_rate_window_allows_the_limit_per_second_then_closes_with_4008() {
        let mut s = socket(false, i64::MAX);
        for i in 0..MAX_CLIENT_MESSAGES_PER_SECOND {
            assert_eq!(s.on_message(PING, 1_000 + i as i64), pong());
        }
        // the window survives a round trip through the attachment
        let mut s: SocketInfo = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(s.on_message(PING, 1_500), Err(CloseCode::TooFast));
        // a new second, a new window
        let mut s = socket(false, i64::MAX);
        for _ in 0..MAX_CLIENT_MESSAGES_PER_SECOND {
            assert!(s.on_message(PING, 1_000).is_ok());
        }
        assert_eq!(s.on_message(PING, 2_000), pong());
    }

    #[test]
    fn the_next_expiry_skips_the_expired() {
        let sockets = [socket(false, 100), socket(false, 300), socket(false, 200)];
        assert_eq!(next_expiry(&sockets, 150), Some(200));
        assert_eq!(next_expiry(&sockets, 300), None);
    }
}
