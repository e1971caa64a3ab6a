//! The dashboard page in Debian's headless Chromium (driven by e2e/browser/dashboard.mjs
//! through playwright-core) against the real edge and a real node. Each test keeps its
//! final screenshot in target/screenshots/.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{fixtures, path, ready_node};
use serde_json::{Value, json};
use stagecast_e2e::client::now_s;
use stagecast_e2e::edge::repo_root;
use stagecast_e2e::{Edge, Tokens, shared_edge};
use stagecast_shared::token::{Claims, Scope, mint};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const T: Duration = Duration::from_secs(180);

fn dashboard_url(edge: &Edge, id: &str, token: &str) -> String {
    format!("{}/analysis?id={id}#token={token}", edge.base_url())
}

fn screenshot(name: &str) -> PathBuf {
    let dir = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.png"))
}

/// The page, open in Chromium, reporting what it shows line by line.
struct Page {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Page {
    async fn open(url: &str, name: &str, extra: Value) -> Page {
        let mut options =
            json!({"url": url, "screenshot": screenshot(name), "timeout_ms": T.as_millis() as u64});
        options
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut child = Command::new("node")
            .arg(repo_root().join("e2e/browser/dashboard.mjs"))
            .arg(options.to_string())
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (Node.js) and playwright-core: run `make setup`");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut page = Page { child, lines };
        let opened = page.next().await;
        assert_eq!(opened["type"], "opened", "{opened}");
        page
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(T, self.lines.next_line())
            .await
            .expect("the page said nothing")
            .unwrap()
            .expect("the browser driver ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Lines until one matches `done`; returns it.
    async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self.next().await;
            assert_ne!(line["type"], "final", "the page finished first: {line}");
            if done(&line) {
                return line;
            }
        }
    }

    async fn finish(mut self) -> Value {
        loop {
            let line = self.next().await;
            if line["type"] == "final" {
                let status = self.child.wait().await.unwrap();
                assert!(status.success(), "the browser driver failed");
                return line;
            }
        }
    }
}

fn assert_every_event_once(last: &Value) {
    let seqs: Vec<u64> = last["event_seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert!(!seqs.is_empty());
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap or repeat on the page"
    );
}

/// No error in the page's console but those containing one of `expected`.
fn assert_no_console_errors(last: &Value, expected: &[&str]) {
    let unexpected: Vec<&Value> = last["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            !expected
                .iter()
                .any(|x| e.as_str().unwrap_or("").contains(x))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the page logged errors: {unexpected:?}"
    );
}

#[tokio::test]
async fn the_page_follows_an_analysis_from_pending_through_every_stage_to_the_result() {
    let edge = shared_edge().await;
    let node = ready_node(edge).await;
    let id = "page-full";
    let mut page = Page::open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-completed",
        json!({}),
    )
    .await;
    page.until(|l| l["connection"] == "open" && l["status"] == "pending")
        .await;
    let (status, body) = node
        .submit(&json!({"input": path(&fixtures().long_video), "analysis_id": id, "fps": 1}))
        .await;
    assert_eq!(status, 202, "{body}");
    let last = page.finish().await;

    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["seen"]["statuses"][0], "pending");
    assert!(
        last["seen"]["statuses"]
            .as_array()
            .unwrap()
            .contains(&json!("running")),
        "{last}"
    );
    assert_eq!(last["overall"], 100);
    let stages = last["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["fetch", "decode", "preprocess", "infer", "postprocess"]
    );
    assert!(
        stages.iter().all(|s| s["pct"] == 100 && s["done"] == true),
        "{stages:?}"
    );
    assert!(
        stages
            .iter()
            .all(|s| s["times"].as_str().unwrap().starts_with("started")),
        "{stages:?}"
    );
    let result = &last["result"];
    assert_eq!(result["flag"], "Flagged", "{result}");
    assert!(
        result["rows"].as_u64().unwrap() > 0 && result["drawn"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert_eq!(
        result["viewbox"],
        format!("0 0 {} {}", common::WIDTH, common::HEIGHT)
    );
    assert!(
        last["toasts"]
            .as_array()
            .unwrap()
            .contains(&json!("Analysis completed")),
        "{last}"
    );
    assert_eq!(last["connection"], "finished");
    assert!(!last["cancel_enabled"].as_bool().unwrap());
    assert_every_event_once(&last);
    assert_no_console_errors(&last, &[]);
}

#[tokio::test]
async fn the_page_reconnects_after_the_edge_restarts_and_shows_every_event_once() {
    let mut edge = Edge::dev().await.unwrap();
    let node = ready_node(&edge).await;
    let id = "page-restart";
    let mut page = Page::open(
        &dashboard_url(&edge, id, &Tokens::viewer(id)),
        "dashboard-edge-restart",
        json!({}),
    )
    .await;
    page.until(|l| l["connection"] == "open").await;
    let (status, _) = node
        .submit(&json!({"input": path(&fixtures().long_video), "analysis_id": id, "fps": 2, "batch_size": 2}))
        .await;
    assert_eq!(status, 202);
    page.until(|l| l["status"] == "running" && l["overall"].as_u64() > Some(0))
        .await;
    edge.kill();
    page.until(|l| l["connection"] == "reconnecting").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    edge.restart().await.unwrap();
    let last = page.finish().await;
    assert_eq!(last["status"], "completed", "{last}");
    assert!(
        last["seen"]["connections"]
            .as_array()
            .unwrap()
            .contains(&json!("reconnecting"))
    );
    assert_every_event_once(&last);
    // the browser logs each refused attempt while the edge is down
    assert_no_console_errors(&last, &["ERR_CONNECTION_REFUSED"]);
}

#[tokio::test]
async fn an_expired_token_shows_a_readable_message_instead_of_a_reconnect_loop() {
    let edge = shared_edge().await;
    let id = "page-expired";
    let claims = Claims::new(
        "dev",
        "viewer",
        &[Scope::Subscribe],
        &[id],
        now_s() - 3600,
        60,
    );
    let expired = mint(&claims, &Tokens::key()).unwrap();
    let page = Page::open(
        &dashboard_url(edge, id, &expired),
        "dashboard-expired-token",
        json!({"settle_ms": 4000}),
    )
    .await;
    let last = page.finish().await;
    let problem = last["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("expired") && problem.contains("4001"),
        "{last}"
    );
    assert_eq!(last["connection"], "closed");
    assert!(
        !last["seen"]["connections"]
            .as_array()
            .unwrap()
            .contains(&json!("reconnecting")),
        "{last}"
    );
}

#[tokio::test]
async fn cancel_from_the_page_ends_in_cancelled() {
    let edge = shared_edge().await;
    let node = ready_node(edge).await;
    let id = "page-cancel";
    let mut page = Page::open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-cancelled",
        json!({"cancel_at_stage": "infer"}),
    )
    .await;
    page.until(|l| l["connection"] == "open").await;
    let (status, _) = node
        .submit(&json!({"input": path(&fixtures().long_video), "analysis_id": id, "fps": 5, "batch_size": 2}))
        .await;
    assert_eq!(status, 202);
    let last = page.finish().await;
    assert_eq!(last["clicked"], true);
    assert_eq!(last["status"], "cancelled", "{last}");
    assert!(!last["cancel_enabled"].as_bool().unwrap());
    assert!(
        last["toasts"]
            .as_array()
            .unwrap()
            .contains(&json!("Analysis cancelled")),
        "{last}"
    );
    assert_eq!(
        node.finished(id, T).await.unwrap()["snapshot"]["status"],
        "cancelled"
    );
    assert_every_event_once(&last);
    assert_no_console_errors(&last, &[]);
}
