//! An uploaded video through the fleet: `stagecast-node submit` uploads it to the real
//! edge and submits it, a real pool node fetches it from the edge (resuming with `Range`
//! after a cut), runs it and leaves key frames as artifacts, which the dashboard shows
//! under the boxes in headless Chromium.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use stagecast_e2e::browser::{Page, assert_accessible, assert_no_console_errors};
use stagecast_e2e::client::DEV_SECRET;
use stagecast_e2e::proxy::TruncateOnce;
use stagecast_e2e::uploads::get_artifact;
use stagecast_e2e::{Edge, Node, Subscriber, Tokens, node_bin};
use stagecast_fixtures::fixtures;
use stagecast_shared::StoredEvent;
use stagecast_shared::event::EventKind;
use stagecast_shared::stored::{EdgeEventKind, StoredEventBody};

const SLOW: Duration = Duration::from_secs(180);

async fn pool_node(edge_url: &str, pool: &str, name: &str) -> Node {
    let bin = node_bin().unwrap();
    let mut node = Node::start(&bin, Some(edge_url), &["--pool", pool, "--node-id", name])
        .await
        .unwrap();
    node.ready(SLOW).await.unwrap();
    node
}

/// `stagecast-node submit FILE --no-follow`: its exit status, stdout and stderr.
fn submit_cli(edge: &str, file: &Path, pool: &str, id: &str) -> (bool, String, String) {
    let out = std::process::Command::new(node_bin().unwrap())
        .args([
            "submit",
            "--edge",
            edge,
            "--pool",
            pool,
            "--analysis-id",
            id,
        ])
        .args(["--fps", "5", "--no-follow"])
        .arg(file)
        .env("STAGECAST_NODE_SECRET", DEV_SECRET)
        .env("STAGECAST_NODE_ID", "backend")
        .output()
        .expect("the node binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn followed(edge: &Edge, id: &str) -> Vec<StoredEvent> {
    let token = Tokens::viewer(id);
    let mut watcher =
        Subscriber::connect(&edge.ws_url(&format!("/v1/analyses/{id}/ws?token={token}")))
            .await
            .unwrap();
    let mut events = Vec::new();
    watcher.until_terminal(&mut events, SLOW).await.unwrap();
    events
}

fn result(events: &[StoredEvent]) -> Value {
    let last = events.last().expect("events");
    match &last.event {
        StoredEventBody::Node(e) => match &e.kind {
            EventKind::Completed { result } => serde_json::to_value(result).unwrap(),
            other => panic!("ended with {other:?}"),
        },
        StoredEventBody::Edge(e) => panic!("ended by the edge: {e:?}"),
    }
}

/// The artifacts announced, as (name, frame, kind).
fn artifacts(events: &[StoredEvent]) -> Vec<(String, Option<u64>, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            StoredEventBody::Edge(edge) => match &edge.kind {
                EdgeEventKind::Artifact {
                    name, frame, kind, ..
                } => Some((name.to_string(), *frame, kind.clone())),
                _ => None,
            },
            StoredEventBody::Node(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn an_uploaded_video_runs_on_the_fleet_and_a_cut_fetch_resumes_to_the_same_result() {
    let edge = Edge::dev().await.unwrap();
    let base = edge.base_url();
    let video = &fixtures().video;

    // a node dialled straight to the edge
    let _direct = pool_node(&base, "up", "up-direct").await;
    let (ok, stdout, stderr) = submit_cli(&base, video, "up", "up-1");
    assert!(ok, "submit failed: {stderr}");
    assert!(
        stdout
            .trim()
            .starts_with(&format!("{base}/analysis?id=up-1#token=")),
        "{stdout}"
    );
    assert!(
        stderr.contains("uploaded") && stderr.contains("sha256"),
        "{stderr}"
    );
    let events = followed(&edge, "up-1").await;
    let direct = result(&events);
    assert!(
        direct["regions"].as_array().is_some_and(|r| !r.is_empty()),
        "{direct}"
    );
    let shown = artifacts(&events);
    assert!(
        shown
            .iter()
            .any(|(_, _, k)| k.as_deref() == Some("key_frame")),
        "{shown:?}"
    );
    let (name, frame, _) = shown
        .iter()
        .find(|(_, _, k)| k.as_deref() == Some("result"))
        .unwrap_or_else(|| panic!("no result frame in {shown:?}"));
    assert!(frame.is_some());
    let picture = get_artifact(&base, "up-1", name, &Tokens::viewer("up-1"), &[]).await;
    assert_eq!(picture.header("content-type"), Some("image/jpeg"));
    let decoded = image::load_from_memory(&picture.body).expect("a JPEG");
    assert!(decoded.width().max(decoded.height()) <= 640);

    // the dashboard the CLI printed: the real frame under the boxes, the key frames beside
    let page = Page::open(
        stdout.trim(),
        "media-fleet-frames",
        SLOW,
        json!({"audit": ["completed"]}),
    )
    .await;
    let last = page.ended().await;
    assert_eq!(last["status"], "completed", "{last}");
    let shown_frame = &last["frame"];
    assert!(
        shown_frame["image"]
            .as_str()
            .is_some_and(|src| src.contains(name.as_str()))
            && shown_frame["loaded"] == true,
        "{last}"
    );
    assert!(shown_frame["drawn"].as_u64().unwrap_or(0) > 0, "{last}");
    let strip = last["strip"].as_array().unwrap();
    let keys = shown
        .iter()
        .filter(|(_, _, k)| k.as_deref() == Some("key_frame"));
    assert_eq!(strip.len(), keys.count(), "{last}");
    assert!(strip.iter().all(|t| t["loaded"] == true), "{last}");
    assert_accessible(&last, &["completed"]);
    assert_no_console_errors(&last, &[]);

    // a node behind a link that drops halfway through the input
    let size = std::fs::metadata(video).unwrap().len();
    let upstream = format!("127.0.0.1:{}", edge.config.port).parse().unwrap();
    let proxy = TruncateOnce::start(upstream, "/input", size / 2)
        .await
        .unwrap();
    let _cut = pool_node(&proxy.base_url(), "cut", "cut-node").await;
    let (ok, _, stderr) = submit_cli(&base, video, "cut", "up-2");
    assert!(ok, "submit failed: {stderr}");
    let events = followed(&edge, "up-2").await;
    assert!(proxy.cut_done(), "the fetch was never cut");
    assert!(
        proxy
            .ranges()
            .iter()
            .any(|r| r.starts_with("range: bytes=") && !r.ends_with("=0-")),
        "no resume with Range: {:?}",
        proxy.ranges()
    );
    let resumed = result(&events);
    assert_eq!(resumed["score"], direct["score"]);
    assert_eq!(resumed["regions"], direct["regions"]);
}

#[tokio::test]
async fn submit_refuses_what_it_cannot_send() {
    let edge = Edge::dev().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("clip.xyz");
    std::fs::write(&odd, b"bytes").unwrap();
    let (ok, _, stderr) = submit_cli(&edge.base_url(), &odd, "up", "bad-1");
    assert!(!ok && stderr.contains("--content-type"), "{stderr}");
    let (ok, _, stderr) = submit_cli(
        &edge.base_url(),
        &dir.path().join("missing.mp4"),
        "up",
        "bad-2",
    );
    assert!(!ok && stderr.contains("no such file"), "{stderr}");
    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"not a picture").unwrap();
    // the edge's refusal, readable: a submit token cannot be replaced by a viewer's
    let out = std::process::Command::new(node_bin().unwrap())
        .args([
            "submit",
            "--edge",
            &edge.base_url(),
            "--no-follow",
            "--token",
        ])
        .arg(Tokens::viewer("bad-3"))
        .args(["--analysis-id", "bad-3"])
        .arg(&text)
        .env("STAGECAST_NODE_SECRET", DEV_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("the edge refused the upload: 403 insufficient_scope"),
        "{stderr}"
    );
}
