//! Bounds on publish bodies: each violation names its field path and rule.

mod common;

use common::*;
use serde_json::json;
use stagecast_shared::api::{ApiError, ErrorCode};
use stagecast_shared::event::{Event, EventKind, FrameScore, Metrics, Units};
use stagecast_shared::limits::*;
use stagecast_shared::validate::{
    PublishError, Rule, ValidationError, parse_publish_body, validate_event,
};

fn body(events: &[Event]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

fn invalid(events: &[Event]) -> ValidationError {
    match parse_publish_body(&body(events)) {
        Err(PublishError::Invalid(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn path_of(event: Event) -> String {
    validate_event(&event, 0).unwrap_err().path
}

#[test]
fn valid_body_parses() {
    let req = parse_publish_body(&body(&[
        started("s", &[("a", 1.0)]),
        progress("p", "a", 0.5),
    ]))
    .unwrap();
    assert_eq!(req.events.len(), 2);
}

#[test]
fn batch_needs_at_least_one_event() {
    let e = invalid(&[]);
    assert_eq!(
        (e.path.as_str(), &e.rule),
        ("events", &Rule::TooFew { min: 1 })
    );
    assert_eq!(e.code(), ErrorCode::InvalidEvent);
    assert_eq!(e.status(), 400);
}

#[test]
fn batch_of_100_events_is_accepted_101_is_not() {
    let events: Vec<Event> = (0..100).map(|i| heartbeat(&format!("h{i}"))).collect();
    assert!(parse_publish_body(&body(&events)).is_ok());
    let events: Vec<Event> = (0..101).map(|i| heartbeat(&format!("h{i}"))).collect();
    assert_eq!(invalid(&events).rule, Rule::TooMany { max: 100, len: 101 });
}

#[test]
fn body_over_256_kib_is_413() {
    let mut big = br#"{"events":[{"id":"a","type":"heartbeat"}],"pad":""#.to_vec();
    big.resize(MAX_BODY_BYTES + 1, b' ');
    let err = parse_publish_body(&big).unwrap_err();
    assert!(matches!(err, PublishError::TooLarge { len } if len == MAX_BODY_BYTES + 1));
    assert_eq!(
        (err.code(), err.status()),
        (ErrorCode::PayloadTooLarge, 413)
    );
}

#[test]
fn body_of_exactly_256_kib_is_read() {
    let mut exact = br#"{"events":[{"id":"a","type":"heartbeat"}]}"#.to_vec();
    exact.resize(MAX_BODY_BYTES, b' ');
    assert!(parse_publish_body(&exact).is_ok());
}

#[test]
fn malformed_json_is_400_invalid_json() {
    for bad in [&b"{"[..], b"[]", b"{\"events\": 3}", b"\xff"] {
        let err = parse_publish_body(bad).unwrap_err();
        assert_eq!((err.code(), err.status()), (ErrorCode::InvalidJson, 400));
    }
}

#[test]
fn unknown_event_type_in_body_names_it() {
    let err = parse_publish_body(br#"{"events":[{"id":"a","type":"teleported"}]}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidJson);
    assert!(err.to_string().contains("teleported"), "{err}");
}

#[test]
fn event_id_follows_the_id_rule() {
    assert_eq!(path_of(heartbeat("")), "events[0].id");
    assert_eq!(path_of(heartbeat(&"a".repeat(65))), "events[0].id");
    assert_eq!(path_of(heartbeat("a b")), "events[0].id");
    assert!(validate_event(&heartbeat(&"a".repeat(64)), 0).is_ok());
}

#[test]
fn path_names_the_event_index_and_field() {
    let mut bad = partial("p", 10);
    if let EventKind::PartialResult { regions, .. } = &mut bad.kind {
        regions[7].w = -1.0;
    }
    let events = [heartbeat("a"), heartbeat("b"), heartbeat("c"), bad];
    let e = invalid(&events);
    assert_eq!(e.path, "events[3].regions[7].w");
    assert_eq!(e.rule, Rule::Negative { value: -1.0 });
    assert_eq!(e.index, Some(3));
    assert_eq!(
        e.to_string(),
        "events[3].regions[7].w: must be >= 0, got -1"
    );
    assert_eq!(PublishError::Invalid(e).body().error.index, Some(3));
}

#[test]
fn ts_must_be_non_negative() {
    let mut e = heartbeat("h");
    e.ts = Some(-1);
    assert_eq!(path_of(e), "events[0].ts");
}

#[test]
fn started_needs_1_to_64_stages() {
    assert_eq!(
        validate_event(&started("s", &[]), 0).unwrap_err().rule,
        Rule::TooFew { min: 1 }
    );
    let names: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let stages: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 1.0)).collect();
    let err = validate_event(&started("s", &stages), 0).unwrap_err();
    assert_eq!(
        (err.path.as_str(), err.rule),
        ("events[0].stages", Rule::TooMany { max: 64, len: 65 })
    );
    assert!(validate_event(&started("s", &stages[..64]), 0).is_ok());
}

#[test]
fn stage_names_must_be_unique() {
    let err = validate_event(&started("s", &[("a", 1.0), ("b", 1.0), ("a", 2.0)]), 0).unwrap_err();
    assert_eq!(err.path, "events[0].stages[2].name");
    assert_eq!(err.rule, Rule::DuplicateStage { name: "a".into() });
}

#[test]
fn stage_names_are_non_empty_and_bounded() {
    assert_eq!(
        validate_event(&started("s", &[("", 1.0)]), 0)
            .unwrap_err()
            .rule,
        Rule::Empty
    );
    let long = "é".repeat(MAX_NAME_LEN + 1);
    let err = validate_event(&started("s", &[(&long, 1.0)]), 0).unwrap_err();
    assert_eq!(
        err.rule,
        Rule::TooLong {
            max: MAX_NAME_LEN,
            len: MAX_NAME_LEN + 1
        }
    );
    // Characters are counted, not bytes.
    assert!(validate_event(&started("s", &[(&"é".repeat(MAX_NAME_LEN), 1.0)]), 0).is_ok());
}

#[test]
fn stage_weights_must_be_positive_and_finite() {
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_STAGE_WEIGHT * 2.0] {
        let err = validate_event(&started("s", &[("a", w)]), 0).unwrap_err();
        assert_eq!(err.path, "events[0].stages[0].weight", "{w}");
    }
    assert!(validate_event(&started("s", &[("a", 1e-9)]), 0).is_ok());
}

#[test]
fn stage_progress_must_be_in_0_to_1() {
    for p in [-0.1, 1.0001, f64::NAN, f64::NEG_INFINITY] {
        assert_eq!(
            path_of(progress("p", "a", p)),
            "events[0].stage_progress",
            "{p}"
        );
    }
    for p in [0.0, 0.5, 1.0] {
        assert!(validate_event(&progress("p", "a", p), 0).is_ok());
    }
}

#[test]
fn frames_done_must_not_exceed_frames_total() {
    let mut e = progress("p", "a", 0.5);
    if let EventKind::Progress {
        frames_done,
        frames_total,
        ..
    } = &mut e.kind
    {
        *frames_done = Some(11);
        *frames_total = Some(10);
    }
    assert_eq!(path_of(e), "events[0].frames_done");
}

#[test]
fn progress_message_is_bounded() {
    let mut e = progress("p", "a", 0.5);
    if let EventKind::Progress { message, .. } = &mut e.kind {
        *message = Some("m".repeat(MAX_MESSAGE_LEN + 1));
    }
    assert_eq!(path_of(e), "events[0].message");
}

#[test]
fn regions_are_capped_at_1000_per_event() {
    assert!(validate_event(&partial("p", MAX_REGIONS_PER_EVENT), 0).is_ok());
    let err = validate_event(&partial("p", MAX_REGIONS_PER_EVENT + 1), 0).unwrap_err();
    assert_eq!(
        err.rule,
        Rule::TooMany {
            max: 1000,
            len: 1001
        }
    );
    let err = validate_event(&completed("c", MAX_REGIONS_PER_EVENT + 1), 0).unwrap_err();
    assert_eq!(err.path, "events[0].result.regions");
}

#[test]
fn region_coordinates_are_finite_and_non_negative() {
    for (field, value) in [("x", -0.5), ("y", f64::NAN), ("h", f64::INFINITY)] {
        let mut e = partial("p", 1);
        if let EventKind::PartialResult { regions, .. } = &mut e.kind {
            match field {
                "x" => regions[0].x = value,
                "y" => regions[0].y = value,
                _ => regions[0].h = value,
            }
        }
        assert_eq!(path_of(e), format!("events[0].regions[0].{field}"));
    }
}

#[test]
fn normalized_regions_stay_within_0_to_1() {
    let mut e = partial("p", 1);
    if let EventKind::PartialResult { regions, .. } = &mut e.kind {
        regions[0].units = Some(Units::Normalized);
        regions[0].x = 0.5;
        regions[0].y = 0.5;
        regions[0].w = 1.5;
        regions[0].h = 0.5;
    }
    assert_eq!(path_of(e), "events[0].regions[0].w");
}

#[test]
fn region_score_and_label_are_bounded() {
    let mut e = partial("p", 2);
    if let EventKind::PartialResult { regions, .. } = &mut e.kind {
        regions[1].score = 1.5;
    }
    assert_eq!(path_of(e), "events[0].regions[1].score");
    let mut e = partial("p", 1);
    if let EventKind::PartialResult { regions, .. } = &mut e.kind {
        regions[0].label = Some("l".repeat(MAX_LABEL_LEN + 1));
    }
    assert_eq!(path_of(e), "events[0].regions[0].label");
}

#[test]
fn landmarks_and_frame_scores_are_bounded() {
    let with = |points: Vec<[f64; 2]>, scores: Vec<FrameScore>| {
        let mut e = partial("p", 1);
        if let EventKind::PartialResult { regions, scores: s } = &mut e.kind {
            regions[0].points = Some(points);
            *s = Some(scores);
        }
        e
    };
    let score = |score| FrameScore { frame: 0, score };
    assert!(validate_event(&with(vec![[1.0, 2.0]; 5], vec![score(0.5); 8]), 0).is_ok());
    let too_many = with(vec![[1.0, 2.0]; MAX_POINTS_PER_REGION + 1], vec![]);
    assert_eq!(path_of(too_many), "events[0].regions[0].points");
    assert_eq!(
        path_of(with(vec![[1.0, -2.0]], vec![])),
        "events[0].regions[0].points[0]"
    );
    assert_eq!(
        path_of(with(vec![], vec![score(0.1), score(1.5)])),
        "events[0].scores[1].score"
    );
    let scores = vec![score(0.1); MAX_SCORES_PER_EVENT + 1];
    assert_eq!(path_of(with(vec![], scores)), "events[0].scores");
    // both are optional on the wire, and parse as sent
    let e: Event = serde_json::from_value(json!({"id": "p", "type": "partial_result",
        "regions": [{"frame": 1, "x": 1, "y": 1, "w": 2, "h": 2, "score": 0.9,
                     "points": [[1.5, 1.5], [2, 2]]}],
        "scores": [{"frame": 1, "score": 0.9}]}))
    .unwrap();
    assert!(validate_event(&e, 0).is_ok());
    assert_eq!(
        serde_json::to_value(&e).unwrap()["regions"][0]["points"],
        json!([[1.5, 1.5], [2.0, 2.0]])
    );
}

#[test]
fn result_score_and_frames_are_checked() {
    let mut e = completed("c", 0);
    if let EventKind::Completed { result } = &mut e.kind {
        result.score = -0.1;
    }
    assert_eq!(path_of(e), "events[0].result.score");
    let mut e = completed("c", 0);
    if let EventKind::Completed { result } = &mut e.kind {
        result.frames_processed = 11;
    }
    assert_eq!(path_of(e), "events[0].result.frames_processed");
    let mut e = completed("c", 0);
    if let EventKind::Completed { result } = &mut e.kind {
        result.summary = Some("s".repeat(MAX_SUMMARY_LEN + 1));
    }
    assert_eq!(path_of(e), "events[0].result.summary");
    for (width, height, path) in [
        (Some(0), Some(360), "events[0].result.frame_width"),
        (
            Some(640),
            Some(MAX_FRAME_SIDE + 1),
            "events[0].result.frame_height",
        ),
    ] {
        let mut e = completed("c", 0);
        if let EventKind::Completed { result } = &mut e.kind {
            (result.frame_width, result.frame_height) = (width, height);
        }
        assert_eq!(path_of(e), path);
    }
}

#[test]
fn failed_error_code_and_message_are_bounded() {
    let mut e = failed("f");
    if let EventKind::Failed { error } = &mut e.kind {
        error.code = String::new();
    }
    assert_eq!(path_of(e), "events[0].error.code");
    let mut e = failed("f");
    if let EventKind::Failed { error } = &mut e.kind {
        error.message = "m".repeat(MAX_MESSAGE_LEN + 1);
    }
    assert_eq!(path_of(e), "events[0].error.message");
}

#[test]
fn cancelled_reason_is_bounded() {
    let e = event(
        "c",
        EventKind::Cancelled {
            reason: Some("r".repeat(MAX_MESSAGE_LEN + 1)),
        },
    );
    assert_eq!(path_of(e), "events[0].reason");
}

#[test]
fn heartbeat_utilizations_are_fractions() {
    let e = event(
        "h",
        EventKind::Heartbeat {
            metrics: Some(Metrics {
                gpu_util: Some(85.0),
                ..Metrics::default()
            }),
        },
    );
    assert_eq!(path_of(e), "events[0].metrics.gpu_util");
    let e = event(
        "h",
        EventKind::Heartbeat {
            metrics: Some(Metrics {
                gpu_mem_used_bytes: Some(2),
                gpu_mem_total_bytes: Some(1),
                ..Metrics::default()
            }),
        },
    );
    assert_eq!(path_of(e), "events[0].metrics.gpu_mem_used_bytes");
}

#[test]
fn numbers_out_of_json_range_are_rejected() {
    let err = parse_publish_body(
        br#"{"events":[{"id":"a","type":"progress","stage":"s","stage_progress":1e400}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidJson);
    let err = parse_publish_body(br#"{"events":[{"id":"a","type":"partial_result","regions":[{"frame":-1,"x":0,"y":0,"w":0,"h":0,"score":0}]}]}"#)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidJson);
}
