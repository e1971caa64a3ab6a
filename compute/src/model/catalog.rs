//! The manifests a node knows: those shipped in `compute/models/` (built into the binary)
//! and any `*.toml` in the models folder, which add models or replace shipped ones by name.
//! A manifest with a `chain` key is a [`ChainManifest`]; any other names one model.

use std::path::{Path, PathBuf};

use super::chain::ChainManifest;
use super::manifest::Manifest;
use crate::error::Error;

const SHIPPED: &[(&str, &str)] = &[
    ("faces.toml", include_str!("../../models/faces.toml")),
    (
        "moderation.toml",
        include_str!("../../models/moderation.toml"),
    ),
    (
        "text-detect.toml",
        include_str!("../../models/text-detect.toml"),
    ),
    (
        "text-read.toml",
        include_str!("../../models/text-read.toml"),
    ),
    ("text-rec.toml", include_str!("../../models/text-rec.toml")),
];

/// The model the CLI and the daemon use when none is named.
pub const DEFAULT_MODEL: &str = "text-detect";

#[derive(Debug, Clone)]
pub struct Catalog {
    models_dir: PathBuf,
    manifests: Vec<Manifest>,
    chains: Vec<ChainManifest>,
}

/// What a name in the catalog stands for.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    Model(&'a Manifest),
    Chain(&'a ChainManifest),
}

impl Catalog {
    /// The shipped manifests plus those in `models_dir`; a broken manifest, or a chain
    /// whose models do not fit, is an error.
    pub fn load(models_dir: &Path) -> Result<Self, Error> {
        let mut catalog = Self {
            models_dir: models_dir.to_owned(),
            manifests: Vec::new(),
            chains: Vec::new(),
        };
        for (origin, text) in SHIPPED {
            catalog.add(text, origin)?;
        }
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
                catalog.add(&text, &origin)?;
            }
        }
        for chain in &catalog.chains {
            chain.check_links(&catalog.manifests)?;
        }
        catalog.manifests.sort_by(|a, b| a.name.cmp(&b.name));
        catalog.chains.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(catalog)
    }

    /// Adds one manifest; a later one replaces an earlier one of the same name.
    fn add(&mut self, text: &str, origin: &str) -> Result<(), Error> {
        let is_chain = text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("chain"));
        let name = if is_chain {
            let chain = ChainManifest::parse(text, origin)?;
            let name = chain.name.clone();
            self.remove(&name);
            self.chains.push(chain);
            name
        } else {
            let manifest = Manifest::parse(text, origin)?;
            let name = manifest.name.clone();
            self.remove(&name);
            self.manifests.push(manifest);
            name
        };
        tracing::debug!(%name, origin, "manifest");
        Ok(())
    }

    fn remove(&mut self, name: &str) {
        self.manifests.retain(|m| m.name != name);
        self.chains.retain(|c| c.name != name);
    }

    /// The model manifests, by name.
    pub fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    /// Every name, models and chains, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.manifests.iter().map(|m| m.name.as_str()).collect();
        names.extend(self.chains.iter().map(|c| c.name.as_str()));
        names.sort_unstable();
        names
    }

    /// What `name` stands for: a model or a chain.
    pub fn entry(&self, name: &str) -> Result<Entry<'_>, Error> {
        if let Some(chain) = self.chains.iter().find(|c| c.name == name) {
            return Ok(Entry::Chain(chain));
        }
        self.get(name).map(Entry::Model)
    }

    /// The model manifest `name`.
    pub fn get(&self, name: &str) -> Result<&Manifest, Error> {
        self.manifests
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownModel {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }

    /// Where the manifest's model file should be.
    pub fn model_path(&self, manifest: &Manifest) -> PathBuf {
        self.path(&manifest.file)
    }

    /// A file named relative to the models folder.
    pub fn path(&self, file: &Path) -> PathBuf {
        self.models_dir.join(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> &'static str {
        SHIPPED
            .iter()
            .find(|(file, _)| *file == name)
            .map(|(_, text)| *text)
            .unwrap()
    }

    #[test]
    fn folder_manifests_replace_shipped_ones_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let custom = shipped("text-detect.toml").replace("max_side = 960", "max_side = 640");
        std::fs::write(dir.path().join("mine.toml"), custom).unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        assert_eq!(
            catalog.names(),
            [
                "faces",
                "moderation",
                "text-detect",
                "text-read",
                "text-rec"
            ]
        );
        let m = catalog.get(DEFAULT_MODEL).unwrap();
        assert_eq!(m.input.max_side, Some(640));
        assert_eq!(
            catalog.model_path(m),
            dir.path().join("ch_PP-OCRv4_det_infer.onnx")
        );
        assert!(
            matches!(catalog.entry("text-read"), Ok(Entry::Chain(c)) if c.chain == ["text-detect", "text-rec"])
        );
        let e = catalog.get("nope").unwrap_err();
        assert_eq!(e.code(), "unknown_model");
        assert!(e.to_string().contains("text-detect, text-read"), "{e}");
    }

    /// Loading a folder holding `chain.toml` with `text` fails; the message.
    fn refused(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.toml");
        std::fs::write(&path, text).unwrap();
        let e = Catalog::load(dir.path()).unwrap_err();
        assert_eq!(e.code(), "model_load_failed");
        let message = e.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        message
    }

    #[test]
    fn a_chain_that_does_not_fit_is_refused_naming_the_field_and_the_rule() {
        let chain = |links: &str| {
            shipped("text-read.toml").replace(r#"["text-detect", "text-rec"]"#, links)
        };
        let missing = refused(&chain(r#"["faces", "deepfake"]"#));
        assert!(
            missing.contains(r#"chain[1]: "deepfake" must name a model manifest (known: faces,"#),
            "{missing}"
        );
        let not_a_detector = refused(&chain(r#"["moderation", "text-rec"]"#));
        assert!(
            not_a_detector.contains(r#"chain[0]: "moderation" must find regions"#),
            "{not_a_detector}"
        );
        let not_a_labeler = refused(&chain(r#"["faces", "text-detect"]"#));
        assert!(
            not_a_labeler.contains(r#"chain[1]: "text-detect" must label regions"#),
            "{not_a_labeler}"
        );
        let three = refused(&chain(r#"["faces", "moderation", "text-rec"]"#));
        assert!(
            three.contains("chain: names a detector and the model"),
            "{three}"
        );
        let margin = refused(&shipped("text-read.toml").replace("margin = 0.1", "margin = 2.0"));
        assert!(
            margin.contains("crop.margin must be in 0..=1, got 2"),
            "{margin}"
        );

        // a labeller whose input height follows the crop cannot take crops
        let dir = tempfile::tempdir().unwrap();
        let tall = shipped("moderation.toml")
            .replace(r#"name = "moderation""#, r#"name = "any-size""#)
            .replace("[-1, 3, 224, 224]", "[-1, 3, -1, -1]\nmax_side = 512");
        std::fs::write(dir.path().join("any-size.toml"), tall).unwrap();
        std::fs::write(
            dir.path().join("chain.toml"),
            chain(r#"["faces", "any-size"]"#),
        )
        .unwrap();
        let e = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(r#"chain[1]: "any-size" has a dynamic input height"#),
            "{e}"
        );
    }
}
