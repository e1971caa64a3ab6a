//! WebSocket close codes the edge uses, with a short reason and what a client should do.

use crate::api::ErrorCode;

/// Why the edge closed a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 4001: no token or an invalid one.
    InvalidToken,
    /// 4003: the token is valid, but not for this tenant, analysis or scope.
    Forbidden,
    /// 4400: malformed request (bad id, bad `since`).
    BadRequest,
    /// 4008: the client sent too fast.
    TooFast,
    /// 4009: a client message was too big.
    TooBig,
    /// 4010: the token expired while connected.
    TokenExpired,
    /// 4409: a node connected to its pool again with the same node id: this older
    /// socket is replaced.
    Replaced,
    /// 1012: the edge is restarting or the object moved.
    Restarting,
    /// 1013: the analysis has as many subscribers as it takes; try again later.
    TryAgainLater,
    /// 1000: a normal close, e.g. the analysis was deleted after its retention period.
    Normal,
}

/// What a client should do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reconnect {
    /// Not until it has a new token.
    WithNewToken,
    /// Not at all: retrying cannot help.
    Never,
    /// Yes, with exponential backoff.
    WithBackoff,
    /// Yes, without sending that message again.
    WithoutResending,
    /// With a new token, and `since` = the last seq it saw.
    WithNewTokenSinceLastSeq,
    /// Yes, with `since` = the last seq it saw.
    SinceLastSeq,
}

impl CloseCode {
    /// Every close code, for tables and tests.
    pub const ALL: [CloseCode; 10] = [
        Self::InvalidToken,
        Self::Forbidden,
        Self::BadRequest,
        Self::TooFast,
        Self::TooBig,
        Self::TokenExpired,
        Self::Replaced,
        Self::Restarting,
        Self::TryAgainLater,
        Self::Normal,
    ];

    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            Self::InvalidToken => 4001,
            Self::Forbidden => 4003,
            Self::BadRequest => 4400,
            Self::TooFast => 4008,
            Self::TooBig => 4009,
            Self::TokenExpired => 4010,
            Self::Replaced => 4409,
            Self::Restarting => 1012,
            Self::TryAgainLater => 1013,
            Self::Normal => 1000,
        }
    }

    /// The code for a number received in a close frame.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short readable reason for the close frame (well under its 123-byte limit).
    pub fn reason(self) -> &'static str {
        match self {
            Self::InvalidToken => "missing or invalid token",
            Self::Forbidden => "token not allowed here",
            Self::BadRequest => "malformed request",
            Self::TooFast => "too many messages",
            Self::TooBig => "message too big",
            Self::TokenExpired => "token expired",
            Self::Replaced => "replaced by a newer connection of this node",
            Self::Restarting => "edge restarting",
            Self::TryAgainLater => "too many subscribers: try again later",
            Self::Normal => "closed",
        }
    }

    /// What the client should do next.
    pub fn reconnect(self) -> Reconnect {
        match self {
            Self::InvalidToken => Reconnect::WithNewToken,
            Self::Forbidden | Self::BadRequest | Self::Normal | Self::Replaced => Reconnect::Never,
            Self::TooFast | Self::TryAgainLater => Reconnect::WithBackoff,
            Self::TooBig => Reconnect::WithoutResending,
            Self::TokenExpired => Reconnect::WithNewTokenSinceLastSeq,
            Self::Restarting => Reconnect::SinceLastSeq,
        }
    }

    /// The close code for an error met while opening a socket (the upgrade request's
    /// 400 / 401 / 403 / 413 / 429 / 5xx), so HTTP and WebSocket agree.
    pub fn for_error(code: ErrorCode) -> Self {
        match code.status() {
            401 => Self::InvalidToken,
            403 => Self::Forbidden,
            413 => Self::TooBig,
            429 => Self::TooFast,
            500.. => Self::Restarting,
            _ => Self::BadRequest,
        }
    }
}
