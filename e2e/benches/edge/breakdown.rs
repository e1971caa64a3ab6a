//! Where a publish's time goes, layer by layer: after the request floor (`GET /healthz`),
//! sequential requests that each stop one layer further in, on one kept-alive connection. The differences of their medians are
//! what each layer adds; the Worker's own clock cannot say (workerd stops it while code
//! runs), so they are measured from outside.

use anyhow::bail;
use serde_json::json;
use stagecast_e2e::Tokens;
use stagecast_e2e::stats::{ms, quantile};

use crate::{Bench, Target};

/// Requests per layer.
const REQUESTS: usize = 200;

#[derive(Clone, Copy)]
enum Kind {
    Refused,
    Snapshot,
    Publish,
}

/// A request that stops at one layer.
#[derive(Clone, Copy)]
struct Probe {
    kind: Kind,
    name: &'static str,
    /// What this layer adds to the one before.
    adds: &'static str,
    status: u16,
}

const PROBES: [Probe; 3] = [
    Probe {
        kind: Kind::Refused,
        name: "publish with another analysis' token",
        adds: "routing, verifying the JWT (HS256), refusing it (403)",
        status: 403,
    },
    Probe {
        kind: Kind::Snapshot,
        name: "`GET` the snapshot",
        adds: "the hop to the analysis object and back (state in memory, a JSON answer)",
        status: 200,
    },
    Probe {
        kind: Kind::Publish,
        name: "publish 1 event, no subscriber",
        adds: "the body, its parse and checks, the state machine, the SQL writes, the alarm",
        status: 200,
    },
];

/// One layer's round trips (µs, sorted).
pub struct Layer {
    probe: Probe,
    rtts: Vec<u64>,
}

/// Measures the layers on `target` (Stagecast's edge): each request goes one step further.
pub async fn measure(bench: &Bench, target: &Target) -> anyhow::Result<Vec<Layer>> {
    let id = "breakdown";
    bench.start_analysis(target, id).await?;
    let (node, other, viewer) = (
        Tokens::node(id),
        Tokens::node("elsewhere"),
        Tokens::viewer(id),
    );
    let events = format!("{}/v1/analyses/{id}/events", target.http);
    let snapshot = format!("{}/v1/analyses/{id}", target.http);
    let progress = |n: usize| {
        json!({"events": [{"id": format!("b{n}"), "type": "progress", "stage": "run",
            "stage_progress": (n as f64 / (4 * REQUESTS) as f64)}]})
    };
    let http = &bench.http;
    let mut layers = Vec::new();
    let mut n = 0;
    for probe in PROBES {
        let mut rtts = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            n += 1;
            let request = match probe.kind {
                Kind::Refused => http.post(&events).bearer_auth(&other).json(&progress(n)),
                Kind::Snapshot => http.get(&snapshot).bearer_auth(&viewer),
                Kind::Publish => http.post(&events).bearer_auth(&node).json(&progress(n)),
            };
            let sent = bench.now_us();
            let resp = request.send().await?;
            let status = resp.status().as_u16();
            let _ = resp.bytes().await?;
            if status != probe.status {
                bail!("{}: {status}, expected {}", probe.name, probe.status);
            }
            rtts.push(bench.now_us() - sent);
        }
        rtts.sort_unstable();
        layers.push(Layer { probe, rtts });
    }
    Ok(layers)
}

/// Prints the layers after `floor`, the request floor's round trips (µs, sorted).
pub fn print_breakdown(floor: &[u64], layers: &anyhow::Result<Vec<Layer>>) {
    println!();
    println!("## Stagecast: where a publish's time goes");
    println!();
    let layers = match layers {
        Ok(l) => l,
        Err(e) => {
            println!("Not measured: {e:#}");
            return;
        }
    };
    println!(
        "{REQUESTS} sequential requests per row on one kept-alive connection, each going one layer further than the row above; the last column is the difference of medians, what that layer adds."
    );
    println!();
    println!("| request | p50 (ms) | p99 (ms) | adds (ms) | what it adds |");
    println!("|---|---:|---:|---:|---|");
    let floor_p50 = quantile(floor, 0.5);
    println!(
        "| `GET /healthz` (the request floor) | {} | {} | {} | the Worker alone: the local request path |",
        ms(floor_p50),
        ms(quantile(floor, 0.99)),
        ms(floor_p50)
    );
    let mut before = floor_p50;
    for l in layers {
        let p50 = quantile(&l.rtts, 0.5);
        println!(
            "| {} | {} | {} | {} | {} |",
            l.probe.name,
            ms(p50),
            ms(quantile(&l.rtts, 0.99)),
            ms(p50.saturating_sub(before)),
            l.probe.adds
        );
        before = p50;
    }
}
