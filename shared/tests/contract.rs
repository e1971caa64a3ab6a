//! The JSON shapes of protocol v1: field names, tags, optional fields, unknown input.

mod common;

use serde_json::{Value, json};
use stagecast_shared::api::{
    CancelResponse, ErrorBody, ErrorCode, PublishRequest, PublishResponse,
};
use stagecast_shared::close::{CloseCode, Reconnect};
use stagecast_shared::event::{Event, EventKind, Units};
use stagecast_shared::ids::{AnalysisId, IdError};
use stagecast_shared::stored::{
    EdgeEvent, EdgeEventKind, EventsPage, StoredEvent, StoredEventBody,
};
use stagecast_shared::ws::{
    ClientMessage, ClientMessageError, ServerMessage, bearer_from_subprotocols,
};

fn parse(v: Value) -> Event {
    serde_json::from_value(v).unwrap()
}

fn round_trip(event: &Event) -> Value {
    let v = serde_json::to_value(event).unwrap();
    assert_eq!(&serde_json::from_value::<Event>(v.clone()).unwrap(), event);
    v
}

#[test]
fn analysis_id_accepts_charset_and_lengths_1_to_64() {
    for id in ["a", "A-z_09", &"x".repeat(64)] {
        assert!(AnalysisId::parse(id).is_ok(), "{id}");
    }
}

#[test]
fn analysis_id_rejects_empty_too_long_and_bad_chars() {
    assert_eq!(AnalysisId::parse(""), Err(IdError::Empty));
    assert_eq!(
        AnalysisId::parse(&"x".repeat(65)),
        Err(IdError::TooLong { len: 65 })
    );
    for (id, found) in [
        ("a/b", '/'),
        ("a b", ' '),
        ("a.b", '.'),
        ("é", 'é'),
        ("a%2F", '%'),
    ] {
        assert_eq!(
            AnalysisId::parse(id),
            Err(IdError::BadChar { found }),
            "{id}"
        );
    }
}

#[test]
fn analysis_id_deserialize_checks_the_rule() {
    assert!(serde_json::from_str::<AnalysisId>("\"ok-1\"").is_ok());
    assert!(serde_json::from_str::<AnalysisId>("\"not ok\"").is_err());
}

#[test]
fn parses_started() {
    let e = parse(json!({"id": "e1", "type": "started", "ts": 5,
        "stages": [{"name": "decode", "weight": 1}, {"name": "infer", "weight": 2.5}],
        "total_frames": 100, "model": "m", "node": "gpu-7"}));
    assert_eq!(e.ts, Some(5));
    match &e.kind {
        EventKind::Started {
            stages,
            total_frames,
            model,
            node,
        } => {
            assert_eq!(stages.len(), 2);
            assert_eq!(stages[1].weight, 2.5);
            assert_eq!(
                (*total_frames, model.as_deref(), node.as_deref()),
                (Some(100), Some("m"), Some("gpu-7"))
            );
        }
        other => panic!("{other:?}"),
    }
    round_trip(&e);
}

#[test]
fn parses_progress() {
    let e = parse(json!({"id": "e2", "type": "progress", "stage": "decode",
        "stage_progress": 0.25, "frames_done": 25, "frames_total": 100, "message": "decoding"}));
    assert!(
        matches!(e.kind, EventKind::Progress { stage_progress, frames_done: Some(25), .. } if stage_progress == 0.25)
    );
    round_trip(&e);
}

#[test]
fn parses_partial_result() {
    let e = parse(json!({"id": "e3", "type": "partial_result", "regions": [
        {"frame": 3, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4, "units": "normalized", "score": 0.9, "label": "face"},
        {"frame": 4, "x": 10, "y": 20, "w": 30, "h": 40, "score": 0.5}]}));
    match &e.kind {
        EventKind::PartialResult { regions, scores } => {
            assert_eq!(*scores, None);
            assert_eq!(regions[0].units, Some(Units::Normalized));
            assert_eq!(regions[1].units, None);
            assert_eq!(regions[0].label.as_deref(), Some("face"));
        }
        other => panic!("{other:?}"),
    }
    round_trip(&e);
}

#[test]
fn parses_completed() {
    let e = parse(
        json!({"id": "e4", "type": "completed", "result": {"score": 0.8, "flagged": true,
        "frames_processed": 100, "total_frames": 100, "regions": [], "validation_required": false,
        "summary": "two faces"}}),
    );
    assert!(
        matches!(&e.kind, EventKind::Completed { result } if result.flagged && result.summary.as_deref() == Some("two faces"))
    );
    round_trip(&e);
}

#[test]
fn parses_failed() {
    let e = parse(json!({"id": "e5", "type": "failed",
        "error": {"code": "oom", "message": "out of memory", "retryable": true}}));
    assert!(
        matches!(&e.kind, EventKind::Failed { error } if error.retryable && error.code == "oom")
    );
    round_trip(&e);
}

#[test]
fn parses_cancelled_with_and_without_reason() {
    let e = parse(json!({"id": "e6", "type": "cancelled", "reason": "asked"}));
    assert!(matches!(&e.kind, EventKind::Cancelled { reason: Some(r) } if r == "asked"));
    let e = parse(json!({"id": "e7", "type": "cancelled"}));
    assert!(matches!(&e.kind, EventKind::Cancelled { reason: None }));
    round_trip(&e);
}

#[test]
fn parses_heartbeat_with_and_without_metrics() {
    let e = parse(
        json!({"id": "e8", "type": "heartbeat", "metrics": {"gpu_util": 0.5,
        "gpu_mem_used_bytes": 1, "gpu_mem_total_bytes": 2, "cpu_util": 0.1, "rss_bytes": 3, "queue_depth": 4}}),
    );
    assert!(
        matches!(&e.kind, EventKind::Heartbeat { metrics: Some(m) } if m.queue_depth == Some(4))
    );
    round_trip(&e);
    let e = parse(json!({"id": "e9", "type": "heartbeat"}));
    assert!(matches!(&e.kind, EventKind::Heartbeat { metrics: None }));
}

#[test]
fn unknown_event_type_is_a_clear_error() {
    let err = serde_json::from_value::<Event>(json!({"id": "x", "type": "exploded"})).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exploded") && msg.contains("started"), "{msg}");
}

#[test]
fn missing_type_is_an_error() {
    assert!(serde_json::from_value::<Event>(json!({"id": "x"})).is_err());
}

#[test]
fn unknown_fields_are_ignored() {
    let e = parse(
        json!({"id": "e", "type": "progress", "stage": "s", "stage_progress": 1,
        "future_field": {"nested": true}, "priority": 3}),
    );
    assert!(matches!(e.kind, EventKind::Progress { .. }));
    let r: PublishResponse = serde_json::from_value(json!({"accepted": 1, "duplicates": 0,
        "last_seq": 1, "cancel_requested": false, "new": 1}))
    .unwrap();
    assert_eq!(r.accepted, 1);
}

#[test]
fn optional_fields_are_skipped_when_none() {
    let v = round_trip(&common::progress("p", "decode", 0.5));
    assert_eq!(
        v,
        json!({"id": "p", "type": "progress", "stage": "decode", "stage_progress": 0.5})
    );
    let v = serde_json::to_value(common::region(1)).unwrap();
    assert!(v.get("units").is_none() && v.get("label").is_none());
}

#[test]
fn publish_request_and_response_shapes() {
    let req: PublishRequest = serde_json::from_value(json!({"events": [
        {"id": "a", "type": "heartbeat"}]}))
    .unwrap();
    assert_eq!(req.events.len(), 1);
    let resp = PublishResponse {
        accepted: 2,
        duplicates: 1,
        last_seq: 9,
        cancel_requested: true,
    };
    assert_eq!(
        serde_json::to_value(resp).unwrap(),
        json!({"accepted": 2, "duplicates": 1, "last_seq": 9, "cancel_requested": true})
    );
    assert_eq!(
        serde_json::to_value(CancelResponse {
            cancel_requested: true
        })
        .unwrap(),
        json!({"cancel_requested": true})
    );
}

#[test]
fn stored_event_shapes_for_node_and_edge_events() {
    let node = StoredEvent {
        seq: 1,
        ts: 1000,
        event: StoredEventBody::Node(common::heartbeat("h")),
        overall_progress: 0.5,
        eta_ms: Some(20),
    };
    let v = serde_json::to_value(&node).unwrap();
    assert_eq!(
        v,
        json!({"seq": 1, "ts": 1000, "event": {"id": "h", "type": "heartbeat"},
        "overall_progress": 0.5, "eta_ms": 20})
    );
    assert_eq!(serde_json::from_value::<StoredEvent>(v).unwrap(), node);

    let edge = StoredEvent {
        seq: 2,
        ts: 1001,
        event: StoredEventBody::Edge(EdgeEvent {
            id: "edge:2".into(),
            kind: EdgeEventKind::CancelRequested {
                by: "user-1".into(),
            },
        }),
        overall_progress: 0.5,
        eta_ms: None,
    };
    let v = serde_json::to_value(&edge).unwrap();
    assert_eq!(
        v,
        json!({"seq": 2, "ts": 1001,
        "event": {"id": "edge:2", "type": "cancel_requested", "by": "user-1"}, "overall_progress": 0.5})
    );
    assert_eq!(serde_json::from_value::<StoredEvent>(v).unwrap(), edge);

    let stalled: StoredEventBody =
        serde_json::from_value(json!({"id": "edge:3", "type": "stalled", "silent_ms": 60000}))
            .unwrap();
    assert!(matches!(
        stalled,
        StoredEventBody::Edge(EdgeEvent {
            kind: EdgeEventKind::Stalled { silent_ms: 60000 },
            ..
        })
    ));
    assert_eq!(stalled.id(), "edge:3");
}

#[test]
fn stored_event_body_unknown_type_is_a_clear_error() {
    let err =
        serde_json::from_value::<StoredEventBody>(json!({"id": "x", "type": "nope"})).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn events_page_shape() {
    let page = EventsPage {
        events: vec![],
        last_seq: 7,
    };
    assert_eq!(
        serde_json::to_value(page).unwrap(),
        json!({"events": [], "last_seq": 7})
    );
}

#[test]
fn error_body_shape_and_statuses() {
    let body = ErrorBody::new(ErrorCode::PayloadTooLarge, "too big");
    assert_eq!(
        serde_json::to_value(&body).unwrap(),
        json!({"error": {"code": "payload_too_large", "message": "too big"}})
    );
    for (code, status) in [
        (ErrorCode::InvalidEvent, 400),
        (ErrorCode::InvalidAnalysisId, 400),
        (ErrorCode::InvalidToken, 401),
        (ErrorCode::TokenExpired, 401),
        (ErrorCode::MissingToken, 401),
        (ErrorCode::InsufficientScope, 403),
        (ErrorCode::AnalysisNotGranted, 403),
        (ErrorCode::ProgressBackwards, 409),
        (ErrorCode::AnalysisFinished, 409),
        (ErrorCode::PayloadTooLarge, 413),
        (ErrorCode::RateLimited, 429),
        (ErrorCode::AnalysisNotFound, 404),
        (ErrorCode::AnalysisExists, 409),
    ] {
        assert_eq!(code.status(), status, "{code:?}");
    }
}

#[test]
fn server_messages_shapes() {
    let snapshot = common::analysis().snapshot();
    let hello = ServerMessage::Hello {
        analysis_id: "a-1".into(),
        snapshot: snapshot.clone(),
        server_ts: 5,
        heartbeat_ms: 30000,
        resumed_from: None,
        recovered: true,
    };
    let v = serde_json::to_value(&hello).unwrap();
    assert_eq!(v["type"], "hello");
    assert_eq!(
        v["resumed_from"],
        Value::Null,
        "resumed_from is sent as null, not left out"
    );
    assert_eq!(v["snapshot"]["status"], "pending");
    assert_eq!(serde_json::from_value::<ServerMessage>(v).unwrap(), hello);

    let event = ServerMessage::Event(StoredEvent {
        seq: 3,
        ts: 9,
        event: StoredEventBody::Node(common::heartbeat("h")),
        overall_progress: 0.0,
        eta_ms: None,
    });
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"type": "event", "seq": 3, "ts": 9,
        "event": {"id": "h", "type": "heartbeat"}, "overall_progress": 0.0})
    );

    assert_eq!(
        serde_json::to_value(ServerMessage::Pong).unwrap(),
        json!({"type": "pong"})
    );
    assert_eq!(
        serde_json::to_value(ServerMessage::Error {
            code: ErrorCode::InvalidMessage,
            message: "m".into()
        })
        .unwrap(),
        json!({"type": "error", "code": "invalid_message", "message": "m"})
    );
}

#[test]
fn client_messages_parse() {
    assert_eq!(
        ClientMessage::parse(r#"{"type":"ping"}"#).unwrap(),
        ClientMessage::Ping
    );
    assert_eq!(
        ClientMessage::parse(r#"{"type":"cancel","extra":1}"#).unwrap(),
        ClientMessage::Cancel
    );
    assert_eq!(
        ClientMessage::parse(r#"{"type":"snapshot"}"#).unwrap(),
        ClientMessage::Snapshot
    );
    let err = ClientMessage::parse(r#"{"type":"dance"}"#).unwrap_err();
    assert!(matches!(
        err.reply(),
        Ok(ServerMessage::Error {
            code: ErrorCode::InvalidMessage,
            ..
        })
    ));
}

#[test]
fn client_message_over_4_kib_closes_with_4009() {
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4096));
    let err = ClientMessage::parse(&big).unwrap_err();
    assert!(matches!(err, ClientMessageError::TooBig { .. }));
    assert_eq!(err.reply().unwrap_err().code(), 4009);
}

#[test]
fn bearer_token_from_subprotocol_header() {
    assert_eq!(
        bearer_from_subprotocols("stagecast.v1, bearer.abc.def.ghi"),
        Some("abc.def.ghi")
    );
    assert_eq!(
        bearer_from_subprotocols("bearer.abc, stagecast.v1"),
        Some("abc")
    );
    assert_eq!(
        bearer_from_subprotocols("bearer.abc"),
        None,
        "stagecast.v1 must be offered"
    );
    assert_eq!(bearer_from_subprotocols("stagecast.v1"), None);
    assert_eq!(bearer_from_subprotocols("stagecast.v1, bearer."), None);
}

#[test]
fn close_codes_numbers_reasons_and_advice() {
    let expected = [
        (CloseCode::InvalidToken, 4001, Reconnect::WithNewToken),
        (CloseCode::Forbidden, 4003, Reconnect::Never),
        (CloseCode::BadRequest, 4400, Reconnect::Never),
        (CloseCode::TooFast, 4008, Reconnect::WithBackoff),
        (CloseCode::TooBig, 4009, Reconnect::WithoutResending),
        (
            CloseCode::TokenExpired,
            4010,
            Reconnect::WithNewTokenSinceLastSeq,
        ),
        (CloseCode::Replaced, 4409, Reconnect::Never),
        (CloseCode::Restarting, 1012, Reconnect::SinceLastSeq),
        (CloseCode::TryAgainLater, 1013, Reconnect::WithBackoff),
        (CloseCode::Normal, 1000, Reconnect::Never),
    ];
    assert_eq!(expected.len(), CloseCode::ALL.len());
    for (close, code, advice) in expected {
        assert_eq!(close.code(), code);
        assert_eq!(CloseCode::from_code(code), Some(close));
        assert_eq!(close.reconnect(), advice);
        assert!(!close.reason().is_empty() && close.reason().len() <= 123);
    }
    assert_eq!(CloseCode::from_code(1006), None);
}

#[test]
fn close_code_for_upgrade_errors() {
    assert_eq!(
        CloseCode::for_error(ErrorCode::InvalidToken),
        CloseCode::InvalidToken
    );
    assert_eq!(
        CloseCode::for_error(ErrorCode::TokenExpired),
        CloseCode::InvalidToken
    );
    assert_eq!(
        CloseCode::for_error(ErrorCode::AnalysisNotGranted),
        CloseCode::Forbidden
    );
    assert_eq!(
        CloseCode::for_error(ErrorCode::InvalidAnalysisId),
        CloseCode::BadRequest
    );
    assert_eq!(
        CloseCode::for_error(ErrorCode::RateLimited),
        CloseCode::TooFast
    );
    assert_eq!(
        CloseCode::for_error(ErrorCode::Unavailable),
        CloseCode::Restarting
    );
}
