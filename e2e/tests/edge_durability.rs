//! The edge is killed and restarted mid-analysis, and a silent analysis stalls and recovers.

use std::time::Duration;

use serde_json::json;
use stagecast_e2e::client::{DEV_SECRET, publish, sample_events};
use stagecast_e2e::{Edge, Subscriber, Tokens};

const T: Duration = Duration::from_secs(15);

fn ws_url(edge: &Edge, id: &str, since: u64) -> String {
    edge.ws_url(&format!(
        "/v1/analyses/{id}/ws?since={since}&token={}",
        Tokens::viewer(id)
    ))
}

#[tokio::test]
async fn sigkill_and_restart_mid_analysis_loses_nothing() {
    let mut edge = Edge::dev().await.unwrap();
    let id = "restart";
    let events = sample_events(10);
    let mut sub = Subscriber::connect(&ws_url(&edge, id, 0)).await.unwrap();
    sub.next_json(T).await.unwrap();
    publish(&edge.base_url(), id, &Tokens::node(id), &events[..5]).await;
    let mut seen = sub.events_until(5, T).await.unwrap();

    edge.restart().await.unwrap();
    // The subscriber's socket died with the process; it resumes from its last seq.
    let last = seen.last().unwrap().seq;
    let mut sub = Subscriber::connect(&ws_url(&edge, id, last)).await.unwrap();
    let hello = sub.next_json(T).await.unwrap();
    assert_eq!(
        (
            hello["recovered"].as_bool(),
            hello["snapshot"]["last_seq"].as_u64()
        ),
        (Some(true), Some(5))
    );
    // The node retries the batch it was sending when the edge died: nothing is stored twice.
    let (status, body) = publish(&edge.base_url(), id, &Tokens::node(id), &events[3..]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(7), Some(2))
    );
    seen.extend(sub.events_until(12, T).await.unwrap());
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    let ids: Vec<&str> = seen.iter().map(|e| e.event.id()).collect();
    let expected: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected, "every event exactly once, in order");
}

#[tokio::test]
async fn a_silent_analysis_stalls_then_runs_again() {
    let edge = Edge::start(&[
        ("STAGECAST_DEV_SECRET", DEV_SECRET),
        ("STAGECAST_STALL_TIMEOUT_MS", "1500"),
    ])
    .await
    .unwrap();
    let id = "stall";
    let events = sample_events(4);
    publish(&edge.base_url(), id, &Tokens::node(id), &events[..2]).await;
    let mut sub = Subscriber::connect(&ws_url(&edge, id, 2)).await.unwrap();
    sub.next_json(T).await.unwrap();
    let stalled = sub.next_json(T).await.unwrap();
    assert_eq!(stalled["event"]["type"], "stalled", "{stalled}");
    assert!(stalled["event"]["silent_ms"].as_u64().unwrap() >= 1500);
    sub.send_json(&json!({"type": "snapshot"})).await.unwrap();
    assert_eq!(
        sub.next_json(T).await.unwrap()["snapshot"]["status"],
        "stalled"
    );
    publish(&edge.base_url(), id, &Tokens::node(id), &events[2..3]).await;
    assert_eq!(sub.next_json(T).await.unwrap()["event"]["type"], "progress");
    sub.send_json(&json!({"type": "snapshot"})).await.unwrap();
    assert_eq!(
        sub.next_json(T).await.unwrap()["snapshot"]["status"],
        "running"
    );
    // The alarm has no request to name the tenant, yet its lines carry it.
    let line = log_line(&edge, "\"stalled\"").await;
    assert!(
        line.contains("\"tenant\":\"dev\"") && line.contains("\"analysis_id\":\"stall\""),
        "{line}"
    );
}

/// The line of the edge's log holding `needle`, waiting up to 10 s for it.
async fn log_line(edge: &Edge, needle: &str) -> String {
    for _ in 0..100 {
        if let Some(line) = edge.log().lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {needle} log line in:\n{}", edge.log())
}

#[tokio::test]
async fn an_alarm_after_a_restart_still_logs_its_tenant() {
    let mut edge = Edge::start(&[
        ("STAGECAST_DEV_SECRET", DEV_SECRET),
        ("STAGECAST_STALL_TIMEOUT_MS", "1500"),
    ])
    .await
    .unwrap();
    let id = "stall-restart";
    let (status, _) = publish(
        &edge.base_url(),
        id,
        &Tokens::node(id),
        &sample_events(2)[..1],
    )
    .await;
    assert_eq!(status, 200);
    // A new process, and no request to it before the alarm: the object is rebuilt by its
    // alarm alone, with nothing in memory to name the tenant.
    edge.restart().await.unwrap();
    let line = log_line(&edge, "\"stalled\"").await;
    assert!(
        line.contains("\"tenant\":\"dev\"") && line.contains("\"analysis_id\":\"stall-restart\""),
        "{line}"
    );
    let mut sub = Subscriber::connect(&ws_url(&edge, id, 1)).await.unwrap();
    sub.next_json(T).await.unwrap();
    let stalled = sub.next_json(T).await.unwrap();
    assert_eq!(stalled["event"]["type"], "stalled", "{stalled}");
}
