//! Every HTTP route and error status of the contract, against the real edge in workerd.

use serde_json::{Value, json};
use stagecast_e2e::client::{DEV_SECRET, now_s, publish, sample_events};
use stagecast_e2e::{Tokens, shared_edge};
use stagecast_shared::token::{Claims, Scope, SigningKey, mint};

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let edge = shared_edge().await;
    let resp = reqwest::get(format!("{}/healthz", edge.base_url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, body) = get(&format!("{}/nope", edge.base_url()), None).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let resp = reqwest::Client::new()
        .delete(format!("{}/v1/analyses/a", edge.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_error(&resp.json().await.unwrap(), "method_not_allowed");
}

#[tokio::test]
async fn the_pages_are_served_tagged_and_revalidate_to_304() {
    let edge = shared_edge().await;
    let http = reqwest::Client::new();
    let pages = [
        ("/", "text/html", "<html"),
        ("/analysis", "text/html", "dashboard.js"),
        ("/pool", "text/html", "pool.js"),
        ("/style.css", "text/css", "{"),
        (
            "/client/v1/stagecast.js",
            "text/javascript",
            "export class AnalysisClient",
        ),
    ];
    for (path, content_type, holds) in pages {
        let url = format!("{}{path}", edge.base_url());
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert_eq!(
            header("cache-control"),
            "public, max-age=0, must-revalidate"
        );
        let etag = header("etag");
        assert!(
            etag.starts_with('"') && etag.len() > 2,
            "{path}: etag {etag:?}"
        );
        let body = resp.text().await.unwrap();
        assert!(body.contains(holds), "{path} lacks {holds:?}");

        let again = http
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = http
            .get(&url)
            .header("if-none-match", "\"an-older-one\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200, "{path}");
        let head = http.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "{path}: HEAD has a body"
        );
    }
    let resp = http
        .post(format!("{}/analysis", edge.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_error(&resp.json().await.unwrap(), "method_not_allowed");
    let (status, body) = get(&format!("{}/analysis.html", edge.base_url()), None).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
}

#[tokio::test]
async fn a_full_analysis_is_stored_in_order_and_readable() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "http-full";
    let events = sample_events(6);
    let (status, body) = publish(&base, id, &Tokens::node(id), &events).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"accepted": 8, "duplicates": 0, "last_seq": 8, "cancel_requested": false})
    );

    let (status, snap) = get(
        &format!("{base}/v1/analyses/{id}"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(snap["status"], "completed");
    assert_eq!(snap["overall_progress"], 1.0);
    assert_eq!(snap["last_seq"], 8);
    assert_eq!(snap["result"]["score"], 0.9);

    let (status, page) = get(
        &format!("{base}/v1/analyses/{id}/events?since=2&limit=3"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    assert_eq!(status, 200);
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(page["last_seq"], 8);
    assert_eq!(page["events"][0]["event"]["type"], "progress");
}

#[tokio::test]
async fn a_retried_batch_stores_nothing_twice() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "http-retry";
    let events = sample_events(4);
    let token = Tokens::node(id);
    let (_, first) = publish(&base, id, &token, &events[..3]).await;
    assert_eq!(first["accepted"], 3);
    let (status, again) = publish(&base, id, &token, &events[..4]).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            again["accepted"].as_u64(),
            again["duplicates"].as_u64(),
            again["last_seq"].as_u64()
        ),
        (Some(1), Some(3), Some(4))
    );
    let (_, page) = get(
        &format!("{base}/v1/analyses/{id}/events?since=0"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["e-start", "e-1", "e-2", "e-3"]);
}

#[tokio::test]
async fn bad_batches_are_refused_whole_with_the_contract_codes() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "http-bad";
    let token = Tokens::node(id);
    // 409 with the index: progress before started; nothing of the batch is stored.
    let (status, body) = publish(
        &base,
        id,
        &token,
        &[json!({"id": "p", "type": "progress", "stage": "x", "stage_progress": 0.1})],
    )
    .await;
    assert_eq!(status, 409);
    assert_error(&body, "not_started");
    assert_eq!(body["error"]["index"], 0);
    let mut batch = sample_events(2)[..2].to_vec();
    batch.push(json!({"id": "z", "type": "progress", "stage": "nope", "stage_progress": 0.5}));
    let (status, body) = publish(&base, id, &token, &batch).await;
    assert_eq!(status, 409);
    assert_error(&body, "unknown_stage");
    assert_eq!(body["error"]["index"], 2);
    let (_, snap) = get(
        &format!("{base}/v1/analyses/{id}"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    assert_eq!(
        (snap["status"].as_str(), snap["last_seq"].as_u64()),
        (Some("pending"), Some(0))
    );
    // 400: out of bounds, unknown type, not JSON, empty batch.
    let (status, body) = publish(
        &base,
        id,
        &token,
        &[json!({"id": "s", "type": "started", "stages": [{"name": "a", "weight": -1}]})],
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_event");
    let (status, body) =
        publish(&base, id, &token, &[json!({"id": "s", "type": "exploded"})]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = publish(&base, id, &token, &[]).await;
    assert_eq!(status, 400);
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/{id}/events"))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_error(&resp.json().await.unwrap(), "invalid_json");
    // 413: over 256 KiB.
    let big = json!({"events": [{"id": "s", "type": "heartbeat", "pad": "x".repeat(300 * 1024)}]});
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/{id}/events"))
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_error(&resp.json().await.unwrap(), "payload_too_large");
    // 400: a bad analysis id.
    let (status, body) = publish(&base, "bad.id", &Tokens::node("bad.id"), &sample_events(1)).await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_analysis_id");
    // 400: a bad query.
    let (status, body) = get(
        &format!("{base}/v1/analyses/{id}/events?since=-4"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_request");
}

fn token_with(claims: &Claims, key: &SigningKey) -> String {
    mint(claims, key).unwrap()
}

#[tokio::test]
async fn bad_tokens_are_refused_401_and_wrong_permissions_403() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "http-auth";
    let url = format!("{base}/v1/analyses/{id}");
    let key = Tokens::key();
    let good = Tokens::claims(&[Scope::Subscribe], &[id]);
    let (status, body) = get(&url, None).await;
    assert_eq!(status, 401);
    assert_error(&body, "missing_token");

    // alg=none: header {"alg":"none","typ":"JWT","kid":"dev"}, no signature.
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "dev"})),
        b64(&serde_json::to_value(&good).unwrap())
    );
    // A wrong alg: HS384 over the same secret.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384);
    header.kid = Some("dev".into());
    let hs384 = jsonwebtoken::encode(
        &header,
        &good,
        &jsonwebtoken::EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .unwrap();
    // A tampered signature.
    let mut tampered = token_with(&good, &key);
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    // Another secret.
    let forged = token_with(
        &good,
        &SigningKey::dev("another-secret-0123456789abcdef0123").unwrap(),
    );
    let wrong_aud = token_with(
        &Claims {
            aud: "someone-else".into(),
            ..good.clone()
        },
        &key,
    );
    let expired = token_with(
        &Claims {
            exp: now_s() - 3600,
            ..good.clone()
        },
        &key,
    );
    let not_yet = token_with(
        &Claims {
            nbf: Some(now_s() + 3600),
            ..good.clone()
        },
        &key,
    );
    let unknown_iss = token_with(
        &Claims {
            iss: "nobody".into(),
            ..good.clone()
        },
        &key,
    );
    for (name, token, code) in [
        ("alg none", none, "invalid_token"),
        ("wrong alg", hs384, "invalid_token"),
        ("tampered", tampered, "invalid_token"),
        ("forged", forged, "invalid_token"),
        ("wrong aud", wrong_aud, "invalid_token"),
        ("expired", expired, "token_expired"),
        ("future nbf", not_yet, "invalid_token"),
        ("unknown iss", unknown_iss, "invalid_token"),
    ] {
        let (status, body) = get(&url, Some(&token)).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_error(&body, code);
    }
    // 403: valid token, wrong scope or analysis.
    let (status, body) = get(&url, Some(&Tokens::node(id))).await;
    assert_eq!(status, 403);
    assert_error(&body, "insufficient_scope");
    let (status, body) = get(&url, Some(&Tokens::viewer("other"))).await;
    assert_eq!(status, 403);
    assert_error(&body, "analysis_not_granted");
    let (status, body) = publish(&base, id, &Tokens::viewer(id), &sample_events(1)).await;
    assert_eq!(status, 403);
    assert_error(&body, "insufficient_scope");
}

#[tokio::test]
async fn cancel_over_http_is_recorded_once_and_reaches_the_node() {
    let edge = shared_edge().await;
    let base = edge.base_url();
    let id = "http-cancel";
    let node = Tokens::node(id);
    publish(&base, id, &node, &sample_events(4)[..2]).await;
    let cancel = || {
        reqwest::Client::new()
            .post(format!("{base}/v1/analyses/{id}/cancel"))
            .bearer_auth(Tokens::viewer(id))
            .send()
    };
    let resp = cancel().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"cancel_requested": true})
    );
    assert_eq!(cancel().await.unwrap().status(), 202);
    let (_, page) = get(
        &format!("{base}/v1/analyses/{id}/events?since=2"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["cancel_requested"], "recorded once");
    assert_eq!(page["events"][0]["event"]["by"], "tester");
    // The node learns it from its next publish, and ends the analysis.
    let (_, body) = publish(
        &base,
        id,
        &node,
        &[json!({"id": "hb", "type": "heartbeat"})],
    )
    .await;
    assert_eq!(body["cancel_requested"], true);
    let (status, _) = publish(
        &base,
        id,
        &node,
        &[json!({"id": "c", "type": "cancelled", "reason": "asked"})],
    )
    .await;
    assert_eq!(status, 200);
    let resp = cancel().await.unwrap();
    assert_eq!(resp.status(), 409, "nothing to cancel after the end");
    // Without scope cancel: 403.
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/{id}/cancel"))
        .bearer_auth(Tokens::sign(&Tokens::claims(&[Scope::Subscribe], &[id])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn tenants_are_isolated_whatever_the_url_says() {
    // A second edge with two tenants.
    let secret_a = "tenant-a-secret-0123456789abcdef0123";
    let secret_b = "tenant-b-secret-0123456789abcdef0123";
    let tenants = json!({"tenants": {
        "a": {"keys": [{"kid": "ka", "alg": "HS256", "secret": secret_a}]},
        "b": {"keys": [{"kid": "kb", "alg": "HS256", "secret": secret_b}]}}})
    .to_string();
    let edge = stagecast_e2e::Edge::start(&[("STAGECAST_TENANTS", &tenants)])
        .await
        .unwrap();
    let base = edge.base_url();
    let key_a = SigningKey::hs256("ka", secret_a.as_bytes()).unwrap();
    let key_b = SigningKey::hs256("kb", secret_b.as_bytes()).unwrap();
    let all = [Scope::Publish, Scope::Subscribe, Scope::Cancel];
    let token_a = mint(
        &Claims::new("a", "node-a", &all, &["*"], now_s(), 600),
        &key_a,
    )
    .unwrap();
    let token_b = mint(
        &Claims::new("b", "node-b", &all, &["*"], now_s(), 600),
        &key_b,
    )
    .unwrap();
    let id = "same-id";
    let (status, _) = publish(&base, id, &token_a, &sample_events(2)).await;
    assert_eq!(status, 200);
    // Tenant B reads its own (empty) analysis of the same id, never A's.
    let (status, snap) = get(&format!("{base}/v1/analyses/{id}"), Some(&token_b)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (snap["status"].as_str(), snap["last_seq"].as_u64()),
        (Some("pending"), Some(0))
    );
    // B's publish and cancel land in B's analysis; A's is untouched.
    publish(&base, id, &token_b, &sample_events(2)[..1]).await;
    reqwest::Client::new()
        .post(format!("{base}/v1/analyses/{id}/cancel"))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    let (_, snap_a) = get(&format!("{base}/v1/analyses/{id}"), Some(&token_a)).await;
    assert_eq!(
        (
            snap_a["status"].as_str(),
            snap_a["cancel_requested"].as_bool()
        ),
        (Some("completed"), Some(false))
    );
    // A token signed with B's key but claiming tenant A is refused.
    let forged = mint(
        &Claims::new("a", "x", &all, &["*"], now_s(), 600),
        &SigningKey::hs256("ka", secret_b.as_bytes()).unwrap(),
    )
    .unwrap();
    let (status, _) = get(&format!("{base}/v1/analyses/{id}"), Some(&forged)).await;
    assert_eq!(status, 401);
    // The dev tenant is gone when STAGECAST_TENANTS is set.
    let (status, _) = get(
        &format!("{base}/v1/analyses/{id}"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    assert_eq!(status, 401);
}

/// One publish, with the `Retry-After` header kept.
async fn publish_raw(
    base: &str,
    id: &str,
    token: &str,
    events: &[Value],
) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/analyses/{id}/events"))
        .bearer_auth(token)
        .json(&json!({ "events": events }))
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn publishing_too_fast_gets_429_with_retry_after_and_loses_nothing() {
    use std::time::Duration;
    // Its own edge: 2 batches a second, bursts of 4.
    let edge = stagecast_e2e::Edge::start(&[
        ("STAGECAST_DEV_SECRET", DEV_SECRET),
        ("STAGECAST_PUBLISH_RATE", "2"),
    ])
    .await
    .unwrap();
    let base = edge.base_url();
    let id = "http-rate";
    let token = Tokens::node(id);
    let started =
        json!({"id": "start", "type": "started", "stages": [{"name": "a", "weight": 1.0}]});
    let (status, _, body) = publish_raw(&base, id, &token, &[started]).await;
    assert_eq!(status, 200, "{body}");

    // A burst of 20 single-heartbeat batches at once: far beyond 4 + 2/s.
    let beats: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("hb-{i}"), "type": "heartbeat"}))
        .collect();
    let answers = futures_util::future::join_all(
        beats
            .iter()
            .map(|beat| publish_raw(&base, id, &token, std::slice::from_ref(beat))),
    )
    .await;
    let mut refused = Vec::new();
    let mut longest_wait = 0;
    for (beat, (status, retry_after, body)) in beats.iter().zip(&answers) {
        match status {
            200 => assert_eq!(body["accepted"], 1, "{body}"),
            429 => {
                assert_error(body, "rate_limited");
                let secs: u64 = retry_after
                    .as_deref()
                    .expect("429 carries Retry-After")
                    .parse()
                    .expect("Retry-After in whole seconds");
                assert!(secs >= 1, "Retry-After {secs}");
                longest_wait = longest_wait.max(secs);
                refused.push(beat.clone());
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let accepted = beats.len() - refused.len();
    assert!(
        !refused.is_empty() && (1..10).contains(&accepted),
        "{accepted} of {} accepted",
        beats.len()
    );

    // After waiting Retry-After the next publish passes.
    tokio::time::sleep(Duration::from_secs(longest_wait)).await;
    let (status, _, body) = publish_raw(&base, id, &token, &refused[..1]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    // The rest, as a node would send them: honouring Retry-After, all in one batch this time,
    // with an already stored event retried in it.
    let mut retry: Vec<Value> = refused[1..].to_vec();
    retry.push(refused[0].clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, retry_after, body) = publish_raw(&base, id, &token, &retry).await;
        match (status, retry_after) {
            (200, _) => break body,
            (429, Some(secs)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(secs.parse().unwrap())).await;
            }
            (status, _) => panic!("{status}: {body}"),
        }
    };
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(refused.len() as u64 - 1), Some(1)),
        "{body}"
    );

    // Every event stored exactly once, seqs without gaps.
    let (status, page) = get(
        &format!("{base}/v1/analyses/{id}/events?since=0&limit=1000"),
        Some(&Tokens::viewer(id)),
    )
    .await;
    assert_eq!(status, 200);
    let stored = page["events"].as_array().unwrap();
    let seqs: Vec<u64> = stored.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<_>>());
    let mut ids: Vec<&str> = stored
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<String> = (0..20).map(|i| format!("hb-{i}")).collect();
    expected.push("start".into());
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn the_socket_route_without_an_upgrade_is_a_clear_400() {
    let edge = shared_edge().await;
    let url = format!("{}/v1/analyses/plain/ws?since=0", edge.base_url());
    let (status, body) = get(&url, Some(&Tokens::viewer("plain"))).await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_request");
}

#[tokio::test]
async fn the_edge_serves_its_openapi_document_and_answers_cors_preflights() {
    let edge = shared_edge().await;
    let resp = reqwest::get(format!("{}/openapi.json", edge.base_url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = resp.json().await.unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(stagecast_e2e::edge::repo_root().join("docs/openapi/edge.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "the Worker serves the committed document"
    );
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(served["paths"]["/v1/analyses/{id}/stream"]["get"].is_object());

    // A page on another origin may send its token in Authorization and read the answer.
    let url = format!("{}/v1/analyses/cors-1/cancel", edge.base_url());
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let allowed = |name: &str| preflight.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(allowed("access-control-allow-origin"), "*");
    assert!(allowed("access-control-allow-methods").contains("POST"));
    assert!(allowed("access-control-allow-headers").contains("authorization"));
    let refused = reqwest::Client::new()
        .get(format!("{}/v1/analyses/cors-1", edge.base_url()))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    let (status, body) = get(
        &format!("{}/v1/analyses/cors-1", edge.base_url()),
        Some(&Tokens::viewer("cors-1")),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
}
