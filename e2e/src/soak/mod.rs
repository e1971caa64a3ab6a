//! The fault and soak scenario: a real node runs analyses on real media and publishes them
//! to a real edge, many subscribers follow each analysis over WebSockets, and meanwhile
//! subscribers are dropped at random, the edge is killed and restarted on a schedule and the
//! node's link to the edge is cut. At the end every subscriber must hold every event of its
//! analysis exactly once and in order, as the edge's own log has them, every analysis must
//! have ended, and the node must have had every event it sent confirmed.
//!
//! [`Plan::short`] runs in `make test`, [`Plan::long`] in `make bench`. The parts:
//! [`plan`] (what to run), `faults` (edge restarts and link cuts on the plan's schedule),
//! `follow` (the analyses and their subscribers), `check` (everything against the edge's
//! log and the node), [`report`] (what was seen, as markdown).

mod check;
mod faults;
mod follow;
pub mod plan;
pub mod report;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use stagecast_fixtures::{HEIGHT, WIDTH, text_video};
use tokio::task::JoinSet;

pub use plan::Plan;
pub use report::{AnalysisOutcome, Report};

use crate::edge::raise_open_files_limit;
use crate::proxy::CutProxy;
use crate::{Edge, Node};

/// Runs `plan` with the node binary at `node_bin`: starts an edge, a cuttable proxy in
/// front of it and a node publishing through the proxy, injects the faults, and checks
/// everything at the end.
pub async fn run(node_bin: &Path, plan: Plan) -> anyhow::Result<Report> {
    raise_open_files_limit();
    let began = Instant::now();
    let work = tempfile::tempdir()?;
    let video = work.path().join("soak.mp4");
    // Frames of what the model takes as is.
    text_video(&video, WIDTH, HEIGHT, plan.video_seconds)?;

    let edge = Edge::dev().await.context("starting the edge")?;
    let edge_addr = format!("127.0.0.1:{}", edge.config.port).parse()?;
    let proxy = Arc::new(CutProxy::start(edge_addr).await?);
    let concurrency = plan.analyses.to_string();
    let mut node = Node::start(
        node_bin,
        Some(&proxy.base_url()),
        &["--concurrency", &concurrency],
    )
    .await
    .context("starting the node")?;
    node.ready(Duration::from_secs(180)).await?;
    let ws_base = format!("ws://127.0.0.1:{}", edge.config.port);
    let http_base = edge.base_url();

    let t0 = Instant::now();
    let deadline = t0 + plan.duration + plan.finish_within;
    // `proxy` stays here: the node publishes through it until the end, after the faults.
    let faults = tokio::spawn(faults::inject_faults(edge, proxy.clone(), plan.clone(), t0));
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
                runs.push(
                    follow::one_analysis(&node, &plan, &ws_base, &video, id, seed, deadline)
                        .await?,
                );
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
    let report = check::check(
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
