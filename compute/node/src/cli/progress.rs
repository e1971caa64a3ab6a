//! Live progress on stderr, one bar per stage, drawn from contract events (so a local
//! run and a run watched on the edge look the same), and the readable result.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use stagecast_shared::event::{AnalysisResult, EventKind};
use stagecast_shared::snapshot::Snapshot;

/// Bar positions are thousandths of a stage.
const STEPS: u64 = 1000;
/// Regions printed in the human-readable result.
const REGIONS_SHOWN: usize = 20;

pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    stages: Vec<(String, ProgressBar)>,
    findings: ProgressBar,
    regions: u64,
}

impl Bars {
    pub fn new() -> Self {
        let style = ProgressStyle::with_template("{prefix:>11} [{bar:32}] {percent:>3}% {msg}")
            .expect("the template is valid")
            .progress_chars("=> ");
        let multi = MultiProgress::new();
        let findings =
            multi
                .add(ProgressBar::new(0).with_style(
                    ProgressStyle::with_template("{prefix:>11} {msg}").expect("valid"),
                ));
        findings.set_prefix("findings");
        findings.set_message("none yet");
        Self {
            multi,
            style,
            stages: Vec::new(),
            findings,
            regions: 0,
        }
    }

    fn add_stages<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        if !self.stages.is_empty() {
            return;
        }
        for name in names {
            let bar = ProgressBar::new(STEPS).with_style(self.style.clone());
            let bar = self.multi.insert_before(&self.findings, bar);
            bar.set_prefix(name.to_owned());
            self.stages.push((name.to_owned(), bar));
        }
    }

    /// Bars where a snapshot says the analysis stands (joining it midway).
    pub fn catch_up(&mut self, snapshot: &Snapshot) {
        self.add_stages(snapshot.stages.iter().map(|s| s.name.as_str()));
        for stage in &snapshot.stages {
            self.set(&stage.name, stage.progress, None);
        }
        self.regions = snapshot.regions_count;
        self.show_regions();
    }

    pub fn show(&mut self, event: &EventKind) {
        match event {
            EventKind::Started { stages, .. } => {
                self.add_stages(stages.iter().map(|s| s.name.as_str()))
            }
            EventKind::Progress {
                stage,
                stage_progress,
                frames_done,
                frames_total,
                message,
            } => {
                let frames = match (frames_done, frames_total) {
                    (Some(done), Some(total)) => format!("{done}/{total} frames"),
                    (Some(done), None) => format!("{done} frames"),
                    _ => String::new(),
                };
                let text = [frames, message.clone().unwrap_or_default()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.set(stage, *stage_progress, Some(text));
            }
            EventKind::PartialResult { regions, .. } => {
                self.regions += regions.len() as u64;
                self.show_regions();
            }
            EventKind::Heartbeat { .. } => {}
            EventKind::Completed { .. } => self.findings.finish(),
            // bars stop where the analysis stopped
            EventKind::Failed { .. } | EventKind::Cancelled { .. } => {
                self.stages.iter().for_each(|(_, bar)| bar.abandon());
                self.findings.abandon();
            }
        }
    }

    /// A line above the bars (edge notices such as `stalled`).
    pub fn note(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    fn set(&self, stage: &str, progress: f64, message: Option<String>) {
        let Some((_, bar)) = self.stages.iter().find(|(name, _)| name == stage) else {
            return;
        };
        bar.set_position((progress * STEPS as f64) as u64);
        if let Some(message) = message {
            bar.set_message(message);
        }
        if progress >= 1.0 {
            bar.finish();
        }
    }

    fn show_regions(&self) {
        self.findings
            .set_message(format!("{} regions so far", self.regions));
    }
}

pub fn print_result(what: &str, r: &AnalysisResult) {
    println!(
        "{what}: {} (score {:.3})",
        if r.flagged { "FLAGGED" } else { "not flagged" },
        r.score
    );
    if r.validation_required {
        println!("low confidence: a person should check this one");
    }
    println!("frames: {} of {}", r.frames_processed, r.total_frames);
    if let Some(summary) = &r.summary {
        println!("summary: {summary}");
    }
    for g in r.regions.iter().take(REGIONS_SHOWN) {
        println!(
            "  frame {:>5}  x {:>5} y {:>5} w {:>5} h {:>5}  score {:.2}  {}",
            g.frame,
            g.x,
            g.y,
            g.w,
            g.h,
            g.score,
            g.label.as_deref().unwrap_or("")
        );
    }
    if r.regions.len() > REGIONS_SHOWN {
        println!(
            "  ... and {} more (see --json)",
            r.regions.len() - REGIONS_SHOWN
        );
    }
}
