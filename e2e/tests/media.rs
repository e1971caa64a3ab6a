//! Media at the edge (docs/protocol.md §15) against the real edge in workerd with its local
//! R2: uploads streamed into the bucket, the leased node's input fetch with ranges,
//! artifacts with their events, ETags and isolation, and retention.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stagecast_e2e::client::{now_s, publish};
use stagecast_e2e::host::group_rss;
use stagecast_e2e::pool::{PoolNode, node_token, publish_attempt, submit, submit_token};
use stagecast_e2e::uploads::{
    bucket_blobs, fetch_input, get_artifact, noise, put_artifact, upload,
};
use stagecast_e2e::{Edge, Subscriber, Tokens};
use stagecast_shared::token::{Claims, Scope, SigningKey, mint};

const MIB: usize = 1024 * 1024;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn dev_edge(vars: &[(&str, &str)]) -> Edge {
    let mut all = vec![("STAGECAST_DEV_SECRET", stagecast_e2e::client::DEV_SECRET)];
    all.extend_from_slice(vars);
    Edge::start(&all).await.expect("the edge starts")
}

/// Workerd's runtime (not wrangler's dev proxy), in MiB.
fn runtime_mib(edge: &Edge) -> u64 {
    let pgid = edge.process_group().expect("the edge runs");
    group_rss(pgid, edge.config.port, &["workerd"])
        .0
        .runtime_kib
        / 1024
}

/// Uploads `bytes` to `id`, submits it with `"input": "upload"` and takes the lease with a
/// scripted node: the node's token and the lease's attempt.
async fn submitted_upload(
    edge: &Edge,
    id: &str,
    bytes: Vec<u8>,
    node: &str,
) -> (String, u32, PoolNode) {
    let base = edge.base_url();
    let receipt = upload(&base, id, &submit_token(), "video/mp4", bytes).await;
    assert_eq!(
        receipt.status,
        201,
        "{}",
        String::from_utf8_lossy(&receipt.body)
    );
    let body = json!({"analysis_id": id, "pool": "media", "input": "upload"});
    let (status, answer, _) = submit(&base, &submit_token(), &body).await;
    assert_eq!(status, 202, "{answer}");
    let token = node_token(node);
    let mut pool = PoolNode::join(&edge.ws_url(""), "media", &token, 1, &["m"])
        .await
        .unwrap();
    let (_, leased, attempt) = pool.take_lease(Duration::from_secs(10)).await.unwrap();
    assert_eq!(leased, id);
    (token, attempt, pool)
}

#[tokio::test]
async fn a_50_mib_upload_round_trips_and_the_worker_does_not_hold_it() {
    let edge = dev_edge(&[]).await;
    let base = edge.base_url();
    // warm the Worker and the bucket so the baseline is the steady state
    let warm = upload(
        &base,
        "warm-up",
        &submit_token(),
        "video/mp4",
        noise(MIB, 1),
    )
    .await;
    assert_eq!(warm.status, 201);
    let before = runtime_mib(&edge);
    let bytes = noise(50 * MIB, 2);
    let answer = upload(&base, "big", &submit_token(), "video/mp4", bytes.clone()).await;
    assert_eq!(answer.status, 201, "{}", edge.log_tail());
    let receipt = answer.json();
    assert_eq!(receipt["bytes"], 50 * MIB as u64);
    assert_eq!(receipt["sha256"], sha256_hex(&bytes));
    assert_eq!(receipt["content_type"], "video/mp4");
    let after = runtime_mib(&edge);
    // The Worker logs its isolate's linear memory with each stored upload: streamed, the
    // file never lands there (wasm memory only grows, so holding it once would show).
    let heaps: Vec<u64> = edge
        .log()
        .lines()
        .filter(|l| l.contains("upload stored"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["fields"]["wasm_memory_bytes"].as_u64())
        .collect();
    println!(
        "Worker heap after the 1 MiB and the 50 MiB upload: {heaps:?} bytes; workerd's RSS {before} -> {after} MiB (the local R2 emulation's buffers)"
    );
    assert_eq!(heaps.len(), 2, "{}", edge.log_tail());
    assert!(
        heaps[1] <= heaps[0] + MIB as u64 && heaps[1] < 8 * MIB as u64,
        "the Worker's heap grew with the file: {heaps:?}"
    );

    // the node holding the lease reads it back byte for byte
    let body = json!({"analysis_id": "big", "pool": "media", "input": "upload"});
    assert_eq!(submit(&base, &submit_token(), &body).await.0, 202);
    let token = node_token("n-big");
    let mut pool = PoolNode::join(&edge.ws_url(""), "media", &token, 1, &["m"])
        .await
        .unwrap();
    pool.take_lease(Duration::from_secs(10)).await.unwrap();
    let fetched = fetch_input(&base, "big", &token, &[]).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(
        fetched.header("etag"),
        Some(format!("\"{}\"", sha256_hex(&bytes)).as_str())
    );
    assert_eq!(fetched.header("accept-ranges"), Some("bytes"));
    assert_eq!(fetched.header("content-type"), Some("video/mp4"));
    assert_eq!(sha256_hex(&fetched.body), sha256_hex(&bytes));

    // over the cap: 413 before anything is stored
    let stored = bucket_blobs(&edge.config.state_dir);
    let over = upload(
        &base,
        "too-big",
        &submit_token(),
        "video/mp4",
        noise(101 * MIB, 3),
    )
    .await;
    assert_eq!(
        (over.status, over.code().as_str()),
        (413, "payload_too_large")
    );
    assert_eq!(
        bucket_blobs(&edge.config.state_dir),
        stored,
        "nothing stored"
    );
    let missing = json!({"analysis_id": "too-big", "pool": "media", "input": "upload"});
    let (status, answer, _) = submit(&base, &submit_token(), &missing).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("input_missing"))
    );
}

#[tokio::test]
async fn only_the_lease_holder_reads_the_input_and_ranges_resume() {
    let edge = dev_edge(&[]).await;
    let base = edge.base_url();
    let bytes = noise(3 * MIB + 17, 4);
    let etag = format!("\"{}\"", sha256_hex(&bytes));

    // bad uploads, before any submission
    let wrong_type = upload(&base, "r1", &submit_token(), "text/html", vec![1, 2, 3]).await;
    assert_eq!(
        (wrong_type.status, wrong_type.code().as_str()),
        (400, "invalid_media")
    );
    let empty = upload(&base, "r1", &submit_token(), "video/mp4", Vec::new()).await;
    assert_eq!(empty.status, 400);
    let viewer = upload(&base, "r1", &Tokens::viewer("r1"), "video/mp4", vec![1]).await;
    assert_eq!(
        (viewer.status, viewer.code().as_str()),
        (403, "insufficient_scope")
    );
    let chunked = reqwest::Client::new()
        .put(format!("{base}/v1/analyses/r1/input"))
        .bearer_auth(submit_token())
        .header("content-type", "video/mp4")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            vec![Ok::<_, std::io::Error>(vec![1u8; 10])],
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status().as_u16(), 411);

    let (token, attempt, _pool) = submitted_upload(&edge, "r1", bytes.clone(), "n1").await;
    assert_eq!(attempt, 1);
    let again = upload(&base, "r1", &submit_token(), "video/mp4", vec![9; 10]).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (409, "already_submitted")
    );

    // the rest of the file after a cut at 1 MiB
    let cut = MIB;
    let rest = fetch_input(
        &base,
        "r1",
        &token,
        &[("range", &format!("bytes={cut}-")), ("if-range", &etag)],
    )
    .await;
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.header("content-range"),
        Some(format!("bytes {cut}-{}/{}", bytes.len() - 1, bytes.len()).as_str())
    );
    assert_eq!(rest.body, bytes[cut..]);
    // a resume against other bytes starts over
    let changed = fetch_input(
        &base,
        "r1",
        &token,
        &[("range", "bytes=10-"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!((changed.status, changed.body.len()), (200, bytes.len()));
    let past = fetch_input(
        &base,
        "r1",
        &token,
        &[("range", &format!("bytes={}-", bytes.len()))],
    )
    .await;
    assert_eq!(
        (past.status, past.code().as_str()),
        (416, "range_not_satisfiable")
    );
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{}", bytes.len()).as_str())
    );

    // another node, a viewer, and another analysis' grant are refused
    let other = fetch_input(&base, "r1", &node_token("n2"), &[]).await;
    assert_eq!(
        (other.status, other.code().as_str()),
        (403, "not_lease_holder")
    );
    let viewer = fetch_input(&base, "r1", &Tokens::viewer("r1"), &[]).await;
    assert_eq!(viewer.status, 403);
    let publish_other = fetch_input(&base, "r1", &Tokens::node("r2"), &[]).await;
    assert_eq!(
        (publish_other.status, publish_other.code().as_str()),
        (403, "analysis_not_granted")
    );
    assert_eq!(
        fetch_input(&base, "nothing-here", &token, &[]).await.status,
        404
    );

    // once it ended, nobody reads it
    let events = [
        json!({"id": "s", "type": "started", "stages": [{"name": "infer", "weight": 1}]}),
        completed(0.1),
    ];
    let (status, answer) = publish_attempt(&base, "r1", &token, Some(attempt), &events).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fetch_input(&base, "r1", &token, &[]).await.status, 403);
}

fn completed(score: f64) -> Value {
    json!({"id": "c", "type": "completed", "result": {"score": score, "flagged": false,
        "frames_processed": 1, "total_frames": 1, "regions": [], "validation_required": false}})
}

fn jpeg(seed: u64) -> Vec<u8> {
    // not a real picture: the edge keeps the bytes as they are
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend(noise(2048, seed));
    bytes
}

#[tokio::test]
async fn artifacts_are_announced_cached_and_isolated() {
    let secret_b = "tenant-b-secret-0123456789abcdef0123";
    let tenants = json!({"tenants": {
        "dev": {"keys": [{"kid": "kd", "alg": "HS256", "secret": stagecast_e2e::client::DEV_SECRET}]},
        "b": {"keys": [{"kid": "kb", "alg": "HS256", "secret": secret_b}]}}})
    .to_string();
    let edge = Edge::start(&[("STAGECAST_TENANTS", &tenants)])
        .await
        .unwrap();
    let base = edge.base_url();
    let dev = |scopes: &[Scope], analyses: &[&str]| {
        let key = SigningKey::hs256("kd", stagecast_e2e::client::DEV_SECRET.as_bytes()).unwrap();
        mint(
            &Claims::new("dev", "tester", scopes, analyses, now_s(), 600),
            &key,
        )
        .unwrap()
    };
    let publisher = dev(&[Scope::Publish], &["art"]);
    let viewer = dev(&[Scope::Subscribe], &["art"]);
    let started = json!({"id": "s", "type": "started", "stages": [{"name": "infer", "weight": 1}]});
    assert_eq!(publish(&base, "art", &publisher, &[started]).await.0, 200);
    let mut watcher =
        Subscriber::connect(&edge.ws_url(&format!("/v1/analyses/art/ws?token={viewer}")))
            .await
            .unwrap();

    let frame = jpeg(5);
    let put = put_artifact(
        &base,
        "art",
        "key-120.jpg",
        "frame=120&kind=key_frame",
        &publisher,
        "image/jpeg",
        frame.clone(),
    )
    .await;
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.json()["sha256"], sha256_hex(&frame));
    let event = watcher
        .events_until(2, Duration::from_secs(5))
        .await
        .unwrap();
    let last = event.last().unwrap();
    assert_eq!(last.event.type_name(), "artifact");
    let announced = serde_json::to_value(&last.event).unwrap();
    assert_eq!(
        (
            announced["name"].clone(),
            announced["frame"].clone(),
            announced["kind"].clone(),
            announced["bytes"].clone()
        ),
        (
            json!("key-120.jpg"),
            json!(120),
            json!("key_frame"),
            json!(frame.len())
        )
    );

    let got = get_artifact(&base, "art", "key-120.jpg", &viewer, &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, frame);
    assert_eq!(got.header("content-type"), Some("image/jpeg"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(
        got.header("cache-control")
            .unwrap_or_default()
            .starts_with("private")
    );
    let etag = got.header("etag").expect("an etag").to_owned();
    let cached = get_artifact(
        &base,
        "art",
        "key-120.jpg",
        &viewer,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((cached.status, cached.body.len()), (304, 0));
    let stale = get_artifact(
        &base,
        "art",
        "key-120.jpg",
        &viewer,
        &[("if-none-match", "\"nope\"")],
    )
    .await;
    assert_eq!(stale.status, 200);

    // a retry of the same bytes is answered as before; other bytes under the name are not
    let retry = put_artifact(
        &base,
        "art",
        "key-120.jpg",
        "frame=120",
        &publisher,
        "image/jpeg",
        frame.clone(),
    )
    .await;
    assert_eq!(retry.status, 200);
    let other = put_artifact(
        &base,
        "art",
        "key-120.jpg",
        "",
        &publisher,
        "image/jpeg",
        jpeg(6),
    )
    .await;
    assert_eq!(
        (other.status, other.code().as_str()),
        (409, "artifact_exists")
    );

    // bad artifacts
    let wrong_type =
        put_artifact(&base, "art", "k.png", "", &publisher, "image/jpeg", jpeg(7)).await;
    assert_eq!(
        (wrong_type.status, wrong_type.code().as_str()),
        (400, "invalid_media")
    );
    let bad_name = put_artifact(
        &base,
        "art",
        "..%2Fx.jpg",
        "",
        &publisher,
        "image/jpeg",
        jpeg(7),
    )
    .await;
    assert_eq!(bad_name.status, 400);
    let bad_query = put_artifact(
        &base,
        "art",
        "k.jpg",
        "frame=-1",
        &publisher,
        "image/jpeg",
        jpeg(7),
    )
    .await;
    assert_eq!(bad_query.status, 400);
    let stored = bucket_blobs(&edge.config.state_dir);
    let huge = put_artifact(
        &base,
        "art",
        "huge.jpg",
        "",
        &publisher,
        "image/jpeg",
        noise(5 * MIB + 1, 8),
    )
    .await;
    assert_eq!(
        (huge.status, huge.code().as_str()),
        (413, "payload_too_large")
    );
    assert_eq!(bucket_blobs(&edge.config.state_dir), stored);
    assert_eq!(
        get_artifact(&base, "art", "huge.jpg", &viewer, &[])
            .await
            .status,
        404
    );
    let other_grant = dev(&[Scope::Publish], &["not-art"]);
    let ungranted = put_artifact(
        &base,
        "art",
        "g.jpg",
        "",
        &other_grant,
        "image/jpeg",
        jpeg(9),
    )
    .await;
    assert_eq!(
        (ungranted.status, ungranted.code().as_str()),
        (403, "analysis_not_granted")
    );
    let viewer_put = put_artifact(&base, "art", "v.jpg", "", &viewer, "image/jpeg", jpeg(9)).await;
    assert_eq!(viewer_put.status, 403);

    // another analysis' grant, another tenant with the same id: never the bytes
    let elsewhere = dev(&[Scope::Subscribe], &["other"]);
    let refused = get_artifact(&base, "art", "key-120.jpg", &elsewhere, &[]).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (403, "analysis_not_granted")
    );
    let key_b = SigningKey::hs256("kb", secret_b.as_bytes()).unwrap();
    let tenant_b = mint(
        &Claims::new("b", "eve", &[Scope::Subscribe], &["art"], now_s(), 600),
        &key_b,
    )
    .unwrap();
    let cross = get_artifact(&base, "art", "key-120.jpg", &tenant_b, &[]).await;
    assert_eq!(cross.status, 404);
    assert_ne!(cross.body, frame);
    let no_token = reqwest::get(format!("{base}/v1/analyses/art/artifacts/key-120.jpg"))
        .await
        .unwrap();
    assert_eq!(no_token.status().as_u16(), 401);

    // none after the end
    let done = completed(0.2);
    assert_eq!(publish(&base, "art", &publisher, &[done]).await.0, 200);
    let late = put_artifact(
        &base,
        "art",
        "late.jpg",
        "",
        &publisher,
        "image/jpeg",
        jpeg(10),
    )
    .await;
    assert_eq!(
        (late.status, late.code().as_str()),
        (409, "analysis_finished")
    );
}

#[tokio::test]
async fn retention_deletes_the_input_and_artifacts_of_that_analysis_only() {
    let edge = dev_edge(&[("STAGECAST_RETENTION_MS", "4000")]).await;
    let base = edge.base_url();
    let bytes = noise(256 * 1024, 11);
    let (token, attempt, _pool) = submitted_upload(&edge, "gone", bytes, "n1").await;
    let started = json!({"id": "s", "type": "started", "stages": [{"name": "infer", "weight": 1}]});
    assert_eq!(
        publish_attempt(
            &base,
            "gone",
            &token,
            Some(attempt),
            std::slice::from_ref(&started)
        )
        .await
        .0,
        200
    );
    let query = format!("attempt={attempt}&frame=1&kind=result");
    let put = put_artifact(
        &base,
        "gone",
        "result-1.jpg",
        &query,
        &token,
        "image/jpeg",
        jpeg(12),
    )
    .await;
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    // a neighbour that keeps running keeps its artifact
    let publisher = Tokens::node("kept");
    assert_eq!(publish(&base, "kept", &publisher, &[started]).await.0, 200);
    let kept = put_artifact(
        &base,
        "kept",
        "key-1.jpg",
        "",
        &publisher,
        "image/jpeg",
        jpeg(13),
    )
    .await;
    assert_eq!(kept.status, 201);
    let with_media = bucket_blobs(&edge.config.state_dir);

    let done = completed(0.3);
    assert_eq!(
        publish_attempt(&base, "gone", &token, Some(attempt), &[done])
            .await
            .0,
        200
    );
    let viewer = Tokens::viewer("gone");
    assert_eq!(
        get_artifact(&base, "gone", "result-1.jpg", &viewer, &[])
            .await
            .status,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot: Value =
            stagecast_e2e::client::get_json(&format!("{base}/v1/analyses/gone"), &viewer).await;
        if snapshot["last_seq"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not deleted: {snapshot}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        get_artifact(&base, "gone", "result-1.jpg", &viewer, &[])
            .await
            .status,
        404
    );
    let left = bucket_blobs(&edge.config.state_dir);
    // the input (256 KiB) and its artifact went; the neighbour's artifact stayed
    assert_eq!(with_media.len(), 3, "{with_media:?}");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left.contains(&(256 * 1024)), "{left:?}");
    let neighbour = get_artifact(&base, "kept", "key-1.jpg", &Tokens::viewer("kept"), &[]).await;
    assert_eq!(neighbour.status, 200);
}
