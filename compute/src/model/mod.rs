//! Models: manifests, the catalog of them, and a loaded ONNX session ready to run batches.

pub mod catalog;
pub mod manifest;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::session::{RunOptions, Session};
use ort::value::{Tensor, TensorElementType, ValueType};

pub use catalog::{Catalog, DEFAULT_MODEL};
pub use manifest::Manifest;

use crate::config::{Device, RuntimeOptions};
use crate::error::Error;
use crate::runtime;
use manifest::OutputSpec;

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

/// A model loaded into ONNX Runtime as a small pool of sessions (ort's `run` needs
/// `&mut`): concurrent analyses run side by side up to the pool's size, then take turns.
pub struct Model {
    manifest: Manifest,
    device: Device,
    input: TensorInfo,
    output: TensorInfo,
    sessions: Vec<Mutex<Session>>,
    /// Which busy session the next run waits for, when all are busy.
    next: AtomicUsize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name)
            .field("device", &self.device)
            .field("input", &self.input)
            .field("output", &self.output)
            .finish()
    }
}

impl Model {
    /// Loads the catalog's model `name` and checks it matches its manifest.
    pub fn load(catalog: &Catalog, name: &str, options: &RuntimeOptions) -> Result<Self, Error> {
        let manifest = catalog.get(name)?.clone();
        let path = catalog.model_path(&manifest);
        let failed = |message: String| Error::ModelLoadFailed {
            model: manifest.name.clone(),
            message,
        };
        if !path.is_file() {
            return Err(failed(format!(
                "{} does not exist; run `make setup` or set --models-dir",
                path.display()
            )));
        }
        let env = runtime::environment(&options.ort_dylib)?;
        let sessions = (0..options.sessions.max(1))
            .map(|_| {
                runtime::session_builder(&env, options.device, options.intra_threads)
                    .and_then(|mut b| b.commit_from_file(&path).map_err(|e| e.to_string()))
                    .map_err(&failed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let session = &sessions[0];
        let input = find_f32(session.inputs(), Some(&manifest.input.name)).map_err(&failed)?;
        let output = find_f32(session.outputs(), None).map_err(&failed)?;
        check_shapes(&manifest, &input, &output).map_err(&failed)?;
        tracing::info!(
            model = %manifest.name,
            device = %options.device,
            input = ?input.shape,
            output = ?output.shape,
            "model loaded"
        );
        Ok(Self {
            manifest,
            device: options.device,
            input,
            output,
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn input(&self) -> &TensorInfo {
        &self.input
    }

    pub fn output(&self) -> &TensorInfo {
        &self.output
    }

    /// Runs one batch `[B, 3, H, W]` and returns the model's (first) output. Blocks: call
    /// it from a blocking thread. `options.terminate()` from elsewhere stops it early.
    pub fn run(&self, batch: Tensor32, options: &RunOptions) -> Result<Tensor32, Error> {
        let failed = |e: ort::Error| Error::InferenceFailed(e.to_string());
        let input = Tensor::from_array((batch.shape, batch.data)).map_err(failed)?;
        let mut session = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock().ok())
            .unwrap_or_else(|| {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
                self.sessions[i].lock().unwrap_or_else(|e| e.into_inner())
            });
        let outputs = session
            .run_with_options(ort::inputs![self.input.name.as_str() => input], options)
            .map_err(failed)?;
        let (shape, data) = outputs[self.output.name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(failed)?;
        Ok(Tensor32 {
            shape: shape.iter().map(|&d| d as usize).collect(),
            data: data.to_vec(),
        })
    }
}

/// The f32 tensor named `name` (or the first one) among a session's inputs or outputs.
fn find_f32(outlets: &[ort::value::Outlet], name: Option<&str>) -> Result<TensorInfo, String> {
    let names = || {
        outlets
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let outlet = match name {
        Some(name) => outlets.iter().find(|o| o.name() == name),
        None => outlets.first(),
    }
    .ok_or_else(|| format!("the model has no tensor {name:?}; it has: {}", names()))?;
    match outlet.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } => Ok(TensorInfo {
            name: outlet.name().to_owned(),
            shape: shape.to_vec(),
        }),
        other => Err(format!(
            "{} is {other}, not a float32 tensor",
            outlet.name()
        )),
    }
}

/// The manifest's input shape and output kind must fit what the model declares.
fn check_shapes(
    manifest: &Manifest,
    input: &TensorInfo,
    output: &TensorInfo,
) -> Result<(), String> {
    let declared = manifest.input.shape;
    let fits = input.shape.len() == 4
        && input
            .shape
            .iter()
            .zip(declared)
            .all(|(&model, mine)| model == mine || model == -1);
    if !fits {
        return Err(format!(
            "input {} is {:?} in the model but {declared:?} in the manifest",
            input.name, input.shape
        ));
    }
    let classes = match &manifest.output {
        OutputSpec::DetectorProbabilityMap(_) => {
            return match output.shape.as_slice() {
                [_, 1, _, _] | [_, -1, _, _] => Ok(()),
                other => Err(format!(
                    "a probability map is [B, 1, H, W], the model gives {other:?}"
                )),
            };
        }
        OutputSpec::Classifier(c) => c.labels.len() as i64,
    };
    match output.shape.as_slice() {
        [_, n] if *n == classes || *n == -1 => Ok(()),
        other => Err(format!(
            "a classifier with {classes} labels gives [B, {classes}], the model gives {other:?}"
        )),
    }
}
