//! Live progress on stderr: one bar per stage.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use stagecast_compute::{Stage, Update};

/// Bar positions are thousandths of a stage.
const STEPS: u64 = 1000;

pub struct Bars {
    // draws the bars; kept alive with them
    _multi: MultiProgress,
    bars: HashMap<Stage, ProgressBar>,
    regions: usize,
}

impl Bars {
    pub fn new() -> Self {
        let style = ProgressStyle::with_template("{prefix:>11} [{bar:32}] {percent:>3}% {msg}")
            .expect("the template is valid")
            .progress_chars("=> ");
        let multi = MultiProgress::new();
        let bars = Stage::ALL
            .iter()
            .map(|&stage| {
                let bar = multi.add(ProgressBar::new(STEPS).with_style(style.clone()));
                bar.set_prefix(stage.name());
                (stage, bar)
            })
            .collect();
        Self {
            _multi: multi,
            bars,
            regions: 0,
        }
    }

    pub fn show(&mut self, update: &Update) {
        match update {
            Update::Progress(u) => {
                let bar = &self.bars[&u.stage];
                bar.set_position((u.progress * STEPS as f64) as u64);
                let frames = match (u.frames_done, u.frames_total) {
                    (Some(done), Some(total)) => format!("{done}/{total} frames"),
                    (Some(done), None) => format!("{done} frames"),
                    _ => String::new(),
                };
                let regions = match u.stage {
                    Stage::Postprocess => format!("{} regions", self.regions),
                    _ => String::new(),
                };
                let message = [frames, u.message.clone().unwrap_or_default(), regions]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                bar.set_message(message);
                if u.progress >= 1.0 {
                    bar.finish();
                }
            }
            // counted now, shown with the next postprocess progress
            Update::Partial(regions) => self.regions += regions.len(),
            Update::Started { .. } | Update::Completed(_) => {}
            // bars stop where the analysis stopped
            Update::Failed(_) | Update::Cancelled => {
                self.bars.values().for_each(ProgressBar::abandon)
            }
        }
    }
}
