//! A node in a pool, against a scripted fake edge on 127.0.0.1: one port serves the pool
//! socket (the script plays the pool), the publish route (it records every body, and
//! answers 409 `stale_attempt` for the analyses told to) and the inputs (an image, the
//! same image late, and one that never finishes downloading).

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt, stream};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use stagecast_compute::jobs::{JobState, Jobs, Publishing, QueueLimits};
use stagecast_compute::pool::{PoolConfig, PoolError, PoolLink};
use stagecast_compute::publish::{EdgeClient, NodeIdentity, Outbox};
use stagecast_compute::{CancellationToken, InputPolicy, PipelineOptions};
use stagecast_fixtures::{fixtures, path};
use stagecast_shared::ids::PoolName;
use stagecast_shared::token::{KeySet, Scope, SigningKey, verify};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as WsResponse};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const SECRET: &str = "a test secret of at least thirty-two bytes";
const NODE: &str = "n1";
const WAIT: Duration = Duration::from_secs(10);
/// The pipeline on a CPU, with the first model load of the binary.
const RUN_WAIT: Duration = Duration::from_secs(40);

type Published = Arc<Mutex<Vec<(String, Value)>>>;

/// The fake edge: what it was sent, and the pool sockets the node opened.
struct Edge {
    url: String,
    published: Published,
    stale: Arc<Mutex<HashSet<String>>>,
    sockets: mpsc::UnboundedReceiver<PoolSocket>,
}

type Sink = Arc<tokio::sync::Mutex<SplitSink<WebSocketStream<TcpStream>, Message>>>;

/// One pool socket the node opened. Like the edge's runtime, it answers `{"type":"ping"}`
/// with `{"type":"pong"}` by itself, unless told to play a dead link.
struct PoolSocket {
    sink: Sink,
    received: mpsc::UnboundedReceiver<Message>,
    pongs: Arc<AtomicBool>,
    /// Reads the socket; aborted with the socket, so dropping it drops the connection.
    reader: JoinHandle<()>,
    authorization: String,
}

impl Drop for PoolSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl PoolSocket {
    fn new(ws: WebSocketStream<TcpStream>, authorization: String) -> Self {
        let (sink, mut stream) = ws.split();
        let sink: Sink = Arc::new(tokio::sync::Mutex::new(sink));
        let (tx, received) = mpsc::unbounded_channel();
        let pongs = Arc::new(AtomicBool::new(true));
        let (answer, replies) = (pongs.clone(), sink.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let ping =
                    matches!(&message, Message::Text(t) if t.as_str() == r#"{"type":"ping"}"#);
                if ping && answer.load(Ordering::SeqCst) {
                    let pong = Message::Text(r#"{"type":"pong"}"#.into());
                    let _ = replies.lock().await.send(pong).await;
                } else if tx.send(message).is_err() {
                    return;
                }
            }
        });
        Self {
            sink,
            received,
            pongs,
            reader,
            authorization,
        }
    }

    /// From now on the node's pings go unanswered (and reach the test).
    fn stop_answering_pings(&self) {
        self.pongs.store(false, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct EdgeState {
    published: Published,
    stale: Arc<Mutex<HashSet<String>>>,
}

impl Edge {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (http_tx, http_rx) = mpsc::unbounded_channel();
        let (ws_tx, sockets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (http_tx, ws_tx) = (http_tx.clone(), ws_tx.clone());
                tokio::spawn(async move {
                    if !is_pool_socket(&stream).await {
                        let _ = http_tx.send(stream);
                        return;
                    }
                    let mut authorization = String::new();
                    // tungstenite's callback type: its error is an HTTP response
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &Request, resp: WsResponse| {
                        authorization = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        Ok(resp)
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                        let _ = ws_tx.send(PoolSocket::new(ws, authorization));
                    }
                });
            }
        });
        let state = EdgeState {
            published: Published::default(),
            stale: Arc::default(),
        };
        let png = Bytes::from(std::fs::read(&fixtures().text_png).unwrap());
        let late = png.clone();
        let app = axum::Router::new()
            .route("/v1/analyses/{id}/events", post(publish))
            .route("/text.png", get(move || async move { png.clone() }))
            // long enough for a few heartbeats to list the run
            .route(
                "/late.png",
                get(move || async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    late.clone()
                }),
            )
            // one byte, then nothing: the run stays in its fetch until stopped
            .route("/stall.png", get(|| async { stalled() }))
            .with_state(state.clone());
        tokio::spawn(axum::serve(Streams(http_rx, addr), app).into_future());
        Self {
            url: format!("http://{addr}"),
            published: state.published,
            stale: state.stale,
            sockets,
        }
    }

    fn input(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    /// The next pool socket the node opens.
    async fn socket(&mut self, within: Duration) -> PoolSocket {
        tokio::time::timeout(within, self.sockets.recv())
            .await
            .expect("the node did not connect in time")
            .expect("the edge stopped")
    }

    /// The bodies published for `analysis`, in order.
    fn bodies(&self, analysis: &str) -> Vec<Value> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter(|(id, _)| id == analysis)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// The events published for `analysis`, in order.
    fn events(&self, analysis: &str) -> Vec<Value> {
        self.bodies(analysis)
            .iter()
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn types(&self, analysis: &str) -> Vec<String> {
        let events = self.events(analysis);
        let types = events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default());
        types.map(str::to_owned).collect()
    }

    /// Whether `analysis` published its end.
    fn ended(&self, analysis: &str) -> bool {
        let types = self.types(analysis);
        types
            .iter()
            .any(|t| ["completed", "failed", "cancelled"].contains(&t.as_str()))
    }

    /// Waits until `analysis` published an event of type `kind`.
    async fn published(&self, analysis: &str, kind: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.types(analysis).iter().any(|t| t == kind) {
            assert!(
                Instant::now() < deadline,
                "{analysis}: no {kind} in {:?}",
                self.bodies(analysis)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn publish(State(state): State<EdgeState>, Path(id): Path<String>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).expect("publish bodies are JSON");
    let count = body["events"].as_array().map_or(0, Vec::len);
    state.published.lock().unwrap().push((id.clone(), body));
    if state.stale.lock().unwrap().contains(&id) {
        let error =
            json!({"error": {"code": "stale_attempt", "message": "attempt 1 is not current"}});
        return (StatusCode::CONFLICT, Json(error)).into_response();
    }
    Json(json!({"accepted": count, "duplicates": 0, "last_seq": 1, "cancel_requested": false}))
        .into_response()
}

fn stalled() -> impl IntoResponse {
    let first = stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"x")) });
    Body::from_stream(first.chain(stream::pending()))
}

/// Whether the connection asks for the pool socket (else it is the HTTP routes').
async fn is_pool_socket(stream: &TcpStream) -> bool {
    const PREFIX: &[u8] = b"GET /v1/pools/";
    let mut head = [0u8; 64];
    loop {
        let n = stream.peek(&mut head).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        if n >= PREFIX.len() || head[..n].contains(&b'\n') {
            return head[..n].starts_with(PREFIX);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The HTTP connections, handed over by the dispatcher, as a listener for axum.
struct Streams(mpsc::UnboundedReceiver<TcpStream>, SocketAddr);

impl axum::serve::Listener for Streams {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.0.recv().await {
            Some(stream) => {
                let peer = stream.peer_addr().unwrap_or(self.1);
                (stream, peer)
            }
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.1)
    }
}

impl PoolSocket {
    async fn send(&mut self, message: Value) {
        let text = message.to_string();
        self.sink
            .lock()
            .await
            .send(Message::Text(text.into()))
            .await
            .unwrap();
    }

    async fn welcome(&mut self, heartbeat_ms: u64) {
        let welcome = json!({"type": "welcome", "pool": "gpu", "node_id": NODE, "lease_ms": 30000, "heartbeat_ms": heartbeat_ms});
        self.send(welcome).await;
    }

    async fn lease(&mut self, lease_id: &str, analysis: &str, attempt: u32, job: Value) {
        let lease = json!({"type": "lease", "lease_id": lease_id, "analysis_id": analysis, "attempt": attempt, "job": job, "expires_ts": 0});
        self.send(lease).await;
    }

    /// The next message the node sends.
    async fn next(&mut self, within: Duration) -> Value {
        loop {
            let message = tokio::time::timeout(within, self.received.recv())
                .await
                .expect("the node sent nothing in time");
            match message {
                Some(Message::Text(text)) => return serde_json::from_str(&text).unwrap(),
                Some(Message::Close(frame)) => panic!("the node closed the socket: {frame:?}"),
                Some(_) => {}
                None => panic!("the socket ended"),
            }
        }
    }

    /// The first message matching `wanted`, and those before it.
    async fn until(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> (Value, Vec<Value>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next(left).await;
            if wanted(&message) {
                return (message, before);
            }
            before.push(message);
        }
    }

    /// A heartbeat whose `running` is `ids`.
    async fn heartbeat_listing(&mut self, ids: &[&str], within: Duration) {
        let running = |m: &Value| {
            m["type"] == "heartbeat"
                && m["running"].as_array().is_some_and(|r| {
                    r.iter()
                        .map(|v| v.as_str().unwrap())
                        .eq(ids.iter().copied())
                })
        };
        self.until(within, running).await;
    }

    async fn close(mut self, code: u16) {
        let frame = CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = self
            .sink
            .lock()
            .await
            .send(Message::Close(Some(frame)))
            .await;
        let rest = async { while self.received.recv().await.is_some() {} };
        let _ = tokio::time::timeout(WAIT, rest).await;
    }
}

fn of_type(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == kind
}

/// Counters as /metrics shows them; one recorder for the whole binary.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

fn counter(name: &str) -> f64 {
    recorder()
        .render()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Node {
    jobs: Arc<Jobs>,
    shutdown: CancellationToken,
    link: JoinHandle<Result<(), PoolError>>,
    _state: tempfile::TempDir,
}

/// A node of `slots` slots with the demo model, publishing to `edge` and joined to its
/// pool `gpu`. Its API would take local paths; leases never do.
fn join(edge: &Edge, slots: u32, drain: Duration) -> Node {
    let _ = recorder();
    let state = tempfile::tempdir().unwrap();
    let identity = NodeIdentity {
        tenant: "dev".into(),
        node_id: NODE.into(),
        key: SigningKey::hs256("dev", SECRET.as_bytes()).unwrap(),
    };
    let client = Arc::new(EdgeClient::new(&edge.url, identity).unwrap());
    let publishing = Publishing {
        edge: client.clone(),
        outbox: Outbox::new(state.path().join("outbox")).unwrap(),
    };
    let inputs = InputPolicy {
        local_paths: true,
        allowed_hosts: vec!["127.0.0.1".into()],
        ..InputPolicy::default()
    };
    let options = PipelineOptions {
        fps: 1.0,
        batch_size: 1,
    };
    let limits = QueueLimits {
        concurrency: slots as usize,
        capacity: 8,
    };
    let jobs = Arc::new(Jobs::new(options, inputs, limits, Some(publishing)));
    jobs.add_model(common::model());
    let config = PoolConfig {
        pool: PoolName::parse("gpu").unwrap(),
        slots,
        drain_timeout: drain,
    };
    let shutdown = CancellationToken::new();
    let link = tokio::spawn(PoolLink::new(config, jobs.clone(), client).run(shutdown.clone()));
    Node {
        jobs,
        shutdown,
        link,
        _state: state,
    }
}

impl Node {
    async fn finished(&self, analysis: &str) {
        let deadline = Instant::now() + WAIT;
        while self
            .jobs
            .get(analysis)
            .is_none_or(|j| j.state != JobState::Finished)
        {
            assert!(Instant::now() < deadline, "{analysis} still runs");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn left(self) -> Result<(), PoolError> {
        tokio::time::timeout(WAIT, self.link)
            .await
            .expect("the link did not end in time")
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_accepted_at_once_and_published_under_its_attempt() {
    let mut edge = Edge::start().await;
    let node = join(&edge, 2, Duration::from_secs(5));
    let mut pool = edge.socket(WAIT).await;
    let token = pool.authorization.strip_prefix("Bearer ").unwrap();
    let keys = KeySet::hs256("dev", "dev", SECRET).unwrap();
    let claims = verify(token, &keys, stagecast_compute::clock::now_s())
        .unwrap()
        .claims;
    assert!(
        claims.has_scope(Scope::Node) && claims.sub == NODE,
        "{claims:?}"
    );

    pool.welcome(200).await;
    let ready = pool.next(WAIT).await;
    assert_eq!(
        ready,
        json!({"type": "ready", "slots": 2, "models": ["text-detect"]})
    );
    let leased = Instant::now();
    let job = json!({"input": edge.input("late.png"), "options": {"fps": 1, "batch_size": 1}});
    pool.lease("l1", "p-1", 3, job).await;
    let (accept, _) = pool.until(WAIT, of_type("accept")).await;
    assert_eq!(accept, json!({"type": "accept", "lease_id": "l1"}));
    assert!(leased.elapsed() < WAIT);
    pool.heartbeat_listing(&["p-1"], WAIT).await;

    edge.published("p-1", "completed", RUN_WAIT).await;
    let bodies = edge.bodies("p-1");
    assert!(bodies.iter().all(|b| b["attempt"] == 3), "{bodies:?}");
    assert_eq!(
        edge.types("p-1").first().map(String::as_str),
        Some("started")
    );
    pool.heartbeat_listing(&[], WAIT).await;

    // leases are untrusted: no local path, whatever the node API takes; and a model the
    // node does not have ends the run `failed` at once, under its attempt too
    let local = json!({"input": path(&fixtures().text_png)});
    pool.lease("l2", "p-2", 1, local).await;
    let unknown = json!({"input": edge.input("text.png"), "model": "no-such-model"});
    pool.lease("l3", "p-3", 2, unknown).await;
    for (analysis, code, attempt) in [("p-2", "input_forbidden", 1), ("p-3", "unknown_model", 2)] {
        edge.published(analysis, "failed", WAIT).await;
        assert_eq!(edge.types(analysis), ["started", "failed"]);
        assert!(
            edge.bodies(analysis)
                .iter()
                .all(|b| b["attempt"] == attempt)
        );
        let failed = &edge.events(analysis)[1];
        assert_eq!(failed["error"]["code"], code, "{failed}");
    }

    node.shutdown.cancel();
    let (ready, _) = pool.until(WAIT, of_type("ready")).await;
    assert_eq!(ready["slots"], 0);
    node.left().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_revoked_and_stale_attempt_each_stop_their_run() {
    let mut edge = Edge::start().await;
    edge.stale.lock().unwrap().insert("s-1".into());
    let node = join(&edge, 3, Duration::from_secs(5));
    let mut pool = edge.socket(WAIT).await;
    pool.welcome(200).await;
    pool.until(WAIT, of_type("ready")).await;
    let stall = json!({"input": edge.input("stall.png")});
    pool.lease("lc", "c-1", 1, stall.clone()).await;
    pool.lease("lr", "r-1", 1, stall.clone()).await;
    pool.heartbeat_listing(&["c-1", "r-1"], WAIT).await;
    edge.published("c-1", "started", WAIT).await;
    edge.published("r-1", "started", WAIT).await;

    pool.send(json!({"type": "cancel", "analysis_id": "c-1", "lease_id": "lc"}))
        .await;
    edge.published("c-1", "cancelled", WAIT).await;
    assert!(edge.bodies("c-1").iter().all(|b| b["attempt"] == 1));

    let revoked_before = counter("stagecast_pool_revoked_runs_total");
    pool.send(
        json!({"type": "revoked", "analysis_id": "r-1", "lease_id": "lr", "reason": "reassigned"}),
    )
    .await;
    node.finished("r-1").await;
    pool.heartbeat_listing(&[], WAIT).await;
    assert!(!edge.ended("r-1"), "revoked: {:?}", edge.types("r-1"));

    // the edge fences the attempt: the run stops, nothing is sent again
    let stale_before = counter("stagecast_publish_stale_events_total");
    pool.lease("ls", "s-1", 1, stall).await;
    node.finished("s-1").await;
    pool.heartbeat_listing(&[], WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(edge.bodies("s-1").len(), 1, "{:?}", edge.bodies("s-1"));
    assert!(counter("stagecast_publish_stale_events_total") > stale_before);
    assert!(counter("stagecast_pool_revoked_runs_total") >= revoked_before + 2.0);

    node.shutdown.cancel();
    node.left().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_takes_no_new_lease_and_releases_what_outlives_it() {
    let mut edge = Edge::start().await;
    let node = join(&edge, 2, Duration::from_secs(1));
    let mut pool = edge.socket(WAIT).await;
    pool.welcome(200).await;
    pool.until(WAIT, of_type("ready")).await;
    pool.lease("ld", "d-1", 1, json!({"input": edge.input("stall.png")}))
        .await;
    pool.until(WAIT, of_type("accept")).await;
    edge.published("d-1", "started", WAIT).await;

    // what SIGTERM does in `serve`
    node.shutdown.cancel();
    let (ready, _) = pool.until(WAIT, of_type("ready")).await;
    assert_eq!(ready["slots"], 0);
    pool.lease("ln", "d-2", 1, json!({"input": edge.input("text.png")}))
        .await;
    let (release, before) = pool.until(WAIT, of_type("release")).await;
    assert_eq!(
        release,
        json!({"type": "release", "lease_id": "ln", "reason": "shutdown"})
    );
    assert!(!before.iter().any(of_type("accept")), "{before:?}");
    let (release, _) = pool.until(WAIT, of_type("release")).await;
    assert_eq!(
        release,
        json!({"type": "release", "lease_id": "ld", "reason": "shutdown"})
    );
    let jobs = node.jobs.clone();
    node.left().await.unwrap();
    assert!(!edge.ended("d-1"), "released: {:?}", edge.types("d-1"));
    assert!(jobs.get("d-2").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_4010_reconnect_and_a_4409_stops_joining() {
    let mut edge = Edge::start().await;
    let node = join(&edge, 1, Duration::from_secs(5));
    let mut pool = edge.socket(WAIT).await;
    pool.welcome(5000).await;
    pool.until(WAIT, of_type("ready")).await;
    pool.close(4010).await;

    // reconnected with a new token within the backoff's first half second; then a drop
    // without a close frame
    drop(edge.socket(WAIT).await);
    let mut pool = edge.socket(WAIT).await;
    pool.welcome(5000).await;
    pool.until(WAIT, of_type("ready")).await;
    pool.lease("lx", "x-1", 1, json!({"input": edge.input("stall.png")}))
        .await;
    pool.until(WAIT, of_type("accept")).await;
    edge.published("x-1", "started", WAIT).await;

    pool.close(4409).await;
    let jobs = node.jobs.clone();
    let left = node.left().await;
    assert!(matches!(left, Err(PoolError::Replaced { .. })), "{left:?}");
    // its run stopped with the link, publishing nothing more
    assert!(
        jobs.get("x-1")
            .is_some_and(|j| j.state == JobState::Finished)
    );
    assert!(!edge.ended("x-1"), "{:?}", edge.types("x-1"));
    let again = tokio::time::timeout(Duration::from_secs(1), edge.sockets.recv()).await;
    assert!(again.is_err(), "it connected again after 4409");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_edge_gets_a_ping_and_then_a_new_socket() {
    let mut edge = Edge::start().await;
    let node = join(&edge, 1, Duration::from_secs(5));
    // No welcome at all: the node gives up on the socket and dials again.
    let silent = edge.socket(WAIT).await;
    let started = tokio::time::Instant::now();
    let mut pool = edge.socket(Duration::from_secs(20)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    // Welcomed, then never answered: a ping after one quiet interval, a new socket after three.
    pool.welcome(300).await;
    pool.stop_answering_pings();
    pool.until(WAIT, of_type("ping")).await;
    let quiet = tokio::time::Instant::now();
    let _again = edge.socket(WAIT).await;
    assert!(
        quiet.elapsed() < Duration::from_secs(5),
        "{:?}",
        quiet.elapsed()
    );
    drop(pool);
    drop(node);
}
