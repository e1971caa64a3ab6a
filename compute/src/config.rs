//! Settings of a node and of one analysis, with the defaults `make setup` installs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The tool and model cache `make setup` fills.
pub const ENV_CACHE: &str = "STAGECAST_CACHE";
/// Folder of `.onnx` files (and optional extra manifests).
pub const ENV_MODELS_DIR: &str = "STAGECAST_MODELS_DIR";
/// ONNX Runtime shared library, loaded at run time.
pub const ENV_ORT_DYLIB: &str = "STAGECAST_ORT_DYLIB";

/// ONNX Runtime version that `make setup` unpacks from PyPI's wheel (docs/toolchain.md, "5. ONNX Runtime, offline").
const ORT_VERSION: &str = "1.32.0";

/// Where `make setup` puts ONNX Runtime and the demo models: `STAGECAST_CACHE`, else
/// `~/.cache/stagecast` (the same rule as scripts/lib.sh).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os(ENV_CACHE) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/stagecast"),
    }
}

pub fn default_models_dir() -> PathBuf {
    cache_dir().join("models")
}

pub fn default_ort_dylib() -> PathBuf {
    cache_dir()
        .join("onnxruntime")
        .join(ORT_VERSION)
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// All cores: ONNX Runtime's intra-op default.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider; needs the `cuda` cargo feature.
    Cuda,
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!("unknown device {other:?}: use cpu or cuda")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

/// How models are loaded and run on this node. The default reads STAGECAST_ORT_DYLIB and
/// STAGECAST_MODELS_DIR, falling back to where `make setup` installs them.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub ort_dylib: PathBuf,
    pub models_dir: PathBuf,
    pub device: Device,
    /// Threads ONNX Runtime uses inside one operator.
    pub intra_threads: usize,
    /// Sessions per model: how many batches of one model may run at once.
    pub sessions: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            ort_dylib: std::env::var_os(ENV_ORT_DYLIB)
                .map(PathBuf::from)
                .unwrap_or_else(default_ort_dylib),
            models_dir: std::env::var_os(ENV_MODELS_DIR)
                .map(PathBuf::from)
                .unwrap_or_else(default_models_dir),
            device: Device::Cpu,
            intra_threads: default_threads(),
            sessions: 1,
        }
    }
}

/// Settings of one analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOptions {
    /// Video frames sampled per second of footage (capped at the video's own rate).
    pub fps: f64,
    /// Frames per inference call (capped by a model with a fixed batch dimension).
    pub batch_size: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            fps: 2.0,
            batch_size: 4,
        }
    }
}
