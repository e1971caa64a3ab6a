//! The socket's Server-Sent Events fallback against the real edge: hello, replay, live
//! events with their seq as `id:`, `Last-Event-ID`, refusals before any stream, the end
//! after `STAGECAST_SSE_MAX_MS`; npm's `eventsource` (a third-party client) and Chromium's
//! own `EventSource` resuming through forced drops, and the browser client moving from
//! WebSockets to Server-Sent Events and back with nothing lost or repeated.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stagecast_e2e::browser::{Page, assert_no_console_errors};
use stagecast_e2e::client::{kind, publish, sample_events};
use stagecast_e2e::edge::{free_port, repo_root};
use stagecast_e2e::proxy::CutProxy;
use stagecast_e2e::sse::SseStream;
use stagecast_e2e::{Edge, Tokens, shared_edge};
use tokio::io::{AsyncBufReadExt, BufReader};

const T: Duration = Duration::from_secs(10);

fn stream_url(base: &str, id: &str, query: &str) -> String {
    format!("{base}/v1/analyses/{id}/stream{query}")
}

/// The shared edge's URL, and a proxy in front of it that the test can cut.
async fn behind_proxy() -> (String, CutProxy) {
    let edge = shared_edge().await;
    let upstream: SocketAddr = format!("127.0.0.1:{}", edge.config.port).parse().unwrap();
    (edge.base_url(), CutProxy::start(upstream).await.unwrap())
}

async fn open(url: &str, token: Option<&str>, last_event_id: Option<&str>) -> SseStream {
    SseStream::open(url, token, last_event_id)
        .await
        .unwrap()
        .unwrap_or_else(|(status, body)| panic!("refused: {status} {body}"))
}

#[tokio::test]
async fn a_stream_says_hello_replays_after_since_then_goes_live() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "sse-live";
    let node = Tokens::node(id);
    let events = sample_events(10);
    publish(&base, id, &node, &events[..4]).await;
    let viewer = Tokens::viewer(id);
    let mut stream = open(&stream_url(&base, id, "?since=0"), Some(&viewer), None).await;
    let content_type = stream.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert_eq!(stream.headers["access-control-allow-origin"], "*");
    let hello = stream.next(T).await.unwrap().unwrap();
    assert_eq!((hello.event.as_str(), hello.id.as_str()), ("hello", ""));
    assert_eq!(hello.data["type"], "hello");
    assert_eq!(
        (
            hello.data["resumed_from"].as_u64(),
            hello.data["recovered"].as_bool()
        ),
        (Some(0), Some(true))
    );
    assert_eq!(hello.data["snapshot"]["last_seq"], 4);
    publish(&base, id, &node, &events[4..]).await;
    let got = stream.events_until(12, T).await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "no gap, no repeat");
    assert_eq!(kind(got.last().unwrap()), "completed");
}

#[tokio::test]
async fn last_event_id_wins_over_since_and_without_either_nothing_replays() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "sse-resume";
    let events = sample_events(8);
    // Started and 8 progress events: still running.
    publish(&base, id, &Tokens::node(id), &events[..9]).await;
    let viewer = Tokens::viewer(id);
    // The token in the query, as an EventSource sends it; Last-Event-ID as it resumes.
    let url = stream_url(&base, id, &format!("?since=2&token={viewer}"));
    let mut stream = open(&url, None, Some("5")).await;
    let hello = stream.next(T).await.unwrap().unwrap();
    assert_eq!(hello.data["resumed_from"], 5);
    let got = stream.events_until(9, T).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
    let mut fresh = open(&stream_url(&base, id, ""), Some(&viewer), None).await;
    let hello = fresh.next(T).await.unwrap().unwrap();
    assert_eq!(hello.data["resumed_from"], Value::Null);
    assert_eq!(hello.data["snapshot"]["last_seq"], 9);
    // Nothing replays: the next thing is a live event.
    publish(&base, id, &Tokens::node(id), &events[9..]).await;
    let got = fresh.events_until(10, T).await.unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![10]);
}

#[tokio::test]
async fn bad_requests_get_the_contract_errors_before_any_stream() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "sse-bad";
    let viewer = Tokens::viewer(id);
    let publisher = Tokens::node(id);
    let other = Tokens::viewer("someone-else");
    let cases = [
        (
            stream_url(&base, "bad id!", ""),
            Some(&viewer),
            None,
            400,
            "invalid_analysis_id",
        ),
        (
            stream_url(&base, id, "?since=abc"),
            Some(&viewer),
            None,
            400,
            "invalid_request",
        ),
        (
            stream_url(&base, id, ""),
            Some(&viewer),
            Some("x"),
            400,
            "invalid_request",
        ),
        (stream_url(&base, id, ""), None, None, 401, "missing_token"),
        (
            stream_url(&base, id, ""),
            Some(&other),
            None,
            403,
            "analysis_not_granted",
        ),
        (
            stream_url(&base, id, ""),
            Some(&publisher),
            None,
            403,
            "insufficient_scope",
        ),
    ];
    for (url, token, last_event_id, status, code) in cases {
        let refused = SseStream::open(&url, token.map(String::as_str), last_event_id)
            .await
            .unwrap();
        let (got, body) = refused.err().unwrap_or_else(|| panic!("{url} opened"));
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{url}: {body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let refused = SseStream::open(&stream_url(&base, id, ""), Some(&viewer), Some("x"))
        .await
        .unwrap();
    let message = refused.err().unwrap().1["error"]["message"].clone();
    assert_eq!(
        message,
        r#"header `Last-Event-ID` must be a non-negative integer, got "x""#
    );
}

#[tokio::test]
async fn a_stream_ends_after_its_time_with_a_retry_hint_and_trimmed_history_is_not_recovered() {
    let edge = Edge::start(&[
        ("STAGECAST_DEV_SECRET", stagecast_e2e::client::DEV_SECRET),
        ("STAGECAST_SSE_MAX_MS", "1500"),
        ("STAGECAST_HISTORY_LIMIT", "3"),
        ("STAGECAST_MAX_SOCKETS", "2"),
    ])
    .await
    .unwrap();
    let base = edge.base_url();
    let id = "sse-end";
    publish(&base, id, &Tokens::node(id), &sample_events(6)).await;
    let viewer = Tokens::viewer(id);
    let started = Instant::now();
    let body = reqwest::Client::new()
        .get(stream_url(&base, id, ""))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    // Two subscribers is the limit here: a third is turned away until one goes.
    let _second = open(&stream_url(&base, id, ""), Some(&viewer), None).await;
    let third = SseStream::open(&stream_url(&base, id, ""), Some(&viewer), None)
        .await
        .unwrap();
    let (status, refusal) = third.err().expect("a third subscriber is refused");
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    let text = tokio::time::timeout(T, body.text()).await.unwrap().unwrap();
    let lasted = started.elapsed();
    assert!(text.starts_with("retry: 1000\nevent: hello\n"), "{text}");
    assert!(text.ends_with("retry: 1000\n\n"), "the end's hint: {text}");
    assert!(
        lasted >= Duration::from_millis(1400),
        "ended after {lasted:?}"
    );
    // 8 events, the newest 3 kept: resuming from 1 cannot be recovered.
    let mut resumed = open(&stream_url(&base, id, ""), Some(&viewer), Some("1")).await;
    let hello = resumed.next(T).await.unwrap().unwrap();
    assert_eq!(hello.data["recovered"], false, "{:?}", hello.data);
    let got = resumed.events_until(8, T).await.unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 7, 8]);
}

#[tokio::test]
async fn npm_eventsource_resumes_through_drops_with_nothing_lost_or_repeated() {
    let (base, proxy) = behind_proxy().await;
    let id = "sse-npm";
    let node = Tokens::node(id);
    let events = sample_events(10);
    let url = stream_url(
        &proxy.base_url(),
        id,
        &format!("?since=0&token={}", Tokens::viewer(id)),
    );
    let mut child = tokio::process::Command::new("node")
        .arg(repo_root().join("e2e/browser/eventsource.mjs"))
        .arg(&url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node and npm's eventsource: run `make setup`");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen: Vec<Value> = Vec::new();
    let mut until = async |last: u64, seen: &mut Vec<Value>| loop {
        if seen.iter().any(|l| l["seq"].as_u64() == Some(last)) {
            return;
        }
        let line = tokio::time::timeout(T, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no seq {last}; saw {seen:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the eventsource client ended early; saw {seen:?}"));
        seen.push(serde_json::from_str(&line).unwrap());
    };
    publish(&base, id, &node, &events[..4]).await;
    until(4, &mut seen).await;
    // A partition: the stream stalls while events go on; when it heals the stalled
    // connection closes and the client comes back with Last-Event-ID.
    proxy.cut();
    publish(&base, id, &node, &events[4..8]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    until(8, &mut seen).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.restore();
    publish(&base, id, &node, &events[8..]).await;
    until(12, &mut seen).await;
    let seqs: Vec<u64> = seen.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "{seen:?}");
    let hellos: Vec<&Value> = seen.iter().filter(|l| l["type"] == "hello").collect();
    assert!(hellos.len() >= 2, "it reconnected: {seen:?}");
    assert_eq!(hellos[0]["resumed_from"], 0);
    assert_eq!(
        hellos[1]["resumed_from"], 4,
        "resumed with Last-Event-ID: {seen:?}"
    );
    assert!(seen.iter().all(|l| l["id_matches"] != false), "{seen:?}");
}

#[tokio::test]
async fn chromium_follows_on_server_sent_events_and_the_client_switches_both_ways() {
    let (base, proxy) = behind_proxy().await;
    let id = "sse-chromium";
    let node = Tokens::node(id);
    let events = sample_events(10);
    let options = json!({"base": proxy.base_url(), "analysis_id": id, "token": Tokens::viewer(id),
        "dead_port": free_port(), "timeout_ms": 120_000});
    let mut page = Page::run("sse.mjs", &options, Duration::from_secs(30)).await;
    let all_at = |n: u64| {
        move |l: &Value| {
            ["native", "sse", "auto"]
                .iter()
                .all(|k| l[k].as_u64() >= Some(n))
        }
    };
    publish(&base, id, &node, &events[..4]).await;
    // The auto client gets there on Server-Sent Events, its WebSockets failing.
    let seen = page.until("seen", "4 events three ways", all_at(4)).await;
    assert_eq!(seen["transport"], "sse", "{seen}");
    // A partition: every stream stalls while events go on, and resumes once it heals.
    proxy.cut();
    publish(&base, id, &node, &events[4..8]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    page.until("seen", "8 events three ways", all_at(8)).await;
    // WebSockets work again: the auto client goes back to them.
    page.command(json!({"websockets": "ok"})).await;
    page.until("seen", "the auto client on WebSockets", |l| {
        l["transport"] == "websocket"
    })
    .await;
    publish(&base, id, &node, &events[8..]).await;
    page.until("seen", "12 events three ways", all_at(12)).await;
    let last = page.finish().await;
    let all: Vec<u64> = (1..=12).collect();
    for follower in ["native", "sse", "auto"] {
        let seqs: Vec<u64> = serde_json::from_value(last[follower].clone()).unwrap();
        assert_eq!(seqs, all, "{follower}: every event once, in order: {last}");
    }
    let native: Vec<Value> = serde_json::from_value(last["hellos"]["native"].clone()).unwrap();
    assert_eq!(native[0], 0, "{last}");
    assert!(
        native[1..].contains(&json!(4)),
        "Chromium resumed with Last-Event-ID 4: {last}"
    );
    let transports = last["transports"].as_array().unwrap();
    assert_eq!(transports.first(), Some(&json!("sse")), "{last}");
    assert_eq!(transports.last(), Some(&json!("websocket")), "{last}");
    // The only errors are the broken WebSockets' and the cut streams'.
    assert_no_console_errors(&last, &["WebSocket connection", "net::ERR_"]);
}
