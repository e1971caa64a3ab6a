//! What one analysis bills on Cloudflare, counted on the real edge (`make bench`, or
//! `cargo bench -p stagecast-e2e --bench bill`): the demo's shape, a 60 s video read by
//! `text-read` at the default 2 fps, published by the node's own publisher while 3 viewers
//! follow it over WebSockets. The analysis object counts what it answered (requests,
//! WebSocket messages in, SQLite rows written as SQLite counts them, alarms set) and logs
//! the counts with the terminal event; this reads that line from the edge's log, and the
//! viewers time every node event from the node's stamp (`event.ts`) to its arrival.
//!
//! Needs ffmpeg, ONNX Runtime and the models from `make setup` and the edge built.
//! Each run publishes the analysis twice, over the node's publish socket (its default) and
//! over HTTP only. STAGECAST_BENCH_RUNS (default 3) sets the runs; every run is printed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use stagecast_compute::publish::{EdgeClient, NodeIdentity, Outbox, Publication, PublishOver};
use stagecast_compute::{
    CancellationToken, Catalog, Model, Outcome, PipelineOptions, RuntimeOptions, Source, pipeline,
};
use stagecast_e2e::client::{DEV_SECRET, Subscriber, kind};
use stagecast_e2e::stats::quantile;
use stagecast_e2e::{Edge, Tokens, host};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::stored::StoredEventBody;
use stagecast_shared::token::SigningKey;
use stagecast_shared::ws::ServerMessage;

const COMMAND: &str = "cargo bench -p stagecast-e2e --bench bill";
const MODEL: &str = "text-read";
const VIDEO_SECONDS: u32 = 60;
const VIEWERS: usize = 3;
/// A viewer's update may arrive this late at the 99th percentile (issue 15's bound).
const LAG_BOUND_MS: f64 = 250.0;
/// Every wait of a viewer for its next frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(120);

/// The counts of one run.
struct Bill {
    /// Wall seconds from the pipeline's start to the terminal event at every viewer.
    seconds: f64,
    events: u64,
    requests: u64,
    messages_in: u64,
    rows_written: u64,
    alarms_set: u64,
    /// Node event stamp to a viewer's receipt, over every (viewer, node event) pair.
    lag_ms: Vec<u64>,
    /// The stored events by type, as one viewer saw them.
    kinds: BTreeMap<&'static str, u64>,
}

impl Bill {
    /// Billed units as the issue counts them: every Worker request is also one Durable
    /// Object request here (each is forwarded to the object; no pool, none refused), a
    /// WebSocket message in bills 1/20 of a request, an alarm set one row write.
    fn units(&self) -> f64 {
        2.0 * self.requests as f64
            + self.messages_in as f64 / 20.0
            + self.rows_written as f64
            + self.alarms_set as f64
    }

    fn per_minute(&self, count: f64) -> f64 {
        count * 60.0 / self.seconds
    }
}

fn main() {
    let runs: usize = std::env::var("STAGECAST_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let began = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let work = tempfile::tempdir().expect("temp dir");
    let video = work.path().join("text.mp4");
    stagecast_fixtures::text_video(&video, 640, 360, VIDEO_SECONDS).expect("text video");
    let options = RuntimeOptions::default();
    let catalog = Catalog::load(&options.models_dir).expect("catalog");
    let model = Arc::new(Model::load(&catalog, MODEL, &options).expect("model"));
    let edge = runtime.block_on(Edge::dev()).expect("edge");
    let bills: Vec<(usize, PublishOver, Bill)> = (0..runs)
        .flat_map(|run| [PublishOver::Socket, PublishOver::Http].map(|over| (run, over)))
        .map(|(run, over)| {
            (
                run + 1,
                over,
                runtime.block_on(one_run(&edge, &model, &video, over)),
            )
        })
        .collect();

    println!("# What an analysis bills\n");
    println!("- command: `{COMMAND}`");
    println!("- machine: {}", host::describe());
    println!(
        "- shape: {VIDEO_SECONDS} s of 640x360 H.264 with text, `{MODEL}` at {} fps (the \
         node's default), batch {}, {VIEWERS} viewers on WebSockets from the start, the \
         node's publisher as it ships (progress at most every {} ms, linger {} ms), over its \
         publish socket and over HTTP",
        PipelineOptions::default().fps,
        PipelineOptions::default().batch_size,
        stagecast_compute::publish::coalesce::PROGRESS_INTERVAL_MS,
        stagecast_shared::send::SendConfig::default().linger_ms,
    );
    println!(
        "- counted by the analysis object (its `usage` log line at the terminal event); an \
         analysis-minute is a minute of the run's wall time on this 2-core machine\n"
    );
    println!(
        "| run | publish over | seconds | events | requests (Worker = object) | WebSocket messages in | rows written | alarms set | billed units | units per analysis-minute | node requests/s | viewer lag p50 / p99 / max (ms) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (run, over, bill) in &bills {
        let mut lag = bill.lag_ms.clone();
        lag.sort_unstable();
        let node_requests = bill.requests.saturating_sub(VIEWERS as u64);
        println!(
            "| {run} | {over} | {:.1} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.1} | {} / {} / {} |",
            bill.seconds,
            bill.events,
            bill.requests,
            bill.messages_in,
            bill.rows_written,
            bill.alarms_set,
            bill.units(),
            bill.per_minute(bill.units()),
            node_requests as f64 / bill.seconds,
            quantile(&lag, 0.5),
            quantile(&lag, 0.99),
            lag.iter().max().copied().unwrap_or(0),
        );
    }
    let units = |wanted: PublishOver| {
        let units: Vec<f64> = (bills.iter())
            .filter(|(_, over, _)| *over == wanted)
            .map(|(_, _, bill)| bill.per_minute(bill.units()))
            .collect();
        units.iter().sum::<f64>() / units.len() as f64
    };
    println!(
        "\nMean units per analysis-minute: {:.0} over the socket, {:.0} over HTTP ({:.0}%).",
        units(PublishOver::Socket),
        units(PublishOver::Http),
        100.0 * units(PublishOver::Socket) / units(PublishOver::Http)
    );
    let kinds: Vec<String> = bills[0]
        .2
        .kinds
        .iter()
        .map(|(k, n)| format!("{n} `{k}`"))
        .collect();
    println!("\nThe events of run 1: {}.", kinds.join(", "));
    println!(
        "\nBilled units = 2 x requests (a Worker request and the Durable Object request it \
         makes) + messages in / 20 + rows written + alarms set. Requests include the \
         {VIEWERS} viewers' WebSocket upgrades; node requests/s excludes them. Viewer lag \
         bound: p99 at most {LAG_BOUND_MS:.0} ms."
    );
    println!("\nThe bench took {:.0} s.", began.elapsed().as_secs_f64());
}

async fn one_run(
    edge: &Edge,
    model: &Arc<Model>,
    video: &std::path::Path,
    over: PublishOver,
) -> Bill {
    let id = AnalysisId::parse(&format!("bill-{:x}", fastrand::u64(..))).expect("id");
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let url = edge.ws_url(&format!(
            "/v1/analyses/{id}/ws?since=0&token={}",
            Tokens::viewer(id.as_str())
        ));
        viewers.push(tokio::spawn(follow(
            Subscriber::connect(&url).await.expect("viewer"),
        )));
    }
    let state = tempfile::tempdir().expect("state");
    let outbox = Outbox::new(state.path()).expect("outbox");
    let identity = NodeIdentity {
        tenant: "dev".into(),
        node_id: "bill".into(),
        key: SigningKey::dev(DEV_SECRET).expect("key"),
    };
    let client = EdgeClient::new(&edge.base_url(), identity).expect("edge client");
    let client = Arc::new(client.with_publish_over(over));
    let cancel = CancellationToken::new();
    let publication =
        Publication::start(client, &outbox, id.clone(), cancel.clone(), Arc::new(|| 0))
            .expect("publication");
    let started = Instant::now();
    let outcome = pipeline::drive(
        model.clone(),
        Source::Path(video.to_owned()),
        PipelineOptions::default(),
        cancel,
        Some(&publication),
        |_| {},
    )
    .await
    .expect("analysis");
    assert!(matches!(outcome, Outcome::Completed(_)), "not completed");
    publication.finish().await.expect("delivered");
    let mut lag_ms = Vec::new();
    let (mut events, mut kinds) = (0, BTreeMap::new());
    for viewer in viewers {
        let (lags, seen, last_seq) = viewer.await.expect("viewer task");
        lag_ms.extend(lags);
        (events, kinds) = (last_seq, seen);
    }
    let seconds = started.elapsed().as_secs_f64();
    // wrangler writes the object's console lines a moment after the response
    let mut usage = None;
    for _ in 0..50 {
        usage = usage_line(&edge.log(), id.as_str());
        if usage.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let usage = usage.unwrap_or_else(|| {
        panic!(
            "no usage line for {id} in the edge's log; its end:\n{}",
            edge.log_tail()
        )
    });
    let count = |key: &str| {
        usage[key]
            .as_u64()
            .unwrap_or_else(|| panic!("usage has no {key}"))
    };
    Bill {
        seconds,
        events,
        requests: count("requests"),
        messages_in: count("messages_in"),
        rows_written: count("rows_written"),
        alarms_set: count("alarms_set"),
        lag_ms,
        kinds,
    }
}

/// A viewer until the terminal event: the lag of every node event it got, and the last seq.
async fn follow(mut viewer: Subscriber) -> (Vec<u64>, BTreeMap<&'static str, u64>, u64) {
    let (mut lags, mut kinds) = (Vec::new(), BTreeMap::new());
    loop {
        let message = viewer.next_message(FRAME_TIMEOUT).await.expect("frame");
        let ServerMessage::Event(stored) = message else {
            continue;
        };
        *kinds.entry(kind(&stored)).or_default() += 1;
        if let StoredEventBody::Node(event) = &stored.event
            && let Some(ts) = event.ts
        {
            lags.push(now_ms().saturating_sub(ts).max(0) as u64);
        }
        if stored.event.is_terminal() {
            return (lags, kinds, stored.seq);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// The fields of the object's `usage` line for `analysis`: the edge logs one JSON object
/// per line (wrangler may put a prefix before it).
fn usage_line(log: &str, analysis: &str) -> Option<Value> {
    log.lines()
        .filter(|line| line.contains("\"usage\"") && line.contains(analysis))
        .filter_map(|line| serde_json::from_str::<Value>(&line[line.find('{')?..]).ok())
        .find(|v| v["fields"]["message"] == "usage")
        .map(|v| v["fields"].clone())
}
