//! A node's publish socket against the real edge: batches taken as the POST takes them,
//! every refusal answered with the contract's body and the request it answers, the socket
//! kept open through refusals, and tokens checked at the handshake.

use std::time::Duration;

use serde_json::{Value, json};
use stagecast_e2e::client::{publish, sample_events};
use stagecast_e2e::{Subscriber, Tokens, shared_edge};
use stagecast_shared::token::Scope;
use stagecast_shared::ws::ServerMessage;

const T: Duration = Duration::from_secs(10);

async fn publisher(base: &str, id: &str, token: &str) -> Subscriber {
    let url = format!(
        "{}/v1/analyses/{id}/publish?token={token}",
        base.replace("http://", "ws://")
    );
    Subscriber::connect(&url).await.expect("publish socket")
}

fn batch(request: u64, events: &[Value]) -> Value {
    json!({"type": "publish", "request": request, "batch": {"events": events}})
}

#[tokio::test]
async fn batches_are_taken_and_refused_as_the_post_takes_them() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "pubsock-batches";
    let events = sample_events(6);
    let mut node = publisher(&base, id, &Tokens::node(id)).await;
    let viewer_url = format!(
        "{}/v1/analyses/{id}/ws?since=0&token={}",
        base.replace("http://", "ws://"),
        Tokens::viewer(id)
    );
    let mut viewer = Subscriber::connect(&viewer_url).await.unwrap();
    assert!(matches!(
        viewer.next_message(T).await.unwrap(),
        ServerMessage::Hello { .. }
    ));

    node.send_json(&batch(1, &events[..3])).await.unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(
        reply,
        json!({"type": "published", "request": 1, "accepted": 3, "duplicates": 0,
               "last_seq": 3, "cancel_requested": false})
    );
    let seen = viewer.events_until(3, T).await.unwrap();
    assert_eq!(seen.len(), 3, "the viewer gets what the socket published");

    // a resend is deduped by id, as over HTTP
    node.send_json(&batch(2, &events[..3])).await.unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(
        (reply["request"].as_u64(), reply["duplicates"].as_u64()),
        (Some(2), Some(3))
    );

    // an event not allowed now: 409 with its index; nothing of the batch is stored
    let again = json!({"id": "e-start-2", "type": "started",
        "stages": [{"name": "decode", "weight": 1.0}]});
    node.send_json(&batch(3, &[events[3].clone(), again]))
        .await
        .unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(reply["type"], "refused");
    assert_eq!(
        (reply["request"].as_u64(), reply["status"].as_u64()),
        (Some(3), Some(409))
    );
    assert_eq!(reply["error"]["code"], "already_started");
    assert_eq!(reply["error"]["index"], 1);

    // unreadable: no request to name
    node.send_json(&json!({"type": "publish", "batch": 7}))
        .await
        .unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(
        (reply["request"].clone(), reply["status"].as_u64()),
        (Value::Null, Some(400))
    );
    assert_eq!(reply["error"]["code"], "invalid_json");

    // a batch breaking a bound names the field, as the POST's 400 does
    node.send_json(&batch(5, &[])).await.unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(
        (reply["request"].as_u64(), reply["status"].as_u64()),
        (Some(5), Some(400))
    );
    assert_eq!(reply["error"]["code"], "invalid_event");

    // the socket is still open and the analysis whole: the rest goes through
    node.send_json(&batch(6, &events[3..])).await.unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(
        (reply["type"].as_str(), reply["last_seq"].as_u64()),
        (Some("published"), Some(8))
    );
    let seen = viewer.events_until(8, T).await.unwrap();
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        vec![4, 5, 6, 7, 8],
        "in order, nothing of the refused batches"
    );

    // the node's socket hears only its answers: an HTTP publish reaches viewers, not it
    let (status, _) = publish(&base, id, &Tokens::node(id), &events[..1]).await;
    assert_eq!(status, 200);
    node.send_json(&batch(7, &events[..1])).await.unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(reply["request"], 7, "no event frame came before the reply");
}

#[tokio::test]
async fn a_publish_socket_needs_a_publish_token_for_its_analysis() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "pubsock-tokens";
    let cases = [
        ("not-a-token".to_owned(), 4001),
        (Tokens::viewer(id), 4003),
        (Tokens::node("another-analysis"), 4003),
    ];
    for (token, code) in cases {
        let mut socket = publisher(&base, id, &token).await;
        let (got, reason) = socket.closed(T).await.unwrap();
        assert_eq!(got, code, "{reason}");
    }
    // a token with both scopes is fine
    let both = Tokens::sign(&Tokens::claims(&[Scope::Publish, Scope::Subscribe], &[id]));
    let mut socket = publisher(&base, id, &both).await;
    socket
        .send_json(&batch(1, &sample_events(2)[..1]))
        .await
        .unwrap();
    assert_eq!(socket.next_json(T).await.unwrap()["type"], "published");
}

#[tokio::test]
async fn an_attempt_on_an_analysis_never_submitted_is_a_stale_attempt() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "pubsock-attempt";
    let mut node = publisher(&base, id, &Tokens::node(id)).await;
    let message = json!({"type": "publish", "request": 1,
        "batch": {"attempt": 1, "events": &sample_events(2)[..1]}});
    node.send_json(&message).await.unwrap();
    let reply = node.next_json(T).await.unwrap();
    assert_eq!(
        (reply["status"].as_u64(), reply["error"]["code"].as_str()),
        (Some(409), Some("stale_attempt"))
    );
}
