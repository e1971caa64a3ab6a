//! Event builders shared by the integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use stagecast_shared::event::{AnalysisResult, ErrorInfo, Event, EventKind, Region, StageSpec};
use stagecast_shared::{Analysis, AnalysisId};

pub fn event(id: &str, kind: EventKind) -> Event {
    Event {
        id: id.to_owned(),
        ts: None,
        kind,
    }
}

pub fn started(id: &str, stages: &[(&str, f64)]) -> Event {
    event(
        id,
        EventKind::Started {
            stages: stages
                .iter()
                .map(|(name, weight)| StageSpec {
                    name: (*name).to_owned(),
                    weight: *weight,
                })
                .collect(),
            total_frames: None,
            model: None,
            node: None,
        },
    )
}

pub fn progress(id: &str, stage: &str, p: f64) -> Event {
    event(
        id,
        EventKind::Progress {
            stage: stage.to_owned(),
            stage_progress: p,
            frames_done: None,
            frames_total: None,
            message: None,
        },
    )
}

pub fn region(frame: u64) -> Region {
    Region {
        frame,
        x: 1.0,
        y: 2.0,
        w: 3.0,
        h: 4.0,
        units: None,
        score: 0.5,
        label: None,
        points: None,
    }
}

pub fn partial(id: &str, regions: usize) -> Event {
    event(
        id,
        EventKind::PartialResult {
            regions: (0..regions as u64).map(region).collect(),
            scores: None,
        },
    )
}

pub fn heartbeat(id: &str) -> Event {
    event(id, EventKind::Heartbeat { metrics: None })
}

pub fn completed(id: &str, regions: usize) -> Event {
    event(
        id,
        EventKind::Completed {
            result: AnalysisResult {
                score: 0.9,
                flagged: true,
                frames_processed: 10,
                total_frames: 10,
                regions: (0..regions as u64).map(region).collect(),
                validation_required: false,
                summary: None,
                frame_width: Some(640),
                frame_height: Some(360),
            },
        },
    )
}

pub fn failed(id: &str) -> Event {
    event(
        id,
        EventKind::Failed {
            error: ErrorInfo {
                code: "oom".into(),
                message: "out of GPU memory".into(),
                retryable: true,
            },
        },
    )
}

pub fn cancelled(id: &str) -> Event {
    event(id, EventKind::Cancelled { reason: None })
}

pub fn analysis() -> Analysis {
    Analysis::new(AnalysisId::parse("a-1").unwrap())
}

/// Applies a batch with no previously stored ids.
pub fn apply(
    a: &mut Analysis,
    events: Vec<Event>,
    now: i64,
) -> Result<stagecast_shared::BatchOutcome, stagecast_shared::TransitionError> {
    a.apply_batch(events, now, |_| false)
}

/// Two stages `decode` (weight 1) and `infer` (weight 3), started at `now`.
pub fn running(now: i64) -> Analysis {
    let mut a = analysis();
    apply(
        &mut a,
        vec![started("s", &[("decode", 1.0), ("infer", 3.0)])],
        now,
    )
    .unwrap();
    a
}

/// Checks the committed client fixture `client/test/fixtures/<file>` against `generated`,
/// what the Rust code decides, so the browser client's tests replay the same cases; with
/// `STAGECAST_BLESS=1` rewrites it instead. `test` names the test binary, for the hint.
pub fn check_client_fixture(file: &str, generated: &serde_json::Value, test: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../client/test/fixtures")
        .join(file);
    let generated = format!("{}\n", serde_json::to_string_pretty(generated).unwrap());
    if std::env::var_os("STAGECAST_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the Rust code. Regenerate it with: \
         STAGECAST_BLESS=1 cargo test -p stagecast-shared --test {test}",
        path.display()
    );
}
