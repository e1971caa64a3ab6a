//! Sustained publish throughput into one analysis or several.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};
use stagecast_e2e::{Subscriber, Tokens};

use crate::{Bench, Target, ms, quantile};

/// Each throughput run publishes for this long.
pub const THROUGHPUT_RUN: Duration = Duration::from_secs(5);

pub struct Throughput {
    pub label: &'static str,
    pub analyses: usize,
    pub publishers: usize,
    pub batch: usize,
    pub events: u64,
    pub batches: u64,
    pub errors: u64,
    pub elapsed: Duration,
    rtt_p50_us: u64,
    rtt_p99_us: u64,
}

/// How a publisher sends its batches: a POST each, or messages on the node's publish socket
/// (Stagecast only), as the node sends them.
#[derive(Clone, Copy)]
pub enum Over {
    Http,
    Socket,
}

/// One publisher's way in: the bench's HTTP client, or its own publish socket.
enum Way {
    Http,
    Socket(Box<Subscriber>),
}

impl Way {
    async fn open(over: Over, target: &Target, id: &str, token: &str) -> anyhow::Result<Way> {
        Ok(match over {
            Over::Http => Way::Http,
            Over::Socket => {
                let url = format!("{}/v1/analyses/{id}/publish?token={token}", target.ws);
                Way::Socket(Box::new(Subscriber::connect(&url).await?))
            }
        })
    }

    /// Publishes one batch and returns the answer's body (`accepted` and the rest).
    async fn publish(
        &mut self,
        bench: &Bench,
        target: &Target,
        (id, token): (&str, &str),
        request: u64,
        events: &[Value],
    ) -> anyhow::Result<Value> {
        match self {
            Way::Http => bench.publish(target, id, token, events).await,
            Way::Socket(socket) => {
                socket
                    .send_json(&json!({"type": "publish", "request": request,
                                       "batch": {"events": events}}))
                    .await?;
                let reply = socket.next_json(crate::HTTP_TIMEOUT).await?;
                if reply["type"] != "published" || reply["request"] != request {
                    bail!("publish to {id} over the socket: {reply}");
                }
                Ok(reply)
            }
        }
    }
}

impl Throughput {
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn throughput(
    bench: &Bench,
    target: &Target,
    label: &'static str,
    analyses: usize,
    publishers: usize,
    batch: usize,
    over: Over,
) -> anyhow::Result<Throughput> {
    let way_in = match over {
        Over::Http => "http",
        Over::Socket => "socket",
    };
    let run = format!("tp-{way_in}-{analyses}-{publishers}-{batch}");
    let ids: Vec<String> = (0..analyses).map(|a| format!("{run}-{a}")).collect();
    for id in &ids {
        bench.start_analysis(target, id).await?;
    }
    let deadline = Instant::now() + THROUGHPUT_RUN;
    let begun = Instant::now();
    // Publishers run concurrently in this task (join_all): the work here is I/O.
    let results = futures_util::future::join_all((0..publishers).map(|p| {
        let id = ids[p % ids.len()].clone();
        async move {
            let token = Tokens::node(&id);
            let mut way = Way::open(over, target, &id, &token).await?;
            let (mut events, mut batches, mut errors) = (0u64, 0u64, 0u64);
            let mut rtts = Vec::new();
            let mut k = 0u64;
            while Instant::now() < deadline {
                let beats: Vec<Value> = (0..batch)
                    .map(|j| json!({"id": format!("w{p}-{k}-{j}"), "type": "heartbeat"}))
                    .collect();
                k += 1;
                let sent = Instant::now();
                match way.publish(bench, target, (&id, &token), k, &beats).await {
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
            anyhow::Ok((events, batches, errors, rtts))
        }
    }))
    .await;
    let elapsed = begun.elapsed();
    let mut all_rtts = Vec::new();
    let (mut events, mut batches, mut errors) = (0, 0, 0);
    for result in results {
        let (e, b, x, r) = result?;
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

pub fn print_throughput(name: &str, rows: &[anyhow::Result<Throughput>]) {
    println!();
    println!("## Publish throughput: {name}");
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
    for r in rows.iter().filter_map(|r| r.as_ref().ok()) {
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
            r.events_per_s(),
            r.batches as f64 / secs,
            r.errors,
            ms(r.rtt_p50_us),
            ms(r.rtt_p99_us),
        );
    }
}
