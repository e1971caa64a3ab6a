//! A model's manifest: which file, how to feed it and how to read what it says.
//!
//! Manifests are small TOML files (see `compute/models/`); the model file they name is
//! resolved under the models folder, so no model is ever committed.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What `--model` and `started.model` call it.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The `.onnx` file, relative to the models folder.
    pub file: PathBuf,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// `[B, 3, H, W]`; -1 marks a dynamic dimension. A fixed H with a dynamic W is a text
    /// line: W follows the aspect ratio up to `max_side`.
    pub shape: [i64; 4],
    /// How the tensor lays those dimensions out.
    #[serde(default)]
    pub layout: Layout,
    /// Dynamic H and W are rounded to a multiple of this.
    #[serde(default = "one")]
    pub size_multiple: u32,
    /// Cap on the longer side when H and W are dynamic; frames are never upscaled.
    pub max_side: Option<u32>,
    #[serde(default)]
    pub channel_order: ChannelOrder,
    /// Multiplies 0..=255 pixel values before `mean` and `std` apply.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// The order of a tensor's dimensions; `shape` is always written `[B, C, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    #[default]
    Nchw,
    /// Channels last (TensorFlow's).
    Nhwc,
    /// Channels last with width before height: Keras ports such as MTCNN's.
    Nwhc,
}

impl Layout {
    /// `[B, C, H, W]` in this layout's order.
    pub fn order(self, [b, c, h, w]: [i64; 4]) -> [i64; 4] {
        match self {
            Self::Nchw => [b, c, h, w],
            Self::Nhwc => [b, h, w, c],
            Self::Nwhc => [b, w, h, c],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputSpec {
    /// `[B, 1, H, W]` per-pixel probabilities (DB-style): regions are the connected
    /// components above a threshold.
    DetectorProbabilityMap(DetectorSpec),
    /// `[B, classes]` scores for the whole frame.
    Classifier(ClassifierSpec),
    /// `[B, T, characters]` per-step probabilities of a text line (CRNN/SVTR with CTC):
    /// the label is the text read.
    Ctc(CtcSpec),
    /// MTCNN's three networks: `file` is P-Net; faces come out as boxes with five landmarks.
    Mtcnn(MtcnnSpec),
}

impl OutputSpec {
    /// Whether the output is regions of a frame that a next model can label.
    pub fn finds_regions(&self) -> bool {
        matches!(self, Self::DetectorProbabilityMap(_) | Self::Mtcnn(_))
    }

    /// Whether the output can label a region cropped out for it.
    pub fn labels_regions(&self) -> bool {
        matches!(self, Self::Classifier(_) | Self::Ctc(_))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtcSpec {
    /// The model's metadata key holding its characters, one a line (PaddleOCR's
    /// `character`); index 0 is CTC's blank and a space follows the last.
    pub characters_key: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtcnnSpec {
    /// R-Net and O-Net, relative to the models folder.
    pub rnet: PathBuf,
    pub onet: PathBuf,
    pub label: String,
    /// The smallest face looked for, in frame pixels (the pyramid's first scale).
    pub min_face_size: u32,
    /// Each pyramid level's scale over the one before, in 0..1.
    pub scale_factor: f64,
    /// Face probability each network must reach: P-Net, R-Net, O-Net.
    pub thresholds: [f32; 3],
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// The `label` of every region found.
    pub label: String,
    pub pixel_threshold: f32,
    pub box_threshold: f32,
    pub unclip_ratio: f32,
    pub min_size: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// One per output class, in order.
    pub labels: Vec<String>,
    /// The classes whose probability is the frame's score.
    pub flag_labels: Vec<String>,
    pub activation: Activation,
}

/// Turns raw classifier outputs into probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Softmax,
    Sigmoid,
    /// The model already outputs probabilities.
    None,
}

/// How the analysis score becomes `flagged` and `validation_required`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub threshold: f64,
    pub review_band: f64,
}

impl Decision {
    pub fn flagged(&self, score: f64) -> bool {
        score >= self.threshold
    }

    /// A score this close to the threshold is low confidence.
    pub fn needs_review(&self, score: f64) -> bool {
        (score - self.threshold).abs() <= self.review_band
    }
}

impl Manifest {
    /// Parses and checks a manifest; `origin` names it in errors (e.g. its file name).
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let invalid = |message: String| Error::ModelLoadFailed {
            model: origin.to_owned(),
            message,
        };
        let manifest: Self =
            toml::from_str(text).map_err(|e| invalid(format!("invalid manifest: {e}")))?;
        manifest
            .check()
            .map_err(|e| invalid(format!("invalid manifest: {e}")))?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        stagecast_shared::ids::check_id(&self.name).map_err(|e| format!("name: {e}"))?;
        self.input.check()?;
        match &self.output {
            OutputSpec::DetectorProbabilityMap(d) => {
                unit("pixel_threshold", d.pixel_threshold.into())?;
                unit("box_threshold", d.box_threshold.into())?;
                if !(d.unclip_ratio.is_finite() && d.unclip_ratio >= 0.0) {
                    return Err("unclip_ratio must be >= 0".into());
                }
            }
            OutputSpec::Ctc(_) => {}
            OutputSpec::Mtcnn(m) => {
                for (i, t) in m.thresholds.iter().enumerate() {
                    unit(&format!("output.thresholds[{i}]"), (*t).into())?;
                }
                if !(m.scale_factor > 0.0 && m.scale_factor < 1.0) {
                    return Err("output.scale_factor must be in 0..1 (exclusive)".into());
                }
                if m.min_face_size < 12 {
                    return Err("output.min_face_size must be >= 12 (P-Net's window)".into());
                }
                if self.input.layout != Layout::Nwhc {
                    return Err("input.layout: MTCNN's networks take \"nwhc\"".into());
                }
            }
            OutputSpec::Classifier(c) => {
                if c.labels.is_empty() || c.flag_labels.is_empty() {
                    return Err("labels and flag_labels must not be empty".into());
                }
                if let Some(l) = c.flag_labels.iter().find(|l| !c.labels.contains(l)) {
                    return Err(format!("flag label {l:?} is not one of labels"));
                }
            }
        }
        unit("decision.threshold", self.decision.threshold)?;
        unit("decision.review_band", self.decision.review_band)
    }
}

pub(super) fn unit(what: &str, v: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{what} must be in 0..=1, got {v}"))
    }
}

impl InputSpec {
    fn check(&self) -> Result<(), String> {
        let [b, c, h, w] = self.shape;
        if c != 3 {
            return Err(format!("input.shape: expected 3 channels, got {c}"));
        }
        if [b, h, w].iter().any(|&d| d == 0 || d < -1) {
            return Err("input.shape: dimensions are -1 (dynamic) or positive".into());
        }
        if h == -1 && w != -1 {
            return Err("input.shape: a dynamic H needs a dynamic W".into());
        }
        if w == -1 && self.max_side.is_none_or(|m| m < self.size_multiple) {
            return Err("input.max_side (>= size_multiple) is needed for a dynamic W".into());
        }
        if self.size_multiple == 0 {
            return Err("input.size_multiple must be positive".into());
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.scale) || !self.std.iter().copied().all(positive) {
            return Err("input.scale and input.std must be positive".into());
        }
        Ok(())
    }

    /// The model's input size `(width, height)` for frames of `width x height`:
    /// a fixed size as is; a dynamic one keeps the aspect ratio, scales the longer side
    /// down to `max_side` and rounds each side to `size_multiple`; a fixed height with a
    /// dynamic width scales to that height, the width capped at `max_side`.
    pub fn size_for(&self, width: u32, height: u32) -> (u32, u32) {
        let [_, _, h, w] = self.shape;
        if w > 0 {
            return (w as u32, h as u32);
        }
        if h > 0 {
            let m = self.size_multiple as f64;
            let scaled = (width as f64 * h as f64 / height.max(1) as f64).ceil();
            let capped = scaled.min(self.max_side.unwrap_or(u32::MAX) as f64);
            return (((capped / m).ceil().max(1.0) * m) as u32, h as u32);
        }
        let max_side = self.max_side.unwrap_or(u32::MAX) as f64;
        let ratio = (max_side / width.max(height).max(1) as f64).min(1.0);
        let m = self.size_multiple as f64;
        let round = |side: u32| ((side as f64 * ratio / m).round().max(1.0) * m) as u32;
        (round(width), round(height))
    }

    /// The batch size a model with a fixed batch dimension takes.
    pub fn max_batch(&self) -> Option<usize> {
        (self.shape[0] > 0).then_some(self.shape[0] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT_DETECT: &str = include_str!("../../models/text-detect.toml");

    #[test]
    fn shipped_manifest_parses() {
        let m = Manifest::parse(TEXT_DETECT, "text-detect.toml").unwrap();
        assert_eq!(m.name, "text-detect");
        assert_eq!(m.input.shape, [-1, 3, -1, -1]);
        assert!(matches!(m.output, OutputSpec::DetectorProbabilityMap(_)));
    }

    #[test]
    fn dynamic_size_keeps_aspect_and_rounds() {
        let m = Manifest::parse(TEXT_DETECT, "t").unwrap();
        assert_eq!(m.input.size_for(1920, 1080), (960, 544));
        assert_eq!(m.input.size_for(640, 360), (640, 352));
        assert_eq!(m.input.size_for(10, 10), (32, 32));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        let typo = TEXT_DETECT.replace("box_threshold", "box_treshold");
        let e = Manifest::parse(&typo, "t").unwrap_err();
        assert_eq!(e.code(), "model_load_failed");
        assert!(e.to_string().contains("box_treshold"), "{e}");

        let gray = TEXT_DETECT.replace("[-1, 3, -1, -1]", "[-1, 1, -1, -1]");
        assert!(Manifest::parse(&gray, "t").is_err());
        let half_fixed = TEXT_DETECT.replace("[-1, 3, -1, -1]", "[-1, 3, -1, 640]");
        assert!(Manifest::parse(&half_fixed, "t").is_err());
    }

    #[test]
    fn classifier_flag_labels_must_be_labels() {
        let base = TEXT_DETECT.split("[output]").next().unwrap();
        let classifier = |flags: &str| {
            format!(
                "{base}[output]\nkind = \"classifier\"\nlabels = [\"safe\", \"unsafe\"]\n\
                 flag_labels = {flags}\nactivation = \"softmax\"\n\
                 [decision]\nthreshold = 0.5\nreview_band = 0.1\n"
            )
        };
        assert!(Manifest::parse(&classifier("[\"unsafe\"]"), "c").is_ok());
        assert!(Manifest::parse(&classifier("[\"other\"]"), "c").is_err());
    }

    #[test]
    fn review_band_surrounds_threshold() {
        let d = Decision {
            threshold: 0.7,
            review_band: 0.1,
        };
        assert!(d.flagged(0.7) && !d.flagged(0.69));
        assert!(d.needs_review(0.65) && d.needs_review(0.75) && !d.needs_review(0.5));
    }
}
