//! HTTP request and response bodies, and the one error body every failure uses.

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// `POST /v1/analyses/{id}/events` body (parsed and checked by `parse_publish_body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishRequest {
    /// The lease's attempt; required for a submitted analysis (fencing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub events: Vec<Event>,
}

/// 200 answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishResponse {
    /// Events newly stored.
    pub accepted: u32,
    /// Events dropped because their id was already stored or repeated in the batch.
    pub duplicates: u32,
    pub last_seq: u64,
    /// Whether someone asked to cancel: the node should stop and send `cancelled`.
    pub cancel_requested: bool,
}

/// 202 answer to `POST /v1/analyses/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelResponse {
    pub cancel_requested: bool,
}

/// Every error's code. Each one carries its HTTP status (`ErrorCode::status`); the
/// same codes appear in WebSocket `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// 400: the analysis id of the URL breaks the id rule.
    InvalidAnalysisId,
    /// 400: the body is not JSON of the expected shape (this includes unknown event types).
    InvalidJson,
    /// 400: an event breaks a bound (the message names the field path).
    InvalidEvent,
    /// 400: a bad query or header (e.g. `since`, `limit`).
    InvalidRequest,
    /// 400: a WebSocket client message that is not one of the known messages.
    InvalidMessage,
    /// 401: no token anywhere the request may carry one.
    MissingToken,
    /// 401: malformed token, unknown issuer or key, wrong algorithm, bad signature,
    /// wrong audience, not yet valid.
    InvalidToken,
    /// 401: the token's `exp` has passed.
    TokenExpired,
    /// 403: the token lacks the scope the route needs.
    InsufficientScope,
    /// 403: the token's `analyses` do not include this analysis.
    AnalysisNotGranted,
    /// 404: no such route.
    NotFound,
    /// 404 (node API): no analysis with this id on this node.
    AnalysisNotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 409: an event other than `started` before `started`.
    NotStarted,
    /// 409: a second `started`.
    AlreadyStarted,
    /// 409: an event after completed, failed or cancelled.
    AnalysisFinished,
    /// 409: a stage's progress lower than before.
    ProgressBackwards,
    /// 409: a stage not named in `started`.
    UnknownStage,
    /// 409 (node API): an analysis with this id was already submitted to this node.
    AnalysisExists,
    /// 409: a publish from a lease that is no longer current (or without `attempt` for
    /// a submitted analysis); nothing of the batch is stored.
    StaleAttempt,
    /// 400: the pool name of the URL or body breaks the id rule.
    InvalidPoolName,
    /// 413: the body is larger than 256 KiB (`MAX_BODY_BYTES`), an upload or an
    /// artifact over its cap; nothing is stored.
    PayloadTooLarge,
    /// 400: an upload's or artifact's content type, an artifact's name or its query.
    InvalidMedia,
    /// 411: an upload or artifact without `Content-Length`.
    LengthRequired,
    /// 409: an upload for an analysis that was submitted (or has events).
    AlreadySubmitted,
    /// 409: a submission with `"input": "upload"` and nothing uploaded.
    InputMissing,
    /// 403: an input fetch by a node that does not hold the analysis' lease.
    NotLeaseHolder,
    /// 409: an analysis holds 64 artifacts already.
    TooManyArtifacts,
    /// 409: an artifact name taken by other bytes.
    ArtifactExists,
    /// 416: a `Range` the object cannot satisfy.
    RangeNotSatisfiable,
    /// 429: slow down (see `Retry-After`).
    RateLimited,
    /// 429: the pool holds `STAGECAST_QUEUE_LIMIT` queued analyses (see `Retry-After`).
    QueueFull,
    /// 500: a bug or a storage failure at the edge.
    Internal,
    /// 503: the edge is restarting or overloaded; retry.
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status that goes with this code.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidAnalysisId | InvalidPoolName | InvalidJson | InvalidEvent | InvalidRequest
            | InvalidMessage | InvalidMedia => 400,
            MissingToken | InvalidToken | TokenExpired => 401,
            InsufficientScope | AnalysisNotGranted | NotLeaseHolder => 403,
            NotFound | AnalysisNotFound => 404,
            MethodNotAllowed => 405,
            NotStarted | AlreadyStarted | AnalysisFinished | ProgressBackwards | UnknownStage
            | AnalysisExists | StaleAttempt | AlreadySubmitted | InputMissing
            | TooManyArtifacts | ArtifactExists => 409,
            LengthRequired => 411,
            PayloadTooLarge => 413,
            RangeNotSatisfiable => 416,
            RateLimited | QueueFull => 429,
            Internal => 500,
            Unavailable => 503,
        }
    }
}

/// `{"error": {"code": "...", "message": "..."}}`, the body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of `ErrorBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(test, ts(optional_fields))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What a person can act on.
    pub message: String,
    /// For 409 (and event-level 400s): the index of the offending event in the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                index: None,
            },
        }
    }
}

/// An error that answers an HTTP request: its code, hence its status, and its body.
pub trait ApiError: std::error::Error {
    fn code(&self) -> ErrorCode;

    /// The index of the offending event, where there is one.
    fn index(&self) -> Option<u32> {
        None
    }

    fn status(&self) -> u16 {
        self.code().status()
    }

    /// The JSON body: the code, this error's `Display` as the message, and the index.
    fn body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.code(), self.to_string());
        body.error.index = self.index();
        body
    }
}
