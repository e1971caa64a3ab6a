//! The real node (`stagecast-node serve`) publishing to the real edge (workerd), watched
//! by WebSocket subscribers: every stage in order, outages, cancel, bad input, restarts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stagecast_e2e::client::{DEV_SECRET, kind, node_event};
use stagecast_e2e::edge::free_port;
use stagecast_e2e::node::promtool_check;
use stagecast_e2e::{Edge, Node, Subscriber, Tokens, ready_node, shared_edge};
use stagecast_fixtures::{fixtures, path};
use stagecast_shared::ws::ServerMessage;
use stagecast_shared::{EventKind, StoredEvent};

/// Generous: CI runs these beside each other on two cores.
const T: Duration = Duration::from_secs(120);
const STAGES: [&str; 5] = ["fetch", "decode", "preprocess", "infer", "postprocess"];

fn ws(edge: &Edge, id: &str, since: u64) -> String {
    edge.ws_url(&format!(
        "/v1/analyses/{id}/ws?since={since}&token={}",
        Tokens::viewer(id)
    ))
}

/// The `stagecast-node` binary the tests run.
fn node_bin() -> PathBuf {
    stagecast_e2e::node_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

async fn subscribe(edge: &Edge, id: &str, since: u64) -> Subscriber {
    let mut sub = Subscriber::connect(&ws(edge, id, since))
        .await
        .expect("subscribe");
    let hello = sub.next_message(T).await.expect("hello");
    assert!(matches!(hello, ServerMessage::Hello { .. }), "{hello:?}");
    sub
}

/// Event frames until the node's terminal event, or the socket's end (`Err`).
async fn until_terminal(sub: &mut Subscriber, into: &mut Vec<StoredEvent>) -> anyhow::Result<()> {
    sub.until_terminal(into, T).await
}

/// Seqs 1..=n with no gap and no repeat, ids unique: every event exactly once, in order.
fn assert_exactly_once(events: &[StoredEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gap or repeat"
    );
    let mut ids: Vec<&str> = events.iter().map(|e| e.event.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "an event id arrived twice");
}

/// The stage and fields of a `progress` event.
fn progress(e: &StoredEvent) -> Option<(&str, f64, Option<u64>)> {
    match node_event(e)? {
        EventKind::Progress {
            stage,
            stage_progress,
            frames_done,
            ..
        } => Some((stage.as_str(), *stage_progress, *frames_done)),
        _ => None,
    }
}

/// The error code, message and retryable flag of a `failed` event.
fn failure(e: &StoredEvent) -> Option<(&str, &str, bool)> {
    match node_event(e)? {
        EventKind::Failed { error } => Some((&error.code, &error.message, error.retryable)),
        _ => None,
    }
}

/// The value of the un-labelled counter `name` in Prometheus text.
fn counter(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// A node publishing to `edge`, a subscriber replaying `id` from the start, and `job`
/// (its input and options) submitted as analysis `id`.
async fn watched_job(edge: &Edge, id: &str, mut job: Value) -> (Node, Subscriber) {
    let node = ready_node(edge).await;
    let sub = subscribe(edge, id, 0).await;
    job["analysis_id"] = json!(id);
    let (status, body) = node.submit(&job).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["analysis_id"], id);
    (node, sub)
}

/// Waits until the node reports what the edge confirmed; returns the node's view.
async fn delivered(node: &Node, id: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let view = node.status(id).await;
        if view["delivered"].is_object() {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {view}\n{}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node's own events among `events` (the edge appends its `artifact` events beside them).
fn published(events: &[StoredEvent]) -> usize {
    events.iter().filter(|e| node_event(e).is_some()).count()
}

#[tokio::test]
async fn an_analysis_reaches_a_subscriber_stage_by_stage_with_its_result() {
    let edge = shared_edge().await;
    let id = "node-full";
    let (node, mut sub) = watched_job(
        edge,
        id,
        json!({"input": path(&fixtures().video), "fps": 2, "batch_size": 2}),
    )
    .await;

    let mut events = Vec::new();
    until_terminal(&mut sub, &mut events).await.unwrap();
    assert_exactly_once(&events);
    assert_eq!(kind(&events[0]), "started");
    assert_eq!(kind(events.last().unwrap()), "completed", "{events:?}");
    let Some(EventKind::Completed { result }) = node_event(events.last().unwrap()) else {
        unreachable!("a completed event carries its result")
    };
    assert!(result.flagged && !result.regions.is_empty());
    assert!(events.iter().any(|e| kind(e) == "partial_result"));

    // stages begin in pipeline order, and each one finishes
    let mut first_seen = Vec::new();
    for (stage, _, _) in events.iter().filter_map(progress) {
        if !first_seen.contains(&stage) {
            first_seen.push(stage);
        }
    }
    assert_eq!(first_seen, STAGES);
    for stage in STAGES {
        let (_, stage_progress, _) = events
            .iter()
            .rev()
            .filter_map(progress)
            .find(|(s, _, _)| *s == stage)
            .unwrap();
        assert_eq!(stage_progress, 1.0, "{stage} did not finish");
    }
    assert_eq!(events.last().unwrap().overall_progress, 1.0);

    // the node's own view agrees with the edge
    let view = delivered(&node, id).await;
    assert_eq!(view["snapshot"]["status"], "completed");
    assert_eq!(
        view["delivered"],
        json!({"confirmed": published(&events), "refused": 0})
    );
}

#[tokio::test]
async fn the_edge_down_for_30_seconds_mid_analysis_loses_nothing() {
    let mut edge = Edge::dev().await.unwrap();
    let id = "node-outage";
    let (node, mut sub) = watched_job(
        &edge,
        id,
        json!({"input": path(&fixtures().long_video), "fps": 2, "batch_size": 2}),
    )
    .await;

    // a few events through, then the edge dies with the analysis under way
    let mut events = Vec::new();
    while events.len() < 3 {
        if let ServerMessage::Event(event) = sub.next_message(T).await.unwrap() {
            events.push(event);
        }
    }
    edge.kill();
    let down = Instant::now();
    // the socket died with the edge: whatever it still had buffered counts
    let _ = until_terminal(&mut sub, &mut events).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    let during = node.status(id).await;
    assert!(
        during["delivered"].is_null(),
        "delivered with the edge down: {during}"
    );
    edge.restart().await.unwrap();

    let last = events.last().unwrap().seq;
    let mut sub = subscribe(&edge, id, last).await;
    until_terminal(&mut sub, &mut events).await.unwrap();
    assert_exactly_once(&events);
    assert_eq!(kind(events.last().unwrap()), "completed");
    let view = delivered(&node, id).await;
    assert_eq!(
        view["delivered"],
        json!({"confirmed": published(&events), "refused": 0})
    );
    // the node noticed the outage and kept retrying through it
    let metrics = reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let retries = counter(&metrics, "stagecast_publish_retries_total");
    assert!(
        retries.is_some_and(|n| n > 0.0),
        "no publish retried with the edge down: {retries:?}\n{metrics}"
    );
}

#[tokio::test]
async fn a_cancel_from_a_subscriber_stops_the_node() {
    let edge = shared_edge().await;
    let id = "node-cancel";
    let (node, mut sub) = watched_job(
        edge,
        id,
        json!({"input": path(&fixtures().long_video), "fps": 5, "batch_size": 2}),
    )
    .await;
    let mut events = Vec::new();
    loop {
        let ServerMessage::Event(event) = sub.next_message(T).await.unwrap() else {
            continue;
        };
        let infer_started = progress(&event).is_some_and(|(stage, _, _)| stage == "infer");
        events.push(event);
        if infer_started {
            break;
        }
    }
    sub.send_json(&json!({"type": "cancel"})).await.unwrap();
    let asked = Instant::now();
    until_terminal(&mut sub, &mut events).await.unwrap();
    let stopped_in = asked.elapsed();
    assert_exactly_once(&events);
    assert!(events.iter().any(|e| kind(e) == "cancel_requested"));
    assert_eq!(kind(events.last().unwrap()), "cancelled");
    let view = delivered(&node, id).await;
    assert_eq!(view["snapshot"]["status"], "cancelled");
    // it really stopped: far fewer than the 100 frames of the video went through
    let infer_frames = events
        .iter()
        .filter_map(progress)
        .filter(|(stage, _, _)| *stage == "infer")
        .filter_map(|(_, _, frames_done)| frames_done)
        .max()
        .unwrap_or(0);
    assert!(infer_frames < 100, "ran to the end: {infer_frames} frames");
    eprintln!("cancel to cancelled: {stopped_in:?}, {infer_frames} frames inferred");
}

#[tokio::test]
async fn a_corrupt_input_ends_failed_with_a_readable_code() {
    let edge = shared_edge().await;
    let id = "node-corrupt";
    let (node, mut sub) =
        watched_job(edge, id, json!({"input": path(&fixtures().corrupt_mp4)})).await;
    let mut events = Vec::new();
    until_terminal(&mut sub, &mut events).await.unwrap();
    assert_eq!(kind(events.last().unwrap()), "failed");
    let (code, message, retryable) = failure(events.last().unwrap()).unwrap();
    assert_eq!(code, "decode_failed", "{message}");
    assert!(!retryable);
    assert!(message.len() > 10, "{message}");
    assert_eq!(
        delivered(&node, id).await["snapshot"]["error"]["code"],
        "decode_failed"
    );
}

#[tokio::test]
async fn a_node_restart_loses_no_event_and_ends_the_run_it_cut_short() {
    // the edge is not there yet: everything waits in the outbox
    let edge_port = free_port();
    let dead_edge = format!("http://127.0.0.1:{edge_port}");
    let mut node = Node::start(&node_bin(), Some(&dead_edge), &["--concurrency", "2"])
        .await
        .unwrap();
    let (done, cut) = ("node-restart-done", "node-restart-cut");
    for (id, input) in [(done, &fixtures().text_png), (cut, &fixtures().long_video)] {
        let deadline = Instant::now() + T;
        loop {
            let (status, body) = node
                .submit(&json!({"input": path(input), "analysis_id": id, "fps": 5}))
                .await;
            if status == 202 {
                break;
            }
            // 503 while the model loads
            assert_eq!(status, 503, "{body}");
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    node.finished(done, T).await.unwrap();
    assert_eq!(node.status(cut).await["state"], "running");
    node.kill();

    let mut edge = Edge::dev().await.unwrap();
    node.restart(Some(&edge.base_url())).await.unwrap();
    for (id, last) in [(done, "completed"), (cut, "failed")] {
        let mut sub = subscribe(&edge, id, 0).await;
        let mut events = Vec::new();
        until_terminal(&mut sub, &mut events).await.unwrap();
        assert_exactly_once(&events);
        assert_eq!(kind(&events[0]), "started");
        assert_eq!(kind(events.last().unwrap()), last, "{id}: {events:?}");
    }
    let mut sub = subscribe(&edge, cut, 0).await;
    let mut events = Vec::new();
    until_terminal(&mut sub, &mut events).await.unwrap();
    assert_eq!(
        failure(events.last().unwrap()).map(|(code, _, _)| code),
        Some("node_restarted")
    );
    edge.kill();
}

#[tokio::test]
async fn the_node_api_answers_every_mistake_with_the_contract_error() {
    let dead_edge = format!("http://127.0.0.1:{}", free_port());
    let node = Node::start(
        &node_bin(),
        Some(&dead_edge),
        &["--queue", "1", "--concurrency", "1"],
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let post = |token: Option<String>, body: String| {
        let mut req = client
            .post(node.url("/v1/analyses"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    let admin = || Some(Node::admin_token(&["*"]));
    let video = path(&fixtures().long_video);

    let r = post(None, json!({"input": video}).to_string())
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.unwrap())),
        (401, "missing_token".into())
    );
    let r = post(
        Some(Tokens::viewer("x")),
        json!({"input": video}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.unwrap())),
        (403, "insufficient_scope".into())
    );
    let r = post(
        Some(Node::admin_token(&["only-this"])),
        json!({"input": video}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.unwrap())),
        (403, "analysis_not_granted".into())
    );
    for bad in [
        "{",
        "[]",
        r#"{"input": 3}"#,
        r#"{"input": "x", "colour": "red"}"#,
    ] {
        let r = post(admin(), bad.to_owned()).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), code(&r.json().await.unwrap())),
            (400, "invalid_json".into()),
            "{bad}"
        );
    }
    let r = post(admin(), "x".repeat(100_000)).await.unwrap();
    assert_eq!(r.status().as_u16(), 413);

    // /readyz names what is missing: the edge does not answer
    let deadline = Instant::now() + T;
    let ready = loop {
        let r = reqwest::get(node.url("/readyz")).await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if !body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("loading")
            || Instant::now() > deadline
        {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready.0, 503);
    assert!(
        ready.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{:?}",
        ready.1
    );

    for (body, expected) in [
        (json!({"input": video, "model": "nope"}), "invalid_request"),
        (
            json!({"input": video, "analysis_id": "has space"}),
            "invalid_request",
        ),
        (json!({"input": "ftp://x/y.mp4"}), "invalid_request"),
        (json!({"input": video, "fps": 0}), "invalid_request"),
    ] {
        let (status, answer) = node.submit(&body).await;
        assert_eq!(
            (status, code(&answer)),
            (400, expected.to_owned()),
            "{body}"
        );
    }

    // one running, one waiting, the third refused with Retry-After
    assert_eq!(
        node.submit(&json!({"input": video, "analysis_id": "q1", "fps": 5}))
            .await
            .0,
        202
    );
    let (status, answer) = node
        .submit(&json!({"input": video, "analysis_id": "q1"}))
        .await;
    assert_eq!((status, code(&answer)), (409, "analysis_exists".into()));
    assert_eq!(
        node.submit(&json!({"input": video, "analysis_id": "q2"}))
            .await
            .0,
        202
    );
    let r = post(
        admin(),
        json!({"input": video, "analysis_id": "q3"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(code(&r.json().await.unwrap()), "rate_limited");

    let cancel = |id: &str| {
        client
            .post(node.url(&format!("/v1/analyses/{id}/cancel")))
            .bearer_auth(Node::admin_token(&[id]))
            .send()
    };
    for id in ["q2", "q1"] {
        let r = cancel(id).await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let view = node.finished(id, T).await.unwrap();
        assert_eq!(view["snapshot"]["status"], "cancelled", "{view}");
    }
    let r = cancel("never-submitted").await.unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.unwrap())),
        (404, "analysis_not_found".into())
    );
    let r = client.get(node.url("/nowhere")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&r.json().await.unwrap())),
        (404, "not_found".into())
    );
    let r = client.get(node.url("/v1/analyses")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);

    let metrics = client
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stagecast_analyses_total{outcome=\"cancelled\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("stagecast_queue_depth 0"), "{metrics}");
    promtool_check(&metrics).unwrap_or_else(|e| panic!("{e:#}\n{metrics}"));
}

#[tokio::test]
async fn analyze_publishes_to_the_edge_and_watch_follows_it_to_the_result() {
    let edge = shared_edge().await;
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(node_bin());
        cmd.args(args)
            .args([
                "--edge",
                &edge.base_url(),
                "--state-dir",
                path(state.path()),
            ])
            .env("STAGECAST_NODE_SECRET", DEV_SECRET);
        cmd.output()
    };
    let id = "cli-published";
    let out = run(&[
        "analyze",
        path(&fixtures().text_png),
        "--analysis-id",
        id,
        "--threads",
        "1",
    ])
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the edge has all"), "{stderr}");

    let out = run(&["watch", id]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FLAGGED"));

    let out = run(&["watch", id, "--json"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let messages: Vec<ServerMessage> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(matches!(messages[0], ServerMessage::Hello { .. }));
    let events: Vec<StoredEvent> = messages
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Event(event) => Some(event),
            _ => None,
        })
        .collect();
    assert_exactly_once(&events);
    assert_eq!(kind(events.last().unwrap()), "completed");

    let out = run(&["watch", "cli-published", "--token", "not-a-token"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("4001"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_self_hosted_node_publishes_with_its_ed25519_key() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = (
        keys.path().join("node.pem"),
        keys.path().join("node.pub.pem"),
    );
    for args in [
        vec!["genpkey", "-algorithm", "ed25519", "-out", path(&private)],
        vec![
            "pkey",
            "-in",
            path(&private),
            "-pubout",
            "-out",
            path(&public),
        ],
    ] {
        let status = std::process::Command::new("openssl")
            .args(&args)
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    }
    let public_pem = std::fs::read_to_string(&public).unwrap();
    let tenants = json!({"tenants": {"acme": {"keys": [
        {"kid": "node-ed", "alg": "EdDSA", "public_key_pem": public_pem}
    ]}}});
    let edge = Edge::start(&[("STAGECAST_TENANTS", &tenants.to_string())])
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(node_bin());
        cmd.args(args)
            .args([
                "--edge",
                &edge.base_url(),
                "--state-dir",
                path(state.path()),
            ])
            .args([
                "--tenant",
                "acme",
                "--key-id",
                "node-ed",
                "--key-file",
                path(&private),
            ])
            .env_remove("STAGECAST_NODE_SECRET");
        cmd.output()
    };
    let out = run(&[
        "analyze",
        path(&fixtures().text_png),
        "--analysis-id",
        "ed-1",
        "--threads",
        "1",
    ])
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("the edge has all"),
        "{stderr}"
    );
    let out = run(&["watch", "ed-1"]).await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FLAGGED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
