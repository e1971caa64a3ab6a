//! The end of a soak run: every subscriber's events against the edge's own log, every
//! analysis's end, and the node's delivery.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use stagecast_shared::StoredEvent;
use stagecast_shared::snapshot::Snapshot;
use stagecast_shared::stored::EventsPage;

use super::follow::Run;
use super::{AnalysisOutcome, Plan, Report};
use crate::Node;
use crate::client::{Delivery, Tokens, node_event, seq_and_id};

/// Reading the edge's log or a node view at the end, through any restart still under way.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads the edge's whole log of `id`, in seq order.
async fn edge_log(
    http: &reqwest::Client,
    base: &str,
    id: &str,
) -> anyhow::Result<Vec<StoredEvent>> {
    let token = Tokens::viewer(id);
    let mut events: Vec<StoredEvent> = Vec::new();
    loop {
        let since = events.last().map_or(0, |e| e.seq);
        let page: EventsPage = http
            .get(format!(
                "{base}/v1/analyses/{id}/events?since={since}&limit=1000"
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if page.events.is_empty() {
            return Ok(events);
        }
        events.extend(page.events);
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
pub(super) async fn check(
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
            let s: Snapshot = http
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
        .ok();
        let status = snapshot
            .as_ref()
            .map_or("unknown", |s| s.status.as_str())
            .to_owned();
        if status != "completed" {
            report
                .problems
                .push(format!("{id}: ended {status}, not completed: {snapshot:?}"));
        }
        let truth: Vec<(u64, String)> = log.iter().map(seq_and_id).collect();
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
            let Delivery {
                lost,
                repeated,
                exact,
            } = Delivery::check(&followed.events, &truth);
            report.lost += lost;
            report.repeated += repeated;
            if !exact {
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
        let from_node = log.iter().filter(|e| node_event(e).is_some()).count();
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
