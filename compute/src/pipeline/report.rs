//! Sends updates and keeps each stage's progress inside the contract's rules.

use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::update::{Stage, StageUpdate, Update};
use stagecast_shared::event::{FrameScore, Region};
use stagecast_shared::limits::{MAX_REGIONS_PER_EVENT, MAX_SCORES_PER_EVENT};

/// Progress a stage may report before it is done: 1 is kept for [`Reporter::finish`].
const UNFINISHED_MAX: f64 = 0.99;

pub(crate) struct Reporter {
    tx: UnboundedSender<Update>,
    progress: [f64; Stage::ALL.len()],
    /// When each stage first reported, for the stage duration metric.
    began: [Option<Instant>; Stage::ALL.len()],
}

impl Reporter {
    pub(crate) fn new(tx: UnboundedSender<Update>) -> Self {
        Self {
            tx,
            progress: [0.0; Stage::ALL.len()],
            began: [None; Stage::ALL.len()],
        }
    }

    /// Nobody listening is not an error: the analysis goes on.
    pub(crate) fn send(&self, update: Update) {
        let _ = self.tx.send(update);
    }

    /// `done` frames of an expected `total` (unknown: the progress holds).
    pub(crate) fn frames(&mut self, stage: Stage, done: u64, total: Option<u64>) {
        self.emit(stage, fraction(done, total), Some((done, total)), None);
    }

    /// The same, saying what was done.
    pub(crate) fn frames_with(
        &mut self,
        stage: Stage,
        done: u64,
        total: Option<u64>,
        message: String,
    ) {
        self.emit(
            stage,
            fraction(done, total),
            Some((done, total)),
            Some(message),
        );
    }

    /// `done` bytes of `total` downloaded.
    pub(crate) fn bytes(&mut self, done: u64, total: Option<u64>) {
        let message = format!("{} MB", megabytes(done));
        self.emit(Stage::Fetch, fraction(done, total), None, Some(message));
    }

    pub(crate) fn finish(&mut self, stage: Stage, frames: Option<u64>, message: Option<String>) {
        self.emit(stage, 1.0, frames.map(|n| (n, Some(n))), message);
    }

    fn emit(
        &mut self,
        stage: Stage,
        fraction: f64,
        frames: Option<(u64, Option<u64>)>,
        message: Option<String>,
    ) {
        let i = stage.index();
        let progress = fraction.max(self.progress[i]);
        let began = *self.began[i].get_or_insert_with(Instant::now);
        if progress >= 1.0 && self.progress[i] < 1.0 {
            metrics::histogram!("stagecast_stage_seconds", "stage" => stage.name())
                .record(began.elapsed().as_secs_f64());
        }
        self.progress[i] = progress;
        self.send(Update::Progress(StageUpdate {
            stage,
            progress,
            frames_done: frames.map(|(done, _)| done),
            frames_total: frames.and_then(|(_, total)| total),
            message,
        }));
    }

    /// New regions and the scores of the frames they came from, in events small enough
    /// for the contract (the scores go with the first).
    pub(crate) fn partial(&self, regions: &[Region], scores: Vec<FrameScore>) {
        let mut scores = scores.chunks(MAX_SCORES_PER_EVENT).map(<[_]>::to_vec);
        let mut regions = regions.chunks(MAX_REGIONS_PER_EVENT).map(<[_]>::to_vec);
        loop {
            let (r, s) = (regions.next(), scores.next());
            if r.is_none() && s.is_none() {
                break;
            }
            self.send(Update::Partial {
                regions: r.unwrap_or_default(),
                scores: s.unwrap_or_default(),
            });
        }
    }
}

fn fraction(done: u64, total: Option<u64>) -> f64 {
    match total {
        Some(t) if t > 0 => (done as f64 / t as f64).min(UNFINISHED_MAX),
        _ => 0.0,
    }
}

pub(crate) fn megabytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}
