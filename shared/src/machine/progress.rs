//! Stage progress and the overall progress derived from it.
//!
//! Overall progress = Σ weightᵢ · progressᵢ / Σ weightᵢ. Stage progress never
//! decreases and weights never change, so overall progress never decreases either
//! (floating-point addition and division are monotonic, and the sum is taken in a fixed
//! order).
//!
//! A stage starts at its first `progress` event and finishes when its progress reaches 1
//! (or when the analysis completes). A later stage starting does not finish earlier
//! ones: stages may run side by side (e.g. decode and inference pipelined), so only the
//! node knows when a stage is done.

use serde::{Deserialize, Serialize};

use crate::event::StageSpec;
use crate::snapshot::StageSnapshot;

use super::TransitionKind;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(super) struct Stages {
    stages: Vec<StageSnapshot>,
    /// Index of the stage named by the latest `progress` event.
    current: Option<usize>,
}

impl Stages {
    pub(super) fn new(specs: &[StageSpec]) -> Self {
        let stages = specs
            .iter()
            .map(|spec| StageSnapshot {
                name: spec.name.clone(),
                weight: spec.weight,
                progress: 0.0,
                started_ts: None,
                finished_ts: None,
            })
            .collect();
        Self {
            stages,
            current: None,
        }
    }

    /// Applies a `progress` event received at `now`.
    pub(super) fn advance(
        &mut self,
        name: &str,
        progress: f64,
        now: i64,
    ) -> Result<(), TransitionKind> {
        let index = self
            .stages
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| TransitionKind::UnknownStage {
                stage: name.to_owned(),
            })?;
        let stage = &mut self.stages[index];
        if progress < stage.progress {
            return Err(TransitionKind::ProgressBackwards {
                stage: name.to_owned(),
                from: stage.progress,
                to: progress,
            });
        }
        stage.progress = progress;
        stage.started_ts.get_or_insert(now);
        if progress >= 1.0 {
            stage.finished_ts.get_or_insert(now);
        }
        self.current = Some(index);
        Ok(())
    }

    /// Sets every stage to 1; those not finished yet finish at `now`.
    pub(super) fn complete(&mut self, now: i64) {
        for stage in &mut self.stages {
            stage.progress = 1.0;
            stage.finished_ts.get_or_insert(now);
        }
    }

    /// Overall progress in 0..=1 (0 before `started`).
    pub(super) fn overall(&self) -> f64 {
        let total: f64 = self.stages.iter().map(|s| s.weight).sum();
        if total <= 0.0 {
            return 0.0;
        }
        let done: f64 = self.stages.iter().map(|s| s.weight * s.progress).sum();
        (done / total).clamp(0.0, 1.0)
    }

    pub(super) fn current_name(&self) -> Option<&str> {
        self.current.map(|i| self.stages[i].name.as_str())
    }

    pub(super) fn snapshot(&self) -> Vec<StageSnapshot> {
        self.stages.clone()
    }
}
