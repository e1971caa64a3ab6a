//! What a soak run saw, and the report it prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use stagecast_fixtures::{HEIGHT, WIDTH};

use super::Plan;

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
            "Plan: new analyses for {} s, {} at a time, {} subscribers each; the edge SIGKILLed and restarted every {}; the node's link cut {}; each subscriber dropped (no close frame) every {} s on average (exponential); inputs {} s of {WIDTH}x{HEIGHT} video at {} fps; seed {}.",
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
