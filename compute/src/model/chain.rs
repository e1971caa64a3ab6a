//! A chain manifest: a detector whose regions are cropped and handed, in batches, to a
//! second model whose output becomes each region's label and score. A user plugs a
//! classifier of their own onto a shipped detector by writing one, no code.

use serde::Deserialize;

use super::manifest::{Decision, Manifest, unit};
use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainManifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Model names: the detector, then the model that labels its regions.
    pub chain: Vec<String>,
    pub crop: CropSpec,
    pub decision: Decision,
    /// The file (or shipped name) it came from, for errors.
    #[serde(skip)]
    pub origin: String,
}

/// How regions are cut out for the next model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropSpec {
    /// Added on each side, as a fraction of the region's width and height.
    pub margin: f32,
    /// Per frame, the best-scoring regions first; the rest keep the detector's label.
    pub max_regions: usize,
}

impl ChainManifest {
    /// Parses a chain and checks what it can alone; [`ChainManifest::check_links`] checks
    /// the models it names.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let mut chain: Self =
            toml::from_str(text).map_err(|e| invalid(origin, format!("invalid manifest: {e}")))?;
        chain.origin = origin.to_owned();
        chain
            .check()
            .map_err(|e| invalid(origin, format!("invalid manifest: {e}")))?;
        Ok(chain)
    }

    fn check(&self) -> Result<(), String> {
        stagecast_shared::ids::check_id(&self.name).map_err(|e| format!("name: {e}"))?;
        if self.chain.len() != 2 {
            return Err(format!(
                "chain: names a detector and the model that labels its regions (2 names), got {}",
                self.chain.len()
            ));
        }
        unit("crop.margin", self.crop.margin.into())?;
        if !(1..=stagecast_shared::limits::MAX_REGIONS_PER_EVENT).contains(&self.crop.max_regions) {
            return Err(format!(
                "crop.max_regions must be in 1..={}",
                stagecast_shared::limits::MAX_REGIONS_PER_EVENT
            ));
        }
        unit("decision.threshold", self.decision.threshold)?;
        unit("decision.review_band", self.decision.review_band)
    }

    /// Each name must be a model of the catalog that can play its part.
    pub fn check_links(&self, models: &[Manifest]) -> Result<(), Error> {
        let fail = |message: String| invalid(&self.origin, format!("invalid manifest: {message}"));
        let find = |i: usize| {
            let name = &self.chain[i];
            models.iter().find(|m| &m.name == name).ok_or_else(|| {
                let known: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                fail(format!(
                    "chain[{i}]: {name:?} must name a model manifest (known: {})",
                    known.join(", ")
                ))
            })
        };
        let (detector, labeler) = (find(0)?, find(1)?);
        if !detector.output.finds_regions() {
            return Err(fail(format!(
                "chain[0]: {:?} must find regions (output.kind detector_probability_map or mtcnn)",
                detector.name
            )));
        }
        if !labeler.output.labels_regions() {
            return Err(fail(format!(
                "chain[1]: {:?} must label regions (output.kind classifier or ctc)",
                labeler.name
            )));
        }
        if labeler.input.shape[2] <= 0 {
            return Err(fail(format!(
                "chain[1]: {:?} has a dynamic input height; crops are resized to it, so input.shape needs a fixed H",
                labeler.name
            )));
        }
        Ok(())
    }
}

fn invalid(origin: &str, message: String) -> Error {
    Error::ModelLoadFailed {
        model: origin.to_owned(),
        message,
    }
}
