//! Edge benchmarks against the real edge (wrangler dev -> workerd on loopback), printed as
//! markdown: publish-to-delivery latency with 1, 100 and 1000 subscribers, publish
//! throughput, frame sizes, and workerd memory per 1000 idle sockets. The latency runs are
//! repeated against peer relays (FastAPI + Redis pub/sub, `bench/peers/fastapi_redis`, and
//! a PartyServer Durable Object on the same workerd, `bench/peers/partyserver`, each
//! started here) and printed side by side, with the PartyServer peer's workerd memory.
//!
//! `cargo bench -p stagecast-e2e --bench edge` (the edge must be built: `make edge-build`).
//! Not a test: it checks nothing beyond sanity and prints what it measured, including what
//! went missing. Every wait is bounded; the whole run stops after `RUN_LIMIT`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use stagecast_e2e::client::{DEV_SECRET, Ws};
use stagecast_e2e::edge::{free_port, raise_open_files_limit, repo_root};
use stagecast_e2e::machine::{self, kib_field};
use stagecast_e2e::{Edge, Tokens};
use tokio_tungstenite::tungstenite::Message;

const COMMAND: &str = "cargo bench -p stagecast-e2e --bench edge";
/// The whole run, edge start included.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// The peer's start, its first install included.
const PEER_START_TIMEOUT: Duration = Duration::from_secs(180);
/// One WebSocket handshake plus its hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Handshakes in flight at once while opening many sockets.
const CONNECT_CONCURRENCY: usize = 64;

/// Latency runs: single-event batches, one every `LATENCY_PACE`.
const LATENCY_EVENTS: usize = 200;
const LATENCY_PACE: Duration = Duration::from_millis(20);
/// How long subscribers may still wait for the last events after the last publish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Each throughput run publishes for this long.
const THROUGHPUT_RUN: Duration = Duration::from_secs(5);
/// Sequential `GET /healthz` requests of the floor measurement.
const FLOOR_REQUESTS: usize = 200;
/// Idle sockets of the memory measurement.
const IDLE_SOCKETS: usize = 1000;
/// Time for workerd to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

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

/// A peer relay: its `run.sh`, started with the port to serve on followed by `extra_ports`
/// more free ports (for what it runs beside itself).
struct PeerSpec {
    name: &'static str,
    /// Relative to the repository root.
    script: &'static str,
    extra_ports: usize,
    /// Whether it runs in workerd, so `workerd_rss` can read its memory.
    workerd: bool,
    /// What it is, for the report.
    about: &'static str,
}

const PEERS: [PeerSpec; 2] = [
    PeerSpec {
        name: "FastAPI+Redis",
        script: "bench/peers/fastapi_redis/run.sh",
        extra_ports: 1,
        workerd: false,
        about: "`bench/peers/fastapi_redis`: FastAPI on uvicorn (1 worker, uvloop, httptools, websockets) with one Redis pub/sub connection per WebSocket and a local redis-server (no persistence)",
    },
    PeerSpec {
        name: "PartyServer",
        script: "bench/peers/partyserver/run.sh",
        extra_ports: 0,
        workerd: true,
        about: "`bench/peers/partyserver`: a PartyServer (npm `partyserver`) `Server` Durable Object per analysis, hibernating, with its history in the object's SQLite, routed by `routePartykitRequest` (prefix `v1`), in the same wrangler and workerd as the edge (`wrangler dev`, its own persist dir)",
    },
];

/// A peer (`spec.script`) in its own process group (bash and whatever it starts), killed as
/// a group when dropped.
struct Peer {
    child: Child,
    target: Target,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Peer {
    async fn start(http: &reqwest::Client, spec: &PeerSpec) -> anyhow::Result<Peer> {
        let port = free_port();
        let args: Vec<String> = std::iter::once(port)
            .chain((0..spec.extra_ports).map(|_| free_port()))
            .map(|p| p.to_string())
            .collect();
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new("bash")
            .arg(repo_root().join(spec.script))
            .args(&args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", spec.script))?;
        let mut peer = Peer {
            child,
            target: Target::at(spec.name, port),
            port,
            log,
        };
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        let url = format!("{}/healthz", peer.target.http);
        loop {
            if let Ok(Some(status)) = peer.child.try_wait() {
                bail!("the peer exited with {status}: {}", peer.log_text());
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(peer);
            }
            if Instant::now() > deadline {
                bail!(
                    "the peer did not answer within {PEER_START_TIMEOUT:?}: {}",
                    peer.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn process_group(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this bench started; no memory is touched.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever ignored SIGTERM (redis, uvicorn, workerd) goes now.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
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
    let edge = Edge::start(&[
        ("STAGECAST_DEV_SECRET", DEV_SECRET),
        ("STAGECAST_MAX_SOCKETS", "100000"),
        // Far above what is offered: these runs measure the edge, not the rate limit.
        ("STAGECAST_PUBLISH_RATE", "1000000"),
        // No stall alarm fires in the middle of a run.
        ("STAGECAST_STALL_TIMEOUT_MS", "3600000"),
    ])
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

    // Memory first, on an edge that has served one analysis and nothing else yet.
    let pgid = bench
        .edge
        .process_group()
        .context("the edge has no process")?;
    let memory = memory(&bench, &bench.stagecast, pgid, bench.edge.config.port).await?;
    let floor = request_floor(&bench).await;
    let mut latencies = Vec::new();
    for subscribers in [1, 100, 1000] {
        eprintln!("latency with {subscribers} subscribers");
        latencies.push(latency(&bench, &bench.stagecast, subscribers).await?);
    }
    let mut peers = Vec::new();
    for spec in &PEERS {
        peers.push(peer_runs(&bench, spec).await);
    }
    let mut throughputs = Vec::new();
    for (label, analyses, publishers, batch) in [
        ("sequential", 1, 1, 1),
        ("8 concurrent, one analysis", 1, 8, 1),
        ("8 concurrent, 8 analyses", 8, 8, 1),
        ("sequential", 1, 1, 100),
        ("8 concurrent, one analysis", 1, 8, 100),
    ] {
        eprintln!("throughput: {label}, batches of {batch}");
        throughputs.push(throughput(&bench, label, analyses, publishers, batch).await?);
    }

    print_floor(&floor);
    print_latency(&latencies);
    print_side_by_side(&latencies, &peers);
    print_throughput(&throughputs);
    print_frames(&latencies, &memory);
    print_memory("workerd memory per 1000 idle sockets", &memory);
    for peer in &peers {
        let title = format!("{}: workerd memory per 1000 idle sockets", peer.spec.name);
        match &peer.memory {
            Some(Ok(m)) => print_memory(&title, m),
            Some(Err(e)) => {
                println!();
                println!("## {title}");
                println!();
                println!("Not measured: {e:#}");
            }
            None => {}
        }
    }
    println!();
    println!(
        "Total run: {:.0} s (edge start included).",
        started.elapsed().as_secs_f64()
    );
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
    println!("- machine: {}", machine::describe());
    println!(
        "- edge: the release Worker of `edge/build` in wrangler {} (`wrangler dev`) -> workerd {}, on 127.0.0.1; vars STAGECAST_MAX_SOCKETS=100000, STAGECAST_PUBLISH_RATE=1000000 (so the limiter never refuses), STAGECAST_STALL_TIMEOUT_MS=3600000",
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

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
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

// ---------------------------------------------------------------- latency

struct Latency {
    subscribers: usize,
    connect: Duration,
    published: usize,
    /// Microseconds from just before the publish request to the frame's arrival at one
    /// subscriber, over every (subscriber, event) pair received.
    samples: Vec<u64>,
    missing: usize,
    event_frame_bytes: f64,
    hello_bytes: usize,
    publish_rtt_p50_us: u64,
}

/// Reads event frames until `expected` arrived or `deadline`; each progress event's
/// `message` holds the send instant (µs since `origin`).
async fn receive(
    mut ws: Ws,
    origin: Instant,
    expected: usize,
    deadline: tokio::time::Instant,
) -> (Vec<u64>, u64) {
    const STAMP: &str = r#""message":""#;
    let mut samples = Vec::with_capacity(expected);
    let mut bytes = 0u64;
    while samples.len() < expected {
        let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await else {
            break;
        };
        let Message::Text(text) = msg else { continue };
        let arrived = origin.elapsed().as_micros() as u64;
        if !text.starts_with(r#"{"type":"event""#) {
            continue;
        }
        let Some(at) = text.find(STAMP) else { continue };
        let rest = &text[at + STAMP.len()..];
        let Some(sent) = rest.split('"').next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        bytes += text.len() as u64;
        samples.push(arrived.saturating_sub(sent));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    (samples, bytes)
}

async fn latency(bench: &Bench, target: &Target, subscribers: usize) -> anyhow::Result<Latency> {
    let id = format!("lat-{subscribers}");
    bench.start_analysis(target, &id).await?;
    let connecting = Instant::now();
    let sockets = bench.open_sockets(target, &id, subscribers).await?;
    let connect = connecting.elapsed();
    let hello_bytes = sockets[0].1;

    // Long enough for every publish and the drain after it.
    let deadline = tokio::time::Instant::now()
        + LATENCY_PACE * LATENCY_EVENTS as u32
        + Duration::from_secs(20)
        + DRAIN_TIMEOUT;
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|(ws, _)| tokio::spawn(receive(ws, bench.origin, LATENCY_EVENTS, deadline)))
        .collect();

    let token = Tokens::node(&id);
    let mut ticker = tokio::time::interval(LATENCY_PACE);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rtts = Vec::with_capacity(LATENCY_EVENTS);
    let mut published = 0;
    for i in 1..=LATENCY_EVENTS {
        ticker.tick().await;
        let sent = bench.now_us();
        let event = json!({"id": format!("p-{i}"), "type": "progress", "stage": "run",
            "stage_progress": i as f64 / LATENCY_EVENTS as f64, "message": sent.to_string()});
        match bench.publish(target, &id, &token, &[event]).await {
            Ok(_) => published += 1,
            Err(e) => eprintln!("  {}: publish {i}: {e:#}", target.name),
        }
        rtts.push(bench.now_us() - sent);
    }

    let mut samples = Vec::with_capacity(subscribers * published);
    let mut bytes = 0u64;
    for receiver in receivers {
        let (s, b) = receiver.await?;
        samples.extend(s);
        bytes += b;
    }
    samples.sort_unstable();
    rtts.sort_unstable();
    let received = samples.len();
    Ok(Latency {
        subscribers,
        connect,
        published,
        missing: subscribers * published - received.min(subscribers * published),
        event_frame_bytes: bytes as f64 / received.max(1) as f64,
        samples,
        hello_bytes,
        publish_rtt_p50_us: quantile(&rtts, 0.5),
    })
}

fn print_latency(rows: &[Latency]) {
    println!();
    println!("## Publish-to-delivery latency");
    println!();
    println!(
        "One analysis; subscribers connected (no replay) before the first publish; {LATENCY_EVENTS} single-event `progress` batches published one every {} ms by one sequential publisher, each stamped (in `message`) with the instant just before its HTTP request; latency is from that instant to the frame's arrival at a subscriber, over every (subscriber, event) pair.",
        LATENCY_PACE.as_millis()
    );
    println!();
    println!(
        "| subscribers | connect all (s) | events published | pairs received | pairs missing | p50 (ms) | p99 (ms) | max (ms) | publish round trip p50 (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        print_latency_row(r);
    }
}

fn print_latency_row(r: &Latency) {
    println!(
        "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
        r.subscribers,
        r.connect.as_secs_f64(),
        r.published,
        r.samples.len(),
        r.missing,
        ms(quantile(&r.samples, 0.5)),
        ms(quantile(&r.samples, 0.99)),
        ms(r.samples.last().copied().unwrap_or(0)),
        ms(r.publish_rtt_p50_us),
    );
}

// ---------------------------------------------------------------- the peer, side by side

/// One peer's latency rows (by subscriber count) and, for a workerd peer, its memory.
struct PeerRuns {
    spec: &'static PeerSpec,
    rows: Vec<(usize, anyhow::Result<Latency>)>,
    memory: Option<anyhow::Result<Memory>>,
}

/// The latency runs (and, in workerd, the memory run) against one peer, started here and
/// stopped after. A run that fails is reported (in the table, as its error) rather than
/// ending the bench.
async fn peer_runs(bench: &Bench, spec: &'static PeerSpec) -> PeerRuns {
    let starting = Instant::now();
    let peer = match Peer::start(&bench.http, spec).await {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("peer {}: {e:#}", spec.name);
            return PeerRuns {
                spec,
                rows: [1, 100, 1000]
                    .into_iter()
                    .map(|n| (n, Err(anyhow::anyhow!("the peer did not start: {e:#}"))))
                    .collect(),
                memory: spec
                    .workerd
                    .then(|| Err(anyhow::anyhow!("the peer did not start"))),
            };
        }
    };
    eprintln!("peer {} up in {:.1?}", spec.name, starting.elapsed());
    // As for the edge: memory first, on a peer that has served nothing else yet.
    let memory = if spec.workerd {
        eprintln!("peer {} memory", spec.name);
        let m = memory(bench, &peer.target, peer.process_group(), peer.port).await;
        if let Err(e) = &m {
            eprintln!("  peer {}, memory: {e:#}", spec.name);
        }
        Some(m)
    } else {
        None
    };
    let mut rows = Vec::new();
    for subscribers in [1, 100, 1000] {
        eprintln!("peer {} latency with {subscribers} subscribers", spec.name);
        let row = latency(bench, &peer.target, subscribers).await;
        if let Err(e) = &row {
            eprintln!("  peer {}, {subscribers} subscribers: {e:#}", spec.name);
        }
        rows.push((subscribers, row));
    }
    drop(peer);
    PeerRuns { spec, rows, memory }
}

fn print_side_by_side(stagecast: &[Latency], peers: &[PeerRuns]) {
    println!();
    println!("## Side by side: Stagecast and peer relays");
    println!();
    println!(
        "The same latency runs (same client code, same pacing, same {} s bound on each run's last arrivals) against each peer, started by this bench on the same cores after the Stagecast runs, one at a time. The peers verify no token and check no event beyond its id; see their READMEs.",
        DRAIN_TIMEOUT.as_secs()
    );
    println!();
    for peer in peers {
        println!("- {}: {}.", peer.spec.name, peer.spec.about);
    }
    println!();
    let mut header = String::from("| subscribers | Stagecast p50 / p99 / max (ms) |");
    let mut rule = String::from("|---:|---:|");
    for peer in peers {
        let name = peer.spec.name;
        header += &format!(" {name} p50 / p99 / max (ms) | p99 ratio ({name} / Stagecast) |");
        rule += "---:|---:|";
    }
    header += " pairs missing: Stagecast |";
    rule += "---:|";
    for peer in peers {
        header += &format!(" pairs missing: {} |", peer.spec.name);
        rule += "---:|";
    }
    println!("{header}");
    println!("{rule}");
    let cell = |r: &Latency| {
        format!(
            "{} / {} / {}",
            ms(quantile(&r.samples, 0.5)),
            ms(quantile(&r.samples, 0.99)),
            ms(r.samples.last().copied().unwrap_or(0))
        )
    };
    for subscribers in [1, 100, 1000] {
        let ours = stagecast.iter().find(|r| r.subscribers == subscribers);
        let mut line = format!("| {subscribers} | {} |", ours.map_or("-".into(), cell));
        let mut missing = format!(" {} |", ours.map_or("-".into(), |r| r.missing.to_string()));
        for peer in peers {
            match peer
                .rows
                .iter()
                .find(|(n, _)| *n == subscribers)
                .map(|(_, r)| r)
            {
                Some(Ok(theirs)) => {
                    let ratio = match ours {
                        Some(o) if !o.samples.is_empty() && !theirs.samples.is_empty() => {
                            format!(
                                "{:.1}x",
                                quantile(&theirs.samples, 0.99) as f64
                                    / quantile(&o.samples, 0.99).max(1) as f64
                            )
                        }
                        _ => "-".into(),
                    };
                    line += &format!(" {} | {ratio} |", cell(theirs));
                    missing += &format!(
                        " {} of {} |",
                        theirs.missing,
                        theirs.subscribers * theirs.published
                    );
                }
                Some(Err(e)) => {
                    line += &format!(" failed: {} | - |", format!("{e:#}").replace('|', "/"));
                    missing += " - |";
                }
                None => {
                    line += " - | - |";
                    missing += " - |";
                }
            }
        }
        println!("{line}{missing}");
    }
    for peer in peers {
        println!();
        println!(
            "{}'s own runs, in the layout of the latency table above:",
            peer.spec.name
        );
        println!();
        println!(
            "| subscribers | connect all (s) | events published | pairs received | pairs missing | p50 (ms) | p99 (ms) | max (ms) | publish round trip p50 (ms) |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in peer.rows.iter().filter_map(|(_, r)| r.as_ref().ok()) {
            print_latency_row(r);
        }
    }
}

// ---------------------------------------------------------------- throughput

struct Throughput {
    label: &'static str,
    analyses: usize,
    publishers: usize,
    batch: usize,
    events: u64,
    batches: u64,
    errors: u64,
    elapsed: Duration,
    rtt_p50_us: u64,
    rtt_p99_us: u64,
}

async fn throughput(
    bench: &Bench,
    label: &'static str,
    analyses: usize,
    publishers: usize,
    batch: usize,
) -> anyhow::Result<Throughput> {
    let run = format!("tp-{analyses}-{publishers}-{batch}");
    let ids: Vec<String> = (0..analyses).map(|a| format!("{run}-{a}")).collect();
    for id in &ids {
        bench.start_analysis(&bench.stagecast, id).await?;
    }
    let deadline = Instant::now() + THROUGHPUT_RUN;
    let begun = Instant::now();
    // Publishers run concurrently in this task (join_all): the work here is I/O.
    let results = futures_util::future::join_all((0..publishers).map(|p| {
        let id = ids[p % ids.len()].clone();
        async move {
            let token = Tokens::node(&id);
            let (mut events, mut batches, mut errors) = (0u64, 0u64, 0u64);
            let mut rtts = Vec::new();
            let mut k = 0u64;
            while Instant::now() < deadline {
                let beats: Vec<Value> = (0..batch)
                    .map(|j| json!({"id": format!("w{p}-{k}-{j}"), "type": "heartbeat"}))
                    .collect();
                k += 1;
                let sent = Instant::now();
                match bench.publish(&bench.stagecast, &id, &token, &beats).await {
                    Ok(body) => {
                        events += body["accepted"].as_u64().unwrap_or(0);
                        batches += 1;
                    }
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("  {e:#}");
                        }
                    }
                }
                rtts.push(sent.elapsed().as_micros() as u64);
            }
            (events, batches, errors, rtts)
        }
    }))
    .await;
    let elapsed = begun.elapsed();
    let mut all_rtts = Vec::new();
    let (mut events, mut batches, mut errors) = (0, 0, 0);
    for (e, b, x, r) in results {
        events += e;
        batches += b;
        errors += x;
        all_rtts.extend(r);
    }
    all_rtts.sort_unstable();
    Ok(Throughput {
        label,
        analyses,
        publishers,
        batch,
        events,
        batches,
        errors,
        elapsed,
        rtt_p50_us: quantile(&all_rtts, 0.5),
        rtt_p99_us: quantile(&all_rtts, 0.99),
    })
}

fn print_throughput(rows: &[Throughput]) {
    println!();
    println!("## Publish throughput");
    println!();
    println!(
        "Each run publishes `heartbeat` events (stored and sequenced like any event, no subscribers) for {} s, each publisher waiting for its answer before the next batch; events/s counts events the edge answered as accepted.",
        THROUGHPUT_RUN.as_secs()
    );
    println!();
    println!(
        "| publishers | analyses | events per batch | events/s | batches/s | errors | batch round trip p50 (ms) | p99 (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let secs = r.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} |",
            if r.publishers == 1 {
                r.label.to_string()
            } else {
                format!("{} ({})", r.publishers, r.label)
            },
            r.analyses,
            r.batch,
            r.events as f64 / secs,
            r.batches as f64 / secs,
            r.errors,
            ms(r.rtt_p50_us),
            ms(r.rtt_p99_us),
        );
    }
}

// ---------------------------------------------------------------- memory

/// `wrangler dev` runs two workerd processes: a dev proxy that owns the edge's port and
/// forwards every request and socket, and the runtime that runs the Worker and its
/// objects. Production has only the latter.
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    proxy_kib: u64,
    runtime_kib: u64,
}

impl Rss {
    fn total(&self) -> u64 {
        self.proxy_kib + self.runtime_kib
    }
}

struct Memory {
    workerd_processes: usize,
    baseline: Rss,
    one_analysis: Rss,
    ten_analyses: Rss,
    after_close: Rss,
    pending_hello_bytes: usize,
}

/// Resident memory of the workerd processes in the edge's process group, split into the
/// dev proxy (the one listening on `port`) and the runtime, and how many there are.
fn workerd_rss(pgid: i32, port: u16) -> (Rss, usize) {
    let mut rss = Rss::default();
    let mut count = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (rss, 0);
    };
    let proxy_flag = format!("--socket-addr=entry=127.0.0.1:{port}");
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let pgrp = tail
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<i32>().ok());
        if pgrp != Some(pgid) || !comm.contains("workerd") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let Some(kib) = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .map(kib_field)
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_proxy = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == proxy_flag.as_bytes());
        if is_proxy {
            rss.proxy_kib += kib;
        } else {
            rss.runtime_kib += kib;
        }
        count += 1;
    }
    (rss, count)
}

/// Memory of the workerd processes in process group `pgid` (wrangler's, serving `edge` on
/// `port`) as idle sockets are opened and closed.
async fn memory(bench: &Bench, edge: &Target, pgid: i32, port: u16) -> anyhow::Result<Memory> {
    // Warm up: one analysis with a publish and a socket, so the isolate and the object
    // code are loaded before the baseline.
    bench.start_analysis(edge, "mem-warm").await?;
    drop(bench.open_sockets(edge, "mem-warm", 1).await?);
    tokio::time::sleep(SETTLE).await;
    let (baseline, workerd_processes) = workerd_rss(pgid, port);
    if workerd_processes == 0 {
        bail!("no workerd process in process group {pgid}");
    }
    eprintln!("memory: {IDLE_SOCKETS} idle sockets to one analysis");
    let one = bench.open_sockets(edge, "mem-one", IDLE_SOCKETS).await?;
    let pending_hello_bytes = one[0].1;
    tokio::time::sleep(SETTLE).await;
    let (one_analysis, _) = workerd_rss(pgid, port);
    eprintln!("memory: {IDLE_SOCKETS} more over 10 analyses");
    let mut ten = Vec::new();
    for a in 0..10 {
        ten.extend(
            bench
                .open_sockets(edge, &format!("mem-ten-{a}"), IDLE_SOCKETS / 10)
                .await?,
        );
    }
    tokio::time::sleep(SETTLE).await;
    let (ten_analyses, _) = workerd_rss(pgid, port);
    let close_all = one.into_iter().chain(ten).map(|(mut ws, _)| async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    });
    futures_util::future::join_all(close_all).await;
    tokio::time::sleep(SETTLE).await;
    let (after_close, _) = workerd_rss(pgid, port);
    Ok(Memory {
        workerd_processes,
        baseline,
        one_analysis,
        ten_analyses,
        after_close,
        pending_hello_bytes,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// MiB per 1000 sockets from `before` to `after`, `IDLE_SOCKETS` sockets apart.
fn per_1000(before: u64, after: u64) -> String {
    let delta = after as f64 - before as f64;
    format!("{:.1}", delta / 1024.0 * 1000.0 / IDLE_SOCKETS as f64)
}

fn print_memory(title: &str, m: &Memory) {
    println!();
    println!("## {title}");
    println!();
    println!(
        "VmRSS of the {} workerd processes in wrangler's process group, read {} s after the last socket opened (each socket has read its hello and then stays idle). `wrangler dev` runs two: a dev proxy that owns the port and relays every socket (not there in production), and the runtime that runs the Worker and the objects; both are shown. The first {IDLE_SOCKETS} sockets go to one analysis, the next {IDLE_SOCKETS} are spread over 10 other analyses (100 each, so 10 more objects), on top of the first.",
        m.workerd_processes,
        SETTLE.as_secs()
    );
    println!();
    println!(
        "| state | runtime RSS (MiB) | runtime MiB per 1000 sockets | dev proxy RSS (MiB) | dev proxy MiB per 1000 sockets | both (MiB) | both MiB per 1000 sockets |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |label: &str, before: Option<Rss>, now: Rss| {
        let delta = |f: fn(&Rss) -> u64| before.map_or(String::new(), |b| per_1000(f(&b), f(&now)));
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            mib(now.runtime_kib),
            delta(|r| r.runtime_kib),
            mib(now.proxy_kib),
            delta(|r| r.proxy_kib),
            mib(now.total()),
            delta(Rss::total),
        );
    };
    row("warmed up, no sockets open", None, m.baseline);
    row(
        &format!("+ {IDLE_SOCKETS} sockets to one analysis"),
        Some(m.baseline),
        m.one_analysis,
    );
    row(
        &format!("+ {IDLE_SOCKETS} sockets over 10 analyses"),
        Some(m.one_analysis),
        m.ten_analyses,
    );
    row(
        &format!("all {} closed", 2 * IDLE_SOCKETS),
        None,
        m.after_close,
    );
}

fn print_frames(latencies: &[Latency], memory: &Memory) {
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
    println!(
        "| `hello` of a pending analysis (nothing published) | {} |",
        memory.pending_hello_bytes
    );
}
