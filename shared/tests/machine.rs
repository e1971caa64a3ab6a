//! The order rules, progress, ETA, cancel, stall and replay of one analysis.

mod common;

use std::collections::HashSet;

use common::*;
use stagecast_shared::api::{ApiError, ErrorCode};
use stagecast_shared::machine::{ReplayError, TransitionKind};
use stagecast_shared::stored::{EdgeEventKind, StoredEventBody};
use stagecast_shared::{Analysis, AnalysisId, Status, StoredEvent};

const T0: i64 = 1_700_000_000_000;

fn code(
    result: Result<stagecast_shared::BatchOutcome, stagecast_shared::TransitionError>,
) -> (usize, ErrorCode) {
    let err = result.unwrap_err();
    assert_eq!(err.status(), err.code().status());
    (err.index, err.code())
}

#[test]
fn new_analysis_is_pending_and_empty() {
    let s = analysis().snapshot();
    assert_eq!(s.status, Status::Pending);
    assert_eq!(
        (s.last_seq, s.overall_progress, s.eta_ms, s.regions_count),
        (0, 0.0, None, 0)
    );
    assert!(s.stages.is_empty() && !s.cancel_requested);
}

#[test]
fn started_makes_it_running_and_declares_stages() {
    let a = running(T0);
    let s = a.snapshot();
    assert_eq!(s.status, Status::Running);
    assert_eq!(s.started_ts, Some(T0));
    assert_eq!(
        s.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["decode", "infer"]
    );
    assert_eq!(a.last_seq(), 1);
}

#[test]
fn events_before_started_are_refused() {
    for e in [
        progress("p", "decode", 0.1),
        heartbeat("h"),
        partial("r", 1),
        completed("c", 0),
        failed("f"),
        cancelled("x"),
    ] {
        let mut a = analysis();
        assert_eq!(code(apply(&mut a, vec![e], T0)), (0, ErrorCode::NotStarted));
    }
}

#[test]
fn second_started_is_refused() {
    let mut a = running(T0);
    let err = apply(
        &mut a,
        vec![heartbeat("h"), started("s2", &[("x", 1.0)])],
        T0,
    )
    .unwrap_err();
    assert_eq!(
        (err.index, err.code(), err.status()),
        (1, ErrorCode::AlreadyStarted, 409)
    );
}

#[test]
fn progress_partial_result_and_heartbeat_are_allowed_while_running() {
    let mut a = running(T0);
    let out = apply(
        &mut a,
        vec![
            progress("p", "decode", 0.5),
            partial("r", 2),
            heartbeat("h"),
        ],
        T0 + 10,
    )
    .unwrap();
    assert_eq!(out.stored.len(), 3);
    assert_eq!(a.snapshot().regions_count, 2);
}

#[test]
fn each_terminal_event_ends_the_analysis() {
    for (e, status) in [
        (completed("t", 0), Status::Completed),
        (failed("t"), Status::Failed),
        (cancelled("t"), Status::Cancelled),
    ] {
        let mut a = running(T0);
        apply(&mut a, vec![e], T0 + 5).unwrap();
        assert_eq!(a.status(), status);
        assert_eq!(a.terminal_ts(), Some(T0 + 5));
    }
}

#[test]
fn nothing_is_accepted_after_a_terminal_event() {
    for terminal in [completed("t", 0), failed("t"), cancelled("t")] {
        let mut a = running(T0);
        apply(&mut a, vec![terminal], T0).unwrap();
        for e in [
            heartbeat("h"),
            progress("p", "decode", 1.0),
            completed("c2", 0),
            started("s2", &[("a", 1.0)]),
        ] {
            let err = apply(&mut a, vec![e], T0).unwrap_err();
            assert_eq!(err.code(), ErrorCode::AnalysisFinished);
            assert!(matches!(err.kind, TransitionKind::Finished { .. }));
        }
    }
}

#[test]
fn terminal_then_more_in_the_same_batch_is_refused() {
    let mut a = running(T0);
    assert_eq!(
        code(apply(&mut a, vec![completed("c", 0), heartbeat("h")], T0)),
        (1, ErrorCode::AnalysisFinished)
    );
    assert_eq!(a.status(), Status::Running);
}

#[test]
fn stage_progress_never_goes_backwards() {
    let mut a = running(T0);
    apply(&mut a, vec![progress("p1", "decode", 0.6)], T0).unwrap();
    let err = apply(&mut a, vec![progress("p2", "decode", 0.5)], T0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProgressBackwards);
    assert!(err.to_string().contains("decode"), "{err}");
    // Equal progress is not backwards, and another stage has its own progress.
    apply(
        &mut a,
        vec![progress("p3", "decode", 0.6), progress("p4", "infer", 0.1)],
        T0,
    )
    .unwrap();
}

#[test]
fn unknown_stage_is_refused() {
    let mut a = running(T0);
    let err = apply(&mut a, vec![progress("p", "upload", 0.1)], T0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownStage);
    assert_eq!(err.body().error.index, Some(0));
}

#[test]
fn invalid_event_is_refused_with_400() {
    let mut a = running(T0);
    let err = apply(
        &mut a,
        vec![heartbeat("ok"), progress("p", "decode", 2.0)],
        T0,
    )
    .unwrap_err();
    assert_eq!(
        (err.index, err.code(), err.status()),
        (1, ErrorCode::InvalidEvent, 400)
    );
    assert!(
        err.to_string().starts_with("events[1].stage_progress"),
        "{err}"
    );
}

#[test]
fn a_failed_batch_changes_nothing() {
    let mut a = running(T0);
    apply(&mut a, vec![progress("p1", "decode", 0.3)], T0).unwrap();
    let before = a.clone();
    let batch = vec![
        progress("p2", "decode", 0.9),
        partial("r", 3),
        completed("c", 1),
        heartbeat("h"),
    ];
    assert!(apply(&mut a, batch, T0 + 100).is_err());
    assert_eq!(a, before);
    // The same ids are still free afterwards.
    apply(&mut a, vec![progress("p2", "decode", 0.9)], T0 + 100).unwrap();
}

#[test]
fn duplicates_within_a_batch_are_dropped() {
    let mut a = running(T0);
    let out = apply(
        &mut a,
        vec![
            progress("p", "decode", 0.2),
            progress("p", "decode", 0.1),
            heartbeat("h"),
            heartbeat("h"),
        ],
        T0,
    )
    .unwrap();
    assert_eq!((out.stored.len(), out.duplicates), (2, 2));
    // The dropped repeat was never checked against the order (0.1 < 0.2).
    assert_eq!(a.snapshot().stages[0].progress, 0.2);
}

#[test]
fn already_stored_ids_are_dropped_as_duplicates() {
    let mut a = analysis();
    let first = apply(
        &mut a,
        vec![
            started("s", &[("decode", 1.0)]),
            progress("p", "decode", 0.5),
        ],
        T0,
    )
    .unwrap();
    let known: HashSet<String> = first
        .stored
        .iter()
        .map(|s| s.event.id().to_owned())
        .collect();
    let before = a.clone();
    // A retried batch: every id known, so nothing is stored, even though `started`
    // would otherwise be refused now.
    let retry = a
        .apply_batch(
            vec![
                started("s", &[("decode", 1.0)]),
                progress("p", "decode", 0.5),
            ],
            T0 + 10,
            |id| known.contains(id),
        )
        .unwrap();
    assert_eq!(
        (retry.stored.len(), retry.duplicates, retry.last_seq),
        (0, 2, 2)
    );
    assert_eq!(a, before);
    let resp = retry.response();
    assert_eq!((resp.accepted, resp.duplicates, resp.last_seq), (0, 2, 2));
}

#[test]
fn seqs_start_at_1_and_have_no_gaps() {
    let mut a = analysis();
    let out = apply(
        &mut a,
        vec![
            started("s", &[("a", 1.0)]),
            heartbeat("h1"),
            heartbeat("h1"),
            heartbeat("h2"),
        ],
        T0,
    )
    .unwrap();
    assert_eq!(
        out.stored.iter().map(|s| s.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let cancel = a.request_cancel("user", T0).unwrap();
    assert_eq!(cancel.seq, 4);
    let out = apply(&mut a, vec![heartbeat("h3")], T0).unwrap();
    assert_eq!((out.stored[0].seq, out.last_seq, a.last_seq()), (5, 5, 5));
}

#[test]
fn stored_ts_is_the_receive_time_and_node_ts_is_kept() {
    let mut a = running(T0);
    let mut h = heartbeat("h");
    h.ts = Some(T0 - 3_600_000);
    let out = apply(&mut a, vec![h], T0 + 7).unwrap();
    assert_eq!(out.stored[0].ts, T0 + 7);
    assert!(
        matches!(&out.stored[0].event, StoredEventBody::Node(e) if e.ts == Some(T0 - 3_600_000))
    );
}

#[test]
fn the_clock_never_goes_back() {
    let mut a = running(T0);
    let out = apply(&mut a, vec![heartbeat("h")], T0 - 500).unwrap();
    assert_eq!(out.stored[0].ts, T0);
}

#[test]
fn overall_progress_is_the_weighted_mean_of_stages() {
    let mut a = running(T0);
    apply(
        &mut a,
        vec![progress("p1", "decode", 1.0), progress("p2", "infer", 0.5)],
        T0 + 10,
    )
    .unwrap();
    // (1·1 + 3·0.5) / 4
    assert_eq!(a.snapshot().overall_progress, 0.625);
}

#[test]
fn a_stage_starts_at_its_first_progress_and_finishes_at_1() {
    let mut a = running(T0);
    apply(&mut a, vec![progress("p1", "decode", 0.0)], T0 + 10).unwrap();
    apply(&mut a, vec![progress("p2", "infer", 0.2)], T0 + 20).unwrap();
    let s = a.snapshot();
    assert_eq!(
        (s.stages[0].started_ts, s.stages[0].finished_ts),
        (Some(T0 + 10), None),
        "a later stage does not finish it"
    );
    assert_eq!(s.stage.as_deref(), Some("infer"));
    apply(&mut a, vec![progress("p3", "decode", 1.0)], T0 + 30).unwrap();
    assert_eq!(a.snapshot().stages[0].finished_ts, Some(T0 + 30));
}

#[test]
fn completed_sets_every_stage_to_1() {
    let mut a = running(T0);
    apply(
        &mut a,
        vec![progress("p", "decode", 0.4), partial("r", 5)],
        T0 + 10,
    )
    .unwrap();
    apply(&mut a, vec![completed("c", 2)], T0 + 20).unwrap();
    let s = a.snapshot();
    assert_eq!(s.overall_progress, 1.0);
    assert!(
        s.stages
            .iter()
            .all(|st| st.progress == 1.0 && st.finished_ts == Some(T0 + 20))
    );
    assert_eq!(
        s.regions_count, 2,
        "the final result replaces partial counts"
    );
    assert!(s.result.is_some() && s.eta_ms.is_none());
}

#[test]
fn failed_keeps_progress_and_records_the_error() {
    let mut a = running(T0);
    apply(
        &mut a,
        vec![progress("p", "infer", 0.5), failed("f")],
        T0 + 10,
    )
    .unwrap();
    let s = a.snapshot();
    assert_eq!(s.overall_progress, 0.375);
    assert_eq!(s.error.unwrap().code, "oom");
}

#[test]
fn eta_waits_for_a_measured_interval() {
    let mut a = running(T0);
    let out = apply(&mut a, vec![progress("p1", "decode", 0.5)], T0).unwrap();
    assert_eq!(
        out.stored[0].eta_ms, None,
        "no time has passed since started"
    );
    let out = apply(&mut a, vec![progress("p2", "decode", 1.0)], T0 + 1000).unwrap();
    // Overall 0.125 -> 0.25 in one second; 0.75 left takes 6 s.
    assert_eq!(out.stored[0].eta_ms, Some(6000));
    assert_eq!(a.snapshot().eta_ms, Some(6000));
}

#[test]
fn eta_uses_the_edge_clock_not_the_node_ts() {
    let mut a = running(T0);
    let mut p = progress("p", "infer", 0.4);
    p.ts = Some(T0 + 999_999_999);
    let out = apply(&mut a, vec![p], T0 + 3000).unwrap();
    // 0.3 overall in 3 s: 0.7 left takes 7 s.
    assert_eq!(out.stored[0].eta_ms, Some(7000));
}

#[test]
fn eta_smooths_the_rate() {
    let mut a = running(T0);
    apply(&mut a, vec![progress("p1", "decode", 0.4)], T0 + 1000).unwrap();
    // A sudden burst moves the estimate only part of the way.
    let out = apply(
        &mut a,
        vec![progress("p2", "decode", 1.0), progress("p3", "infer", 0.6)],
        T0 + 1100,
    )
    .unwrap();
    let p = out.stored[1].overall_progress;
    let (dp, dt) = (0.3 * (p - 0.1) + 0.7 * 0.1, 0.3 * 100.0 + 0.7 * 1000.0);
    let expected = ((1.0 - p) * dt / dp).round() as u64;
    assert_eq!(out.stored[1].eta_ms, Some(expected));
    let instantaneous = ((1.0 - p) * 100.0 / (p - 0.1)).round() as u64;
    assert!(expected > instantaneous);
}

#[test]
fn cancel_is_recorded_once() {
    let mut a = running(T0);
    let e = a.request_cancel("user-1", T0 + 5).unwrap();
    assert!(
        matches!(&e.event, StoredEventBody::Edge(ev) if ev.id == "edge:2" && ev.kind == EdgeEventKind::CancelRequested { by: "user-1".into() })
    );
    assert!(a.request_cancel("user-2", T0 + 6).is_none());
    assert!(a.cancel_requested());
    let out = apply(&mut a, vec![heartbeat("h")], T0 + 7).unwrap();
    assert!(out.cancel_requested && out.response().cancel_requested);
    apply(&mut a, vec![cancelled("c")], T0 + 8).unwrap();
    assert_eq!(a.status(), Status::Cancelled);
}

#[test]
fn cancel_works_while_pending_but_not_after_terminal() {
    let mut a = analysis();
    assert!(a.request_cancel("u", T0).is_some());
    let mut a = running(T0);
    apply(&mut a, vec![completed("c", 0)], T0).unwrap();
    assert!(a.request_cancel("u", T0).is_none());
    assert_eq!(a.last_seq(), 2);
}

#[test]
fn stall_after_the_timeout_and_resume_on_the_next_event() {
    let mut a = running(T0);
    assert_eq!(a.next_deadline(60_000), Some(T0 + 60_000));
    assert!(a.check_stall(T0 + 59_999, 60_000).is_none());
    let e = a.check_stall(T0 + 60_000, 60_000).unwrap();
    assert!(
        matches!(&e.event, StoredEventBody::Edge(ev) if ev.kind == EdgeEventKind::Stalled { silent_ms: 60_000 })
    );
    assert_eq!(a.status(), Status::Stalled);
    assert_eq!(a.next_deadline(60_000), None);
    assert!(
        a.check_stall(T0 + 120_000, 60_000).is_none(),
        "stalled once until the node speaks"
    );

    apply(&mut a, vec![heartbeat("h")], T0 + 90_000).unwrap();
    assert_eq!(a.status(), Status::Running);
    assert_eq!(a.next_deadline(60_000), Some(T0 + 150_000));
}

#[test]
fn edge_events_do_not_reset_the_stall_timer() {
    let mut a = running(T0);
    a.request_cancel("u", T0 + 30_000).unwrap();
    assert_eq!(a.next_deadline(60_000), Some(T0 + 60_000));
}

#[test]
fn duplicates_do_not_unstall() {
    let mut a = running(T0);
    a.check_stall(T0 + 60_000, 60_000).unwrap();
    a.apply_batch(vec![heartbeat("old")], T0 + 70_000, |_| true)
        .unwrap();
    assert_eq!(a.status(), Status::Stalled);
}

#[test]
fn pending_and_finished_analyses_do_not_stall() {
    let mut a = analysis();
    assert!(a.check_stall(T0 + 1_000_000, 1).is_none());
    assert_eq!(a.next_deadline(1), None);
    let mut a = running(T0);
    apply(&mut a, vec![failed("f")], T0).unwrap();
    assert!(a.check_stall(T0 + 1_000_000, 1).is_none());
    assert_eq!(a.next_deadline(1), None);
}

fn history() -> (Analysis, Vec<StoredEvent>) {
    let mut a = analysis();
    let mut log = Vec::new();
    log.extend(
        apply(
            &mut a,
            vec![
                started("s", &[("decode", 1.0), ("infer", 2.0)]),
                progress("p1", "decode", 0.5),
            ],
            T0,
        )
        .unwrap()
        .stored,
    );
    log.extend(
        apply(
            &mut a,
            vec![progress("p2", "decode", 1.0), partial("r1", 3)],
            T0 + 1000,
        )
        .unwrap()
        .stored,
    );
    log.extend(a.check_stall(T0 + 70_000, 60_000));
    log.extend(
        apply(&mut a, vec![progress("p3", "infer", 0.5)], T0 + 71_000)
            .unwrap()
            .stored,
    );
    log.extend(a.request_cancel("user-1", T0 + 72_000));
    log.extend(
        apply(&mut a, vec![cancelled("c")], T0 + 73_000)
            .unwrap()
            .stored,
    );
    (a, log)
}

#[test]
fn replay_rebuilds_the_same_analysis() {
    let (a, log) = history();
    let replayed = Analysis::replay(a.analysis_id().clone(), &log).unwrap();
    assert_eq!(replayed.snapshot(), a.snapshot());
    assert_eq!(replayed, a);
}

#[test]
fn replay_refuses_gaps() {
    let (a, mut log) = history();
    log.remove(2);
    let err = Analysis::replay(a.analysis_id().clone(), &log).unwrap_err();
    assert_eq!(
        err,
        ReplayError::Gap {
            expected: 3,
            found: 4
        }
    );
}

#[test]
fn replay_refuses_events_that_do_not_apply() {
    let (a, log) = history();
    let mut twice = log[..log.len() - 2].to_vec();
    let mut cancel = log[log.len() - 2].clone();
    twice.push(cancel.clone());
    cancel.seq += 1;
    twice.push(cancel);
    assert!(matches!(
        Analysis::replay(a.analysis_id().clone(), &twice),
        Err(ReplayError::Unexpected { .. })
    ));
}

#[test]
fn the_state_serializes_to_one_json_value_and_back() {
    let (a, _) = history();
    let json = serde_json::to_string(&a).unwrap();
    let back: Analysis = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    assert!(!json.contains("p1"), "event ids are not kept in the state");
}

#[test]
fn floats_survive_json_exactly() {
    // Found by the replay property: without exact float parsing 0.9999999999999999
    // read back as 1.0, and a node resending it would then be "backwards".
    let mut a = running(T0);
    apply(
        &mut a,
        vec![progress("p", "decode", 0.9999999999999999)],
        T0,
    )
    .unwrap();
    let back: Analysis = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back, a);
    let mut back = back;
    apply(
        &mut back,
        vec![progress("p2", "decode", 0.9999999999999999)],
        T0,
    )
    .unwrap();
}

#[test]
fn analysis_id_in_snapshot() {
    let a = Analysis::new(AnalysisId::parse("video-42").unwrap());
    assert_eq!(a.snapshot().analysis_id, "video-42");
}
