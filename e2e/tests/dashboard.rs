//! The dashboard page and the tenant view in Debian's headless Chromium (driven by
//! e2e/browser/dashboard.mjs through playwright-core) against the real edge and a real node,
//! audited with axe-core at WCAG 2.1 AA. Each test keeps its final screenshot in
//! target/screenshots/.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use serde_json::{Value, json};
use stagecast_e2e::browser::{Page, assert_accessible, assert_no_console_errors};
use stagecast_e2e::client::{now_s, publish};
use stagecast_e2e::uploads::put_artifact;
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
    // a replayed artifact event adds no second thumbnail
    let thumbnails: Vec<&str> = last["strip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["alt"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&&str> = thumbnails.iter().collect();
    assert_eq!(distinct.len(), thumbnails.len(), "{thumbnails:?}");
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
    // no artifacts: no frame view, no picture, no strip
    assert_eq!(last["frame"], Value::Null, "{last}");
    assert_eq!(last["strip"], json!([]), "{last}");
    assert_accessible(&last, &["failed"]);
    assert_no_console_errors(&last, &[]);
}

/// The frames in the artifact tests: 1280×720, pictured at half size as the node shrinks
/// them (longest side 640).
const FRAME: (u32, u32) = (1280, 720);

fn region(frame: u64, (x, y, w, h): (f64, f64, f64, f64), score: f64) -> Value {
    json!({"frame": frame, "x": x, "y": y, "w": w, "h": h, "score": score, "label": "text"})
}

/// A real JPEG of a frame: dark, with a block of `colour` under each of `regions` (their
/// boxes in the frame's pixels), at half the frame's size.
fn picture(regions: &[Value], colour: [u8; 3]) -> Vec<u8> {
    let mut image = RgbImage::from_pixel(FRAME.0 / 2, FRAME.1 / 2, Rgb([40, 44, 52]));
    for r in regions {
        let half = |k: &str| (r[k].as_f64().unwrap() / 2.0) as u32;
        for x in half("x")..half("x") + half("w") {
            for y in half("y")..half("y") + half("h") {
                image.put_pixel(x, y, Rgb(colour));
            }
        }
    }
    let mut bytes = Vec::new();
    image
        .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 85))
        .unwrap();
    bytes
}

/// Publishes `events` to `id` as its node.
async fn publish_ok(edge: &Edge, id: &str, events: &[Value]) {
    let (status, body) = publish(&edge.base_url(), id, &Tokens::node(id), events).await;
    assert_eq!(status, 200, "{body}");
}

/// Stores `jpeg` as the artifact `name` (`query`: its frame and kind), as the node.
async fn put_picture(edge: &Edge, id: &str, name: &str, query: &str, jpeg: Vec<u8>) {
    let node = Tokens::node(id);
    let put = put_artifact(&edge.base_url(), id, name, query, &node, "image/jpeg", jpeg).await;
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
}

/// What a node does for a batch that found `regions` (all on one frame): publishes them
/// and, given a `colour`, leaves that frame's picture as its key frame.
async fn found(edge: &Edge, id: &str, regions: &[Value], colour: Option<[u8; 3]>) {
    let frame = regions[0]["frame"].as_u64().unwrap();
    let event =
        json!({"id": format!("found-{frame}"), "type": "partial_result", "regions": regions});
    publish_ok(edge, id, &[event]).await;
    if let Some(colour) = colour {
        let (name, query) = (
            format!("key-{frame}.jpg"),
            format!("frame={frame}&kind=key_frame"),
        );
        put_picture(edge, id, &name, &query, picture(regions, colour)).await;
    }
}

/// The address the page loads artifact `name` from with the viewer's `token` (a JWT is all
/// URL-safe characters: encoding leaves it as it is).
fn artifact_href(id: &str, name: &str, token: &str) -> String {
    format!("/v1/analyses/{id}/artifacts/{name}?token={token}")
}

#[tokio::test]
async fn the_page_shows_key_frames_and_the_result_frame_under_the_boxes() {
    let edge = shared_edge().await;
    let id = "page-frames";
    let started = json!({"id": "k-start", "type": "started", "total_frames": 12,
        "stages": [{"name": "infer", "weight": 1.0}]});
    publish_ok(edge, id, &[started]).await;
    let viewer = Tokens::viewer(id);
    let mut page = open(
        &dashboard_url(edge, id, &viewer),
        "dashboard-frames",
        json!({"audit": ["completed"], "clicks": [
            {"thumbnail": "frame 3", "audit": "key_frame"},
            {"finding": 2, "audit": "no_picture"},
        ]}),
    )
    .await;
    page.until("status", "running", |l| {
        l["connection"] == "open" && l["status"] == "running"
    })
    .await;

    let on_3 = [
        region(3, (200.0, 120.0, 320.0, 200.0), 0.8),
        region(3, (760.0, 400.0, 240.0, 160.0), 0.6),
    ];
    let on_9 = [region(9, (640.0, 360.0, 400.0, 240.0), 0.93)];
    found(edge, id, &on_3, Some([30, 160, 220])).await;
    found(edge, id, &on_9, Some([230, 190, 40])).await;
    // a finding the node left no picture of
    let on_5 = [region(5, (100.0, 100.0, 200.0, 100.0), 0.5)];
    found(edge, id, &on_5, None).await;

    // while it runs: the latest key frame, under its partial result's regions
    let live = page
        .until("status", "the latest key frame loaded", |l| {
            let strip = l["strip"].as_array().unwrap();
            l["frame"]["loaded"] == true
                && strip.len() == 2
                && strip.iter().all(|t| t["loaded"] == true)
        })
        .await;
    let frame = &live["frame"];
    assert_eq!(
        frame["image"],
        artifact_href(id, "key-9.jpg", &viewer),
        "{live}"
    );
    assert_eq!(frame["drawn"], 1, "{live}");
    assert_eq!(frame["note"], Value::Null, "{live}");
    assert_eq!(
        live["strip"],
        json!([
            {"alt": "frame 3", "text": "3", "pressed": false, "loaded": true},
            {"alt": "frame 9", "text": "9", "pressed": true, "loaded": true},
        ]),
        "{live}"
    );

    let mut final_regions = on_9.to_vec();
    final_regions.push(region(9, (100.0, 500.0, 300.0, 120.0), 0.7));
    final_regions.extend([on_3[0].clone(), on_5[0].clone()]);
    let result_picture = picture(&final_regions[..2], [40, 170, 150]);
    put_picture(
        edge,
        id,
        "result-9.jpg",
        "frame=9&kind=result",
        result_picture,
    )
    .await;
    let completed = completed_event("k-done", 0.93, 12, &final_regions);
    publish_ok(edge, id, &[completed]).await;
    let last = page.ended().await;

    assert_eq!(last["status"], "completed", "{last}");
    // the result's picture under the result's regions of its frame, to the frame's full size
    let frame = &last["frame"];
    assert_eq!(
        frame["image"],
        artifact_href(id, "result-9.jpg", &viewer),
        "{last}"
    );
    assert_eq!(frame["loaded"], true, "{last}");
    assert_eq!(frame["drawn"], 2, "{last}");
    assert_eq!(frame["viewbox"], format!("0 0 {} {}", FRAME.0, FRAME.1));
    assert_eq!(frame["note"], Value::Null, "{last}");
    let pressed: Vec<&Value> = last["strip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["pressed"])
        .collect();
    assert_eq!(pressed, [false, true], "{last}");
    assert_eq!(last["result"]["rows"], 4, "{last}");

    let [key_3, no_picture] = last["clicked_frames"].as_array().unwrap().as_slice() else {
        panic!("two clicks: {last}");
    };
    // a thumbnail shows its frame, under the result's regions of that frame
    assert_eq!(
        key_3["frame"]["image"],
        artifact_href(id, "key-3.jpg", &viewer),
        "{key_3}"
    );
    assert_eq!(key_3["frame"]["loaded"], true, "{key_3}");
    assert_eq!(key_3["frame"]["drawn"], 1, "{key_3}");
    assert_eq!(
        key_3["strip"].as_array().unwrap()[0]["pressed"],
        true,
        "{key_3}"
    );
    // a finding (pressed with the keyboard) of a frame without a picture says so, and still
    // draws its region
    assert_eq!(no_picture["frame"]["image"], Value::Null, "{no_picture}");
    assert_eq!(
        no_picture["frame"]["note"], "No picture of frame 5.",
        "{no_picture}"
    );
    assert_eq!(no_picture["frame"]["drawn"], 1, "{no_picture}");
    assert!(
        no_picture["strip"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["pressed"] == false),
        "{no_picture}"
    );
    assert_every_event_once(&last);
    assert_accessible(&last, &["completed", "key_frame", "no_picture"]);
    assert_no_console_errors(&last, &[]);
}

#[tokio::test]
async fn a_picture_that_is_gone_leaves_a_note_and_the_boxes() {
    let edge = shared_edge().await;
    let id = "page-gone";
    let on_4 = [region(4, (300.0, 200.0, 400.0, 200.0), 0.9)];
    let started = json!({"id": "g-start", "type": "started",
        "stages": [{"name": "infer", "weight": 1.0}]});
    publish_ok(edge, id, &[started]).await;
    found(edge, id, &on_4, Some([30, 160, 220])).await;
    let result_picture = picture(&on_4, [40, 170, 150]);
    put_picture(
        edge,
        id,
        "result-4.jpg",
        "frame=4&kind=result",
        result_picture,
    )
    .await;
    let completed = completed_event("g-done", 0.9, 8, &on_4);
    publish_ok(edge, id, &[completed]).await;
    // opened later, once retention deleted the pictures (the driver answers them 404)
    let page = open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-picture-gone",
        json!({"audit": ["completed"], "missing": ["key-4.jpg", "result-4.jpg"]}),
    )
    .await;
    let last = page.ended().await;

    assert_eq!(last["status"], "completed", "{last}");
    let frame = &last["frame"];
    assert_eq!(frame["image"], Value::Null, "{last}");
    assert!(
        frame["note"]
            .as_str()
            .unwrap_or_default()
            .starts_with("The picture of frame 4 could not be loaded"),
        "{last}"
    );
    assert_eq!(frame["drawn"], 1, "{last}");
    // the thumbnail says which frame it was instead of a broken image
    assert_eq!(
        last["strip"],
        json!([{"alt": null, "text": "frame 4", "pressed": true, "loaded": false}]),
        "{last}"
    );
    assert_accessible(&last, &["completed"]);
    // Chromium logs each failed load; the page itself throws nothing
    assert_no_console_errors(&last, &["status of 404"]);
}

/// Frame `frame`'s score in the chart tests: the highest, 0.93, at frame 12, and 0.03 lower
/// for each frame away from it.
fn peaked_score(frame: u64) -> f64 {
    (93.0 - 3.0 * (frame as f64 - 12.0).abs()) / 100.0
}

fn frame_scores(frames: impl IntoIterator<Item = u64>, score: fn(u64) -> f64) -> Vec<Value> {
    frames
        .into_iter()
        .map(|frame| json!({"frame": frame, "score": score(frame)}))
        .collect()
}

/// A line of text read on `frame`, labelled with the `text`.
fn read(frame: u64, y: f64, text: &str, score: f64) -> Value {
    json!({"frame": frame, "x": 200.0, "y": y, "w": 600.0, "h": 60.0, "score": score, "label": text})
}

/// The chart's points as the page draws them in its 300×100 box: each frame's `score`
/// (1 at the top), the frames spread from `first` at the left to `last` at the right.
fn chart_points(frames: &[u64], score: fn(u64) -> f64, (first, last): (u64, u64)) -> Vec<[f64; 2]> {
    let x = |f: u64| (f - first) as f64 / (last - first) as f64 * 300.0;
    frames
        .iter()
        .map(|&f| [x(f), (1.0 - score(f)) * 100.0])
        .collect()
}

fn assert_points(chart: &Value, expected: &[[f64; 2]]) {
    let drawn: Vec<[f64; 2]> = serde_json::from_value(chart["points"].clone()).unwrap();
    assert_eq!(drawn.len(), expected.len(), "{chart}");
    for (d, e) in drawn.iter().zip(expected) {
        assert!(
            (d[0] - e[0]).abs() < 0.06 && (d[1] - e[1]).abs() < 0.06,
            "drawn {d:?}, expected {e:?}: {chart}"
        );
    }
}

/// The stages of a cascade such as `text-read`, in the order the node reports them.
const CASCADE_STAGES: [&str; 7] = [
    "fetch",
    "decode",
    "preprocess",
    "infer",
    "crop",
    "label",
    "postprocess",
];

#[tokio::test]
async fn the_page_charts_each_frames_score_and_names_the_text_read() {
    let edge = shared_edge().await;
    let id = "page-scores";
    let stages: Vec<Value> = CASCADE_STAGES
        .iter()
        .map(|name| json!({"name": name, "weight": 1.0}))
        .collect();
    let started = json!({"id": "s-start", "type": "started", "model": "text-read",
        "total_frames": 30, "stages": stages});
    publish_ok(edge, id, &[started]).await;
    let mut page = open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-scores",
        json!({"audit": ["running", "completed"]}),
    )
    .await;
    page.until("status", "running", |l| {
        l["connection"] == "open" && l["status"] == "running"
    })
    .await;

    let on_12 = [
        read(12, 300.0, "HELLO STAGECAST", 0.93),
        read(12, 400.0, "STAGECAST", 0.61),
    ];
    let on_25 = [read(25, 300.0, "HELLO STAGECAST", 0.8)];
    // out of order, frames 10 and 20 twice, and a batch of scores alone
    let batches = [
        json!({"id": "s-1", "type": "partial_result", "regions": on_12,
            "scores": frame_scores((10..=20).rev(), peaked_score)}),
        json!({"id": "s-2", "type": "partial_result", "regions": [],
            "scores": frame_scores(0..=10, peaked_score)}),
        json!({"id": "s-3", "type": "partial_result", "regions": on_25,
            "scores": frame_scores(20..30, peaked_score)}),
    ];
    for batch in batches {
        publish_ok(edge, id, &[batch]).await;
    }
    let live = page
        .until("status", "30 frames charted", |l| {
            l["chart"]["points"].as_array().map(Vec::len) == Some(30) && l["labels"] != json!([])
        })
        .await;
    let names: Vec<&str> = live["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CASCADE_STAGES);
    let chart = &live["chart"];
    assert_eq!(
        chart["label"], "Score per frame: 30 frames (0 to 29), highest 0.93 at frame 12",
        "{chart}"
    );
    let frames: Vec<u64> = (0..30).collect();
    assert_points(chart, &chart_points(&frames, peaked_score, (0, 29)));
    assert_eq!(chart["axis"], json!(["frame 0", "frame 29"]));
    let labels = json!([
        "HELLO STAGECAST × 2 in 2 frames",
        "STAGECAST × 1 in 1 frame"
    ]);
    assert_eq!(live["labels"], labels, "{live}");

    let mut final_regions = on_12.to_vec();
    final_regions.extend(on_25);
    let completed = completed_event("s-done", 0.93, 30, &final_regions);
    publish_ok(edge, id, &[completed]).await;
    let last = page.ended().await;

    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["chart"], live["chart"], "{last}");
    assert_eq!(last["labels"], labels, "{last}");
    // a finding names what it read; the batch of scores alone is no finding
    let findings: Vec<&str> = last["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(
        findings[0].ends_with("2 regions in frame 12 (best 0.93): HELLO STAGECAST, STAGECAST"),
        "{findings:?}"
    );
    assert!(
        findings[1].ends_with("1 region in frame 25 (best 0.80): HELLO STAGECAST"),
        "{findings:?}"
    );
    assert_eq!(
        last["frame"]["caption"],
        "Frame 12, where the best finding is: 2 regions (HELLO STAGECAST, STAGECAST).",
        "{last}"
    );
    assert_every_event_once(&last);
    assert_accessible(&last, &["running", "completed"]);
    assert_no_console_errors(&last, &[]);

    // opened later, in the dark: the replayed events draw the same chart and summary
    let late = open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-scores-replayed-dark",
        json!({"audit": ["completed"], "dark": true,
            "clicks": [{"scores_table": true, "audit": "scores_table"}]}),
    )
    .await
    .ended()
    .await;
    assert_eq!(late["chart"], last["chart"], "{late}");
    assert_eq!(late["labels"], labels, "{late}");
    let [opened] = late["clicked_frames"].as_array().unwrap().as_slice() else {
        panic!("one click: {late}");
    };
    let rows = opened["chart"]["table"].as_array().unwrap();
    assert_eq!(rows.len(), 30, "{opened}");
    assert_eq!(rows[0], json!(["0", "0.57"]));
    assert_eq!(rows[12], json!(["12", "0.93"]));
    assert_eq!(rows[29], json!(["29", "0.42"]));
    assert_accessible(&late, &["completed", "scores_table"]);
    assert_no_console_errors(&late, &[]);
}

/// Frame `frame`'s score in the long run: low, 0.97 at frame 1234 alone.
fn spiked_score(frame: u64) -> f64 {
    if frame == 1234 {
        0.97
    } else {
        0.1 + (frame % 10) as f64 / 100.0
    }
}

/// A face at (`x`, `y`) on `frame` and its five landmarks: the eyes, the nose and the
/// mouth's corners.
fn face(frame: u64, (x, y): (f64, f64), score: f64) -> Value {
    let points: Vec<[f64; 2]> = [
        (35.0, 55.0),
        (85.0, 55.0),
        (60.0, 85.0),
        (40.0, 115.0),
        (80.0, 115.0),
    ]
    .iter()
    .map(|(dx, dy)| [x + dx, y + dy])
    .collect();
    json!({"frame": frame, "x": x, "y": y, "w": 120.0, "h": 150.0, "score": score,
        "label": "face", "points": points})
}

#[tokio::test]
async fn thousands_of_frames_chart_as_at_most_300_points_and_faces_show_their_landmarks() {
    let edge = shared_edge().await;
    let id = "page-faces";
    let started = json!({"id": "l-start", "type": "started", "model": "faces",
        "total_frames": 2500, "stages": [{"name": "infer", "weight": 1.0}]});
    let on_40 = [face(40, (900.0, 100.0), 0.95)];
    let on_1234 = [
        face(1234, (200.0, 200.0), 0.99),
        face(1234, (600.0, 260.0), 0.98),
    ];
    // the contract's most scores an event carries: 1000
    let batch = |n: u64, regions: &[Value]| {
        json!({"id": format!("l-{n}"), "type": "partial_result", "regions": regions,
            "scores": frame_scores(n * 1000..(n * 1000 + 1000).min(2500), spiked_score)})
    };
    let mut regions = on_40.to_vec();
    regions.extend(on_1234.clone());
    let completed = completed_event("l-done", 0.97, 2500, &regions);
    for events in [
        vec![started],
        vec![batch(0, &on_40)],
        vec![batch(1, &on_1234)],
        vec![batch(2, &[])],
        vec![completed],
    ] {
        publish_ok(edge, id, &events).await;
    }
    let last = open(
        &dashboard_url(edge, id, &Tokens::viewer(id)),
        "dashboard-faces",
        json!({"audit": ["completed"]}),
    )
    .await
    .ended()
    .await;

    assert_eq!(last["status"], "completed", "{last}");
    // runs of 9 frames (2500 / 300, rounded up), each drawn at its highest score
    let frames: Vec<u64> = (0..2500)
        .step_by(9)
        .map(|from| {
            let run = from..(from + 9).min(2500);
            run.clone()
                .find(|&f| spiked_score(f) == run.clone().map(spiked_score).fold(0.0, f64::max))
                .unwrap()
        })
        .collect();
    assert_eq!(frames.len(), 278);
    let chart = &last["chart"];
    assert_eq!(
        chart["label"],
        "Score per frame: 2500 frames (0 to 2499), drawn as 278 points, each the highest of \
         its frames, highest 0.97 at frame 1234",
        "{chart}"
    );
    assert!(frames.contains(&1234));
    assert_points(chart, &chart_points(&frames, spiked_score, (0, 2499)));
    assert_eq!(last["labels"], json!(["face × 3 in 2 frames"]), "{last}");
    // the result's best face's frame: both its faces, each with its five landmarks
    let frame = &last["frame"];
    assert_eq!(frame["drawn"], 2, "{last}");
    let points = |v: &Value| serde_json::from_value::<Vec<[f64; 2]>>(v.clone()).unwrap();
    let landmarks: Vec<[f64; 2]> = on_1234.iter().flat_map(|f| points(&f["points"])).collect();
    assert_eq!(points(&frame["landmarks"]), landmarks, "{last}");
    assert_eq!(
        frame["caption"], "Frame 1234, where the best finding is: 2 regions (face × 2).",
        "{last}"
    );
    assert_eq!(last["findings"].as_array().unwrap().len(), 2, "{last}");
    assert_every_event_once(&last);
    assert_accessible(&last, &["completed"]);
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

/// A flagged `completed` of `frames` frames at the fixtures' frame size.
fn completed_event(id: &str, score: f64, frames: u64, regions: &[Value]) -> Value {
    json!({"id": id, "type": "completed", "result": {
        "score": score, "flagged": true, "frames_processed": frames, "total_frames": frames,
        "regions": regions, "validation_required": false,
        "frame_width": FRAME.0, "frame_height": FRAME.1}})
}
