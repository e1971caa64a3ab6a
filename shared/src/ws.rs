//! WebSocket messages between browsers and the edge
//! (`GET /v1/analyses/{id}/ws?since=S`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ErrorBody, ErrorCode};
use crate::close::CloseCode;
use crate::limits::MAX_CLIENT_MESSAGE_BYTES;
use crate::snapshot::Snapshot;
use crate::stored::StoredEvent;

/// The subprotocol the server selects.
pub const SUBPROTOCOL: &str = "stagecast.v1";
/// Prefix of the subprotocol entry that carries a token: `bearer.<token>`.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";
/// Cookie that may carry a token.
pub const TOKEN_COOKIE: &str = "stagecast_token";
/// Query parameter that may carry a token.
pub const TOKEN_QUERY: &str = "token";

/// The token in a `Sec-WebSocket-Protocol` header such as
/// `stagecast.v1, bearer.<token>`, if the header offers [`SUBPROTOCOL`] and a bearer entry.
pub fn bearer_from_subprotocols(header: &str) -> Option<&str> {
    let mut entries = header.split(',').map(str::trim);
    let offers_v1 = entries.clone().any(|e| e == SUBPROTOCOL);
    let token = entries.find_map(|e| e.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))?;
    (offers_v1 && !token.is_empty()).then_some(token)
}

/// Server -> client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ServerMessage {
    /// Always first. Then every stored event after `resumed_from`, in order.
    Hello {
        analysis_id: String,
        snapshot: Snapshot,
        /// The edge's clock when it sent this.
        server_ts: i64,
        /// How often the client should ping.
        heartbeat_ms: u64,
        /// The client's `since`, or null when it sent none (no replay: the snapshot
        /// stands for the past).
        resumed_from: Option<u64>,
        /// False when `since` was older than the retained history: the snapshot stands
        /// in for what was dropped.
        recovered: bool,
    },
    /// A stored event, in seq order, no gaps, no repeats.
    Event(StoredEvent),
    /// The answer to a client `snapshot` request (an extension of v1).
    Snapshot { snapshot: Snapshot },
    /// The answer to a client `ping`.
    Pong,
    /// A bad client message; the socket stays open.
    Error { code: ErrorCode, message: String },
}

/// Client -> server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ClientMessage {
    Ping,
    /// Needs scope `cancel`.
    Cancel,
    /// Asks for a fresh snapshot.
    Snapshot,
}

/// Why a client message was refused.
#[derive(Debug, Error)]
pub enum ClientMessageError {
    /// Close the socket with 4009.
    #[error("message of {len} bytes is over the {max} byte limit", max = MAX_CLIENT_MESSAGE_BYTES)]
    TooBig { len: usize },
    /// Answer with an `error` message and keep the socket open.
    #[error("not a client message: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl ClientMessageError {
    /// What to send back: a close (too big) or an `error` message (anything else).
    pub fn reply(&self) -> Result<ServerMessage, CloseCode> {
        match self {
            Self::TooBig { .. } => Err(CloseCode::TooBig),
            Self::Invalid(_) => Ok(ServerMessage::Error {
                code: ErrorCode::InvalidMessage,
                message: self.to_string(),
            }),
        }
    }
}

impl ClientMessage {
    /// Parses one text frame, size first.
    pub fn parse(text: &str) -> Result<Self, ClientMessageError> {
        if text.len() > MAX_CLIENT_MESSAGE_BYTES {
            return Err(ClientMessageError::TooBig { len: text.len() });
        }
        Ok(serde_json::from_str(text)?)
    }
}

impl From<ErrorBody> for ServerMessage {
    /// The `error` message of a refused client message (the body's `index` has no place here).
    fn from(body: ErrorBody) -> Self {
        Self::Error {
            code: body.error.code,
            message: body.error.message,
        }
    }
}
