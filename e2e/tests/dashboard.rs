//! The dashboard page and the tenant view in Debian's headless Chromium (driven by
//! e2e/browser/dashboard.mjs through playwright-core) against the real edge and a real node,
//! audited with axe-core at WCAG 2.1 AA. Each test keeps its final screenshot in
//! target/screenshots/.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use stagecast_e2e::browser::{Page, assert_accessible, assert_no_console_errors};
use stagecast_e2e::client::{now_s, publish};
use stagecast_e2e::{Edge, Tokens, ready_node, shared_edge};
use stagecast_fixtures::{HEIGHT, WIDTH, fixtures, path};
use stagecast_shared::token::{Claims, Scope, mint};

const T: Duration = Duration::from_secs(180);

/// The dashboard (or the view `extra` names) open at `url`.
async fn open(url: &str, name: &str, extra: Value) -> Page {
    Page::open(url, name, T, extra).await
}

fn dashboard_url(edge: &Edge, id: &str, token: &str) -> String {
    format!("{}/analysis?id={id}#token={token}", edge.base_url())
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

async fn stored_times(edge: &Edge, id: &str) -> HashMap<u64, i64> {
    let page: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/analyses/{id}/events?since=0&limit=1000",
            edge.base_url()
        ))
        .bearer_auth(Tokens::viewer(id))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = page["events"].as_array().unwrap();
    assert_eq!(
        page["last_seq"],
        events.len(),
        "a page of events held them all"
    );
    events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["ts"].as_i64().unwrap()))
        .collect()
}

/// `ts` (ms since the epoch) as the page shows it in the driver's en-GB locale and UTC.
fn clock(ts: i64) -> String {
    let s = ts.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Each line of a list (messages or findings) shows the edge's time of the event it
/// came from; returns the times shown.
fn assert_lines_at_event_times(lines: &Value, times: &HashMap<u64, i64>) -> Vec<String> {
    let lines = lines.as_array().unwrap();
    assert!(!lines.is_empty());
    lines
        .iter()
        .map(|line| {
            let seq = line["seq"].as_u64().unwrap_or_else(|| panic!("{line}"));
            let ts = times[&seq];
            assert_eq!(line["ts"], ts, "{line}");
            let shown = line["time"].as_str().unwrap();
            assert_eq!(shown, clock(ts), "{line}");
            assert!(line["text"].as_str().unwrap().starts_with(shown), "{line}");
            shown.to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_page_follows_an_analysis_from_pending_through_every_stage_to_the_result() {
    let edge = shared_edge().await;
    let node = ready_node(edge).await;
    let id = "page-full";
    let mut page = open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-completed",
        json!({"audit": ["pending", "running", "completed"]}),
    )
    .await;
    let pending = page
        .until("status", "open and pending", |l| {
            l["connection"] == "open" && l["status"] == "pending"
        })
        .await;
    assert_eq!(pending["cancel_shown"], true, "{pending}");
    let (status, body) = node
        .submit(&json!({"input": path(&fixtures().long_video), "analysis_id": id, "fps": 1}))
        .await;
    assert_eq!(status, 202, "{body}");
    let last = page.ended().await;

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
    assert_eq!(result["viewbox"], format!("0 0 {WIDTH} {HEIGHT}"));
    assert!(
        last["toasts"]
            .as_array()
            .unwrap()
            .contains(&json!("Analysis completed")),
        "{last}"
    );
    assert_eq!(last["connection"], "finished");
    assert!(!last["cancel_enabled"].as_bool().unwrap());
    // shown from pending through running, gone once it ended
    assert_eq!(last["seen"]["cancel_shown"], json!([true, false]), "{last}");
    assert_every_event_once(&last);
    let times = stored_times(edge, id).await;
    assert_lines_at_event_times(&last["messages"], &times);
    assert_lines_at_event_times(&last["findings"], &times);
    assert_accessible(&last, &["pending", "running", "completed"]);
    assert_no_console_errors(&last, &[]);
}

#[tokio::test]
async fn the_page_reconnects_after_the_edge_restarts_and_shows_every_event_once() {
    let mut edge = Edge::dev().await.unwrap();
    let node = ready_node(&edge).await;
    let id = "page-restart";
    let mut page = open(
        &dashboard_url(&edge, id, &Tokens::viewer(id)),
        "dashboard-edge-restart",
        json!({}),
    )
    .await;
    page.until("status", "connected", |l| l["connection"] == "open")
        .await;
    let (status, _) = node
        .submit(&json!({"input": path(&fixtures().long_video), "analysis_id": id, "fps": 2, "batch_size": 2}))
        .await;
    assert_eq!(status, 202);
    page.until("status", "running with progress", |l| {
        l["status"] == "running" && l["overall"].as_u64() > Some(0)
    })
    .await;
    edge.kill();
    page.until("status", "reconnecting", |l| {
        l["connection"] == "reconnecting"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    edge.restart().await.unwrap();
    let last = page.ended().await;
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
    let page = open(
        &dashboard_url(edge, id, &expired),
        "dashboard-expired-token",
        json!({"settle_ms": 4000}),
    )
    .await;
    let last = page.ended().await;
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
    let mut page = open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-cancelled",
        json!({"cancel_at_stage": "infer", "audit": ["running", "cancelled"]}),
    )
    .await;
    page.until("status", "connected", |l| l["connection"] == "open")
        .await;
    let (status, _) = node
        .submit(&json!({"input": path(&fixtures().long_video), "analysis_id": id, "fps": 5, "batch_size": 2}))
        .await;
    assert_eq!(status, 202);
    let last = page.ended().await;
    assert_eq!(last["clicked"], true);
    assert_eq!(last["status"], "cancelled", "{last}");
    assert!(!last["cancel_enabled"].as_bool().unwrap());
    assert_eq!(last["seen"]["cancel_shown"], json!([true, false]), "{last}");
    // the button that had keyboard focus went away: focus stays by the status, not the page top
    assert_eq!(last["focused"], "status-line", "{last}");
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
    assert_accessible(&last, &["running", "cancelled"]);
    assert_no_console_errors(&last, &[]);
}

#[tokio::test]
async fn a_failed_analysis_opened_later_shows_each_line_at_its_events_time() {
    let edge = shared_edge().await;
    let id = "page-failed";
    let token = Tokens::node(id);
    // the node's clock an hour behind: the page must show the edge's time of each event
    let node_ts = (now_s() - 3600) * 1000;
    let finding = |id: String, frame: u64, score: f64| {
        json!({"id": id, "ts": node_ts, "type": "partial_result", "regions": [
            {"frame": frame, "x": 40.0, "y": 60.0, "w": 80.0, "h": 20.0, "score": score, "label": "text"}]})
    };
    let mut infer = vec![
        json!({"id": "f-3", "ts": node_ts, "type": "progress", "stage": "infer",
        "stage_progress": 0.5, "message": "batch 5 of 10"}),
    ];
    // enough findings that their list scrolls
    infer.extend((0..12).map(|i| finding(format!("f-4-{i}"), 20 + i, 0.77)));
    let batches = [
        vec![
            json!({"id": "f-start", "ts": node_ts, "type": "started", "model": "text-detect",
            "node": "gpu-7", "stages": [{"name": "decode", "weight": 1.0}, {"name": "infer", "weight": 3.0}]}),
        ],
        vec![
            json!({"id": "f-1", "ts": node_ts, "type": "progress", "stage": "decode",
                "stage_progress": 1.0, "message": "decoded 40 frames"}),
            finding("f-2".into(), 3, 0.91),
        ],
        infer,
        vec![
            json!({"id": "f-fail", "ts": node_ts, "type": "failed", "error": {
            "code": "gpu_lost", "message": "the GPU fell off the bus", "retryable": true}}),
        ],
    ];
    for (i, batch) in batches.iter().enumerate() {
        if i > 0 {
            // more than a second apart, so each batch shows its own time
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let (status, body) = publish(&edge.base_url(), id, &token, batch).await;
        assert_eq!(status, 200, "{body}");
    }
    let page = open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-failed",
        json!({"audit": ["failed"]}),
    )
    .await;
    let last = page.ended().await;

    assert_eq!(last["status"], "failed", "{last}");
    assert_eq!(
        last["failure"],
        json!({"code": "gpu_lost", "message": "the GPU fell off the bus"})
    );
    assert!(
        last["toasts"]
            .as_array()
            .unwrap()
            .contains(&json!("Analysis failed")),
        "{last}"
    );
    assert_eq!(last["connection"], "finished");
    assert_eq!(last["cancel_shown"], false, "{last}");
    assert_every_event_once(&last);
    let times = stored_times(edge, id).await;
    let messages = assert_lines_at_event_times(&last["messages"], &times);
    let findings = assert_lines_at_event_times(&last["findings"], &times);
    // started, decode, infer, failed: one line per batch, each at its own second
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(
        messages.iter().collect::<HashSet<_>>().len(),
        4,
        "{messages:?}"
    );
    assert_eq!(findings.len(), 13);
    assert_ne!(findings[0], findings[1]);
    assert_eq!(
        last["findings_scroll"], true,
        "axe judged a list that scrolls"
    );
    assert_accessible(&last, &["failed"]);
    assert_no_console_errors(&last, &[]);
}

#[tokio::test]
async fn the_tenant_view_lists_a_tokens_analyses_and_opens_one() {
    let edge = shared_edge().await;
    let token = Tokens::sign(&Tokens::claims(
        &[Scope::Subscribe],
        &["tenant-a", "tenant-b"],
    ));
    let page = open(
        &format!("{}/#token={token}", edge.base_url()),
        "tenant-view",
        json!({"view": "tenant", "open_id": "tenant-b"}),
    )
    .await;
    let last = page.ended().await;

    assert!(
        last["grants_who"]
            .as_str()
            .unwrap()
            .starts_with("Tenant dev, subject tester, expires"),
        "{last}"
    );
    assert_eq!(
        last["grants"],
        json!([
            {"text": "tenant-a", "href": format!("/analysis?id=tenant-a#token={token}")},
            {"text": "tenant-b", "href": format!("/analysis?id=tenant-b#token={token}")},
        ])
    );
    // two grants and no id: the form says so and puts focus on the id field
    assert!(
        last["form_error"]
            .as_str()
            .unwrap()
            .starts_with("Enter an analysis id"),
        "{last}"
    );
    assert_eq!(last["form_error_focus"], "analysis");
    assert_eq!(
        last["opened"],
        format!("{}/analysis?id=tenant-b#token={token}", edge.base_url())
    );
    assert_accessible(&last, &["grants", "form_error"]);
    assert_no_console_errors(&last, &[]);
}
