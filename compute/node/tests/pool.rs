//! `stagecast-node serve --pool` as an operator runs it: it joins over one socket and,
//! on SIGTERM, drains (`ready {slots: 0}`) and exits 0. The pool is a scripted socket on
//! 127.0.0.1.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "cli-test-secret-0123456789abcdef0123";
const WAIT: Duration = Duration::from_secs(60);

fn serve(edge: &str, state: &std::path::Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(state.join("node.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--edge",
            edge,
        ])
        .args(["--node-id", "n1", "--state-dir"])
        .arg(state)
        .args(extra)
        .env("STAGECAST_NODE_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn log(state: &std::path::Path) -> String {
    std::fs::read_to_string(state.join("node.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_pool_link_and_exits_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = format!("http://{}", listener.local_addr().unwrap());
    let state = tempfile::tempdir().unwrap();
    let mut node = serve(
        &edge,
        state.path(),
        &["--pool", "gpu", "--drain-timeout", "5"],
    );

    let accepted = tokio::time::timeout(WAIT, listener.accept()).await;
    let (stream, _) = accepted.expect("no connection").unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    let welcome = json!({"type": "welcome", "pool": "gpu", "node_id": "n1", "lease_ms": 30000, "heartbeat_ms": 1000});
    ws.send(Message::Text(welcome.to_string().into()))
        .await
        .unwrap();
    // the models load in the background: slots once they are in
    let mut next = async || -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, ws.next()).await.expect("silent");
            if let Some(Ok(Message::Text(text))) = message {
                return serde_json::from_str(&text).unwrap();
            }
            assert!(matches!(message, Some(Ok(_))), "socket ended: {message:?}");
        }
    };
    loop {
        let m = next().await;
        if m["type"] == "ready" && m["slots"] == 1 {
            assert_eq!(m["models"], json!(["text-detect"]));
            break;
        }
    }

    let pid = node.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    loop {
        let m = next().await;
        if m["type"] == "ready" {
            assert_eq!(m["slots"], 0, "{m}");
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {}",
            log(state.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}: {}", log(state.path()));
}

#[test]
fn a_pool_needs_an_edge_and_a_bounded_concurrency() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
        .args(["serve", "--pool", "gpu"])
        .env("STAGECAST_NODE_SECRET", SECRET)
        .env_remove("STAGECAST_EDGE_URL")
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pool needs --edge"));

    let mut node = serve(
        "http://127.0.0.1:9",
        state.path(),
        &["--pool", "gpu", "--concurrency", "257"],
    );
    assert_eq!(node.wait().unwrap().code(), Some(1));
    assert!(log(state.path()).contains("--concurrency is at most 256"));

    let out = Command::new(env!("CARGO_BIN_EXE_stagecast-node"))
        .args(["serve", "--pool", "not a pool"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
