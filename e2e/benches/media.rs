//! Media benchmarks against the real edge (wrangler dev -> workerd with its local R2),
//! printed as markdown: upload throughput into the bucket, the leased node's fetch
//! throughput out of it, and a real node's resident memory while it fetches a 100 MiB
//! uploaded input (streamed to disk, it must not hold the file).
//!
//! `cargo bench -p stagecast-e2e --bench media` (the edge and the release node must be
//! built: `make edge-build`, `cargo build --release -p stagecast-node`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use stagecast_e2e::client::DEV_SECRET;
use stagecast_e2e::host::{self, kib_field};
use stagecast_e2e::pool::{PoolNode, node_token, submit, submit_token};
use stagecast_e2e::uploads::{fetch_input, noise, upload};
use stagecast_e2e::{Edge, Node, Subscriber, Tokens, node_bin};

const COMMAND: &str = "cargo bench -p stagecast-e2e --bench media";
const MIB: usize = 1024 * 1024;
const RUNS: usize = 3;
const SIZES_MIB: [usize; 2] = [10, 100];

fn main() -> anyhow::Result<()> {
    host::run_report("Media benchmarks", COMMAND, run())
}

async fn run() -> anyhow::Result<()> {
    let edge = Edge::start(&[
        ("STAGECAST_DEV_SECRET", DEV_SECRET),
        ("STAGECAST_MAX_UPLOAD_BYTES", &(101 * MIB).to_string()),
    ])
    .await?;
    throughput(&edge).await?;
    node_memory(&edge).await?;
    Ok(())
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}

/// Median of `RUNS` uploads and fetches of each size, all on loopback.
async fn throughput(edge: &Edge) -> anyhow::Result<()> {
    let base = edge.base_url();
    println!("## Throughput through the local edge\n");
    println!(
        "Each figure is the median of {RUNS} runs on loopback: `PUT /v1/analyses/{{id}}/input` \
         (streamed through the Worker into R2, hashed on the way), then \
         `GET /v1/analyses/{{id}}/input` by the node holding the lease (R2's stream handed to \
         the runtime). The client holds the bytes in memory, so its disk is not measured.\n"
    );
    println!("| size | upload MiB/s | node fetch MiB/s |\n|---:|---:|---:|");
    for size in SIZES_MIB {
        let bytes = noise(size * MIB, size as u64);
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            let id = format!("tp-{size}-{run}");
            let start = Instant::now();
            let answer = upload(&base, &id, &submit_token(), "video/mp4", bytes.clone()).await;
            let took = start.elapsed();
            anyhow::ensure!(answer.status == 201, "upload {id}: {}", answer.status);
            up.push(mib_per_s(bytes.len(), took));
            let body = json!({"analysis_id": id, "pool": "tp", "input": "upload"});
            anyhow::ensure!(submit(&base, &submit_token(), &body).await.0 == 202);
            let node = format!("tp-node-{size}-{run}");
            let token = node_token(&node);
            let mut pool = PoolNode::join(&edge.ws_url(""), "tp", &token, 1, &["m"]).await?;
            pool.take_lease(Duration::from_secs(10)).await?;
            let start = Instant::now();
            let fetched = fetch_input(&base, &id, &token, &[]).await;
            let took = start.elapsed();
            anyhow::ensure!(
                fetched.status == 200 && fetched.body.len() == bytes.len(),
                "fetch {id}: {}",
                fetched.status
            );
            down.push(mib_per_s(bytes.len(), took));
        }
        println!(
            "| {size} MiB | {:.0} | {:.0} |",
            median(&mut up),
            median(&mut down)
        );
    }
    println!();
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(kib_field))
        .unwrap_or(0)
}

/// A real node (`serve --pool`) leased a 100 MiB upload: its RSS sampled every 10 ms from
/// the submission until its fetch stage ends (the bytes are noise, so decoding then fails,
/// which ends the run).
async fn node_memory(edge: &Edge) -> anyhow::Result<()> {
    let base = edge.base_url();
    let size = 100 * MIB;
    let id = "mem-100";
    let answer = upload(&base, id, &submit_token(), "video/mp4", noise(size, 7)).await;
    anyhow::ensure!(answer.status == 201, "upload: {}", answer.status);
    let bin = node_bin()?;
    let mut node = Node::start(
        &bin,
        Some(&base),
        &["--pool", "mem", "--node-id", "mem-node"],
    )
    .await?;
    node.ready(Duration::from_secs(180)).await?;
    let pid = node
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the node is not running"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);
    let viewer = Tokens::viewer(id);
    let mut watch =
        Subscriber::connect(&edge.ws_url(&format!("/v1/analyses/{id}/ws?token={viewer}"))).await?;
    let body = json!({"analysis_id": id, "pool": "mem", "input": "upload"});
    anyhow::ensure!(submit(&base, &submit_token(), &body).await.0 == 202);
    let start = Instant::now();
    let peak = Arc::new(AtomicU64::new(idle));
    let sampled = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            sampled.fetch_max(rss_kib(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut events = Vec::new();
    let ended = watch
        .until_terminal(&mut events, Duration::from_secs(120))
        .await;
    let took = start.elapsed();
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    let fetch_done = events.iter().find_map(|e| {
        let v = serde_json::to_value(&e.event).ok()?;
        (v["type"] == "progress" && v["stage"] == "fetch" && v["progress"] == 1.0).then_some(e.ts)
    });
    println!("## A node fetching a 100 MiB upload\n");
    println!(
        "`stagecast-node serve --pool` (release) leased a 100 MiB uploaded input; its RSS was \
         sampled every 10 ms from the submission to the end of the run. \
         The input is noise, so decoding fails after the fetch.\n"
    );
    println!("| measure | value |\n|---|---:|");
    println!("| node RSS idle, models loaded | {} MiB |", idle / 1024);
    println!("| node RSS peak while fetching | {} MiB |", peak / 1024);
    println!(
        "| growth over idle | {} MiB |",
        peak.saturating_sub(idle) / 1024
    );
    println!(
        "| submission to the run's end | {:.1} s |",
        took.as_secs_f64()
    );
    if let (Some(done), Some(first)) = (fetch_done, events.first().map(|e| e.ts)) {
        println!(
            "| fetch throughput, first event to fetch done | {:.0} MiB/s |",
            100.0 / ((done - first).max(1) as f64 / 1000.0)
        );
    }
    if let Err(e) = ended {
        println!(
            "\nThe run did not end within 120 s: {e:#}\n{}",
            node.log_tail()
        );
    }
    println!();
    Ok(())
}
