//! The `stagecast-node` binary as a person or a script runs it.

use std::process::{Command, Output};

use stagecast_fixtures::{fixtures, path};
use stagecast_shared::EventKind;

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
        .args(args)
        .output()
        .expect("run stagecast-node")
}

/// stdout of `--json`: one contract event per line, then `{"snapshot": ...}`.
fn events(out: &Output) -> Vec<EventKind> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    let last: serde_json::Value = serde_json::from_str(lines.pop().expect("output")).unwrap();
    assert!(
        last["snapshot"].is_object(),
        "last line is not the snapshot: {last}"
    );
    lines
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The final snapshot line of `--json`.
fn snapshot(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("output");
    serde_json::from_str::<serde_json::Value>(last).unwrap()["snapshot"].clone()
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
    let snapshot = snapshot(&out);
    assert_eq!(
        (
            snapshot["status"].as_str(),
            snapshot["overall_progress"].as_f64()
        ),
        (Some("completed"), Some(1.0))
    );
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

#[test]
fn token_mints_what_the_edge_verifies_and_says_what_is_missing() {
    use stagecast_shared::token::{KeySet, Scope, verify};
    const SECRET: &str = "cli-test-secret-0123456789abcdef0123";
    let mint = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
            .args(args)
            .env("STAGECAST_NODE_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = mint(&["token", "viewer", "--analysis", "a1", "--ttl", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let now = stagecast_compute::clock::now_s();
    let verified = verify(token.trim(), &KeySet::dev(SECRET).unwrap(), now).unwrap();
    assert!(
        verified.claims.has_scope(Scope::Subscribe) && verified.claims.has_scope(Scope::Cancel)
    );
    assert!(!verified.claims.has_scope(Scope::Publish));
    assert_eq!(verified.claims.analyses, ["a1"]);
    assert!(verified.claims.exp - now <= 60);

    let admin = mint(&["token", "admin"]);
    let admin = verify(
        String::from_utf8(admin.stdout).unwrap().trim(),
        &KeySet::dev(SECRET).unwrap(),
        now,
    )
    .unwrap();
    assert!(admin.claims.has_scope(Scope::Admin) && admin.claims.grants_analysis("anything"));
    // a node publishes and joins pools
    let node_token = mint(&["token", "node"]);
    let node_token = verify(
        String::from_utf8(node_token.stdout).unwrap().trim(),
        &KeySet::dev(SECRET).unwrap(),
        now,
    )
    .unwrap();
    assert!(
        node_token.claims.has_scope(Scope::Publish) && node_token.claims.has_scope(Scope::Node)
    );

    let out = node(&["token", "viewer"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no signing key"));
}

#[test]
fn config_file_settings_apply_and_unknown_ones_are_refused() {
    // the environment would beat the file: leave it out
    let node = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
            .args(args)
            .env_remove("STAGECAST_ORT_DYLIB")
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "ort-dylib = \"/from/config/libonnxruntime.so\"\n").unwrap();
    let out = node(&[
        "--config",
        path(&config),
        "analyze",
        path(&fixtures().text_png),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/from/config/libonnxruntime.so"));
    // the environment beats the file, and a flag beats both
    let out = Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
        .args(["--config", path(&config), "models"])
        .env("STAGECAST_ORT_DYLIB", "/from/env.so")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("/from/env.so"));
    let out = node(&[
        "--config",
        path(&config),
        "--ort-dylib",
        "/from/flag.so",
        "models",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/from/flag.so"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    std::fs::write(&config, "[analyze]\nfsp = 3\n").unwrap();
    let out = node(&["--config", path(&config), "models"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting [analyze] fsp"));
}

/// `analyze` takes local paths, but its URLs keep the address rules: 127.0.0.1 only with
/// --allow-input-host.
#[test]
fn analyze_refuses_urls_on_private_addresses_unless_allowed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/text.png", listener.local_addr().unwrap());
    let out = node(&["analyze", &url, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let Some(EventKind::Failed { error }) = events(&out).pop() else {
        panic!("no failed event");
    };
    assert_eq!(
        (error.code.as_str(), error.retryable),
        ("input_forbidden", false),
        "{error:?}"
    );
    let out = node(&["analyze", &url, "--allow-input-host", "10.0.0.1:80"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a host name or an IP address"));
}

/// The node's downloads in `dir` (ONNX Runtime keeps a file of its own there too).
fn downloads(dir: &std::path::Path) -> Vec<std::fs::Metadata> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            name.to_string_lossy()
                .starts_with(stagecast_compute::pipeline::DOWNLOAD_PREFIX)
        })
        .filter_map(|e| e.metadata().ok())
        .collect()
}

/// A download over --max-input-bytes ends `input_too_large` and leaves no partial file in
/// the temporary folder (TMPDIR), where it was while it lasted.
#[test]
fn oversized_downloads_fail_and_leave_nothing_behind() {
    use std::io::{BufRead, BufReader, Write};
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dir = tmp.path().to_owned();
    // what the temporary folder held once the first chunk was sent
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut request = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            while reader.read_line(&mut request).unwrap() > 2 {}
            if request.starts_with("GET /sized") {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 8000\r\n\r\n";
                let _ = stream.write_all(head.as_bytes());
                continue;
            }
            let chunk = format!("3e8\r\n{}\r\n", "x".repeat(1000));
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(chunk.as_bytes()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let written = || downloads(&dir).iter().any(|m| m.len() == 1000);
            while !written() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            seen.push(written());
            let _ = stream.write_all(chunk.as_bytes());
        }
        seen
    });
    for path in ["/chunked", "/sized"] {
        let out = Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
            .args(["analyze", &format!("{base}{path}"), "--json"])
            .args([
                "--allow-input-host",
                "127.0.0.1",
                "--max-input-bytes",
                "1000",
            ])
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{path}");
        let Some(EventKind::Failed { error }) = events(&out).pop() else {
            panic!("{path}: no failed event");
        };
        assert_eq!(
            (error.code.as_str(), error.retryable),
            ("input_too_large", false),
            "{path}: {error:?}"
        );
        let left = downloads(tmp.path());
        assert!(left.is_empty(), "{path} left {left:?}");
    }
    assert_eq!(
        server.join().unwrap(),
        [true],
        "the first kilobyte was on disk"
    );
}
