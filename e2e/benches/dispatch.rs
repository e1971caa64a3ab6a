//! Dispatch benchmarks against the real edge (wrangler dev -> workerd on loopback), printed
//! as markdown: submit-to-lease latency with an idle node, one pool's dispatch throughput
//! (1,000 submissions drained by four nodes of two slots), a node's death to the requeue,
//! and a cancel click to the node. The nodes are scripted (`stagecast_e2e::pool`): they
//! accept each lease and publish `started` and `completed` at once, so what is measured is
//! the edge's dispatch, not inference.
//!
//! `cargo bench -p stagecast-e2e --bench dispatch` (the edge must be built:
//! `make edge-build`). Not a test: it prints what it measured, what went missing included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::json;
use stagecast_e2e::client::{DEV_SECRET, Tokens, sample_events};
use stagecast_e2e::pool::{PoolNode, node_token, publish_attempt, submit, submit_token};
use stagecast_e2e::stats::{ms, quantile};
use stagecast_e2e::{Edge, host};
use stagecast_shared::dispatch::pool::Capacity;
use stagecast_shared::dispatch::{
    Changes, Job, JobOptions, NodeMessage, Pool, PoolConfig, PoolMessage, Submission,
};
use stagecast_shared::{AnalysisId, NodeId, PoolName};

const COMMAND: &str = "cargo bench -p stagecast-e2e --bench dispatch";
const INPUT: &str = "https://media.example/tiny.mp4";
const LATENCY_RUNS: usize = 200;
const THROUGHPUT_SUBMISSIONS: usize = 1_000;
const THROUGHPUT_NODES: usize = 4;
const THROUGHPUT_SLOTS: u32 = 2;
/// Submissions in flight at once (a backend's connection pool).
const SUBMIT_CONCURRENCY: usize = 32;
const CANCEL_RUNS: usize = 50;
/// Short leases for the death-to-requeue run.
const LEASE_MS: u64 = 3_000;
const HEARTBEAT_MS: u64 = 1_000;
const WAIT: Duration = Duration::from_secs(30);
/// How often the scripted nodes heartbeat: well within `HEARTBEAT_MS`.
const BEAT: Duration = Duration::from_millis(400);

fn main() -> anyhow::Result<()> {
    host::run_report("Dispatch benchmarks", COMMAND, run())
}

async fn run() -> anyhow::Result<()> {
    let edge = Edge::start(&[
        ("STAGECAST_DEV_SECRET", DEV_SECRET),
        ("STAGECAST_PUBLISH_RATE", "1000000"),
        ("STAGECAST_LEASE_MS", &LEASE_MS.to_string()),
        ("STAGECAST_NODE_HEARTBEAT_MS", &HEARTBEAT_MS.to_string()),
    ])
    .await?;
    latency(&edge).await?;
    throughput(&edge).await?;
    requeue(&edge).await?;
    cancel(&edge).await?;
    cost();
    Ok(())
}

/// Completes a leased analysis the way a quick node would.
async fn finish(base: &str, node_id: &str, analysis: &str, attempt: u32) -> anyhow::Result<()> {
    let events = sample_events(0);
    let (status, body) =
        publish_attempt(base, analysis, &node_token(node_id), Some(attempt), &events).await;
    anyhow::ensure!(status == 200, "publish {analysis}: {status} {body}");
    Ok(())
}

fn print_quantiles(name: &str, us: &mut [u64], target: &str) {
    us.sort_unstable();
    println!(
        "| {name} | {} | {} | {} | {} | {target} |",
        us.len(),
        ms(quantile(us, 0.5)),
        ms(quantile(us, 0.99)),
        ms(us.last().copied().unwrap_or(0)),
    );
}

async fn latency(edge: &Edge) -> anyhow::Result<()> {
    let (base, ws) = (edge.base_url(), edge.ws_url(""));
    let mut node = PoolNode::join(&ws, "latency", &node_token("lat-node"), 1, &["m"]).await?;
    // The node's `ready` lands before the first submission.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut us = Vec::with_capacity(LATENCY_RUNS);
    for n in 0..LATENCY_RUNS {
        let id = format!("lat-{n}");
        let body = json!({"analysis_id": id, "pool": "latency", "input": INPUT});
        let start = Instant::now();
        let (status, answer, _) = submit(&base, &submit_token(), &body).await;
        anyhow::ensure!(status == 202, "submit: {status} {answer}");
        let (_, leased, attempt) = node.take_lease(WAIT).await?;
        us.push(start.elapsed().as_micros() as u64);
        finish(&base, "lat-node", &leased, attempt).await?;
        node.heartbeat_if_due(BEAT, &[]).await?;
    }
    println!("## Submit to lease, one idle node\n");
    println!(
        "{LATENCY_RUNS} sequential submissions; from sending `POST /v1/analyses` to the node holding the `lease` message.\n"
    );
    println!("| run | n | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|---|");
    print_quantiles("submit to lease", &mut us, "p99 < 50 ms");
    println!();
    Ok(())
}

async fn throughput(edge: &Edge) -> anyhow::Result<()> {
    let (base, ws) = (edge.base_url(), edge.ws_url(""));
    // analysis -> nodes that held it, and the number of runs at once per node
    let held: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let mut workers = Vec::new();
    for n in 0..THROUGHPUT_NODES {
        let node_id = format!("tp-node-{n}");
        let mut node = PoolNode::join(
            &ws,
            "throughput",
            &node_token(&node_id),
            THROUGHPUT_SLOTS,
            &["m"],
        )
        .await?;
        let (base, held) = (base.clone(), held.clone());
        workers.push(tokio::spawn(async move {
            let (mut done, mut last) = (0usize, Instant::now());
            loop {
                // Ten quiet seconds: the pool is drained.
                let message = match node.next(Duration::from_secs(10)).await {
                    Ok(m) => m,
                    Err(_) => return (done, last),
                };
                if let PoolMessage::Lease {
                    lease_id,
                    analysis_id,
                    attempt,
                    ..
                } = message
                {
                    let id = analysis_id.to_string();
                    held.lock()
                        .unwrap()
                        .entry(id.clone())
                        .or_default()
                        .push(node_id.clone());
                    if node.send(&NodeMessage::Accept { lease_id }).await.is_err() {
                        return (done, last);
                    }
                    if finish(&base, &node_id, &id, attempt).await.is_ok() {
                        done += 1;
                        last = Instant::now();
                    }
                    if node.heartbeat_if_due(BEAT, &[]).await.is_err() {
                        return (done, last);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let refused = stream::iter(0..THROUGHPUT_SUBMISSIONS)
        .map(|n| {
            let base = base.clone();
            async move {
                let body =
                    json!({"analysis_id": format!("tp-{n}"), "pool": "throughput", "input": INPUT});
                submit(&base, &submit_token(), &body).await.0 != 202
            }
        })
        .buffer_unordered(SUBMIT_CONCURRENCY)
        .filter(|refused| std::future::ready(*refused))
        .count()
        .await;
    let submitted_in = start.elapsed();
    let (mut completed, mut last) = (0, start);
    for worker in workers {
        let (done, at) = worker.await?;
        completed += done;
        last = last.max(at);
    }
    let drained_in = last - start;
    let (twice, lost) = {
        let held = held.lock().unwrap();
        let twice = held.values().filter(|nodes| nodes.len() > 1).count();
        (twice, THROUGHPUT_SUBMISSIONS - held.len())
    };
    let snapshot_check = check_completed(&base, THROUGHPUT_SUBMISSIONS).await?;
    println!("## Dispatch throughput of one pool\n");
    println!(
        "{THROUGHPUT_SUBMISSIONS} submissions ({SUBMIT_CONCURRENCY} in flight) drained by {THROUGHPUT_NODES} nodes of {THROUGHPUT_SLOTS} slots; each node publishes `started` + `completed` with its attempt at once.\n"
    );
    println!("| figure | value |\n|---|---|");
    println!("| submissions refused | {refused} |");
    println!(
        "| all submitted in | {:.2} s ({:.0} submissions/s) |",
        submitted_in.as_secs_f64(),
        THROUGHPUT_SUBMISSIONS as f64 / submitted_in.as_secs_f64()
    );
    println!("| all completed in | {:.2} s |", drained_in.as_secs_f64());
    println!(
        "| dispatch throughput | {:.0} analyses/s (target >= 200) |",
        completed as f64 / drained_in.as_secs_f64()
    );
    println!("| completed by the nodes | {completed} |");
    println!("| lost (never leased) | {lost} |");
    println!("| leased more than once | {twice} |");
    println!("| snapshots `completed` | {snapshot_check} of {THROUGHPUT_SUBMISSIONS} |\n");
    Ok(())
}

/// How many of the throughput analyses read `completed`.
async fn check_completed(base: &str, n: usize) -> anyhow::Result<usize> {
    let token = Tokens::sign(&Tokens::claims(
        &[stagecast_shared::token::Scope::Subscribe],
        &["*"],
    ));
    let done = stream::iter(0..n)
        .map(|i| {
            let (base, token) = (base.to_owned(), token.clone());
            async move {
                let snapshot: serde_json::Value = reqwest::Client::new()
                    .get(format!("{base}/v1/analyses/tp-{i}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (snapshot["status"] == "completed").then_some(())
            }
        })
        .buffer_unordered(SUBMIT_CONCURRENCY)
        .filter(|done| std::future::ready(done.is_some()))
        .count()
        .await;
    Ok(done)
}

async fn requeue(edge: &Edge) -> anyhow::Result<()> {
    let (base, ws) = (edge.base_url(), edge.ws_url(""));
    let mut us = Vec::new();
    for n in 0..5 {
        let pool = format!("requeue-{n}");
        let mut doomed = PoolNode::join(&ws, &pool, &node_token("doomed"), 1, &["m"]).await?;
        let body = json!({"analysis_id": format!("rq-{n}"), "pool": pool, "input": INPUT});
        anyhow::ensure!(submit(&base, &submit_token(), &body).await.0 == 202);
        doomed.take_lease(WAIT).await?;
        doomed
            .send(&NodeMessage::Heartbeat {
                metrics: None,
                running: vec![AnalysisId::parse(&format!("rq-{n}"))?],
            })
            .await?;
        let mut heir = PoolNode::join(&ws, &pool, &node_token("heir"), 1, &["m"]).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let died = Instant::now();
        doomed.kill();
        let (_, _, attempt) = heir.take_lease(WAIT).await?;
        anyhow::ensure!(attempt == 2, "the heir got attempt {attempt}");
        us.push(died.elapsed().as_micros() as u64);
    }
    println!("## A node's death to the requeue\n");
    println!(
        "A heartbeating node holding a lease is killed (its socket drops); measured until another node holds the next attempt's lease. `STAGECAST_LEASE_MS` = {LEASE_MS}, heartbeat {HEARTBEAT_MS} ms.\n"
    );
    println!("| run | n | p50 ms | p99 ms | max ms | bound |\n|---|---|---|---|---|---|");
    print_quantiles(
        "death to requeue",
        &mut us,
        &format!(
            "<= lease_ms + one heartbeat = {} ms",
            LEASE_MS + HEARTBEAT_MS
        ),
    );
    println!();
    Ok(())
}

async fn cancel(edge: &Edge) -> anyhow::Result<()> {
    let (base, ws) = (edge.base_url(), edge.ws_url(""));
    let mut node = PoolNode::join(&ws, "cancel", &node_token("cancel-node"), 1, &["m"]).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = reqwest::Client::new();
    let mut us = Vec::new();
    let mut seen = BTreeSet::new();
    for n in 0..CANCEL_RUNS {
        let id = format!("cx-{n}");
        let body = json!({"analysis_id": id, "pool": "cancel", "input": INPUT});
        anyhow::ensure!(submit(&base, &submit_token(), &body).await.0 == 202);
        let (_, _, attempt) = node.take_lease(WAIT).await?;
        node.heartbeat_if_due(BEAT, &[AnalysisId::parse(&id)?])
            .await?;
        let start = Instant::now();
        let answer = http
            .post(format!("{base}/v1/analyses/{id}/cancel"))
            .bearer_auth(Tokens::viewer(&id))
            .send()
            .await?;
        anyhow::ensure!(answer.status().as_u16() == 202);
        loop {
            if let PoolMessage::Cancel { analysis_id, .. } = node.next(WAIT).await?
                && analysis_id.as_str() == id
            {
                us.push(start.elapsed().as_micros() as u64);
                seen.insert(id.clone());
                break;
            }
        }
        let events = [json!({"id": format!("{id}-x"), "type": "cancelled"})];
        let started = &sample_events(0)[..1];
        publish_attempt(
            &base,
            &id,
            &node_token("cancel-node"),
            Some(attempt),
            started,
        )
        .await;
        publish_attempt(
            &base,
            &id,
            &node_token("cancel-node"),
            Some(attempt),
            &events,
        )
        .await;
    }
    println!("## Cancel click to the node\n");
    println!(
        "{CANCEL_RUNS} leased analyses; from sending `POST /v1/analyses/{{id}}/cancel` to the node holding the `cancel` message (pushed on the pool socket, not waiting for a publish answer).\n"
    );
    println!("| run | n | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|---|");
    print_quantiles("cancel to node", &mut us, "pushed at once");
    println!(
        "\nCancels that reached the node: {} of {CANCEL_RUNS}.\n",
        seen.len()
    );
    Ok(())
}

fn rows(changes: &Changes) -> usize {
    changes.entries.len() + changes.nodes.len() + usize::from(changes.meta.is_some())
}

/// What one dispatched analysis costs the pool object, counted by running the pool's own
/// state machine through one analysis' life (submit with an idle node, the analysis has
/// its updates, accept, the end): the SQLite rows it writes and what it sends.
fn cost() {
    let mut pool = Pool::new(PoolName::default_pool(), PoolConfig::default());
    let (node, id) = (NodeId::parse("n").unwrap(), AnalysisId::parse("a").unwrap());
    let mut effects = Vec::new();
    let (conn, _) = pool.connect(node.clone(), 0, &mut effects);
    let capacity = Capacity {
        slots: 1,
        models: vec!["m".into()],
        labels: Default::default(),
    };
    pool.ready(&node, conn, capacity, 0, &mut effects);
    pool.take_changes();
    effects.clear();
    let submission = Submission {
        job: Job {
            input: INPUT.into(),
            model: None,
            options: JobOptions::default(),
        },
        priority: 0,
        max_attempts: 3,
    };
    let mut steps = Vec::new();
    let _ = pool.submit(id.clone(), submission, 1, &mut effects);
    let updates = pool
        .entry(&id)
        .map(|e| e.outbox.clone())
        .unwrap_or_default();
    steps.push((
        "submit (and lease to the idle node)",
        rows(&pool.take_changes()),
        effects.len(),
    ));
    effects.clear();
    pool.delivered(&id, &updates);
    steps.push((
        "the analysis has its updates",
        rows(&pool.take_changes()),
        effects.len(),
    ));
    let lease_id = format!("{id}:1");
    pool.accept(&node, conn, &lease_id, 2, &mut effects);
    steps.push(("accept", rows(&pool.take_changes()), effects.len()));
    effects.clear();
    pool.finished(&id, 1, stagecast_shared::Status::Completed, 3, &mut effects);
    steps.push((
        "the end (from the analysis object)",
        rows(&pool.take_changes()),
        effects.len(),
    ));
    println!("## What dispatch costs per analysis\n");
    println!(
        "Counted by running the pool state machine (`stagecast_shared::dispatch::Pool`) through one analysis, the way the pool object runs it; the pool object writes exactly these rows and sends these messages.\n"
    );
    println!(
        "| step | pool rows written | messages out (to the node, to live viewers) |\n|---|---|---|"
    );
    let (mut total_rows, mut total_out) = (0, 0);
    for (step, rows, out) in steps {
        println!("| {step} | {rows} | {out} |");
        total_rows += rows;
        total_out += out;
    }
    println!("| **total** | **{total_rows}** | **{total_out}** |\n");
    println!(
        "Durable Object requests besides publishing: the Worker to the analysis object (1), the analysis object to its pool (submit, 1), the pool's updates to the analysis (`queued` and `leased` in 1 request with an idle node), the analysis object telling the pool of the end (1): 4. WebSocket messages in from the node: `accept` (1), plus heartbeats shared by everything the node runs (one per `heartbeat_ms` per node, billed at 1/20). Alarms: the pool sets one when the earliest lease deadline moves earlier, at most once per lease. Queue positions of the first ten queued analyses go out at most once a second each, so a long queue adds up to 10 requests a second per pool, not per analysis. The analysis object writes 2 event rows (`queued`, `leased`) and its state row once for them.\n"
    );
}
