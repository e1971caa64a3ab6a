//! The `stagecast-node` binary as a person or a script runs it.

mod common;

use std::process::{Command, Output};

use common::*;
use stagecast_shared::EventKind;

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
        .args(args)
        .output()
        .expect("run stagecast-node")
}

/// stdout of `--json`: one contract event per line.
fn events(out: &Output) -> Vec<EventKind> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn analyze_json_streams_contract_events() {
    let out = node(&[
        "analyze",
        path(&fixtures().video),
        "--fps",
        "2",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = events(&out);
    assert!(matches!(&events[0], EventKind::Started { model: Some(m), .. } if m == "text-detect"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::Progress { stage, .. } if stage == "infer"))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::PartialResult { .. }))
    );
    let Some(EventKind::Completed { result }) = events.last() else {
        panic!("last event is not completed: {:?}", events.last());
    };
    assert_eq!(result.frames_processed, 4);
    assert!(result.flagged && !result.regions.is_empty());
}

#[test]
fn analyze_prints_a_readable_result() {
    let out = node(&["analyze", path(&fixtures().text_png)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FLAGGED") && stdout.contains("frames: 1 of 1"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("frames/s"));
}

#[test]
fn analyze_failure_is_a_failed_event_and_exit_code() {
    let out = node(&["analyze", "/nonexistent.png", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let Some(EventKind::Failed { error }) = events(&out).pop() else {
        panic!("no failed event");
    };
    assert_eq!(
        (error.code.as_str(), error.retryable),
        ("input_not_found", false)
    );
}

#[test]
fn models_lists_and_loads_manifests() {
    let out = node(&["models"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("text-detect"), "{stdout}");
    assert!(stdout.contains("input   x [?, 3, ?, ?]"), "{stdout}");
    assert!(stdout.contains("loads on cpu"), "{stdout}");
}

#[test]
fn bad_flags_and_missing_runtime_are_clear_errors() {
    let out = node(&["analyze", "x.png", "--batch-size", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a whole number above 0"));

    let out = node(&[
        "--ort-dylib",
        "/nowhere/libonnxruntime.so",
        "analyze",
        path(&fixtures().text_png),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nowhere/libonnxruntime.so does not exist"),
        "{stderr}"
    );

    #[cfg(not(feature = "cuda"))]
    {
        let out = node(&["--device", "cuda", "models"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stdout).contains("--features cuda"));
    }
}
