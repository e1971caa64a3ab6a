//! The manifests a node knows: those shipped in `compute/models/` (built into the binary)
//! and any `*.toml` in the models folder, which add models or replace shipped ones by name.

use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use crate::error::Error;

const SHIPPED: &[(&str, &str)] = &[(
    "text-detect.toml",
    include_str!("../../models/text-detect.toml"),
)];

/// The model the CLI and the daemon use when none is named.
pub const DEFAULT_MODEL: &str = "text-detect";

#[derive(Debug, Clone)]
pub struct Catalog {
    models_dir: PathBuf,
    manifests: Vec<Manifest>,
}

impl Catalog {
    /// The shipped manifests plus those in `models_dir`; a broken manifest is an error.
    pub fn load(models_dir: &Path) -> Result<Self, Error> {
        let mut manifests = SHIPPED
            .iter()
            .map(|(origin, text)| Manifest::parse(text, origin))
            .collect::<Result<Vec<_>, _>>()?;
        // A missing folder only means no extra manifests; loading a model reports it.
        if let Ok(entries) = std::fs::read_dir(models_dir) {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| Error::ModelLoadFailed {
                    model: origin.clone(),
                    message: e.to_string(),
                })?;
                let manifest = Manifest::parse(&text, &origin)?;
                manifests.retain(|m| m.name != manifest.name);
                manifests.push(manifest);
            }
        }
        manifests.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            models_dir: models_dir.to_owned(),
            manifests,
        })
    }

    pub fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    pub fn get(&self, name: &str) -> Result<&Manifest, Error> {
        self.manifests
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownModel {
                name: name.to_owned(),
                known: self
                    .manifests
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Where the manifest's model file should be.
    pub fn model_path(&self, manifest: &Manifest) -> PathBuf {
        self.models_dir.join(&manifest.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_manifests_replace_shipped_ones_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let custom = SHIPPED[0].1.replace("max_side = 960", "max_side = 640");
        std::fs::write(dir.path().join("mine.toml"), custom).unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        assert_eq!(catalog.manifests().len(), 1);
        let m = catalog.get(DEFAULT_MODEL).unwrap();
        assert_eq!(m.input.max_side, Some(640));
        assert_eq!(
            catalog.model_path(m),
            dir.path().join("ch_PP-OCRv4_det_infer.onnx")
        );
        let e = catalog.get("nope").unwrap_err();
        assert_eq!(e.code(), "unknown_model");
        assert!(e.to_string().contains("text-detect"), "{e}");
    }
}
