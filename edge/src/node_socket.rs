//! What the pool object knows about each node socket, kept in the socket's attachment so
//! it survives hibernation, and the check of every node message. Pure.

use serde::{Deserialize, Serialize};
use stagecast_shared::close::CloseCode;
use stagecast_shared::dispatch::wire::MAX_NODE_MESSAGES_PER_SECOND;
use stagecast_shared::dispatch::{NodeMessage, PoolMessage};
use stagecast_shared::ids::NodeId;

use crate::socket::RateWindow;

/// Socket tags: the pool object holds node sockets and live-view sockets.
pub const NODE_TAG: &str = "node";
pub const WATCH_TAG: &str = "watch";

/// A node socket's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSocket {
    pub node_id: NodeId,
    /// The pool's connection number: a replaced socket's events are ignored.
    pub conn: u64,
    pub expires_at_ms: i64,
    #[serde(flatten)]
    window: RateWindow,
}

/// A live-view socket's attachment: it only listens, until its token expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerSocket {
    pub expires_at_ms: i64,
}

/// The earliest token expiry still ahead at `now_ms`, among `expiries`.
pub fn next_expiry(expiries: impl IntoIterator<Item = i64>, now_ms: i64) -> Option<i64> {
    expiries.into_iter().filter(|at| *at > now_ms).min()
}

/// A node message that is not acted on.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Close(CloseCode),
    /// Send this `error` and keep the socket (boxed: the close carries a code only).
    Reply(Box<PoolMessage>),
}

impl NodeSocket {
    pub fn new(node_id: NodeId, conn: u64, expires_at_ms: i64) -> Self {
        Self {
            node_id,
            conn,
            expires_at_ms,
            window: RateWindow::default(),
        }
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// Checks message `text` at `now_ms`: expiry, rate, size, shape and bounds. Counts it
    /// against the rate window, so store the attachment again afterwards.
    pub fn on_message(&mut self, text: &str, now_ms: i64) -> Result<NodeMessage, Refusal> {
        if self.expired(now_ms) {
            return Err(Refusal::Close(CloseCode::TokenExpired));
        }
        if !self.window.admit(now_ms, MAX_NODE_MESSAGES_PER_SECOND) {
            return Err(Refusal::Close(CloseCode::TooFast));
        }
        NodeMessage::parse(text).map_err(|e| match e.reply() {
            Ok(reply) => Refusal::Reply(Box::new(reply)),
            Err(code) => Refusal::Close(code),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagecast_shared::api::ErrorCode;

    fn socket() -> NodeSocket {
        NodeSocket::new(NodeId::parse("n1").unwrap(), 1, 10_000)
    }

    const HEARTBEAT: &str = r#"{"type":"heartbeat","running":[]}"#;

    fn error_code(r: Result<NodeMessage, Refusal>) -> Option<ErrorCode> {
        match r {
            Err(Refusal::Reply(reply)) => match *reply {
                PoolMessage::Error { code, .. } => Some(code),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn good_messages_parse_and_bad_ones_get_the_contract_answers() {
        let mut s = socket();
        assert!(matches!(
            s.on_message(HEARTBEAT, 0),
            Ok(NodeMessage::Heartbeat { .. })
        ));
        let ready = r#"{"type":"ready","slots":2,"models":["text-detect"]}"#;
        assert!(matches!(
            s.on_message(ready, 0),
            Ok(NodeMessage::Ready { slots: 2, .. })
        ));
        for bad in [
            "nonsense",
            r#"{"type":"lease"}"#,
            r#"{"type":"ready","slots":2,"models":["a b"]}"#,
            r#"{"type":"ready","slots":100000,"models":[]}"#,
            r#"{"type":"accept","lease_id":""}"#,
            r#"{"type":"heartbeat","running":["../x"]}"#,
            r#"{"type":"heartbeat","running":[],"extra":1}"#,
        ] {
            assert_eq!(
                error_code(s.on_message(bad, 0)),
                Some(ErrorCode::InvalidMessage),
                "{bad}"
            );
        }
        let big = format!(
            r#"{{"type":"release","lease_id":"{}"}}"#,
            "x".repeat(40_000)
        );
        assert_eq!(
            s.on_message(&big, 0),
            Err(Refusal::Close(CloseCode::TooBig))
        );
    }

    #[test]
    fn the_next_expiry_is_the_earliest_ahead() {
        assert_eq!(next_expiry([300, 100, 200], 150), Some(200));
        assert_eq!(next_expiry([100], 100), None);
        assert_eq!(next_expiry([], 0), None);
    }

    #[test]
    fn too_fast_closes_with_4008_and_an_expired_token_with_4010() {
        let mut s = socket();
        for _ in 0..MAX_NODE_MESSAGES_PER_SECOND {
            assert!(s.on_message(HEARTBEAT, 500).is_ok());
        }
        assert_eq!(
            s.on_message(HEARTBEAT, 900),
            Err(Refusal::Close(CloseCode::TooFast))
        );
        assert!(s.on_message(HEARTBEAT, 1_500).is_ok());
        assert_eq!(
            s.on_message(HEARTBEAT, 10_000),
            Err(Refusal::Close(CloseCode::TokenExpired))
        );
    }
}
