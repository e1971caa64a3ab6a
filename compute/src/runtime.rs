//! The process's one ONNX Runtime environment, loaded from a shared library at run time.

use std::path::Path;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::SessionBuilder;

use crate::config::{Device, ENV_ORT_DYLIB};
use crate::error::Error;

// ort allows one environment per process; every model shares it.
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Loads ONNX Runtime from `dylib` on first use; later calls return the same environment.
pub fn environment(dylib: &Path) -> Result<Environment, Error> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    if !dylib.is_file() {
        return Err(Error::RuntimeUnavailable(format!(
            "{} does not exist; run `make setup` or point {ENV_ORT_DYLIB} / --ort-dylib at libonnxruntime.so",
            dylib.display()
        )));
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::RuntimeUnavailable(format!("loading {}: {e}", dylib.display()))
    };
    let env = ort::init_from(dylib)
        .map_err(|e| unavailable(&e))?
        .with_name("stagecast")
        .with_telemetry(false)
        .build()
        .map_err(|e| unavailable(&e))?;
    *slot = Some(env.clone());
    Ok(env)
}

/// A session builder for `device`; asking for CUDA where it cannot run is an error,
/// never a silent fall back to the CPU.
pub fn session_builder(
    env: &Environment,
    device: Device,
    intra_threads: usize,
) -> Result<SessionBuilder, String> {
    let builder = Session::builder(env)
        .and_then(|b| Ok(b.with_intra_threads(intra_threads.max(1))?))
        .map_err(|e| e.to_string())?;
    match device {
        Device::Cpu => Ok(builder),
        #[cfg(feature = "cuda")]
        Device::Cuda => builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| format!("CUDA execution provider: {e}")),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err("this build has no CUDA support; build with `--features cuda`".into()),
    }
}
