//! One ONNX file loaded into ONNX Runtime as a small pool of sessions (ort's `run` needs
//! `&mut`): concurrent analyses run side by side up to the pool's size, then take turns.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::session::{RunOptions, Session};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::{Tensor32, TensorInfo};
use crate::config::RuntimeOptions;
use crate::error::Error;
use crate::runtime;

pub struct Net {
    input: TensorInfo,
    outputs: Vec<TensorInfo>,
    sessions: Vec<Mutex<Session>>,
    /// Which busy session the next run waits for, when all are busy.
    next: AtomicUsize,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("input", &self.input)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl Net {
    /// Loads `path`; its input is `input` (or its first), and every output is f32.
    pub(super) fn load(
        path: &Path,
        input: Option<&str>,
        options: &RuntimeOptions,
    ) -> Result<Self, String> {
        if !path.is_file() {
            return Err(format!(
                "{} does not exist; run `make setup` or set --models-dir",
                path.display()
            ));
        }
        let env = runtime::environment(&options.ort_dylib).map_err(|e| e.to_string())?;
        let sessions = (0..options.sessions.max(1))
            .map(|_| {
                runtime::session_builder(&env, options.device, options.intra_threads)
                    .and_then(|mut b| b.commit_from_file(path).map_err(|e| e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let session = &sessions[0];
        let input = find_f32(session.inputs(), input)?;
        let outputs = (0..session.outputs().len())
            .map(|i| tensor_info(&session.outputs()[i]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            input,
            outputs,
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        })
    }

    pub fn input(&self) -> &TensorInfo {
        &self.input
    }

    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// A custom metadata value of the model file.
    pub(super) fn metadata(&self, key: &str) -> Option<String> {
        let session = self.sessions[0].lock().unwrap_or_else(|e| e.into_inner());
        session.metadata().ok()?.custom(key)
    }

    /// Runs one batch and returns every output, in the model's order. Blocks: call it
    /// from a blocking thread. `options.terminate()` from elsewhere stops it early.
    pub fn run(&self, batch: Tensor32, options: &RunOptions) -> Result<Vec<Tensor32>, Error> {
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
        self.outputs
            .iter()
            .map(|info| {
                let (shape, data) = outputs[info.name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(failed)?;
                Ok(Tensor32 {
                    shape: shape.iter().map(|&d| d as usize).collect(),
                    data: data.to_vec(),
                })
            })
            .collect()
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
    tensor_info(outlet)
}

fn tensor_info(outlet: &ort::value::Outlet) -> Result<TensorInfo, String> {
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
