//! A publication whose publish socket will not open (an edge without the route, a proxy
//! that refuses upgrades) delivers every event over HTTP instead, trying the socket once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use stagecast_compute::CancellationToken;
use stagecast_compute::publish::{EdgeClient, NodeIdentity, Outbox, Publication};
use stagecast_shared::event::{ErrorInfo, EventKind};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::token::SigningKey;

#[derive(Default)]
struct HttpOnlyEdge {
    /// Event ids the POSTs carried, in order.
    posted: Mutex<Vec<String>>,
    /// Requests to anything else (the socket's handshake among them).
    others: AtomicU32,
}

async fn events(State(edge): State<Arc<HttpOnlyEdge>>, Json(body): Json<Value>) -> Json<Value> {
    let mut posted = edge.posted.lock().unwrap();
    for event in body["events"].as_array().unwrap() {
        posted.push(event["id"].as_str().unwrap().to_owned());
    }
    Json(
        json!({"accepted": body["events"].as_array().unwrap().len(), "duplicates": 0,
                "last_seq": posted.len(), "cancel_requested": false}),
    )
}

async fn other(State(edge): State<Arc<HttpOnlyEdge>>) -> (axum::http::StatusCode, &'static str) {
    edge.others.fetch_add(1, Ordering::SeqCst);
    (axum::http::StatusCode::NOT_FOUND, "no such route")
}

#[tokio::test]
async fn a_socket_that_will_not_open_falls_back_to_http_and_loses_nothing() {
    let edge = Arc::new(HttpOnlyEdge::default());
    let app = Router::new()
        .route("/v1/analyses/{id}/events", post(events))
        .fallback(other)
        .with_state(edge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let identity = NodeIdentity {
        tenant: "dev".into(),
        node_id: "n1".into(),
        key: SigningKey::dev("a-test-secret-of-at-least-32-bytes!!").unwrap(),
    };
    let client = Arc::new(EdgeClient::new(&url, identity).unwrap());
    let state = tempfile::tempdir().unwrap();
    let outbox = Outbox::new(state.path()).unwrap();
    let id = AnalysisId::parse("fallback").unwrap();
    let publication = Publication::start(
        client,
        &outbox,
        id,
        CancellationToken::new(),
        Arc::new(|| 0),
    )
    .unwrap();
    for _ in 0..3 {
        publication.send(EventKind::Heartbeat { metrics: None });
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    }
    publication.send(EventKind::Failed {
        error: ErrorInfo {
            code: "test".into(),
            message: "the end".into(),
            retryable: false,
        },
    });
    let delivered = publication.finish().await.unwrap();
    assert_eq!((delivered.confirmed, delivered.refused), (4, 0));
    let posted = edge.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 4, "every event went over HTTP: {posted:?}");
    let mut unique = posted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "and once: {posted:?}");
    assert_eq!(
        edge.others.load(Ordering::SeqCst),
        1,
        "one handshake, then HTTP for a while"
    );
}
