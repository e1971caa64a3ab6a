//! Models: manifests, the catalog of them, and what a name loads, ready to run batches:
//! one model, or a chain of a detector and the model that labels its regions.

pub mod catalog;
pub mod chain;
pub mod manifest;
mod net;
mod shapes;

use ort::session::RunOptions;

pub use catalog::{Catalog, DEFAULT_MODEL, Entry};
pub use chain::CropSpec;
pub use manifest::Manifest;
pub use net::Net;

use crate::config::{Device, RuntimeOptions};
use crate::error::Error;
use manifest::{Decision, OutputSpec};

/// A tensor's name and shape as the model declares it (-1: dynamic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<i64>,
}

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One manifest's model loaded: its networks (MTCNN has three, others one).
#[derive(Debug)]
pub struct Link {
    manifest: Manifest,
    nets: Vec<Net>,
    /// A CTC model's characters, index 0 being the blank.
    characters: Vec<String>,
}

impl Link {
    fn load(
        catalog: &Catalog,
        manifest: &Manifest,
        options: &RuntimeOptions,
    ) -> Result<Self, Error> {
        let failed = |message: String| Error::ModelLoadFailed {
            model: manifest.name.clone(),
            message,
        };
        let mut files = vec![(manifest.file.as_path(), Some(manifest.input.name.as_str()))];
        if let OutputSpec::Mtcnn(m) = &manifest.output {
            files.extend([(m.rnet.as_path(), None), (m.onet.as_path(), None)]);
        }
        let nets = files
            .into_iter()
            .map(|(file, input)| Net::load(&catalog.path(file), input, options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&failed)?;
        let characters = match &manifest.output {
            OutputSpec::Ctc(c) => {
                let list = nets[0].metadata(&c.characters_key).ok_or_else(|| {
                    failed(format!(
                        "output.characters_key: the model's metadata has no {:?}",
                        c.characters_key
                    ))
                })?;
                // CTC's blank first, and PaddleOCR's space after the dictionary
                std::iter::once(String::new())
                    .chain(list.lines().map(str::to_owned))
                    .chain([" ".to_owned()])
                    .collect()
            }
            _ => Vec::new(),
        };
        let link = Self {
            manifest: manifest.clone(),
            nets,
            characters,
        };
        shapes::check(&link).map_err(&failed)?;
        for net in &link.nets {
            tracing::info!(
                model = %manifest.name,
                device = %options.device,
                input = ?net.input().shape,
                outputs = ?net.outputs().iter().map(|o| &o.shape).collect::<Vec<_>>(),
                "model loaded"
            );
        }
        Ok(link)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn nets(&self) -> &[Net] {
        &self.nets
    }

    pub fn characters(&self) -> &[String] {
        &self.characters
    }
}

/// What a catalog name loads. Shared between analyses behind an `Arc`.
#[derive(Debug)]
pub struct Model {
    name: String,
    device: Device,
    /// The detector, and for a chain the model that labels its regions.
    links: Vec<Link>,
    crop: Option<CropSpec>,
    decision: Decision,
}

impl Model {
    /// Loads the catalog's model or chain `name` and checks each model fits its manifest.
    pub fn load(catalog: &Catalog, name: &str, options: &RuntimeOptions) -> Result<Self, Error> {
        let (links, crop, decision) = match catalog.entry(name)? {
            Entry::Model(m) => (
                vec![Link::load(catalog, m, options)?],
                None,
                m.decision.clone(),
            ),
            Entry::Chain(c) => {
                let links = c
                    .chain
                    .iter()
                    .map(|n| Link::load(catalog, catalog.get(n)?, options))
                    .collect::<Result<Vec<_>, _>>()?;
                (links, Some(c.crop), c.decision.clone())
            }
        };
        Ok(Self {
            name: name.to_owned(),
            device: options.device,
            links,
            crop,
            decision,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The first model's manifest: the one frames go to.
    pub fn manifest(&self) -> &Manifest {
        &self.links[0].manifest
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// A chain's crop rule and the model its regions go to.
    pub fn next(&self) -> Option<(&Link, CropSpec)> {
        Some((self.links.get(1)?, self.crop?))
    }

    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Runs one batch through the first model's first network and returns its first
    /// output. Blocks: call it from a blocking thread.
    pub fn run(&self, batch: Tensor32, options: &RunOptions) -> Result<Tensor32, Error> {
        self.run_net((0, 0), batch, options)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::InferenceFailed("the model gave no output".into()))
    }

    /// Runs network `net` of link `link`, returning every output. Blocks.
    pub fn run_net(
        &self,
        (link, net): (usize, usize),
        batch: Tensor32,
        options: &RunOptions,
    ) -> Result<Vec<Tensor32>, Error> {
        self.links[link].nets[net].run(batch, options)
    }
}
