//! Inputs from callers the node does not trust: http(s) only, public addresses only unless
//! the operator allows the host, within a size and a time cap. The test server listens on
//! 127.0.0.1, an address the default policy refuses, so each refusal here is a connection
//! the node would otherwise have made; the server lists the paths it was asked for.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, LOCATION};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use futures_util::{StreamExt, stream};
use stagecast_compute::jobs::{JobRequest, Jobs, QueueLimits, SubmitError};
use stagecast_compute::{Error, InputPolicy, Outcome, PipelineOptions, Source, Update};
use stagecast_fixtures::{fixtures, path};

const CAP: u64 = 1000;

/// An axum server on a free port of 127.0.0.1.
struct Server {
    port: u16,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let png = Bytes::from(std::fs::read(&fixtures().text_png).unwrap());
        let zeros = |n: u64| vec![0u8; n as usize];
        let app = axum::Router::new()
            .route("/text.png", get(move || async move { png.clone() }))
            .route("/exact", get(move || async move { zeros(CAP) }))
            .route("/big", get(move || async move { zeros(5 * CAP) }))
            // claims 10 GB and sends nothing: only the early refusal ends this quickly
            .route(
                "/claims-big",
                get(|| async { ([(CONTENT_LENGTH, "10000000000")], stalled()) }),
            )
            // no Content-Length: chunked, 10 x 1000 bytes
            .route(
                "/chunked",
                get(|| async {
                    let chunk = || Ok::<_, Infallible>(Bytes::from(vec![0u8; 1000]));
                    Body::from_stream(stream::iter((0..10).map(move |_| chunk())))
                }),
            )
            .route("/slow", get(|| async { stalled() }))
            .route(
                "/unavailable",
                get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            )
            .route(
                "/redirect",
                get(|Query(q): Query<HashMap<String, String>>| async move {
                    (StatusCode::FOUND, [(LOCATION, q["to"].clone())])
                }),
            )
            .layer(middleware::from_fn_with_state(asked.clone(), record));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, asked }
    }

    /// `path` on this server, by the host `host` (127.0.0.1, localhost, ...).
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

async fn record(
    State(asked): State<Arc<Mutex<Vec<String>>>>,
    req: Request,
    next: Next,
) -> Response {
    asked.lock().unwrap().push(req.uri().path().to_owned());
    next.run(req).await
}

/// One byte, then nothing, ever.
fn stalled() -> impl IntoResponse {
    let first = stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"x")) });
    Body::from_stream(first.chain(stream::pending()))
}

/// The default policy, but for `hosts`.
fn allowing(hosts: &[&str]) -> InputPolicy {
    InputPolicy {
        allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..InputPolicy::default()
    }
}

fn policy(hosts: &[&str]) -> Arc<InputPolicy> {
    Arc::new(allowing(hosts))
}

fn options() -> PipelineOptions {
    PipelineOptions {
        fps: 1.0,
        batch_size: 1,
    }
}

/// Runs `url` under `policy` to its end: the error it must end with, and the failed
/// update it must have sent last.
async fn fails(url: &str, policy: &Arc<InputPolicy>) -> Error {
    let source = Source::parse(url, policy).unwrap_or_else(|e| panic!("{url}: {e}"));
    let (outcome, updates) = run(&source, options()).await;
    let e = match outcome {
        Err(e) => e,
        Ok(o) => panic!("{url}: expected a failure, got {o:?}"),
    };
    match updates.last() {
        Some(Update::Failed(info)) => assert_eq!(info.code, e.code(), "{url}"),
        other => panic!("{url}: last update {other:?}"),
    }
    e
}

async fn completes(url: &str, policy: &Arc<InputPolicy>) {
    let (outcome, _) = run(&Source::parse(url, policy).unwrap(), options()).await;
    let result = completed(outcome);
    assert!(result.flagged, "{url}: {result:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_s_own_addresses_are_refused_by_default() {
    let server = Server::start().await;
    let port = server.port;
    let default = policy(&[]);
    for url in [
        server.url("127.0.0.1", "/text.png"),
        // the same address spelled otherwise: the URL parser makes each 127.0.0.1 or ::1
        server.url("0x7f.1", "/text.png"),
        server.url("2130706433", "/text.png"),
        server.url("[::ffff:127.0.0.1]", "/text.png"),
        server.url("[::1]", "/text.png"),
        // Linux connects 0.0.0.0 to the host itself
        server.url("0.0.0.0", "/text.png"),
    ] {
        let e = fails(&url, &default).await;
        assert_eq!(
            (e.code(), e.retryable()),
            ("input_forbidden", false),
            "{url}: {e}"
        );
    }
    // a name is checked where it resolves, and its addresses are not told to the caller
    let url = format!("http://localhost:{port}/text.png");
    let e = fails(&url, &default).await;
    assert_eq!((e.code(), e.retryable()), ("input_forbidden", false), "{e}");
    assert!(
        e.to_string().contains("localhost has no address") && !e.to_string().contains("127.0.0.1"),
        "{e}"
    );
    assert_eq!(server.asked(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_hosts_are_fetched_whatever_their_address() {
    let server = Server::start().await;
    completes(
        &server.url("127.0.0.1", "/text.png"),
        &policy(&["127.0.0.1"]),
    )
    .await;
    completes(
        &server.url("localhost", "/text.png"),
        &policy(&["localhost"]),
    )
    .await;
    assert_eq!(server.asked(), ["/text.png", "/text.png"]);
    // allowing one spelling of an address allows only that host
    let e = fails(
        &server.url("localhost", "/text.png"),
        &policy(&["127.0.0.1"]),
    )
    .await;
    assert_eq!(e.code(), "input_forbidden", "{e}");
}

#[test]
fn local_paths_and_file_urls_are_refused_unless_trusted() {
    let untrusted = policy(&[]);
    for input in [
        path(&fixtures().text_png),
        "relative/clip.mp4",
        "file:///etc/passwd",
        "FILE:///etc/passwd",
    ] {
        let e = Source::parse(input, &untrusted).expect_err(input);
        assert_eq!(
            (e.code(), e.retryable()),
            ("input_forbidden", false),
            "{input}"
        );
    }
    let e = Source::parse("ftp://host/clip.mp4", &untrusted).unwrap_err();
    assert_eq!(e.code(), "unsupported_input");

    let trusted = trusted();
    let source = Source::parse(path(&fixtures().text_png), &trusted).unwrap();
    assert!(matches!(source, Source::Path(_)));
    // a trusted caller names the path itself
    let e = Source::parse("file:///etc/passwd", &trusted).unwrap_err();
    assert_eq!(e.code(), "unsupported_input");
}

/// The node API's submissions are parsed under the policy `serve` gives its jobs.
#[tokio::test(flavor = "multi_thread")]
async fn the_node_api_refuses_local_paths_it_was_not_told_to_take() {
    let jobs = |inputs: InputPolicy| {
        let limits = QueueLimits {
            concurrency: 1,
            capacity: 1,
        };
        Arc::new(Jobs::new(PipelineOptions::default(), inputs, limits, None))
    };
    let request = |input: &str| JobRequest {
        input: input.to_owned(),
        model: None,
        analysis_id: None,
        fps: None,
        batch_size: None,
    };
    let untrusted = jobs(InputPolicy::default());
    for input in [path(&fixtures().text_png), "file:///etc/passwd"] {
        match untrusted.submit(request(input)) {
            Err(SubmitError::InvalidRequest(m)) => assert!(m.contains("input forbidden"), "{m}"),
            other => panic!("{input}: {other:?}"),
        }
    }
    // taken: no model is loaded, which is checked after the input
    let url = "http://127.0.0.1:9/x.png";
    assert!(matches!(
        untrusted.submit(request(url)),
        Err(SubmitError::Loading)
    ));
    let trusting = jobs(InputPolicy {
        local_paths: true,
        ..InputPolicy::default()
    });
    let taken = trusting.submit(request(path(&fixtures().text_png)));
    assert!(matches!(taken, Err(SubmitError::Loading)), "{taken:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_redirect_hop_is_checked() {
    let server = Server::start().await;
    let hop = |host: &str, to: &str| server.url(host, &format!("/redirect?to={to}"));
    let by_ip = policy(&["127.0.0.1"]);
    let by_name = policy(&["localhost"]);

    // followed where the target is allowed too
    completes(
        &hop("127.0.0.1", &server.url("127.0.0.1", "/text.png")),
        &by_ip,
    )
    .await;
    assert_eq!(server.asked(), ["/redirect", "/text.png"]);

    for (url, policy) in [
        // to an IP literal, which reqwest connects to without resolving
        (
            hop("localhost", &server.url("127.0.0.1", "/text.png")),
            &by_name,
        ),
        (
            hop("localhost", &server.url("[::1]", "/text.png")),
            &by_name,
        ),
        // to a name, checked where it resolves
        (
            hop("127.0.0.1", &server.url("localhost", "/text.png")),
            &by_ip,
        ),
        // to another scheme
        (hop("127.0.0.1", "file:///etc/passwd"), &by_ip),
    ] {
        let e = fails(&url, policy).await;
        assert_eq!(
            (e.code(), e.retryable()),
            ("input_forbidden", false),
            "{url}: {e}"
        );
    }
    let asked = server.asked();
    assert!(asked[2..].iter().all(|p| p == "/redirect"), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn inputs_over_the_size_cap_are_too_large() {
    let server = Server::start().await;
    let capped = Arc::new(InputPolicy {
        max_bytes: CAP,
        timeout: Duration::from_secs(30),
        ..allowing(&["127.0.0.1"])
    });
    for path in ["/big", "/claims-big", "/chunked"] {
        let started = Instant::now();
        let e = fails(&server.url("127.0.0.1", path), &capped).await;
        assert_eq!(
            (e.code(), e.retryable()),
            ("input_too_large", false),
            "{path}: {e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{path}");
    }
    // exactly the cap is downloaded (and then is no image)
    let e = fails(&server.url("127.0.0.1", "/exact"), &capped).await;
    assert_eq!(e.code(), "decode_failed", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_past_the_time_cap_is_unavailable_for_now() {
    let server = Server::start().await;
    let hasty = Arc::new(InputPolicy {
        timeout: Duration::from_secs(1),
        ..allowing(&["127.0.0.1"])
    });
    let started = Instant::now();
    let e = fails(&server.url("127.0.0.1", "/slow"), &hasty).await;
    let took = started.elapsed();
    assert_eq!(
        (e.code(), e.retryable()),
        ("input_unavailable", true),
        "{e}"
    );
    assert!(e.to_string().contains("within 1 s"), "{e}");
    assert!(
        Duration::from_secs(1) <= took && took < Duration::from_secs(10),
        "{took:?}"
    );

    let e = fails(&server.url("127.0.0.1", "/unavailable"), &hasty).await;
    assert_eq!(
        (e.code(), e.retryable()),
        ("input_unavailable", true),
        "{e}"
    );
    assert!(matches!(
        run(
            &Source::parse(&server.url("127.0.0.1", "/text.png"), &hasty).unwrap(),
            options()
        )
        .await
        .0,
        Ok(Outcome::Completed(_))
    ));
}
