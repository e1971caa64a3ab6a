//! The client's snapshot arithmetic is checked against the edge's own: this test runs
//! histories through the real state machine and keeps them, with the stored events and
//! the snapshot after each step, in client/test/fixtures/machine-histories.json (which
//! client/test/snapshot.test.mjs replays). It fails when the file is out of date;
//! regenerate with `STAGECAST_BLESS=1 cargo test -p stagecast-shared --test client_fixture`.
mod common;

use serde_json::{Value, json};
use stagecast_shared::{Analysis, AnalysisId, Event};

enum Step {
    Batch(i64, Vec<Value>),
    Cancel(i64, &'static str),
    Stall(i64),
}

fn run(id: &str, steps: Vec<Step>) -> Value {
    let mut a = Analysis::new(AnalysisId::parse(id).unwrap());
    let mut out = Vec::new();
    for step in steps {
        let stored = match step {
            Step::Batch(now, events) => {
                let events: Vec<Event> = events
                    .into_iter()
                    .map(|e| serde_json::from_value(e).unwrap())
                    .collect();
                a.apply_batch(events, now, |_| false).unwrap().stored
            }
            Step::Cancel(now, by) => a.request_cancel(by, now).into_iter().collect(),
            Step::Stall(now) => a.check_stall(now, 60_000).into_iter().collect(),
        };
        assert!(!stored.is_empty());
        out.push(json!({"stored": stored, "snapshot": a.snapshot()}));
    }
    json!({"analysis_id": id, "steps": out})
}

fn region(frame: u32) -> Value {
    json!({"frame": frame, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4, "units": "normalized", "score": 0.7})
}

fn histories() -> Value {
    use Step::*;
    let stages = json!([{"name": "decode", "weight": 1}, {"name": "detect", "weight": 3}, {"name": "report", "weight": 0.5}]);
    let completed = run(
        "completed-1",
        vec![
            Batch(
                1_000,
                vec![
                    json!({"id": "r-1", "type": "started", "stages": stages, "total_frames": 40, "ts": 5}),
                ],
            ),
            Batch(
                2_000,
                vec![
                    json!({"id": "r-2", "type": "progress", "stage": "decode", "stage_progress": 0.25}),
                ],
            ),
            Batch(
                3_000,
                vec![
                    json!({"id": "r-3", "type": "progress", "stage": "decode", "stage_progress": 0.5}),
                    json!({"id": "r-4", "type": "progress", "stage": "detect", "stage_progress": 0.1}),
                ],
            ),
            Batch(
                4_500,
                vec![
                    json!({"id": "r-5", "type": "partial_result", "regions": [region(3), region(4)]}),
                ],
            ),
            Batch(
                5_000,
                vec![
                    json!({"id": "r-6", "type": "progress", "stage": "decode", "stage_progress": 1.0}),
                ],
            ),
            Batch(
                6_000,
                vec![json!({"id": "r-7", "type": "heartbeat", "metrics": {"cpu_util": 0.4}})],
            ),
            Stall(66_000),
            Batch(
                67_000,
                vec![
                    json!({"id": "r-8", "type": "progress", "stage": "detect", "stage_progress": 0.6, "message": "half way"}),
                ],
            ),
            Batch(
                68_000,
                vec![json!({"id": "r-9", "type": "partial_result", "regions": [region(9)]})],
            ),
            Stall(130_000),
            Batch(131_000, vec![json!({"id": "r-10", "type": "heartbeat"})]),
            Cancel(131_500, "user-1"),
            Batch(
                132_000,
                vec![
                    json!({"id": "r-11", "type": "progress", "stage": "detect", "stage_progress": 1.0}),
                ],
            ),
            Batch(
                133_000,
                vec![json!({"id": "r-12", "type": "completed", "result": {
            "score": 0.8, "flagged": true, "frames_processed": 40, "total_frames": 40,
            "regions": [region(3), region(4), region(9), region(12)], "validation_required": false, "summary": "4 regions"}})],
            ),
        ],
    );
    let failed = run(
        "failed-1",
        vec![
            Cancel(500, "early-bird"),
            Batch(
                1_000,
                vec![
                    json!({"id": "f-1", "type": "started", "stages": [{"name": "only", "weight": 2}]}),
                    json!({"id": "f-2", "type": "progress", "stage": "only", "stage_progress": 0.3}),
                ],
            ),
            Batch(
                2_000,
                vec![
                    json!({"id": "f-3", "type": "failed", "error": {"code": "oom", "message": "GPU out of memory", "retryable": true}}),
                ],
            ),
        ],
    );
    let cancelled = run(
        "cancelled-1",
        vec![
            Batch(
                1_000,
                vec![json!({"id": "c-1", "type": "started", "stages": stages})],
            ),
            Batch(
                2_000,
                vec![
                    json!({"id": "c-2", "type": "progress", "stage": "detect", "stage_progress": 0.2}),
                ],
            ),
            Stall(70_000),
            Cancel(71_000, "user-2"),
            Batch(
                72_000,
                vec![json!({"id": "c-3", "type": "cancelled", "reason": "asked to"})],
            ),
        ],
    );
    json!({
        "generated_by": "the stagecast-shared state machine (Analysis::apply_batch, request_cancel, check_stall)",
        "analyses": [completed, failed, cancelled],
    })
}

#[test]
fn client_fixture_matches_the_state_machine() {
    common::check_client_fixture("machine-histories.json", &histories(), "client_fixture");
}
