//! The fault and soak scenario: a real node runs analyses on real media and publishes them
//! to a real edge, many subscribers follow each analysis over WebSockets, and meanwhile
//! subscribers are dropped at random, the edge is killed and restarted on a schedule and the
//! node's link to the edge is cut. At the end every subscriber must hold every event of its
//! analysis exactly once and in order, as the edge's own log has them, every analysis must
//! have ended, and the node must have had every event it sent confirmed.
//!
//! [`Plan::short`] runs in `make test`, [`Plan::long`] in `make bench`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::client::{Tokens, lost_and_repeated};
use crate::edge::raise_open_files_limit;
use crate::link::Link;
use crate::{Edge, Node, media};

/// One WebSocket handshake and its hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Silence after which a subscriber takes its socket for dead.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Reconnect backoff ceiling (full jitter from 100 ms, doubling).
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Reading the edge's log or a node view at the end, through any restart still under way.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// Frames of the input video; what the model takes as is.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 352;

/// What to run and which faults to inject.
#[derive(Debug, Clone)]
pub struct Plan {
    /// New analyses start until this much time has passed.
    pub duration: Duration,
    /// Analyses running at once (the node's `--concurrency`).
    pub analyses: usize,
    /// Subscribers following each analysis.
    pub subscribers: usize,
    /// The edge is SIGKILLed and restarted this often, while analyses start.
    pub edge_restart_every: Option<Duration>,
    /// Cuts of the node's link to the edge: when, from the start, and for how long.
    pub link_cuts: Vec<(Duration, Duration)>,
    /// Mean time between a subscriber's forced drops (exponentially distributed).
    pub drop_mean: Duration,
    /// Length of each analysis's input video, sampled at `fps`.
    pub video_seconds: u32,
    pub fps: f64,
    /// After `duration`, how long the last analyses may take to end.
    pub finish_within: Duration,
    /// Seeds every random choice, so a failing run can be replayed.
    pub seed: u64,
}

impl Plan {
    /// The `make test` version: 2 analyses at a time with 10 subscribers each for 40 s, one
    /// edge restart, one 10 s link cut.
    pub fn short(seed: u64) -> Plan {
        Plan {
            duration: Duration::from_secs(40),
            analyses: 2,
            subscribers: 10,
            edge_restart_every: Some(Duration::from_secs(25)),
            link_cuts: vec![(Duration::from_secs(8), Duration::from_secs(10))],
            drop_mean: Duration::from_secs(5),
            video_seconds: 6,
            fps: 2.0,
            finish_within: Duration::from_secs(240),
            seed,
        }
    }

    /// The `make bench` version: 10 minutes of 10 analyses at a time with 100 subscribers
    /// each, the edge restarted every 2 minutes, the link cut for 30 s twice.
    pub fn long(seed: u64) -> Plan {
        Plan {
            duration: Duration::from_secs(600),
            analyses: 10,
            subscribers: 100,
            edge_restart_every: Some(Duration::from_secs(120)),
            link_cuts: vec![
                (Duration::from_secs(60), Duration::from_secs(30)),
                (Duration::from_secs(300), Duration::from_secs(30)),
            ],
            drop_mean: Duration::from_secs(30),
            video_seconds: 20,
            fps: 2.0,
            finish_within: Duration::from_secs(600),
            seed,
        }
    }

    /// `duration` replaced, with the faults scheduled inside it kept in proportion.
    pub fn scaled_to(mut self, duration: Duration) -> Plan {
        let k = duration.as_secs_f64() / self.duration.as_secs_f64();
        self.edge_restart_every = self.edge_restart_every.map(|d| d.mul_f64(k));
        for (at, _) in &mut self.link_cuts {
            *at = at.mul_f64(k);
        }
        self.duration = duration;
        self
    }
}

/// What one subscriber saw of its analysis.
#[derive(Debug, Default)]
struct Followed {
    /// `(seq, event id)` in arrival order, repeats and gaps included.
    events: Vec<(u64, String)>,
    connections: u64,
    forced_drops: u64,
    /// A hello with `recovered: false`, a refusal, or no end by the deadline.
    problem: Option<String>,
}

/// One analysis and its subscribers, as they ended.
struct Run {
    id: String,
    started: Instant,
    ended: Instant,
    followers: Vec<Followed>,
}

/// The outcome of one analysis, checked against the edge and the node.
#[derive(Debug)]
pub struct AnalysisOutcome {
    pub id: String,
    pub status: String,
    pub events: usize,
    /// From submission to the last subscriber's terminal event.
    pub took: Duration,
}

/// What a soak run saw; `problems` is empty when nothing was lost, repeated or left hanging.
#[derive(Debug)]
pub struct Report {
    pub plan: Plan,
    pub analyses: Vec<AnalysisOutcome>,
    pub subscribers: usize,
    /// Event frames received, over every subscriber.
    pub deliveries: u64,
    pub lost: u64,
    pub repeated: u64,
    pub connections: u64,
    pub forced_drops: u64,
    /// How long each edge restart took, kill to ready.
    pub edge_restarts: Vec<Duration>,
    pub link_cuts: usize,
    pub elapsed: Duration,
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as markdown: the plan, the faults, the totals and every problem.
    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let mut out = String::new();
        let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &self.analyses {
            *statuses.entry(a.status.as_str()).or_default() += 1;
        }
        let mut took: Vec<Duration> = self.analyses.iter().map(|a| a.took).collect();
        took.sort_unstable();
        let events: usize = self.analyses.iter().map(|a| a.events).sum();
        let restarts: Vec<String> = self
            .edge_restarts
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64()))
            .collect();
        let _ = writeln!(
            out,
            "Plan: new analyses for {} s, {} at a time, {} subscribers each; the edge SIGKILLed and restarted every {}; the node's link cut {}; each subscriber dropped (no close frame) every {} s on average (exponential); inputs {} s of 640x352 video at {} fps; seed {}.",
            p.duration.as_secs(),
            p.analyses,
            p.subscribers,
            p.edge_restart_every
                .map_or("never".into(), |d| format!("{} s", d.as_secs())),
            p.link_cuts
                .iter()
                .map(|(at, len)| format!("at {} s for {} s", at.as_secs(), len.as_secs()))
                .collect::<Vec<_>>()
                .join(" and "),
            p.drop_mean.as_secs_f64(),
            p.video_seconds,
            p.fps,
            p.seed,
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "| measure | value |");
        let _ = writeln!(out, "|---|---:|");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "| {k} | {v} |");
        };
        row(
            "whole run (s)",
            format!("{:.0}", self.elapsed.as_secs_f64()),
        );
        row("analyses", self.analyses.len().to_string());
        row(
            "analyses by final status",
            statuses
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row("events on the edge, all analyses", events.to_string());
        row("subscribers", self.subscribers.to_string());
        row("event frames received", self.deliveries.to_string());
        row("connections opened", self.connections.to_string());
        row("forced subscriber drops", self.forced_drops.to_string());
        row(
            "edge restarts (s from kill to ready, each)",
            format!("{} ({})", restarts.len(), restarts.join(", ")),
        );
        row("link cuts", self.link_cuts.to_string());
        row(
            "analysis time, submit to last subscriber's end, p50 / max (s)",
            format!(
                "{:.1} / {:.1}",
                took.get(took.len() / 2).map_or(0.0, Duration::as_secs_f64),
                took.last().map_or(0.0, Duration::as_secs_f64)
            ),
        );
        row("**events lost**", format!("**{}**", self.lost));
        row("**events repeated**", format!("**{}**", self.repeated));
        row("problems", self.problems.len().to_string());
        for problem in self.problems.iter().take(20) {
            let _ = writeln!(out, "\n- {problem}");
        }
        if self.problems.len() > 20 {
            let _ = writeln!(out, "\n- ... and {} more", self.problems.len() - 20);
        }
        out
    }
}

/// Runs `plan` with the node binary at `node_bin`: starts an edge, a link and a node,
/// injects the faults, and checks everything at the end.
pub async fn run(node_bin: &Path, plan: Plan) -> anyhow::Result<Report> {
    raise_open_files_limit();
    let began = Instant::now();
    let work = tempfile::tempdir()?;
    let video = work.path().join("soak.mp4");
    media::text_video(&video, WIDTH, HEIGHT, plan.video_seconds)?;

    let edge = Edge::dev().await.context("starting the edge")?;
    let edge_addr = format!("127.0.0.1:{}", edge.config.port).parse()?;
    let link = Arc::new(Link::start(edge_addr).await?);
    let concurrency = plan.analyses.to_string();
    let mut node = Node::start(
        node_bin,
        Some(&link.base_url()),
        &["--concurrency", &concurrency],
    )
    .await
    .context("starting the node")?;
    node.ready(Duration::from_secs(180)).await?;
    let ws_base = format!("ws://127.0.0.1:{}", edge.config.port);
    let http_base = edge.base_url();

    let t0 = Instant::now();
    let deadline = t0 + plan.duration + plan.finish_within;
    let faults = tokio::spawn(inject_faults(edge, link.clone(), plan.clone(), t0));
    let node = Arc::new(node);
    let mut slots = JoinSet::new();
    for slot in 0..plan.analyses {
        let (node, plan, video, ws_base) = (
            node.clone(),
            plan.clone(),
            video.to_string_lossy().into_owned(),
            ws_base.clone(),
        );
        slots.spawn(async move {
            let mut runs = Vec::new();
            let mut k = 0;
            while t0.elapsed() < plan.duration {
                let id = format!("soak-{slot}-{k}");
                let seed = plan.seed ^ ((slot as u64) << 32 | k);
                runs.push(one_analysis(&node, &plan, &ws_base, &video, id, seed, deadline).await?);
                k += 1;
            }
            anyhow::Ok(runs)
        });
    }
    let mut runs = Vec::new();
    for result in slots.join_all().await {
        runs.extend(result?);
    }
    let (edge, edge_restarts, link_cuts) = faults.await??;
    let report = check(
        &http_base,
        &node,
        runs,
        plan,
        edge_restarts,
        link_cuts,
        began,
    )
    .await;
    drop(edge);
    Ok(report)
}

/// Restarts the edge and cuts the link on `plan`'s schedule until `plan.duration` has passed
/// from `t0`; gives the edge back with how long each restart took and how many cuts ran.
async fn inject_faults(
    mut edge: Edge,
    link: Arc<Link>,
    plan: Plan,
    t0: Instant,
) -> anyhow::Result<(Edge, Vec<Duration>, usize)> {
    enum Fault {
        RestartEdge,
        Cut,
        Restore,
    }
    let mut schedule = Vec::new();
    if let Some(every) = plan.edge_restart_every {
        let mut at = every;
        while at < plan.duration {
            schedule.push((at, Fault::RestartEdge));
            at += every;
        }
    }
    for &(at, len) in &plan.link_cuts {
        schedule.push((at, Fault::Cut));
        schedule.push((at + len, Fault::Restore));
    }
    schedule.sort_by_key(|(at, _)| *at);
    let (mut restarts, mut cuts) = (Vec::new(), 0);
    for (at, fault) in schedule {
        tokio::time::sleep_until((t0 + at).into()).await;
        match fault {
            Fault::RestartEdge => {
                let killed = Instant::now();
                timeline(t0, "edge: SIGKILL and restart");
                edge.restart().await.context("restarting the edge")?;
                restarts.push(killed.elapsed());
                timeline(t0, "edge: ready again");
            }
            Fault::Cut => {
                link.cut();
                cuts += 1;
                timeline(t0, "link: cut");
            }
            Fault::Restore => {
                link.restore();
                timeline(t0, "link: restored");
            }
        }
    }
    Ok((edge, restarts, cuts))
}

/// One line on stderr with the time since the start, so a run's log reads as a timeline.
fn timeline(t0: Instant, what: &str) {
    eprintln!("soak {:>6.1} s: {what}", t0.elapsed().as_secs_f64());
}

/// Submits analysis `id` to the node with `plan.subscribers` following it from the start,
/// and waits until every subscriber saw its end (or `deadline`).
async fn one_analysis(
    node: &Node,
    plan: &Plan,
    ws_base: &str,
    video: &str,
    id: String,
    seed: u64,
    deadline: Instant,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut followers = JoinSet::new();
    for s in 0..plan.subscribers {
        followers.spawn(follow(
            format!("{ws_base}/v1/analyses/{id}/ws"),
            Tokens::viewer(&id),
            plan.drop_mean,
            seed.wrapping_mul(1_000_003).wrapping_add(s as u64),
            deadline,
        ));
    }
    let (status, body) = node
        .submit(&json!({"input": video, "analysis_id": id, "fps": plan.fps, "batch_size": 2}))
        .await;
    if status != 202 {
        bail!("the node refused {id}: {status} {body}");
    }
    let followers = followers.join_all().await;
    Ok(Run {
        id,
        started,
        ended: Instant::now(),
        followers,
    })
}

/// How a connection of a subscriber ended.
enum End {
    /// The analysis's terminal event arrived.
    Terminal,
    /// This subscriber dropped it on purpose.
    Dropped,
    /// The edge closed it or went away: reconnect.
    Lost,
    /// The edge refused for good (4001, 4003, 4400) or broke the contract.
    Refused(String),
}

/// Follows one analysis like the browser client does: replays from the start, resumes with
/// `since=<last seq>` after every drop, backs off with full jitter, and drops its own socket
/// (without a close frame) at random, `drop_mean` apart on average.
async fn follow(
    url: String,
    token: String,
    drop_mean: Duration,
    seed: u64,
    deadline: Instant,
) -> Followed {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Followed::default();
    let mut last = 0u64;
    let mut failures = 0u32;
    loop {
        if Instant::now() >= deadline {
            seen.problem = Some(format!(
                "no terminal event by the deadline (last seq {last})"
            ));
            return seen;
        }
        let drop_at = Instant::now() + drop_mean.mul_f64(-(1.0 - rng.f64()).ln());
        let end = match connect(&url, &token, last).await {
            Ok(ws) => {
                seen.connections += 1;
                failures = 0;
                session(ws, &mut last, &mut seen, drop_at.min(deadline)).await
            }
            Err(_) => End::Lost,
        };
        match end {
            End::Terminal => return seen,
            End::Refused(why) => {
                seen.problem = Some(why);
                return seen;
            }
            End::Dropped => seen.forced_drops += 1,
            End::Lost => {
                failures += 1;
                let ceiling =
                    (Duration::from_millis(100) * 2u32.pow(failures.min(5))).min(MAX_BACKOFF);
                tokio::time::sleep(ceiling.mul_f64(rng.f64())).await;
            }
        }
    }
}

type Ws = crate::client::Ws;

async fn connect(url: &str, token: &str, since: u64) -> anyhow::Result<Ws> {
    let mut request = format!("{url}?since={since}").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("stagecast.v1, bearer.{token}"))?,
    );
    let (ws, _) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await??;
    Ok(ws)
}

/// Reads one connection: its hello, then events, checking each against `last`.
async fn session(mut ws: Ws, last: &mut u64, seen: &mut Followed, drop_at: Instant) -> End {
    let mut hello = false;
    loop {
        let next = tokio::time::timeout_at(
            drop_at.into(),
            tokio::time::timeout(SILENCE_TIMEOUT, ws.next()),
        )
        .await;
        let message = match next {
            // Dropped without a close frame, as a phone losing its network would.
            Err(_) => return End::Dropped,
            Ok(Err(_) | Ok(None | Some(Err(_)))) => return End::Lost,
            Ok(Ok(Some(Ok(message)))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(Some(frame)) if [4001, 4003, 4400].contains(&u16::from(frame.code)) => {
                return End::Refused(format!("closed with {}: {}", frame.code, frame.reason));
            }
            Message::Close(_) => return End::Lost,
            _ => continue,
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            return End::Refused(format!("a frame that is not JSON: {text}"));
        };
        match frame["type"].as_str() {
            Some("hello") => {
                hello = true;
                if frame["recovered"] == false {
                    return End::Refused(format!("resumed from {last} without recovery: {frame}"));
                }
            }
            Some("event") if hello => {
                let (Some(seq), Some(id)) = (frame["seq"].as_u64(), frame["event"]["id"].as_str())
                else {
                    return End::Refused(format!("an event without seq or id: {frame}"));
                };
                seen.events.push((seq, id.to_owned()));
                *last = (*last).max(seq);
                if matches!(
                    frame["event"]["type"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                ) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return End::Terminal;
                }
            }
            Some("event") => return End::Refused(format!("an event before the hello: {frame}")),
            _ => {}
        }
    }
}

/// Reads the edge's whole log of `id`: `(seq, event)` in order.
async fn edge_log(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<Vec<Value>> {
    let token = Tokens::viewer(id);
    let mut events: Vec<Value> = Vec::new();
    loop {
        let since = events.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
        let page: Value = http
            .get(format!(
                "{base}/v1/analyses/{id}/events?since={since}&limit=1000"
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let batch = page["events"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            return Ok(events);
        }
        events.extend(batch);
    }
}

/// Retries `read` until it succeeds or `CHECK_TIMEOUT` passes.
async fn patiently<T, F: Future<Output = anyhow::Result<T>>>(
    mut read: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    loop {
        match read().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Checks every run against the edge's log and snapshot and the node's view.
async fn check(
    base: &str,
    node: &Node,
    runs: Vec<Run>,
    plan: Plan,
    edge_restarts: Vec<Duration>,
    link_cuts: usize,
    began: Instant,
) -> Report {
    let http = reqwest::Client::new();
    let mut report = Report {
        plan,
        analyses: Vec::new(),
        subscribers: 0,
        deliveries: 0,
        lost: 0,
        repeated: 0,
        connections: 0,
        forced_drops: 0,
        edge_restarts,
        link_cuts,
        elapsed: Duration::ZERO,
        problems: Vec::new(),
    };
    for run in runs {
        let id = run.id.as_str();
        let log = match patiently(|| edge_log(&http, base, id)).await {
            Ok(log) => log,
            Err(e) => {
                report.problems.push(format!("{id}: the edge's log: {e:#}"));
                continue;
            }
        };
        let snapshot = patiently(|| async {
            let s: Value = http
                .get(format!("{base}/v1/analyses/{id}"))
                .bearer_auth(Tokens::viewer(id))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(s)
        })
        .await
        .unwrap_or(Value::Null);
        let status = snapshot["status"].as_str().unwrap_or("unknown").to_owned();
        if status != "completed" {
            report
                .problems
                .push(format!("{id}: ended {status}, not completed: {snapshot}"));
        }
        let truth: Vec<(u64, String)> = log
            .iter()
            .map(|e| {
                (
                    e["seq"].as_u64().unwrap_or(0),
                    e["event"]["id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        if truth
            .iter()
            .enumerate()
            .any(|(i, (seq, _))| *seq != i as u64 + 1)
        {
            report.problems.push(format!(
                "{id}: the edge's log is not seq 1..={}",
                truth.len()
            ));
        }
        for (s, followed) in run.followers.iter().enumerate() {
            report.subscribers += 1;
            report.deliveries += followed.events.len() as u64;
            report.connections += followed.connections;
            report.forced_drops += followed.forced_drops;
            let (lost, repeated) = lost_and_repeated(&followed.events, &truth);
            report.lost += lost;
            report.repeated += repeated;
            if lost + repeated > 0 || followed.events != truth {
                report.problems.push(format!(
                    "{id} subscriber {s}: {lost} lost, {repeated} repeated, {} frames for {} events",
                    followed.events.len(),
                    truth.len()
                ));
            }
            if let Some(problem) = &followed.problem {
                report
                    .problems
                    .push(format!("{id} subscriber {s}: {problem}"));
            }
        }
        // The node: every event it sent confirmed by the edge, none refused.
        let from_node = log
            .iter()
            .filter(|e| {
                !matches!(
                    e["event"]["type"].as_str(),
                    Some("cancel_requested" | "stalled")
                )
            })
            .count();
        let view = patiently(|| async {
            let view = node.status(id).await;
            if view["delivered"].is_object() {
                Ok(view)
            } else {
                bail!("not delivered yet: {view}")
            }
        })
        .await;
        match view {
            Ok(view) if view["delivered"] == json!({"confirmed": from_node, "refused": 0}) => {}
            Ok(view) => report.problems.push(format!(
                "{id}: the node's delivery {} against {from_node} of its events on the edge",
                view["delivered"]
            )),
            Err(e) => report.problems.push(format!("{id}: {e:#}")),
        }
        report.analyses.push(AnalysisOutcome {
            id: run.id.clone(),
            status,
            events: truth.len(),
            took: run.ended - run.started,
        });
    }
    report.elapsed = began.elapsed();
    report
}
