//! The fleet: real nodes (`stagecast-node serve --pool`) take submitted work from the real
//! edge: priorities and slots, a killed node, a drained node, an edge restart, cancel, and
//! an input a node must not fetch. Every analysis' whole story, read back from the edge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stagecast_e2e::client::get_json;
use stagecast_e2e::media::Media;
use stagecast_e2e::node::promtool_check;
use stagecast_e2e::pool::submit_token;
use stagecast_e2e::{Edge, Node, Tokens, node_bin, shared_edge};
use stagecast_fixtures::fixtures;
use stagecast_shared::StoredEvent;
use stagecast_shared::event::EventKind;
use stagecast_shared::stored::{EdgeEventKind, EventsPage, StoredEventBody};
use stagecast_shared::token::Scope;

const SLOW: Duration = Duration::from_secs(180);

/// A node in `pool` named `id` with one slot, fetching inputs from loopback (the tests'
/// media server), plus `args`.
async fn pool_node(edge: &Edge, pool: &str, id: &str, args: &[&str]) -> Node {
    let bin = node_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let mut all = vec![
        "--pool",
        pool,
        "--node-id",
        id,
        "--allow-input-host",
        "127.0.0.1",
    ];
    all.extend(args);
    let mut node = Node::start(&bin, Some(&edge.base_url()), &all)
        .await
        .unwrap();
    node.ready(SLOW).await.unwrap();
    node
}

async fn submit_ok(edge: &Edge, body: Value) {
    let (status, answer, _) =
        stagecast_e2e::pool::submit(&edge.base_url(), &submit_token(), &body).await;
    assert_eq!(status, 202, "{answer}");
}

/// The stored log of `id`.
async fn log(edge: &Edge, id: &str) -> Vec<StoredEvent> {
    let token = Tokens::sign(&Tokens::claims(&[Scope::Subscribe], &["*"]));
    let url = format!(
        "{}/v1/analyses/{id}/events?since=0&limit=1000",
        edge.base_url()
    );
    let page: EventsPage = serde_json::from_value(get_json(&url, &token).await).unwrap();
    page.events
}

/// Waits until every analysis of `ids` has a terminal event; their logs.
async fn all_ended(
    edge: &Edge,
    ids: &[String],
    timeout: Duration,
) -> BTreeMap<String, Vec<StoredEvent>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut logs = BTreeMap::new();
        for id in ids {
            logs.insert(id.clone(), log(edge, id).await);
        }
        let ended = logs
            .values()
            .filter(|l| l.iter().any(|e| e.event.is_terminal()))
            .count();
        if ended == ids.len() {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "{ended} of {} ended in {timeout:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Seq 1.. without gaps, one terminal event, last; the types in order.
fn story(log: &[StoredEvent]) -> Vec<&'static str> {
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "each event once, in order"
    );
    let terminals = log.iter().filter(|e| e.event.is_terminal()).count();
    assert_eq!(terminals, 1, "one end");
    assert!(log.last().unwrap().event.is_terminal(), "the end is last");
    log.iter().map(|e| e.event.type_name()).collect()
}

fn leases(log: &[StoredEvent]) -> Vec<(String, u32, i64)> {
    log.iter()
        .filter_map(|e| match &e.event {
            StoredEventBody::Edge(edge) => match &edge.kind {
                EdgeEventKind::Leased { node, attempt } => Some((node.to_string(), *attempt, e.ts)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn requeues(log: &[StoredEvent]) -> Vec<String> {
    log.iter()
        .filter_map(|e| match &e.event {
            StoredEventBody::Edge(edge) => match &edge.kind {
                EdgeEventKind::Requeued { reason, .. } => Some(reason.as_str().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn two_nodes_take_twelve_submissions_by_priority_one_at_a_time_each_once() {
    let edge = shared_edge().await;
    let media = Media::serve(&fixtures().dir).await.unwrap();
    let input = media.url(&fixtures().video);
    let ids: Vec<String> = (0..12).map(|n| format!("fleet-{n}")).collect();
    // All queued before any node joins, half of them urgent.
    for (n, id) in ids.iter().enumerate() {
        let priority = if n % 2 == 0 { 5 } else { 0 };
        submit_ok(edge, json!({"analysis_id": id, "pool": "fleet", "input": input, "priority": priority, "options": {"fps": 2}})).await;
    }
    let _a = pool_node(edge, "fleet", "fleet-a", &[]).await;
    let _b = pool_node(edge, "fleet", "fleet-b", &[]).await;
    let logs = all_ended(edge, &ids, SLOW).await;
    let mut runs: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut leased_at = Vec::new();
    for (n, (id, log)) in logs.iter().enumerate() {
        let types = story(log);
        assert_eq!(types.last(), Some(&"completed"), "{id}: {types:?}");
        let leases = leases(log);
        assert_eq!(leases.len(), 1, "{id} leased once: {leases:?}");
        let (node, attempt, at) = leases[0].clone();
        assert_eq!(attempt, 1);
        runs.entry(node)
            .or_default()
            .push((at, log.last().unwrap().ts));
        let urgent = id.trim_start_matches("fleet-").parse::<usize>().unwrap() % 2 == 0;
        leased_at.push((at, urgent, n));
    }
    // Never two runs at once on a one-slot node.
    for (node, mut spans) in runs {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{node} ran two at once: {pair:?}");
        }
    }
    // Every urgent analysis was leased before any other.
    let last_urgent = leased_at.iter().filter(|l| l.1).map(|l| l.0).max().unwrap();
    let first_other = leased_at
        .iter()
        .filter(|l| !l.1)
        .map(|l| l.0)
        .min()
        .unwrap();
    assert!(last_urgent <= first_other, "priority order: {leased_at:?}");
}

/// An edge with short leases, so losses show within seconds.
async fn quick_edge() -> Edge {
    Edge::start(&[
        ("STAGECAST_DEV_SECRET", stagecast_e2e::client::DEV_SECRET),
        ("STAGECAST_LEASE_MS", "3000"),
        ("STAGECAST_NODE_HEARTBEAT_MS", "1000"),
    ])
    .await
    .unwrap()
}

#[tokio::test]
async fn a_killed_node_is_requeued_a_drained_one_releases_and_an_edge_restart_loses_nothing() {
    let mut edge = quick_edge().await;
    let media = Media::serve(&fixtures().dir).await.unwrap();
    let long = media.url(&fixtures().long_video);
    let mut doomed = pool_node(&edge, "loss", "loss-a", &[]).await;
    submit_ok(
        &edge,
        json!({"analysis_id": "killed", "pool": "loss", "input": long, "options": {"fps": 2}}),
    )
    .await;
    // Mid-inference: some progress is stored.
    let deadline = Instant::now() + SLOW;
    while !log(&edge, "killed").await.iter().any(|e| matches!(&e.event, StoredEventBody::Node(n) if matches!(n.kind, EventKind::Progress { .. }))) {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    doomed.kill();
    let mut heir = pool_node(&edge, "loss", "loss-b", &["--drain-timeout", "1"]).await;
    let logs = all_ended(&edge, &["killed".to_owned()], SLOW).await;
    let killed = &logs["killed"];
    let types = story(killed);
    assert_eq!(types.last(), Some(&"completed"), "{types:?}");
    assert_eq!(requeues(killed), ["node_lost"]);
    let nodes: Vec<(String, u32)> = leases(killed).into_iter().map(|(n, a, _)| (n, a)).collect();
    assert_eq!(nodes, [("loss-a".to_owned(), 1), ("loss-b".to_owned(), 2)]);
    assert_eq!(
        types.iter().filter(|t| **t == "started").count(),
        2,
        "each attempt starts: {types:?}"
    );

    // SIGTERM with a run under way: it is released (no attempt used up) and another node
    // finishes it.
    submit_ok(
        &edge,
        json!({"analysis_id": "drained", "pool": "loss", "input": long, "options": {"fps": 2}}),
    )
    .await;
    let deadline = Instant::now() + SLOW;
    while !log(&edge, "drained")
        .await
        .iter()
        .any(|e| e.event.type_name() == "started")
    {
        assert!(Instant::now() < deadline, "not started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    heir.terminate(Duration::from_secs(20)).await;
    let _third = pool_node(&edge, "loss", "loss-c", &[]).await;
    // Queued and leased work while the edge is SIGKILLed and restarted.
    let short = media.url(&fixtures().video);
    let more: Vec<String> = (0..3).map(|n| format!("restart-{n}")).collect();
    for id in &more {
        submit_ok(
            &edge,
            json!({"analysis_id": id, "pool": "loss", "input": short, "options": {"fps": 2}}),
        )
        .await;
    }
    edge.kill();
    edge.restart().await.unwrap();
    let mut ids = more.clone();
    ids.push("drained".to_owned());
    let logs = all_ended(&edge, &ids, SLOW).await;
    for (id, log) in &logs {
        let types = story(log);
        assert_eq!(
            types.last(),
            Some(&"completed"),
            "{id}: {types:?}, ended {:?}",
            log.last()
        );
    }
    assert_eq!(
        requeues(&logs["drained"])[0],
        "released",
        "a drained run costs no attempt"
    );
}

#[tokio::test]
async fn cancel_of_a_running_analysis_stops_its_node_within_a_batch() {
    let edge = shared_edge().await;
    let media = Media::serve(&fixtures().dir).await.unwrap();
    let _node = pool_node(edge, "cancel-run", "cancel-a", &[]).await;
    submit_ok(edge, json!({"analysis_id": "fleet-cancel", "pool": "cancel-run", "input": media.url(&fixtures().long_video), "options": {"fps": 2, "batch_size": 2}})).await;
    let deadline = Instant::now() + SLOW;
    while !log(edge, "fleet-cancel").await.iter().any(|e| matches!(&e.event, StoredEventBody::Node(n) if matches!(n.kind, EventKind::Progress { .. }))) {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let asked = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/v1/analyses/fleet-cancel/cancel",
            edge.base_url()
        ))
        .bearer_auth(Tokens::viewer("fleet-cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let logs = all_ended(edge, &["fleet-cancel".to_owned()], Duration::from_secs(30)).await;
    let types = story(&logs["fleet-cancel"]);
    assert_eq!(types.last(), Some(&"cancelled"), "{types:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "stopped in {:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn a_loopback_input_ends_input_forbidden() {
    let edge = shared_edge().await;
    let media = Media::serve(&fixtures().dir).await.unwrap();
    // This node fetches from no private address.
    let bin = node_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let mut node = Node::start(
        &bin,
        Some(&edge.base_url()),
        &["--pool", "strict", "--node-id", "strict-a"],
    )
    .await
    .unwrap();
    node.ready(SLOW).await.unwrap();
    submit_ok(edge, json!({"analysis_id": "fleet-loopback", "pool": "strict", "input": media.url(&fixtures().video)})).await;
    let logs = all_ended(edge, &["fleet-loopback".to_owned()], SLOW).await;
    let last = logs["fleet-loopback"].last().unwrap();
    match &last.event {
        StoredEventBody::Node(event) => match &event.kind {
            EventKind::Failed { error } => assert_eq!(error.code, "input_forbidden", "{error:?}"),
            other => panic!("expected failed, got {other:?}"),
        },
        other => panic!("expected the node's failed, got {other:?}"),
    }
}

/// The value of counter `name` (all its labels summed) in Prometheus text.
fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_node_cut_off_past_its_lease_loses_the_run_to_another_and_its_late_publishes_are_refused()
{
    let edge = quick_edge().await;
    let media = Media::serve(&fixtures().dir).await.unwrap();
    let upstream = format!("127.0.0.1:{}", edge.config.port).parse().unwrap();
    let proxy = stagecast_e2e::proxy::CutProxy::start(upstream)
        .await
        .unwrap();
    let bin = node_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let args = [
        "--pool",
        "cut",
        "--node-id",
        "cut-a",
        "--allow-input-host",
        "127.0.0.1",
    ];
    let mut cut_off = Node::start(&bin, Some(&proxy.base_url()), &args)
        .await
        .unwrap();
    cut_off.ready(SLOW).await.unwrap();
    let id = "fleet-cut";
    let body = json!({"analysis_id": id, "pool": "cut", "input": media.url(&fixtures().long_video), "options": {"fps": 2}});
    submit_ok(&edge, body).await;
    let deadline = Instant::now() + SLOW;
    while !log(&edge, id).await.iter().any(|e| matches!(&e.event, StoredEventBody::Node(n) if matches!(n.kind, EventKind::Progress { .. }))) {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _other = pool_node(&edge, "cut", "cut-b", &[]).await;
    proxy.cut();
    // The edge hears nothing from the cut node: after two heartbeats and the lease, the
    // other node has the next attempt.
    let deadline = Instant::now() + SLOW;
    while leases(&log(&edge, id).await).len() < 2 {
        assert!(Instant::now() < deadline, "never requeued");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.restore();
    let logs = all_ended(&edge, &[id.to_owned()], SLOW).await;
    let story_log = &logs[id];
    let types = story(story_log);
    assert_eq!(types.last(), Some(&"completed"), "{types:?}");
    // Whichever the edge noticed first: the silence, or its socket's end.
    let reasons = requeues(story_log);
    assert!(
        reasons == ["lease_expired"] || reasons == ["node_lost"],
        "{reasons:?}"
    );
    let nodes: Vec<(String, u32)> = leases(story_log)
        .into_iter()
        .map(|(n, a, _)| (n, a))
        .collect();
    assert_eq!(nodes, [("cut-a".to_owned(), 1), ("cut-b".to_owned(), 2)]);
    // Nothing of the cut node lands between the requeue and the next lease.
    let requeued = types.iter().position(|t| *t == "requeued").unwrap();
    assert_eq!(types[requeued + 1], "leased", "{types:?}");
    // Back on the network, the cut node learns it lost the run and stops it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = reqwest::get(cut_off.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if counter_sum(&metrics, "stagecast_pool_revoked_runs_total") >= 1.0 {
            // a pool node's metrics, the pool's and the runs', pass promtool's lint
            promtool_check(&metrics).unwrap_or_else(|e| panic!("{e:#}\n{metrics}"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cut node never stopped its run:\n{metrics}\n{}",
            cut_off.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn an_idle_node_keeps_its_socket_the_edge_answers_its_pings() {
    let edge = quick_edge().await;
    let node = pool_node(&edge, "idle", "idle-a", &[]).await;
    let admin = Tokens::sign(&Tokens::claims(&[Scope::Admin], &["*"]));
    let url = format!("{}/v1/pools/idle", edge.base_url());
    let connected = |view: &Value| view["nodes"][0]["connected_ts"].as_i64();
    let before = get_json(&url, &admin).await;
    assert!(connected(&before).is_some(), "{before}");
    // Five heartbeat intervals with nothing to do: past the node's three of silence.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = get_json(&url, &admin).await;
    assert_eq!(
        connected(&after),
        connected(&before),
        "the node reconnected: {}",
        node.log_tail()
    );
    assert_eq!(after["nodes"][0]["connected"], true);
}
