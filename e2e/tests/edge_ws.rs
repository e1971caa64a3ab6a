//! WebSocket subscribers against the real edge: hello, replay, live fan-out, close codes.

use std::time::Duration;

use serde_json::json;
use stagecast_e2e::client::{kind, now_s, publish, sample_events};
use stagecast_e2e::{Subscriber, Tokens, shared_edge};
use stagecast_shared::token::{Claims, Scope};

const T: Duration = Duration::from_secs(10);

fn ws_url(base: &str, id: &str, query: &str) -> String {
    format!(
        "{}/v1/analyses/{id}/ws{query}",
        base.replace("http://", "ws://")
    )
}

#[tokio::test]
async fn hello_then_replay_then_live_events_in_order() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "ws-live";
    let node = Tokens::node(id);
    let events = sample_events(10);
    publish(&base, id, &node, &events[..4]).await;
    let mut sub = Subscriber::connect(&ws_url(
        &base,
        id,
        &format!("?since=0&token={}", Tokens::viewer(id)),
    ))
    .await
    .unwrap();
    let hello = sub.next_json(T).await.unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(
        (hello["resumed_from"].as_u64(), hello["recovered"].as_bool()),
        (Some(0), Some(true))
    );
    assert_eq!(hello["snapshot"]["last_seq"], 4);
    assert!(hello["heartbeat_ms"].as_u64().unwrap() > 0);
    publish(&base, id, &node, &events[4..]).await;
    let got = sub.events_until(12, T).await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "no gap, no repeat");
    assert_eq!(kind(got.last().unwrap()), "completed");
}

#[tokio::test]
async fn a_reconnect_with_since_gets_exactly_the_events_after_it() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "ws-resume";
    publish(&base, id, &Tokens::node(id), &sample_events(8)).await;
    let mut sub = Subscriber::connect(&ws_url(
        &base,
        id,
        &format!("?since=5&token={}", Tokens::viewer(id)),
    ))
    .await
    .unwrap();
    let hello = sub.next_json(T).await.unwrap();
    assert_eq!(hello["recovered"], true);
    let got = sub.events_until(10, T).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 7, 8, 9, 10]
    );
    // Without since: the snapshot stands for the past, nothing replayed.
    let mut fresh = Subscriber::connect(&ws_url(
        &base,
        id,
        &format!("?token={}", Tokens::viewer(id)),
    ))
    .await
    .unwrap();
    let hello = fresh.next_json(T).await.unwrap();
    assert_eq!(hello["resumed_from"], serde_json::Value::Null);
    fresh.send_json(&json!({"type": "snapshot"})).await.unwrap();
    let next = fresh.next_json(T).await.unwrap();
    assert_eq!(
        next["type"], "snapshot",
        "no replayed event came before the answer"
    );
    assert_eq!(next["snapshot"]["last_seq"], 10);
}

#[tokio::test]
async fn tokens_in_header_cookie_and_subprotocol_are_accepted() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "ws-places";
    let token = Tokens::viewer(id);
    for (header, value) in [
        ("authorization", format!("Bearer {token}")),
        ("cookie", format!("theme=dark; stagecast_token={token}")),
        (
            "sec-websocket-protocol",
            format!("stagecast.v1, bearer.{token}"),
        ),
    ] {
        let mut req = ws_url(&base, id, "").into_client_request().unwrap();
        req.headers_mut().insert(header, value.parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("{header}: {e}"));
        if header == "sec-websocket-protocol" {
            assert_eq!(
                resp.headers().get("sec-websocket-protocol").unwrap(),
                "stagecast.v1"
            );
        }
        let mut sub = Subscriber { ws };
        assert_eq!(sub.next_json(T).await.unwrap()["type"], "hello", "{header}");
    }
}

#[tokio::test]
async fn refusals_close_with_the_contract_codes() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "ws-refuse";
    let cases = [
        ("no token", ws_url(&base, id, ""), 4001),
        ("bad token", ws_url(&base, id, "?token=abc.def.ghi"), 4001),
        (
            "other analysis",
            ws_url(&base, id, &format!("?token={}", Tokens::viewer("else"))),
            4003,
        ),
        (
            "no subscribe scope",
            ws_url(&base, id, &format!("?token={}", Tokens::node(id))),
            4003,
        ),
        (
            "bad id",
            ws_url(
                &base,
                "bad.id",
                &format!("?token={}", Tokens::viewer("bad.id")),
            ),
            4400,
        ),
        (
            "bad since",
            ws_url(&base, id, &format!("?since=x&token={}", Tokens::viewer(id))),
            4400,
        ),
        (
            "expired",
            ws_url(
                &base,
                id,
                &format!(
                    "?token={}",
                    Tokens::sign(&Claims {
                        exp: now_s() - 100,
                        ..Tokens::claims(&[Scope::Subscribe], &[id])
                    })
                ),
            ),
            4001,
        ),
    ];
    for (name, url, code) in cases {
        let mut sub = Subscriber::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (got, reason) = sub
            .closed(T)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, code, "{name}: {reason}");
        assert!(!reason.is_empty(), "{name}: a readable reason");
    }
}

#[tokio::test]
async fn client_messages_ping_errors_limits_and_cancel() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "ws-client";
    publish(&base, id, &Tokens::node(id), &sample_events(4)[..2]).await;
    let url = ws_url(&base, id, &format!("?token={}", Tokens::viewer(id)));
    let mut sub = Subscriber::connect(&url).await.unwrap();
    sub.next_json(T).await.unwrap();
    sub.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(sub.next_json(T).await.unwrap()["type"], "pong");
    sub.send_json(&json!({"type": "dance"})).await.unwrap();
    let err = sub.next_json(T).await.unwrap();
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("invalid_message"))
    );
    sub.send_json(&json!({"type": "cancel"})).await.unwrap();
    let ev = sub.next_json(T).await.unwrap();
    assert_eq!(
        (ev["event"]["type"].as_str(), ev["event"]["by"].as_str()),
        (Some("cancel_requested"), Some("tester"))
    );
    // Over 4 KiB: 4009.
    sub.send_json(&json!({"type": "ping", "pad": "x".repeat(5000)}))
        .await
        .unwrap();
    assert_eq!(sub.closed(T).await.unwrap().0, 4009);
    // More than 20 a second: 4008.
    let mut fast = Subscriber::connect(&url).await.unwrap();
    fast.next_json(T).await.unwrap();
    for _ in 0..25 {
        fast.send_json(&json!({"type": "snapshot"})).await.unwrap();
    }
    assert_eq!(fast.closed(T).await.unwrap().0, 4008);
    // Cancel without scope: an error message, the socket stays open.
    let viewer_only = Tokens::sign(&Tokens::claims(&[Scope::Subscribe], &[id]));
    let mut ro = Subscriber::connect(&ws_url(&base, id, &format!("?token={viewer_only}")))
        .await
        .unwrap();
    ro.next_json(T).await.unwrap();
    ro.send_json(&json!({"type": "cancel"})).await.unwrap();
    assert_eq!(ro.next_json(T).await.unwrap()["code"], "insufficient_scope");
    ro.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(ro.next_json(T).await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn two_hundred_subscribers_all_receive_every_event_in_order() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "ws-fanout";
    let url = ws_url(&base, id, &format!("?since=0&token={}", Tokens::viewer(id)));
    let mut subs = Vec::new();
    for _ in 0..200 {
        let mut sub = Subscriber::connect(&url).await.unwrap();
        sub.next_json(T).await.unwrap();
        subs.push(sub);
    }
    let events = sample_events(20);
    for chunk in events.chunks(3) {
        let (status, _) = publish(&base, id, &Tokens::node(id), chunk).await;
        assert_eq!(status, 200);
    }
    let last = events.len() as u64;
    let handles: Vec<_> = subs
        .into_iter()
        .map(|mut sub| tokio::spawn(async move { sub.events_until(last, T).await }))
        .collect();
    for h in handles {
        let got = h.await.unwrap().unwrap();
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4010() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "ws-expiry";
    // exp 1 s from now; the edge allows its 30 s clock skew on top.
    let claims = Claims {
        exp: now_s() + 1,
        ..Tokens::claims(&[Scope::Subscribe], &[id])
    };
    let mut sub = Subscriber::connect(&ws_url(
        &base,
        id,
        &format!("?token={}", Tokens::sign(&claims)),
    ))
    .await
    .unwrap();
    sub.next_json(T).await.unwrap();
    let (code, _) = sub.closed(Duration::from_secs(60)).await.unwrap();
    assert_eq!(code, 4010);
}

#[tokio::test]
async fn a_closed_socket_frees_its_place_and_a_newcomer_gets_the_live_events() {
    let edge = stagecast_e2e::Edge::start(&[
        ("STAGECAST_DEV_SECRET", stagecast_e2e::client::DEV_SECRET),
        ("STAGECAST_MAX_SOCKETS", "2"),
    ])
    .await
    .unwrap();
    let base = edge.base_url();
    let id = "ws-places";
    let node = Tokens::node(id);
    let events = sample_events(6);
    let url = ws_url(&base, id, &format!("?token={}", Tokens::viewer(id)));
    publish(&base, id, &node, &events[..1]).await;
    let mut first = Subscriber::connect(&url).await.unwrap();
    let mut second = Subscriber::connect(&url).await.unwrap();
    for sub in [&mut first, &mut second] {
        assert_eq!(sub.next_json(T).await.unwrap()["type"], "hello");
    }
    // both get a publish made while the object lists them
    publish(&base, id, &node, &events[1..2]).await;
    for sub in [&mut first, &mut second] {
        assert_eq!(sub.events_until(2, T).await.unwrap().len(), 1);
    }
    let mut third = Subscriber::connect(&url).await.unwrap();
    assert_eq!(
        third.closed(T).await.unwrap().0,
        1013,
        "a third is one too many"
    );
    first.ws.close(None).await.unwrap();
    let _ = first.closed(T).await;
    // the place frees once the object hears of the close
    let deadline = tokio::time::Instant::now() + T;
    let mut newcomer = loop {
        let mut sub = Subscriber::connect(&url).await.unwrap();
        let hello = sub.next_json(T).await;
        if hello.is_ok_and(|h| h["type"] == "hello") {
            break sub;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    publish(&base, id, &node, &events[2..]).await;
    for sub in [&mut second, &mut newcomer] {
        let seqs: Vec<u64> = sub
            .events_until(6, T)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![3, 4, 5, 6]);
    }
}
