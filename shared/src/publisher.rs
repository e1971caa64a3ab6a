//! The node's publish socket (`GET /v1/analyses/{id}/publish`): the batches of
//! `POST /v1/analyses/{id}/events` as messages, each answered by a reply naming its
//! request. A message bills a twentieth of a request on Cloudflare.

use serde::{Deserialize, Serialize};

use crate::api::{ApiError, ErrorBody, ErrorDetail, PublishRequest, PublishResponse};
use crate::limits::MAX_BODY_BYTES;
use crate::validate::{PublishError, validate_request};

/// A message may carry a full publish body and its envelope.
pub const MAX_PUBLISH_MESSAGE_BYTES: usize = MAX_BODY_BYTES + 1024;

/// Node -> edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PublisherMessage {
    /// One batch, the body of `POST /v1/analyses/{id}/events`.
    Publish { request: u64, batch: PublishRequest },
}

/// Edge -> node: the answer to one `publish`, in the order they came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PublisherReply {
    /// What a 200 would have said.
    Published {
        request: u64,
        #[serde(flatten)]
        response: PublishResponse,
    },
    /// What the error answer would have said: its status, its body's `error` and, for
    /// 429, how long to wait. `request` is null when the message was not readable.
    Refused {
        request: Option<u64>,
        status: u16,
        error: ErrorDetail,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl PublisherReply {
    /// The refusal of `request` with `body`.
    pub fn refused(request: Option<u64>, body: ErrorBody, retry_after_ms: Option<u64>) -> Self {
        Self::Refused {
            request,
            status: body.error.code.status(),
            error: body.error,
            retry_after_ms,
        }
    }
}

/// The text of a `publish` message around `body`, a publish body already serialized.
pub fn publish_message(request: u64, body: &str) -> String {
    format!(r#"{{"type":"publish","request":{request},"batch":{body}}}"#)
}

/// A message that is not a batch the edge can take: the refusal to send back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct MessageError {
    /// The message's request, when it could be read.
    pub request: Option<u64>,
    pub error: PublishError,
}

impl MessageError {
    pub fn reply(&self) -> PublisherReply {
        PublisherReply::refused(self.request, self.error.body(), None)
    }
}

/// Parses and checks one message as [`crate::parse_publish_body`] does a body: size, then
/// JSON, then every bound of its batch.
pub fn parse_publish_message(text: &str) -> Result<(u64, PublishRequest), MessageError> {
    let unreadable = |error| MessageError {
        request: None,
        error,
    };
    if text.len() > MAX_PUBLISH_MESSAGE_BYTES {
        return Err(unreadable(PublishError::TooLarge { len: text.len() }));
    }
    let PublisherMessage::Publish { request, batch } =
        serde_json::from_str(text).map_err(|e| unreadable(e.into()))?;
    validate_request(&batch).map_err(|e| MessageError {
        request: Some(request),
        error: e.into(),
    })?;
    Ok((request, batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ErrorCode;

    const BATCH: &str = r#"{"attempt":2,"events":[{"id":"e1","type":"started","stages":[{"name":"decode","weight":1}]}]}"#;

    #[test]
    fn a_message_carries_its_body_and_request() {
        let (request, batch) = parse_publish_message(&publish_message(7, BATCH)).unwrap();
        assert_eq!(request, 7);
        assert_eq!(
            batch,
            serde_json::from_str::<PublishRequest>(BATCH).unwrap()
        );
    }

    #[test]
    fn bad_messages_are_refused_as_their_bodies_would_be() {
        let refusal = |text: &str| {
            let e = parse_publish_message(text).unwrap_err();
            (e.request, e.error.code())
        };
        assert_eq!(refusal("nonsense"), (None, ErrorCode::InvalidJson));
        assert_eq!(
            refusal(r#"{"type":"ping","request":1}"#),
            (None, ErrorCode::InvalidJson)
        );
        assert_eq!(
            refusal(&publish_message(3, r#"{"events":[]}"#)),
            (Some(3), ErrorCode::InvalidEvent)
        );
        let big = publish_message(
            4,
            &format!(
                r#"{{"events":[],"pad":"{}"}}"#,
                "x".repeat(MAX_PUBLISH_MESSAGE_BYTES)
            ),
        );
        assert_eq!(refusal(&big), (None, ErrorCode::PayloadTooLarge));
    }

    #[test]
    fn replies_read_back_with_the_status_of_their_code() {
        let refused = PublisherReply::refused(
            Some(5),
            ErrorBody::new(ErrorCode::RateLimited, "slow down"),
            Some(1200),
        );
        let text = serde_json::to_string(&refused).unwrap();
        assert!(text.contains(r#""type":"refused""#) && text.contains(r#""status":429"#));
        assert_eq!(
            serde_json::from_str::<PublisherReply>(&text).unwrap(),
            refused
        );
        let published = PublisherReply::Published {
            request: 6,
            response: PublishResponse {
                accepted: 1,
                duplicates: 0,
                last_seq: 9,
                cancel_requested: false,
            },
        };
        let text = serde_json::to_string(&published).unwrap();
        assert!(text.contains(r#""last_seq":9"#), "{text}");
        assert_eq!(
            serde_json::from_str::<PublisherReply>(&text).unwrap(),
            published
        );
    }
}
