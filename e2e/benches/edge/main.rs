//! Edge benchmarks against the real edge (wrangler dev -> workerd on loopback), printed as
//! markdown: publish-to-delivery latency with 1, 100 and 1000 subscribers (and over
//! Server-Sent Events with 1 and 100), publish
//! throughput (over HTTP, and for Stagecast over the node's publish socket too), frame sizes, and workerd memory per 1000 idle sockets. The latency runs are
//! repeated against peer relays (FastAPI + Redis pub/sub, `bench/peers/fastapi_redis`, and
//! a PartyServer Durable Object on the same workerd, `bench/peers/partyserver`, each
//! started here) and printed side by side, with the PartyServer peer's workerd memory.
//!
//! `cargo bench -p stagecast-e2e --bench edge` (the edge must be built: `make edge-build`).
//! Not a test: it checks nothing beyond sanity and prints what it measured, including what
//! went missing. Every wait is bounded; the whole run stops after `RUN_LIMIT`.

mod breakdown;
mod latency;
mod memory;
mod peers;
mod resume;
mod summary;
mod systems;
mod throughput;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use stagecast_e2e::client::{DEV_SECRET, Ws};
use stagecast_e2e::edge::{raise_open_files_limit, repo_root};
use stagecast_e2e::host;
use stagecast_e2e::stats::{ms, quantile};
use stagecast_e2e::{Edge, Tokens};
use tokio_tungstenite::tungstenite::Message;

use crate::latency::{Latency, print_latency, print_transports, sse_latency};
use crate::memory::{IDLE_SOCKETS, print_memory};
use crate::peers::{PEERS, Peer};
use crate::resume::{Resume, print_resume};
use crate::summary::print_summary;
use crate::systems::{Runs, System, measure, socket_throughput};
use crate::throughput::print_throughput;

const COMMAND: &str = "cargo bench -p stagecast-e2e --bench edge";
/// The whole run, edge start included.
const RUN_LIMIT: Duration = Duration::from_secs(1500);
/// One WebSocket handshake plus its hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Handshakes in flight at once while opening many sockets.
const CONNECT_CONCURRENCY: usize = 64;

/// Subscriber counts of the Server-Sent Events latency runs.
const SSE_SUBSCRIBERS: [usize; 2] = [1, 100];

/// Sequential `GET /healthz` requests of the floor measurement.
const FLOOR_REQUESTS: usize = 200;

/// The edge's vars in every run.
const EDGE_VARS: [(&str, &str); 4] = [
    ("STAGECAST_DEV_SECRET", DEV_SECRET),
    ("STAGECAST_MAX_SOCKETS", "100000"),
    // Far above what is offered: these runs measure the edge, not the rate limit.
    ("STAGECAST_PUBLISH_RATE", "1000000"),
    // No stall alarm fires in the middle of a run.
    ("STAGECAST_STALL_TIMEOUT_MS", "3600000"),
];

/// The edge under test, one HTTP client, and the clock every stamp is taken from.
struct Bench {
    edge: Edge,
    /// The edge's URLs.
    stagecast: Target,
    http: reqwest::Client,
    origin: Instant,
}

/// A relay that speaks the publish and WebSocket routes of the v1 contract.
struct Target {
    name: &'static str,
    /// `http://host:port`
    http: String,
    /// `ws://host:port`
    ws: String,
}

impl Target {
    fn at(name: &'static str, port: u16) -> Target {
        Target {
            name,
            http: format!("http://127.0.0.1:{port}"),
            ws: format!("ws://127.0.0.1:{port}"),
        }
    }
}

fn main() -> anyhow::Result<()> {
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match tokio::time::timeout(RUN_LIMIT, run()).await {
            Ok(result) => result,
            Err(_) => bail!("the benchmark ran past {RUN_LIMIT:?} and was stopped"),
        }
    })
}

async fn run() -> anyhow::Result<()> {
    print_header();
    let started = Instant::now();
    // at the peers' log level, so no side pays for log lines the other does not write
    let edge = Edge::start_quiet(&EDGE_VARS)
        .await
        .context("starting the edge")?;
    eprintln!("edge up in {:.1?}", started.elapsed());
    let bench = Bench {
        stagecast: Target::at("Stagecast", edge.config.port),
        edge,
        http: reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .pool_max_idle_per_host(64)
            .build()?,
        origin: Instant::now(),
    };

    let floor = request_floor(&bench).await;
    let breakdown = breakdown::measure(&bench, &bench.stagecast).await;
    let pgid = bench
        .edge
        .process_group()
        .context("the edge has no process")?;
    let stagecast = System {
        target: &bench.stagecast,
        pgid,
        port: bench.edge.config.port,
        processes: &["workerd"],
    };
    let mut systems = vec![measure(&bench, &stagecast).await];
    let over_sockets = socket_throughput(&bench, &bench.stagecast).await;
    let mut sse = Vec::new();
    for subscribers in SSE_SUBSCRIBERS {
        eprintln!("Stagecast: Server-Sent Events latency with {subscribers} subscribers");
        let r = sse_latency(&bench, &bench.stagecast, subscribers).await;
        if let Err(e) = &r {
            eprintln!("  {e:#}");
        }
        sse.push((subscribers, r));
    }
    for spec in &PEERS {
        let starting = Instant::now();
        let runs = match Peer::start(spec).await {
            Ok(peer) => {
                eprintln!("peer {} up in {:.1?}", spec.name, starting.elapsed());
                let system = System {
                    target: &peer.target,
                    pgid: peer.process_group(),
                    port: peer.port,
                    processes: spec.processes,
                };
                measure(&bench, &system).await
            }
            Err(e) => {
                eprintln!("peer {}: {e:#}", spec.name);
                Runs::failed(spec.name, &format!("the peer did not start: {e:#}"))
            }
        };
        systems.push(runs);
    }

    let peers_about: Vec<(&str, &str)> = PEERS.iter().map(|p| (p.name, p.about)).collect();
    print_floor(&floor);
    breakdown::print_breakdown(&floor, &breakdown);
    print_summary(&systems, &peers_about);
    for runs in &systems {
        print_latency(runs.name, &runs.latency);
    }
    print_transports(&systems[0].latency, &sse);
    for runs in &systems {
        print_throughput(runs.name, &runs.throughput);
    }
    print_throughput("Stagecast, over publish sockets", &over_sockets);
    let resumes: Vec<(&str, &anyhow::Result<Resume>)> =
        systems.iter().map(|r| (r.name, &r.resume)).collect();
    print_resume(&resumes);
    print_frames(&systems[0]);
    for runs in &systems {
        let title = format!("{}: memory per {IDLE_SOCKETS} idle sockets", runs.name);
        match &runs.memory {
            Ok(m) => print_memory(&title, m),
            Err(e) => {
                println!();
                println!("## {title}");
                println!();
                println!("Not measured: {e:#}");
            }
        }
    }
    println!();
    println!(
        "Total run: {:.0} s (edge start included).",
        started.elapsed().as_secs_f64()
    );
    // The bench fails where Stagecast broke its own contract; the peers' figures are
    // reported as they are.
    let ours = &systems[0];
    match &ours.resume {
        Ok(r) if r.lost + r.repeated > 0 => {
            bail!(
                "Stagecast lost {} and repeated {} events on resume",
                r.lost,
                r.repeated
            )
        }
        Ok(_) => {}
        Err(e) => bail!("Stagecast's resume run failed: {e:#}"),
    }
    Ok(())
}

fn print_header() {
    let version = |pkg: &str| {
        std::fs::read_to_string(repo_root().join(format!("node_modules/{pkg}/package.json")))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    println!("# Edge benchmarks");
    println!();
    println!("- command: `{COMMAND}`");
    println!("- machine: {}", host::describe());
    println!(
        "- edge: the release Worker of `edge/build` in wrangler {} (`wrangler dev`) -> workerd {}, on 127.0.0.1, `--log-level warn` as the PartyServer peer runs; vars STAGECAST_MAX_SOCKETS=100000, STAGECAST_PUBLISH_RATE=1000000 (so the limiter never refuses), STAGECAST_STALL_TIMEOUT_MS=3600000",
        version("wrangler"),
        version("workerd")
    );
    println!(
        "- client: this process (tokio, 2 worker threads, reqwest + tokio-tungstenite) on the same cores as workerd and wrangler, so every figure includes the client's own work"
    );
    println!(
        "- open-files limit: {} (raised to the hard limit; workerd inherits it)",
        raise_open_files_limit()
    );
}

// ---------------------------------------------------------------- helpers

impl Bench {
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    async fn publish(
        &self,
        target: &Target,
        id: &str,
        token: &str,
        events: &[Value],
    ) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}/v1/analyses/{id}/events", target.http))
            .bearer_auth(token)
            .json(&json!({ "events": events }))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("publish to {id}: {status} {body}");
        }
        Ok(body)
    }

    async fn start_analysis(&self, target: &Target, id: &str) -> anyhow::Result<()> {
        let started = json!({"id": "start", "type": "started",
            "stages": [{"name": "run", "weight": 1.0}]});
        self.publish(target, id, &Tokens::node(id), &[started])
            .await?;
        Ok(())
    }

    /// Opens `n` sockets to `id` (no replay), `CONNECT_CONCURRENCY` handshakes at a time;
    /// each has read its hello. Returns them with the hello's length in bytes.
    async fn open_sockets(
        &self,
        target: &Target,
        id: &str,
        n: usize,
    ) -> anyhow::Result<Vec<(Ws, usize)>> {
        let url = format!(
            "{}/v1/analyses/{id}/ws?token={}",
            target.ws,
            Tokens::viewer(id)
        );
        let opened: Vec<anyhow::Result<(Ws, usize)>> = stream::iter(0..n)
            .map(|_| {
                let url = url.clone();
                async move {
                    tokio::time::timeout(CONNECT_TIMEOUT, async {
                        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
                        loop {
                            match ws.next().await {
                                Some(Ok(Message::Text(t))) if t.contains(r#""type":"hello""#) => {
                                    return Ok((ws, t.len()));
                                }
                                Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
                                Some(Ok(_)) => continue,
                                Some(Err(e)) => return Err(e.into()),
                                None => bail!("socket ended before its hello"),
                            }
                        }
                    })
                    .await
                    .context("handshake and hello timed out")?
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        opened.into_iter().collect()
    }
}

// ---------------------------------------------------------------- request floor

/// Round trips (µs, sorted) of sequential requests that wake no object: `GET /healthz`,
/// answered by the Worker alone. What the local server path costs by itself.
async fn request_floor(bench: &Bench) -> Vec<u64> {
    let url = format!("{}/healthz", bench.stagecast.http);
    let mut rtts = Vec::with_capacity(FLOOR_REQUESTS);
    for _ in 0..FLOOR_REQUESTS {
        let sent = Instant::now();
        if let Ok(resp) = bench.http.get(&url).send().await {
            let _ = resp.bytes().await;
            rtts.push(sent.elapsed().as_micros() as u64);
        }
    }
    rtts.sort_unstable();
    rtts
}

fn print_floor(rtts: &[u64]) {
    println!();
    println!("## The local request floor");
    println!();
    println!(
        "{} sequential `GET /healthz` (answered by the Worker, no object, no storage) on one kept-alive connection: round trip p50 {} ms, p99 {} ms. Every HTTP figure below includes this path (client -> wrangler's dev proxy workerd -> the runtime workerd and back).",
        rtts.len(),
        ms(quantile(rtts, 0.5)),
        ms(quantile(rtts, 0.99))
    );
}

fn print_frames(stagecast: &Runs) {
    let latencies: Vec<&Latency> = stagecast
        .latency
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    println!();
    println!("## Bytes on the WebSocket");
    println!();
    println!("| frame | bytes |");
    println!("|---|---:|");
    if let Some(r) = latencies.iter().find(|r| !r.samples.is_empty()) {
        println!(
            "| `event` frame (average over the latency runs' single `progress` events, `message` holding the send stamp, µs as a decimal string) | {:.0} |",
            latencies
                .iter()
                .map(|r| r.event_frame_bytes * r.samples.len() as f64)
                .sum::<f64>()
                / latencies
                    .iter()
                    .map(|r| r.samples.len())
                    .sum::<usize>()
                    .max(1) as f64
        );
        println!(
            "| `hello` of a running analysis (one stage, after `started`) | {} |",
            r.hello_bytes
        );
    }
    if let Ok(memory) = &stagecast.memory {
        println!(
            "| `hello` of a pending analysis (nothing published) | {} |",
            memory.pending_hello_bytes
        );
    }
}
