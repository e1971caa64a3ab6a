//! A proptest-driven request generator against the real edge: random methods, paths,
//! queries, tokens and bodies (garbage, arbitrary JSON, and valid batches with one field
//! broken). Whatever arrives, the edge answers with a contract status and, for an error,
//! the contract's body (on every path, pages included): never a 5xx, never a panic. `make test` sends a few hundred
//! requests; STAGECAST_FUZZ_CASES sends more.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use stagecast_e2e::client::sample_events;
use stagecast_e2e::{Edge, Tokens};

const STATUSES: [u16; 10] = [200, 202, 400, 401, 403, 404, 405, 409, 413, 429];

#[derive(Debug, Clone)]
struct Request {
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    body: Vec<u8>,
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("fuzz-a".to_owned()),
        "[A-Za-z0-9_-]{1,64}",
        ".{0,80}",
        "[A-Za-z0-9%._~-]{60,90}",
    ]
    .prop_map(|s| s.replace(['/', '?', '#'], "%2F"))
}

fn path() -> impl Strategy<Value = String> {
    let query = prop_oneof![
        Just(String::new()),
        "since=[0-9]{1,25}".prop_map(|q| format!("?{q}")),
        "(since|limit|token)=[-a-z0-9.%]{0,12}(&limit=[-0-9a-z]{0,8})?"
            .prop_map(|q| format!("?{q}")),
    ];
    let route = prop_oneof![
        Just("events"),
        Just("cancel"),
        Just(""),
        Just("ws"),
        Just("nope")
    ];
    prop_oneof![
        (id(), route, query.clone()).prop_map(|(id, route, q)| if route.is_empty() {
            format!("/v1/analyses/{id}{q}")
        } else {
            format!("/v1/analyses/{id}/{route}{q}")
        }),
        "(/[a-z0-9.%]{0,10}){0,4}",
        Just("/healthz".to_owned()),
        Just("/analysis".to_owned()),
        Just("/client/v1/stagecast.js".to_owned()),
    ]
}

fn token() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(Tokens::node("fuzz-a"))),
        Just(Some(Tokens::viewer("fuzz-a"))),
        "[A-Za-z0-9._-]{0,200}".prop_map(Some),
        // a well-formed header and payload with a garbage signature
        "[A-Za-z0-9_-]{1,40}".prop_map(|sig| {
            let good = Tokens::node("fuzz-a");
            let (rest, _) = good.rsplit_once('.').unwrap();
            Some(format!("{rest}.{sig}"))
        }),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid batch with one field of one event replaced by an arbitrary value.
fn broken_batch() -> impl Strategy<Value = Vec<u8>> {
    let fields = prop_oneof![
        Just("id"),
        Just("type"),
        Just("stage"),
        Just("stage_progress"),
        Just("stages"),
        Just("result"),
        Just("ts"),
        Just("regions"),
    ];
    (0usize..12, fields, json_value()).prop_map(|(i, field, value)| {
        let mut events = sample_events(10);
        let i = i % events.len();
        events[i][field] = value;
        serde_json::to_vec(&json!({ "events": events })).unwrap()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        json_value().prop_map(|v| serde_json::to_vec(&json!({ "events": v })).unwrap()),
        broken_batch(),
    ]
}

/// A publish to an analysis the node token may publish to, with any body.
fn publish() -> impl Strategy<Value = Request> {
    body().prop_map(|body| Request {
        method: reqwest::Method::POST,
        path: "/v1/analyses/fuzz-a/events".into(),
        token: Some(Tokens::node("fuzz-a")),
        body,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![1 => publish(), 1 => anything()]
}

fn anything() -> impl Strategy<Value = Request> {
    let method = prop_oneof![
        Just(reqwest::Method::GET),
        Just(reqwest::Method::POST),
        Just(reqwest::Method::PUT),
        Just(reqwest::Method::DELETE),
        Just(reqwest::Method::PATCH),
    ];
    (method, path(), token(), body()).prop_map(|(method, path, token, body)| Request {
        method,
        path,
        token,
        body,
    })
}

async fn send(client: &reqwest::Client, base: &str, r: &Request) -> (u16, String) {
    let mut req = client
        .request(r.method.clone(), format!("{base}{}", r.path))
        .header("content-type", "application/json")
        .body(r.body.clone());
    if let Some(t) = &r.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("the edge answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[test]
fn random_requests_get_contract_answers_never_a_5xx() {
    let cases = std::env::var("STAGECAST_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let edge = rt.block_on(Edge::dev()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = edge.base_url();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&request(), |r| {
        let (status, text) = rt.block_on(send(&client, &base, &r));
        prop_assert!(
            STATUSES.contains(&status),
            "status {status} for {r:?}: {text}"
        );
        // every error is the contract's body, a page's 405 and an unknown path's 404 too
        if status >= 400 {
            let body: Value = serde_json::from_str(&text).map_err(|e| {
                TestCaseError::fail(format!("{status} body is not JSON ({e}): {text}"))
            })?;
            let (code, message) = (&body["error"]["code"], &body["error"]["message"]);
            prop_assert!(
                code.as_str().is_some_and(|c| !c.is_empty())
                    && message.as_str().is_some_and(|m| !m.is_empty()),
                "{status} without the contract's error body for {r:?}: {text}"
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\nedge log:\n{}", edge.log_tail());
    }
    // and it still works
    let (status, _) = rt.block_on(send(
        &client,
        &base,
        &Request {
            method: reqwest::Method::GET,
            path: "/healthz".into(),
            token: None,
            body: Vec::new(),
        },
    ));
    assert_eq!(status, 200);
}
