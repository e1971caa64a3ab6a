//! Adds up per-frame findings into the final result.

use stagecast_shared::event::{AnalysisResult, Region};
use stagecast_shared::limits::MAX_REGIONS_PER_EVENT;

use super::postprocess::FrameFindings;
use crate::model::manifest::Decision;

#[derive(Debug, Default)]
pub(crate) struct Tally {
    frames: u64,
    frames_with_regions: u64,
    score: f64,
    regions: Vec<Region>,
}

impl Tally {
    pub(crate) fn add(&mut self, findings: Vec<FrameFindings>) {
        for f in findings {
            self.frames += 1;
            self.frames_with_regions += u64::from(!f.regions.is_empty());
            // the analysis is as suspicious as its most suspicious frame
            self.score = self.score.max(f.score);
            self.regions.extend(f.regions);
        }
    }

    pub(crate) fn frames(&self) -> u64 {
        self.frames
    }

    /// The result; past the contract's bound on regions, the best-scoring ones are kept.
    /// The result; `frame_size` is the analysed frames' (width, height) in pixels.
    pub(crate) fn finish(mut self, decision: &Decision, frame_size: (u32, u32)) -> AnalysisResult {
        let found = self.regions.len();
        let mut summary = format!(
            "{found} regions in {} of {} frames, best score {:.2}",
            self.frames_with_regions, self.frames, self.score
        );
        if found > MAX_REGIONS_PER_EVENT {
            self.regions.sort_by(|a, b| b.score.total_cmp(&a.score));
            self.regions.truncate(MAX_REGIONS_PER_EVENT);
            self.regions.sort_by_key(|r| r.frame);
            summary.push_str(&format!("; the {MAX_REGIONS_PER_EVENT} best are listed"));
        }
        AnalysisResult {
            score: self.score,
            flagged: decision.flagged(self.score),
            frames_processed: self.frames,
            total_frames: self.frames,
            regions: self.regions,
            validation_required: decision.needs_review(self.score),
            summary: Some(summary),
            frame_width: Some(frame_size.0.into()),
            frame_height: Some(frame_size.1.into()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use stagecast_shared::event::Units;

    /// A region of `frame` scoring `score`, for the pipeline's tests.
    pub(in crate::pipeline) fn region(frame: u64, score: f64) -> Region {
        Region {
            frame,
            x: 0.0,
            y: 0.0,
            w: 1.0,
            h: 1.0,
            units: Some(Units::Px),
            score,
            label: None,
            points: None,
        }
    }

    #[test]
    fn keeps_the_best_regions_within_the_contract_bound() {
        let mut tally = Tally::default();
        let frames = (0..1200u64).map(|i| FrameFindings {
            frame: i,
            score: i as f64 / 2000.0,
            regions: vec![region(i, i as f64 / 2000.0)],
        });
        tally.add(frames.collect());
        tally.add(vec![FrameFindings {
            frame: 1200,
            score: 0.0,
            regions: vec![],
        }]);
        let r = tally.finish(
            &Decision {
                threshold: 0.7,
                review_band: 0.1,
            },
            (640, 360),
        );
        assert_eq!((r.frame_width, r.frame_height), (Some(640), Some(360)));
        assert_eq!(
            (r.frames_processed, r.regions.len()),
            (1201, MAX_REGIONS_PER_EVENT)
        );
        assert_eq!(r.regions[0].frame, 200, "the 200 lowest scores are dropped");
        assert!((r.score - 0.5995).abs() < 1e-9 && !r.flagged && !r.validation_required);
        assert!(
            r.summary
                .unwrap()
                .starts_with("1200 regions in 1200 of 1201 frames")
        );
    }
}
