//! The pool page (`/pool?name=<pool>#token=<operator token>`) in Debian's headless Chromium
//! (driven by e2e/browser/dashboard.mjs, view "pool") against the real edge, with scripted
//! pool nodes: nodes joining and leaving, leases, the queue, finished work, all live;
//! audited with axe-core at WCAG 2.1 AA. Each test keeps its final screenshot in
//! target/screenshots/.

use std::time::Duration;

use serde_json::{Value, json};
use stagecast_e2e::browser::{Page, assert_accessible, assert_no_console_errors};
use stagecast_e2e::client::{now_s, sample_events};
use stagecast_e2e::pool::{PoolNode, node_token, publish_attempt, submit, submit_token};
use stagecast_e2e::{Edge, Tokens, shared_edge};
use stagecast_shared::dispatch::PoolMessage;
use stagecast_shared::token::{Claims, Scope, mint};

/// How long the page may take to show something.
const T: Duration = Duration::from_secs(60);
/// How long a scripted node waits for the edge.
const NODE_T: Duration = Duration::from_secs(15);

/// An operator's token: reads pools (`admin`) and watches their analyses (`subscribe`),
/// so the page's links to the dashboards work with it.
fn operator_token() -> String {
    Tokens::sign(&Tokens::claims(&[Scope::Admin, Scope::Subscribe], &["*"]))
}

/// The pool page (or the view `extra` names) open at `url`.
async fn open(url: &str, name: &str, extra: Value) -> Page {
    let mut options = json!({"view": "pool"});
    options
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    Page::open(url, name, T, options).await
}

fn pool_url(edge: &Edge, pool: &str, token: &str) -> String {
    format!("{}/pool?name={pool}#token={token}", edge.base_url())
}

/// A scripted node `node_id` in `pool`: welcome read, `slots` for `models` declared.
async fn join(ws: &str, pool: &str, node_id: &str, slots: u32, models: &[&str]) -> PoolNode {
    let mut node = PoolNode::connect(ws, pool, &node_token(node_id))
        .await
        .unwrap();
    match node.next(NODE_T).await.unwrap() {
        PoolMessage::Welcome { .. } => {}
        other => panic!("expected welcome, got {other:?}"),
    }
    let ready = json!({"type": "ready", "slots": slots, "models": models});
    node.send_text(&ready.to_string()).await.unwrap();
    node
}

/// A heartbeat listing `running`, with a GPU node's figures.
async fn beat(node: &mut PoolNode, running: &[&str], gpu_util: f64) {
    let heartbeat = json!({"type": "heartbeat", "running": running, "metrics": {
        "gpu_util": gpu_util, "gpu_mem_used_bytes": 3u64 << 30, "gpu_mem_total_bytes": 16u64 << 30,
        "cpu_util": 0.12, "rss_bytes": 1536u64 << 20, "queue_depth": 0}});
    node.send_text(&heartbeat.to_string()).await.unwrap();
}

fn node<'a>(line: &'a Value, id: &str) -> Option<&'a Value> {
    line["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}

fn running(line: &Value, id: &str) -> Vec<String> {
    node(line, id).map_or_else(Vec::new, |n| {
        n["running"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    })
}

fn finished(line: &Value) -> Vec<(String, String)> {
    line["finished"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("id"), s("status"))
        })
        .collect()
}

#[tokio::test]
async fn the_pool_page_shows_nodes_leases_the_queue_and_finished_work_live() {
    let edge = shared_edge().await;
    let (base, ws) = (edge.base_url(), edge.ws_url(""));
    let pool = "page-pool";
    let token = operator_token();
    // Opened the way a person would: the tenant view, then its pool form.
    let mut page = open(
        &format!("{base}/#token={token}"),
        "pool-page",
        json!({"from_index": true, "pool": pool}),
    )
    .await;
    let empty = page
        .until("pool", "the empty pool", |l| {
            l["connection"] == "open" && l["queued"] == "0"
        })
        .await;
    assert_eq!(empty["nodes"], json!([]), "{empty}");
    assert_eq!(empty["scope_note"], false, "the token may watch analyses");

    // Two GPU nodes of one slot each join and report their figures.
    let mut a = join(&ws, pool, "gpu-a", 1, &["text-detect"]).await;
    let mut b = join(&ws, pool, "gpu-b", 1, &["text-detect"]).await;
    beat(&mut a, &[], 0.05).await;
    beat(&mut b, &[], 0.04).await;
    let joined = page
        .until("pool", "both nodes with their slots", |l| {
            ["gpu-a", "gpu-b"]
                .iter()
                .all(|id| node(l, id).is_some_and(|n| n["slots"] == 1 && n["connected"] == true))
        })
        .await;
    let listed: Vec<&str> = joined["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["gpu-a", "gpu-b"], "{joined}");

    // Four submissions: one leased to each node, two queued, one of them for a model that
    // no node serves.
    for (id, model) in [
        ("pp-1", "text-detect"),
        ("pp-2", "text-detect"),
        ("pp-3", "text-detect"),
        ("pp-4", "ocr-xl"),
    ] {
        let body = json!({"analysis_id": id, "pool": pool, "input": "https://media.example/x.mp4", "model": model});
        let (status, answer, _) = submit(&base, &submit_token(), &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let (_, id_a, attempt_a) = a.take_lease(NODE_T).await.unwrap();
    let (_, id_b, attempt_b) = b.take_lease(NODE_T).await.unwrap();
    // Equal free slots: the smaller node id first.
    assert_eq!((id_a.as_str(), attempt_a), ("pp-1", 1));
    assert_eq!((id_b.as_str(), attempt_b), ("pp-2", 1));
    beat(&mut a, &["pp-1"], 0.87).await;
    beat(&mut b, &["pp-2"], 0.91).await;
    let busy = page
        .until("pool", "both nodes busy and two queued", |l| {
            running(l, "gpu-a") == ["pp-1"]
                && running(l, "gpu-b") == ["pp-2"]
                && l["queued"] == "2"
                && l["queued_list"] == json!(["pp-3", "pp-4"])
                && node(l, "gpu-a").is_some_and(|n| n["metrics"].as_str().unwrap().contains("87%"))
        })
        .await;
    let gpu_a = node(&busy, "gpu-a").unwrap();
    assert_eq!(
        (gpu_a["used"].as_u64(), gpu_a["slots"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(gpu_a["slots_text"], "1 of 1 slot in use", "{gpu_a}");
    assert_eq!(gpu_a["state"], "connected");
    assert_eq!(
        gpu_a["metrics"],
        "GPU 87% · GPU memory 3.0 GiB of 16.0 GiB · CPU 12% · memory 1.5 GiB · node queue 0"
    );
    assert!(
        gpu_a["models"].as_str().unwrap().contains("text-detect"),
        "{gpu_a}"
    );
    // Each running analysis links to its dashboard, with the page's token.
    assert_eq!(
        gpu_a["running"][0]["href"],
        format!("/analysis?id=pp-1#token={token}")
    );
    assert_eq!(busy["leased"], "2");
    assert_eq!(busy["slots_total"], "2 of 2");
    assert_eq!(busy["unserved"], json!(["ocr-xl"]), "{busy}");
    assert!(
        busy["oldest"].as_str().unwrap().ends_with(" s"),
        "the oldest queued age: {busy}"
    );
    let violations = page.audit("nodes").await;
    assert_eq!(violations, json!([]), "axe at nodes: {violations:#}");

    // pp-1 completes on gpu-a, whose free slot takes pp-3 at once.
    let (status, body) = publish_attempt(
        &base,
        "pp-1",
        &node_token("gpu-a"),
        Some(1),
        &sample_events(2),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, next, attempt) = a.take_lease(NODE_T).await.unwrap();
    assert_eq!((next.as_str(), attempt), ("pp-3", 1));
    beat(&mut a, &["pp-3"], 0.9).await;
    let done = page
        .until("pool", "pp-1 finished and pp-3 on gpu-a", |l| {
            finished(l).contains(&("pp-1".into(), "completed".into()))
                && running(l, "gpu-a") == ["pp-3"]
                && l["queued"] == "1"
                && l["queued_list"] == json!(["pp-4"])
        })
        .await;
    assert_eq!(running(&done, "gpu-b"), ["pp-2"]);
    let violations = page.audit("finished").await;
    assert_eq!(violations, json!([]), "axe at finished: {violations:#}");

    // pp-2 fails on gpu-b; nothing left that gpu-b serves, so it idles.
    let failed = [
        sample_events(2)[0].clone(),
        json!({"id": "e-fail", "type": "failed", "error": {
            "code": "gpu_lost", "message": "the GPU fell off the bus", "retryable": true}}),
    ];
    let (status, body) =
        publish_attempt(&base, "pp-2", &node_token("gpu-b"), Some(1), &failed).await;
    assert_eq!(status, 200, "{body}");
    let idle = page
        .until("pool", "pp-2 failed and gpu-b idle", |l| {
            finished(l).first() == Some(&("pp-2".into(), "failed".into()))
                && node(l, "gpu-b").is_some_and(|n| n["used"] == 0)
        })
        .await;
    assert_eq!(
        finished(&idle),
        [
            ("pp-2".to_owned(), "failed".to_owned()),
            ("pp-1".to_owned(), "completed".to_owned())
        ],
        "newest first"
    );

    // gpu-b, holding nothing, goes: the pool forgets it and the page drops it.
    b.kill();
    let left = page
        .until("pool", "gpu-b gone", |l| node(l, "gpu-b").is_none())
        .await;
    assert!(node(&left, "gpu-a").is_some(), "{left}");
    // gpu-a goes while it holds pp-3: it stays, disconnected, until its lease runs out.
    a.kill();
    let lost = page
        .until("pool", "gpu-a disconnected", |l| {
            node(l, "gpu-a").is_some_and(|n| n["connected"] == false)
        })
        .await;
    assert_eq!(node(&lost, "gpu-a").unwrap()["state"], "disconnected");

    let last = page.finish().await;
    // live all along: the one socket, never reloaded
    assert_eq!(
        last["sockets"],
        json!([format!("/v1/pools/{pool}/ws")]),
        "{last}"
    );
    assert_eq!(last["connection"], "open");
    assert_accessible(&last, &["index", "nodes", "finished"]);
    assert_no_console_errors(&last, &[]);
}

#[tokio::test]
async fn the_page_reconnects_after_the_edge_restarts_and_shows_the_pool_as_it_is_then() {
    let mut edge = Edge::dev().await.unwrap();
    let pool = "page-restart";
    let token = operator_token();
    let mut page = open(
        &pool_url(&edge, pool, &token),
        "pool-page-edge-restart",
        json!({}),
    )
    .await;
    page.until("pool", "the empty pool", |l| {
        l["connection"] == "open" && l["queued"] == "0"
    })
    .await;
    edge.kill();
    page.until("pool", "reconnecting", |l| {
        l["connection"] == "reconnecting"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    edge.restart().await.unwrap();
    // Nobody serves the model: it waits, and the page hears of it on the new socket.
    let body = json!({"analysis_id": "pr-1", "pool": pool, "input": "https://media.example/x.mp4", "model": "ocr-xl"});
    let (status, answer, _) = submit(&edge.base_url(), &submit_token(), &body).await;
    assert_eq!(status, 202, "{answer}");
    let back = page
        .until("pool", "pr-1 queued after the restart", |l| {
            l["connection"] == "open" && l["queued_list"] == json!(["pr-1"])
        })
        .await;
    assert_eq!(back["unserved"], json!(["ocr-xl"]), "{back}");
    let last = page.finish().await;
    assert!(
        last["sockets"].as_array().unwrap().len() >= 2,
        "a new socket: {last}"
    );
    // The browser logs each network failure (refused, reset, dropped) while the edge is
    // down; anything else (a script error) fails the test.
    assert_no_console_errors(&last, &["net::ERR_"]);
}

#[tokio::test]
async fn a_bad_or_expired_token_shows_a_readable_message_instead_of_a_reconnect_loop() {
    let edge = shared_edge().await;
    let expired = mint(
        &Claims::new(
            "dev",
            "operator",
            &[Scope::Admin],
            &["*"],
            now_s() - 3600,
            60,
        ),
        &Tokens::key(),
    )
    .unwrap();
    let viewer = Tokens::sign(&Tokens::claims(&[Scope::Subscribe], &["*"]));
    for (token, name, code, words) in [
        (expired, "pool-page-expired-token", "4001", "expired"),
        (viewer, "pool-page-viewer-token", "4003", "scope admin"),
    ] {
        let page = open(
            &pool_url(edge, "page-refused", &token),
            name,
            json!({"until_problem": true, "settle_ms": 3000}),
        )
        .await;
        let last = page.ended().await;
        let problem = last["problem"].as_str().unwrap_or_default();
        assert!(
            problem.contains(words) && problem.contains(code),
            "{code}: {last}"
        );
        assert_eq!(last["connection"], "closed");
        assert!(
            !last["seen"]["connections"]
                .as_array()
                .unwrap()
                .contains(&json!("reconnecting")),
            "{last}"
        );
        assert_eq!(last["sockets"].as_array().unwrap().len(), 1, "{last}");
        assert_accessible(&last, &["problem"]);
        assert_no_console_errors(&last, &[]);
    }
}
