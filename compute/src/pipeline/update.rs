//! What a running analysis tells its watchers: the CLI's progress bars and, through the
//! reporter, the edge. Each update but an artifact maps to one contract event
//! ([`Update::to_event`]).

use stagecast_shared::event::{
    AnalysisResult, ErrorInfo, EventKind, FrameScore, Region, StageSpec,
};
use stagecast_shared::media::ArtifactName;

/// The pipeline's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Fetch,
    Decode,
    Preprocess,
    Infer,
    Postprocess,
    /// A chain's: the detector's regions cut out for the next model.
    Crop,
    /// A chain's: the next model labelling those regions.
    Label,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Fetch,
        Stage::Decode,
        Stage::Preprocess,
        Stage::Infer,
        Stage::Postprocess,
        Stage::Crop,
        Stage::Label,
    ];
    /// What a run of one model goes through; a chain adds [`Stage::Crop`] and
    /// [`Stage::Label`].
    pub const ONE_MODEL: [Stage; 5] = [
        Stage::Fetch,
        Stage::Decode,
        Stage::Preprocess,
        Stage::Infer,
        Stage::Postprocess,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Decode => "decode",
            Self::Preprocess => "preprocess",
            Self::Infer => "infer",
            Self::Postprocess => "postprocess",
            Self::Crop => "crop",
            Self::Label => "label",
        }
    }

    /// Share of the overall progress, roughly the share of time on a CPU node.
    pub fn weight(self) -> f64 {
        match self {
            Self::Fetch => 1.0,
            Self::Decode => 2.0,
            Self::Preprocess => 1.0,
            Self::Infer => 6.0,
            Self::Postprocess => 1.0,
            Self::Crop => 1.0,
            Self::Label => 6.0,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A stage advanced. `progress` is in 0..=1, never goes back, and is 1 once the stage is done.
#[derive(Debug, Clone, PartialEq)]
pub struct StageUpdate {
    pub stage: Stage,
    pub progress: f64,
    pub frames_done: Option<u64>,
    pub frames_total: Option<u64>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// First, always: the analysis runs these stages with this model (or chain).
    Started {
        model: String,
        stages: Vec<Stage>,
    },
    Progress(StageUpdate),
    /// Regions found in the latest batch (more may follow), and its frames' scores.
    Partial {
        regions: Vec<Region>,
        scores: Vec<FrameScore>,
    },
    /// A picture of what was found, for the edge to store: not an event of the node's
    /// (the edge announces it once stored).
    Artifact(Artifact),
    /// Last, exactly one of these three.
    Completed(AnalysisResult),
    Failed(ErrorInfo),
    Cancelled,
}

impl Update {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed(_) | Self::Failed(_) | Self::Cancelled)
    }

    /// The contract event this update publishes (without its `id` and `ts`), if any.
    pub fn to_event(&self) -> Option<EventKind> {
        Some(match self {
            Self::Artifact(_) => return None,
            Self::Started { model, stages } => EventKind::Started {
                stages: stages
                    .iter()
                    .map(|s| StageSpec {
                        name: s.name().to_owned(),
                        weight: s.weight(),
                    })
                    .collect(),
                total_frames: None,
                model: Some(model.clone()),
                node: None,
            },
            Self::Progress(u) => EventKind::Progress {
                stage: u.stage.name().to_owned(),
                stage_progress: u.progress,
                frames_done: u.frames_done,
                frames_total: u.frames_total,
                message: u.message.clone(),
            },
            Self::Partial { regions, scores } => EventKind::PartialResult {
                regions: regions.clone(),
                scores: (!scores.is_empty()).then(|| scores.clone()),
            },
            Self::Completed(result) => EventKind::Completed {
                result: result.clone(),
            },
            Self::Failed(error) => EventKind::Failed {
                error: error.clone(),
            },
            Self::Cancelled => EventKind::Cancelled { reason: None },
        })
    }
}

/// A picture of the run for its viewers (2 and 15 of the contract), stored at the edge as
/// it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub name: ArtifactName,
    /// `key_frame`, `result`, ...: what the picture is of.
    pub kind: &'static str,
    /// The frame it shows.
    pub frame: u64,
    pub bytes: Vec<u8>,
}
