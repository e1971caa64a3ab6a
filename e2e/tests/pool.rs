//! Dispatch at the real edge with scripted nodes: submission, leases, fencing, cancel,
//! lease loss, scopes and hostile node messages. Real nodes joining pools are in
//! `fleet.rs`.

use std::time::Duration;

use serde_json::json;
use stagecast_e2e::client::{get_json, now_s};
use stagecast_e2e::client::{kind, sample_events};
use stagecast_e2e::pool::{
    PoolNode, admin_token, node_token, publish_attempt, submit, submit_token,
};
use stagecast_e2e::{Edge, Subscriber, Tokens, shared_edge};
use stagecast_shared::dispatch::{NodeMessage, PoolMessage};
use stagecast_shared::token::{Claims, Scope, SigningKey, mint};
use stagecast_shared::ws::ServerMessage;

const T: Duration = Duration::from_secs(10);

fn input() -> &'static str {
    "https://media.example/clip.mp4"
}

async fn subscriber(edge: &Edge, id: &str) -> Subscriber {
    let url = edge.ws_url(&format!(
        "/v1/analyses/{id}/ws?since=0&token={}",
        Tokens::viewer(id)
    ));
    let mut sub = Subscriber::connect(&url).await.unwrap();
    assert!(matches!(
        sub.next_message(T).await.unwrap(),
        ServerMessage::Hello { .. }
    ));
    sub
}

/// Event types from the subscriber until a terminal one.
async fn story(sub: &mut Subscriber) -> Vec<String> {
    let mut types = Vec::new();
    let mut seqs = Vec::new();
    loop {
        match sub.next_message(T).await.unwrap() {
            ServerMessage::Event(e) => {
                seqs.push(e.seq);
                types.push(kind(&e).to_owned());
                if e.event.is_terminal() {
                    break;
                }
            }
            ServerMessage::Snapshot { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, once"
    );
    types
}

#[tokio::test]
async fn submitted_work_reaches_an_idle_node_and_the_story_is_told_once() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let mut node = PoolNode::join(
        &edge.ws_url(""),
        "story",
        &node_token("n-story"),
        1,
        &["text-detect"],
    )
    .await
    .unwrap();
    let body = json!({"analysis_id": "pool-story", "pool": "story", "input": input(), "model": "text-detect"});
    let (status, answer, _) = submit(&base, &submit_token(), &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (answer["pool"].as_str(), answer["analysis_id"].as_str()),
        (Some("story"), Some("pool-story"))
    );
    let (lease_id, id, attempt) = node.take_lease(T).await.unwrap();
    assert_eq!(
        (id.as_str(), attempt, lease_id.as_str()),
        ("pool-story", 1, "pool-story:1")
    );
    let mut sub = subscriber(edge, "pool-story").await;
    // Fencing: without the attempt, or with another one, nothing is stored.
    let events = sample_events(4);
    let token = node_token("n-story");
    for attempt in [None, Some(2)] {
        let (status, body) = publish_attempt(&base, "pool-story", &token, attempt, &events).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("stale_attempt")),
            "{attempt:?}"
        );
    }
    let (status, body) = publish_attempt(&base, "pool-story", &token, Some(1), &events).await;
    assert_eq!(status, 200, "{body}");
    let types = story(&mut sub).await;
    assert_eq!(types[..2], ["queued", "leased"]);
    assert_eq!(types[2], "started");
    assert_eq!(types.last().map(String::as_str), Some("completed"));
    // The same submission again is idempotent; a different one under the id is refused.
    let (status, again, _) = submit(&base, &submit_token(), &body_again()).await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("completed")),
        "{again}"
    );
    let other = json!({"analysis_id": "pool-story", "pool": "story", "input": input(), "priority": 3, "model": "text-detect"});
    let (status, refused, _) = submit(&base, &submit_token(), &other).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("analysis_exists"))
    );
    // The pool saw it finish and frees the slot.
    let view: serde_json::Value = get_json(
        &format!("{base}/v1/pools/story/analyses?state=finished"),
        &admin_token(),
    )
    .await;
    assert_eq!(view[0]["analysis_id"], "pool-story", "{view}");
    assert_eq!(view[0]["status"], "completed");
}

fn body_again() -> serde_json::Value {
    json!({"analysis_id": "pool-story", "pool": "story", "input": input(), "model": "text-detect"})
}

#[tokio::test]
async fn cancel_while_queued_ends_it_and_cancel_while_leased_reaches_the_node() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    // Nobody serves "absent-model": it waits in the queue.
    let body = json!({"analysis_id": "pool-cq", "pool": "cancels", "input": input(), "model": "absent-model"});
    let (status, answer, _) = submit(&base, &submit_token(), &body).await;
    assert_eq!(
        (status, answer["queue_position"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let view: serde_json::Value =
        get_json(&format!("{base}/v1/pools/cancels"), &admin_token()).await;
    assert_eq!(view["queued"], 1, "{view}");
    assert_eq!(view["models_without_nodes"], json!(["absent-model"]));
    let mut sub = subscriber(edge, "pool-cq").await;
    let cancel = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/pool-cq/cancel"))
        .bearer_auth(Tokens::viewer("pool-cq"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 202);
    assert_eq!(
        story(&mut sub).await,
        ["queued", "cancel_requested", "cancelled"]
    );

    let mut node = PoolNode::join(
        &edge.ws_url(""),
        "cancels",
        &node_token("n-cancel"),
        1,
        &["m"],
    )
    .await
    .unwrap();
    let body = json!({"analysis_id": "pool-cl", "pool": "cancels", "input": input()});
    assert_eq!(submit(&base, &submit_token(), &body).await.0, 202);
    let (lease_id, _, _) = node.take_lease(T).await.unwrap();
    let cancel = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/pool-cl/cancel"))
        .bearer_auth(Tokens::viewer("pool-cl"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 202);
    match node.next(T).await.unwrap() {
        PoolMessage::Cancel {
            analysis_id,
            lease_id: l,
        } => {
            assert_eq!((analysis_id.as_str(), l), ("pool-cl", lease_id));
        }
        other => panic!("expected cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn scopes_pool_names_and_bad_submissions_are_refused() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let body = json!({"input": input()});
    let (status, answer, _) = submit(&base, &node_token("n-scope"), &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    // A submit token cannot join a pool.
    let mut socket = PoolNode::connect(&edge.ws_url(""), "default", &submit_token())
        .await
        .unwrap();
    assert_eq!(socket.closed(T).await.unwrap().0, 4003);
    let mut socket = PoolNode::connect(&edge.ws_url(""), "bad.name", &node_token("n1"))
        .await
        .unwrap();
    assert_eq!(socket.closed(T).await.unwrap().0, 4400);
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/pools/bad.name"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_pool_name");
    for (bad, code) in [
        (json!({"input": "file:///etc/passwd"}), "invalid_request"),
        (json!({"input": input(), "priority": 12}), "invalid_request"),
        (
            json!({"input": input(), "pool": "a/b"}),
            "invalid_pool_name",
        ),
        (json!({"input": input(), "surprise": true}), "invalid_json"),
    ] {
        let (status, answer, _) = submit(&base, &submit_token(), &bad).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{bad}: {answer}"
        );
    }
    // Without an id the edge picks one, which only a `*` grant covers.
    let (status, answer, _) = submit(
        &base,
        &submit_token(),
        &json!({"input": input(), "pool": "ids", "model": "none"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["analysis_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
    );
    let narrow = Tokens::sign(&Tokens::claims(&[Scope::Submit], &["only-this"]));
    let (status, _, _) = submit(&base, &narrow, &json!({"input": input()})).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn hostile_node_messages_get_error_frames_and_close_codes() {
    let edge = shared_edge().await;
    let ws = edge.ws_url("");
    let mut node = PoolNode::join(&ws, "hostile", &node_token("n-hostile"), 1, &["m"])
        .await
        .unwrap();
    node.send_text("not json").await.unwrap();
    assert!(matches!(
        node.next(T).await.unwrap(),
        PoolMessage::Error { .. }
    ));
    node.send_text(r#"{"type":"ready","slots":9999,"models":[]}"#)
        .await
        .unwrap();
    assert!(matches!(
        node.next(T).await.unwrap(),
        PoolMessage::Error { .. }
    ));
    // A second socket of the same node replaces the first.
    let mut second = PoolNode::join(&ws, "hostile", &node_token("n-hostile"), 1, &["m"])
        .await
        .unwrap();
    assert_eq!(node.closed(T).await.unwrap().0, 4409);
    let big = format!(r#"{{"type":"accept","lease_id":"{}"}}"#, "x".repeat(40_000));
    second.send_text(&big).await.unwrap();
    assert_eq!(second.closed(T).await.unwrap().0, 4009);
    let mut fast = PoolNode::join(&ws, "hostile", &node_token("n-fast"), 0, &[])
        .await
        .unwrap();
    let heartbeat = serde_json::to_string(&NodeMessage::Heartbeat {
        metrics: None,
        running: vec![],
    })
    .unwrap();
    for _ in 0..80 {
        if fast.send_text(&heartbeat).await.is_err() {
            break;
        }
    }
    assert_eq!(fast.closed(T).await.unwrap().0, 4008);
}

/// An edge with short leases, for the loss paths.
async fn quick_edge() -> Edge {
    Edge::start(&[
        ("STAGECAST_DEV_SECRET", stagecast_e2e::client::DEV_SECRET),
        ("STAGECAST_LEASE_MS", "1500"),
        ("STAGECAST_NODE_HEARTBEAT_MS", "500"),
        ("STAGECAST_QUEUE_LIMIT", "3"),
    ])
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tenants_pool_is_its_own_whatever_the_url_says() {
    let secret_a = "tenant-a-secret-0123456789abcdef0123";
    let secret_b = "tenant-b-secret-0123456789abcdef0123";
    let tenants = json!({"tenants": {
        "a": {"keys": [{"kid": "ka", "alg": "HS256", "secret": secret_a}]},
        "b": {"keys": [{"kid": "kb", "alg": "HS256", "secret": secret_b}]}}})
    .to_string();
    let edge = Edge::start(&[("STAGECAST_TENANTS", &tenants)])
        .await
        .unwrap();
    let (base, ws) = (edge.base_url(), edge.ws_url(""));
    let token = |tenant: &str, kid: &str, secret: &str, sub: &str, scopes: &[Scope]| {
        let key = SigningKey::hs256(kid, secret.as_bytes()).unwrap();
        mint(
            &Claims::new(tenant, sub, scopes, &["*"], now_s(), 600),
            &key,
        )
        .unwrap()
    };
    let submit_a = token("a", "ka", secret_a, "backend-a", &[Scope::Submit]);
    let body = json!({"analysis_id": "iso-1", "pool": "shared", "input": input()});
    assert_eq!(submit(&base, &submit_a, &body).await.0, 202);
    // Tenant B's node joins its own pool of that name: it never sees A's work.
    let node_b = token(
        "b",
        "kb",
        secret_b,
        "node-b",
        &[Scope::Node, Scope::Publish],
    );
    let mut b = PoolNode::join(&ws, "shared", &node_b, 2, &["m"])
        .await
        .unwrap();
    assert!(
        b.next(Duration::from_secs(2)).await.is_err(),
        "no lease for tenant B"
    );
    let view = |token: String| {
        let url = format!("{base}/v1/pools/shared");
        async move { get_json(&url, &token).await }
    };
    let view_b = view(token("b", "kb", secret_b, "ops-b", &[Scope::Admin])).await;
    assert_eq!(
        (
            view_b["queued"].as_u64(),
            view_b["nodes"].as_array().map(Vec::len)
        ),
        (Some(0), Some(1)),
        "{view_b}"
    );
    let view_a = view(token("a", "ka", secret_a, "ops-a", &[Scope::Admin])).await;
    assert_eq!(
        (
            view_a["queued"].as_u64(),
            view_a["nodes"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0)),
        "{view_a}"
    );
    // B cannot publish into A's submitted analysis either: its object is B's own.
    let (status, _) = publish_attempt(&base, "iso-1", &node_b, Some(1), &sample_events(1)).await;
    assert_eq!(status, 409, "B's analysis iso-1 was never submitted");
    let node_a = token(
        "a",
        "ka",
        secret_a,
        "node-a",
        &[Scope::Node, Scope::Publish],
    );
    let mut a = PoolNode::join(&ws, "shared", &node_a, 1, &["m"])
        .await
        .unwrap();
    let (_, id, _) = a.take_lease(T).await.unwrap();
    assert_eq!(id, "iso-1");
}

#[tokio::test]
async fn a_lost_node_is_requeued_to_another_a_stale_one_revoked_and_attempts_run_out() {
    let edge = quick_edge().await;
    let base = edge.base_url();
    let ws = edge.ws_url("");
    let mut first = PoolNode::join(&ws, "loss", &node_token("n-first"), 1, &["m"])
        .await
        .unwrap();
    let body =
        json!({"analysis_id": "pool-loss", "pool": "loss", "input": input(), "max_attempts": 2});
    assert_eq!(submit(&base, &submit_token(), &body).await.0, 202);
    let (_, _, attempt) = first.take_lease(T).await.unwrap();
    assert_eq!(attempt, 1);
    let token = node_token("n-first");
    let started = &sample_events(2)[..1];
    assert_eq!(
        publish_attempt(&base, "pool-loss", &token, Some(1), started)
            .await
            .0,
        200
    );
    // The first node dies; the second takes over as attempt 2 after the lease.
    first.kill();
    let mut second = PoolNode::join(&ws, "loss", &node_token("n-second"), 1, &["m"])
        .await
        .unwrap();
    let (_, id, attempt) = second.take_lease(Duration::from_secs(15)).await.unwrap();
    let _second = second;
    assert_eq!((id.as_str(), attempt), ("pool-loss", 2));
    // The first node comes back: its publishes are stale, its heartbeat gets `revoked`.
    let late = &sample_events(2)[1..2];
    let (status, answer) = publish_attempt(&base, "pool-loss", &token, Some(1), late).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("stale_attempt"))
    );
    let mut back = PoolNode::join(&ws, "loss", &node_token("n-first"), 0, &["m"])
        .await
        .unwrap();
    back.send(&NodeMessage::Heartbeat {
        metrics: None,
        running: vec![stagecast_shared::AnalysisId::parse("pool-loss").unwrap()],
    })
    .await
    .unwrap();
    loop {
        if let PoolMessage::Revoked { analysis_id, .. } = back.next(T).await.unwrap() {
            assert_eq!(analysis_id.as_str(), "pool-loss");
            break;
        }
    }
    // The second node never heartbeats: its lease expires, and that was the last attempt.
    let mut sub = subscriber(&edge, "pool-loss").await;
    let types = story(&mut sub).await;
    assert_eq!(
        types,
        [
            "queued", "leased", "started", "requeued", "leased", "failed"
        ],
        "the whole story"
    );
    let snapshot: serde_json::Value = get_json(
        &format!("{base}/v1/analyses/pool-loss"),
        &Tokens::viewer("pool-loss"),
    )
    .await;
    assert_eq!(
        snapshot["error"]["code"], "attempts_exhausted",
        "{snapshot}"
    );
    assert_eq!(
        (
            snapshot["attempt"].as_u64(),
            snapshot["max_attempts"].as_u64()
        ),
        (Some(2), Some(2))
    );
    // A full queue refuses with Retry-After and stores nothing.
    for n in 0..3 {
        let body = json!({"analysis_id": format!("full-{n}"), "pool": "full", "input": input()});
        assert_eq!(submit(&base, &submit_token(), &body).await.0, 202);
    }
    let body = json!({"analysis_id": "full-x", "pool": "full", "input": input()});
    let (status, answer, retry_after) = submit(&base, &submit_token(), &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (429, Some("queue_full"))
    );
    assert!(retry_after.is_some());
    let snapshot: serde_json::Value = get_json(
        &format!("{base}/v1/analyses/full-x"),
        &Tokens::viewer("full-x"),
    )
    .await;
    assert_eq!(
        (snapshot["status"].as_str(), snapshot["last_seq"].as_u64()),
        (Some("pending"), Some(0))
    );
}

#[tokio::test]
async fn pool_sockets_close_with_4010_when_their_token_expires_and_viewers_get_pongs() {
    let edge = shared_edge().await;
    let ws = edge.ws_url("");
    // Expired 28 s ago: the edge's 30 s of clock skew leave it 2 s.
    let soon = |sub: &str, scopes: &[Scope]| {
        Tokens::sign(&Claims {
            exp: now_s() - 28,
            ..Claims::new("dev", sub, scopes, &["*"], now_s() - 60, 600)
        })
    };
    let mut node = PoolNode::join(&ws, "expiry", &soon("n-expiry", &[Scope::Node]), 1, &["m"])
        .await
        .unwrap();
    let url = format!(
        "{ws}/v1/pools/expiry/ws?token={}",
        soon("ops", &[Scope::Admin])
    );
    let mut viewer = Subscriber::connect(&url).await.unwrap();
    let first = viewer.next_json(T).await.unwrap();
    assert_eq!(first["type"], "pool", "{first}");
    viewer.send_json(&json!({"type": "ping"})).await.unwrap();
    let pong = viewer.next_json(T).await.unwrap();
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(node.closed(T).await.unwrap().0, 4010);
    assert_eq!(viewer.closed(T).await.unwrap().0, 4010);
}
