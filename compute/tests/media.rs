//! A leased run's media against a fake edge on 127.0.0.1: the uploaded input fetched with
//! the node's token (resumed with `Range` after a cut, checked against its ETag), and the
//! key frames and the result's frame PUT as JPEGs before the run's end is published.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, RANGE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stagecast_compute::jobs::{Jobs, Leased, Publishing, QueueLimits};
use stagecast_compute::pipeline::MAX_SIDE;
use stagecast_compute::publish::{EdgeClient, NodeIdentity, Outbox};
use stagecast_compute::{InputPolicy, PipelineOptions};
use stagecast_fixtures::fixtures;
use stagecast_shared::dispatch::Job;
use stagecast_shared::dispatch::job::JobOptions;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::token::{KeySet, Scope, SigningKey, verify};

const SECRET: &str = "a test secret of at least thirty-two bytes";
const NODE: &str = "n1";
const RUN_WAIT: Duration = Duration::from_secs(60);

/// How the fake edge serves the input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Serving {
    Whole,
    /// The first answer stops after this many bytes; the rest come on a `Range` request.
    CutOnceAt(usize),
    /// Bytes that do not match their ETag.
    WrongEtag,
    /// 403 `not_lease_holder`.
    Forbidden,
    /// 404: nothing was uploaded.
    Missing,
}

/// What the node sent, in the order it arrived.
#[derive(Debug, Clone)]
enum Sent {
    Events(Vec<Value>),
    Artifact {
        name: String,
        query: HashMap<String, String>,
        content_type: String,
        bytes: Bytes,
    },
}

/// `Range` and `If-Range` of an input request.
type InputRequest = (Option<String>, Option<String>);

#[derive(Clone)]
struct EdgeState {
    input: Bytes,
    serving: Arc<Mutex<Serving>>,
    input_requests: Arc<Mutex<Vec<InputRequest>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    /// Answers to artifact PUTs before the normal 201, in order.
    artifact_answers: Arc<Mutex<Vec<(StatusCode, &'static str)>>>,
}

struct Edge {
    url: String,
    state: EdgeState,
}

impl Edge {
    async fn start(serving: Serving) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = EdgeState {
            input: Bytes::from(std::fs::read(&fixtures().video).unwrap()),
            serving: Arc::new(Mutex::new(serving)),
            input_requests: Arc::default(),
            sent: Arc::default(),
            artifact_answers: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/v1/analyses/{id}/input", get(input))
            .route("/v1/analyses/{id}/events", post(events))
            .route("/v1/analyses/{id}/artifacts/{name}", put(artifact))
            .with_state(state.clone());
        tokio::spawn(axum::serve(listener, app).into_future());
        Self { url, state }
    }

    fn sent(&self) -> Vec<Sent> {
        self.state.sent.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        let sent = self.sent();
        let batches = sent.iter().filter_map(|s| match s {
            Sent::Events(events) => Some(events.clone()),
            Sent::Artifact { .. } => None,
        });
        batches.flatten().collect()
    }

    fn artifacts(&self) -> Vec<(String, HashMap<String, String>, String, Bytes)> {
        let sent = self.sent();
        let artifacts = sent.into_iter().filter_map(|s| match s {
            Sent::Artifact {
                name,
                query,
                content_type,
                bytes,
            } => Some((name, query, content_type, bytes)),
            Sent::Events(_) => None,
        });
        artifacts.collect()
    }

    fn last_event(&self) -> Value {
        self.events()
            .last()
            .cloned()
            .expect("events were published")
    }
}

fn etag_of(bytes: &[u8]) -> String {
    format!(
        "\"{}\"",
        base16ct::lower::encode_string(&Sha256::digest(bytes))
    )
}

fn refusal(status: StatusCode, code: &str) -> Response {
    let body = json!({"error": {"code": code, "message": format!("refused: {code}")}});
    (status, Json(body)).into_response()
}

/// The node's token: its own, for publishing this analysis.
fn authorised(headers: &HeaderMap, id: &str) -> bool {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let keys = KeySet::hs256("dev", "dev", SECRET).unwrap();
    verify(token, &keys, stagecast_compute::clock::now_s()).is_ok_and(|t| {
        let c = t.claims;
        c.sub == NODE && c.has_scope(Scope::Publish) && c.grants_analysis(id)
    })
}

async fn input(State(s): State<EdgeState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    assert!(
        authorised(&headers, &id),
        "the input is fetched with the node's token"
    );
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (range, if_range) = (header(RANGE), header(IF_RANGE));
    s.input_requests
        .lock()
        .unwrap()
        .push((range.clone(), if_range.clone()));
    let serving = *s.serving.lock().unwrap();
    let etag = match serving {
        Serving::Forbidden => return refusal(StatusCode::FORBIDDEN, "not_lease_holder"),
        Serving::Missing => return refusal(StatusCode::NOT_FOUND, "not_found"),
        Serving::WrongEtag => etag_of(b"other bytes"),
        Serving::Whole | Serving::CutOnceAt(_) => etag_of(&s.input),
    };
    let total = s.input.len();
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| if_range.as_deref() == Some(etag.as_str()));
    if let Some(from) = from {
        let body = s.input.slice(from..);
        let content_range = format!("bytes {from}-{}/{total}", total - 1);
        return (
            StatusCode::PARTIAL_CONTENT,
            [(ETAG, etag), (CONTENT_RANGE, content_range)],
            body,
        )
            .into_response();
    }
    if let Serving::CutOnceAt(at) = serving {
        *s.serving.lock().unwrap() = Serving::Whole;
        // the declared length, then a broken connection after `at` bytes
        let head = Ok::<_, std::io::Error>(s.input.slice(..at));
        // after a pause, so the head reaches the node before the connection breaks
        let cut = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::other("cut"))
        };
        let body = Body::from_stream(stream::iter([head]).chain(stream::once(cut)));
        let length = total.to_string();
        return (
            [(ETAG, etag), ("content-length".parse().unwrap(), length)],
            body,
        )
            .into_response();
    }
    ([(ETAG, etag)], s.input.clone()).into_response()
}

async fn events(State(s): State<EdgeState>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).expect("publish bodies are JSON");
    let events = body["events"].as_array().cloned().unwrap_or_default();
    let count = events.len();
    s.sent.lock().unwrap().push(Sent::Events(events));
    Json(json!({"accepted": count, "duplicates": 0, "last_seq": 1, "cancel_requested": false}))
        .into_response()
}

async fn artifact(
    State(s): State<EdgeState>,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    assert!(
        authorised(&headers, &id),
        "artifacts are PUT with the node's token"
    );
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    s.sent.lock().unwrap().push(Sent::Artifact {
        name,
        query,
        content_type,
        bytes,
    });
    let scripted = {
        let mut answers = s.artifact_answers.lock().unwrap();
        (!answers.is_empty()).then(|| answers.remove(0))
    };
    match scripted {
        Some((status, code)) => refusal(status, code),
        None => StatusCode::CREATED.into_response(),
    }
}

/// A node publishing to `edge`; leases come straight to its jobs.
fn node(edge: &Edge) -> (Arc<Jobs>, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let identity = NodeIdentity {
        tenant: "dev".into(),
        node_id: NODE.into(),
        key: SigningKey::hs256("dev", SECRET.as_bytes()).unwrap(),
    };
    let publishing = Publishing {
        edge: Arc::new(EdgeClient::new(&edge.url, identity).unwrap()),
        outbox: Outbox::new(state.path().join("outbox")).unwrap(),
    };
    let limits = QueueLimits {
        concurrency: 1,
        capacity: 4,
    };
    let options = PipelineOptions {
        fps: 1.0,
        batch_size: 1,
    };
    // the default policy: the edge is reached whatever its address
    let jobs = Arc::new(Jobs::new(
        options,
        InputPolicy::default(),
        limits,
        Some(publishing),
    ));
    jobs.add_model(common::model());
    (jobs, state)
}

/// Leases the upload of `id` (attempt 1, 4 fps, batches of 3) and runs it to its end.
async fn run_upload(jobs: &Arc<Jobs>, id: &str) {
    let leased = Leased {
        analysis_id: AnalysisId::parse(id).unwrap(),
        attempt: 1,
        job: Job {
            input: "upload".into(),
            model: None,
            options: JobOptions {
                fps: Some(4.0),
                batch_size: Some(3),
            },
        },
    };
    let run = jobs.run_leased(leased).expect("the lease is taken");
    tokio::time::timeout(RUN_WAIT, run)
        .await
        .expect("the run ended in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_midway_is_resumed_and_its_frames_are_put_before_the_end() {
    let half = std::fs::metadata(&fixtures().video).unwrap().len() as usize / 2;
    let edge = Edge::start(Serving::CutOnceAt(half)).await;
    let (jobs, _state) = node(&edge);
    run_upload(&jobs, "up-1").await;

    let last = edge.last_event();
    assert_eq!(last["type"], "completed", "{last}");
    let etag = etag_of(&edge.state.input);
    let requests = edge.state.input_requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        [
            (None, None),
            (Some(format!("bytes={half}-")), Some(etag.clone()))
        ],
        "one cut, one resume from where it stopped"
    );

    let artifacts = edge.artifacts();
    let names: Vec<&str> = artifacts.iter().map(|a| a.0.as_str()).collect();
    assert!(names.len() >= 2, "{names:?}");
    let (keys, result) = names.split_at(names.len() - 1);
    assert!(keys.iter().all(|n| n.starts_with("key-")), "{names:?}");
    let best = last["result"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .fold(None::<&Value>, |b, r| match b {
            Some(b) if b["score"].as_f64() >= r["score"].as_f64() => Some(b),
            _ => Some(r),
        })
        .unwrap();
    assert_eq!(result, [format!("result-{}.jpg", best["frame"])]);
    for (name, query, content_type, bytes) in &artifacts {
        assert_eq!(content_type, "image/jpeg", "{name}");
        assert_eq!(query["attempt"], "1", "{name}: under the lease's attempt");
        let kind = if name.starts_with("key-") {
            "key_frame"
        } else {
            "result"
        };
        assert_eq!(query["kind"], kind, "{name}");
        assert!(name.contains(&format!("-{}.", query["frame"])), "{name}");
        let picture = image::load_from_memory(bytes).unwrap();
        assert!(picture.width().max(picture.height()) <= MAX_SIDE, "{name}");
    }
    // the result's frame went up before the end was published
    let sent = edge.sent();
    let at = |p: &dyn Fn(&Sent) -> bool| sent.iter().position(p).unwrap();
    let result_put =
        at(&|s| matches!(s, Sent::Artifact { name, .. } if name.starts_with("result-")));
    let end = at(&|s| matches!(s, Sent::Events(e) if e.iter().any(|e| e["type"] == "completed")));
    assert!(result_put < end, "{sent:?}");
    assert!(
        edge.events().iter().all(|e| e["type"] != "artifact"),
        "the edge announces artifacts, not the node"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_the_node_cannot_have_fails_the_run_with_its_reason() {
    for (serving, code, retryable, says) in [
        (Serving::WrongEtag, "input_unavailable", true, "sha256"),
        (
            Serving::Forbidden,
            "input_forbidden",
            false,
            "not_lease_holder",
        ),
        (Serving::Missing, "input_unavailable", false, "404"),
    ] {
        let edge = Edge::start(serving).await;
        let (jobs, _state) = node(&edge);
        run_upload(&jobs, "up-2").await;
        let last = edge.last_event();
        assert_eq!(last["type"], "failed", "{serving:?}: {last}");
        let error = &last["error"];
        assert_eq!(error["code"], code, "{serving:?}: {last}");
        assert_eq!(error["retryable"], retryable, "{serving:?}: {last}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{serving:?}: {message}");
        assert!(edge.artifacts().is_empty());
        assert_eq!(
            edge.state.input_requests.lock().unwrap().len(),
            1,
            "{serving:?}: a refusal is not retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_artifact_is_retried_and_a_stale_attempt_fences_the_run() {
    let edge = Edge::start(Serving::Whole).await;
    edge.state
        .artifact_answers
        .lock()
        .unwrap()
        .push((StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    let (jobs, _state) = node(&edge);
    run_upload(&jobs, "up-3").await;
    assert_eq!(edge.last_event()["type"], "completed");
    let names: Vec<String> = edge.artifacts().into_iter().map(|a| a.0).collect();
    assert_eq!(names[0], names[1], "the 503 was retried: {names:?}");

    let edge = Edge::start(Serving::Whole).await;
    edge.state
        .artifact_answers
        .lock()
        .unwrap()
        .push((StatusCode::CONFLICT, "stale_attempt"));
    let (jobs, _state) = node(&edge);
    run_upload(&jobs, "up-4").await;
    let names: Vec<String> = edge.artifacts().into_iter().map(|a| a.0).collect();
    assert_eq!(
        names.len(),
        1,
        "nothing more after stale_attempt: {names:?}"
    );
    assert!(
        edge.events().iter().all(|e| e["type"] != "completed"),
        "a fenced run publishes no end"
    );
    let delivered = jobs.get("up-4").unwrap().delivered.unwrap();
    assert!(delivered.stale > 0, "{delivered:?}");
}
