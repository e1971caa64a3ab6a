//! Command line: flags, and one module per command.

mod analyze;
mod models;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stagecast_compute::config::{self, Device, ENV_MODELS_DIR, ENV_ORT_DYLIB};
use stagecast_compute::model::DEFAULT_MODEL;
use stagecast_compute::{PipelineOptions, RuntimeOptions};

#[derive(Debug, Parser)]
#[command(
    name = "stagecast-node",
    version,
    about = "Stagecast compute node: runs ONNX analyses and reports their progress"
)]
pub struct Cli {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Folder of the .onnx model files that manifests name (extra manifests, *.toml, may sit there too)
    #[arg(long, global = true, env = ENV_MODELS_DIR, default_value_os_t = config::default_models_dir())]
    pub models_dir: PathBuf,
    /// ONNX Runtime shared library (libonnxruntime.so) to load
    #[arg(long, global = true, env = ENV_ORT_DYLIB, default_value_os_t = config::default_ort_dylib())]
    pub ort_dylib: PathBuf,
    /// Where inference runs: cpu, or cuda (needs a build with `--features cuda`; fails rather than falling back)
    #[arg(long, global = true, env = "STAGECAST_DEVICE", default_value = "cpu")]
    pub device: Device,
}

impl NodeArgs {
    fn runtime(&self, threads: Option<usize>) -> RuntimeOptions {
        RuntimeOptions {
            ort_dylib: self.ort_dylib.clone(),
            models_dir: self.models_dir.clone(),
            device: self.device,
            intra_threads: threads.unwrap_or_else(config::default_threads),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Analyse one image or video (a path or an http(s) URL) here, showing each stage's progress
    Analyze(AnalyzeArgs),
    /// List the model manifests and check that each model loads
    Models,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Image or video: a local path or an http(s) URL
    pub input: String,
    /// Model manifest to run (see `stagecast-node models`)
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Video frames sampled per second of footage
    #[arg(long, default_value_t = PipelineOptions::default().fps, value_parser = positive_fps)]
    pub fps: f64,
    /// Frames per inference call
    #[arg(long, default_value_t = PipelineOptions::default().batch_size, value_parser = count)]
    pub batch_size: usize,
    /// Threads ONNX Runtime uses inside an operator [default: all cores]
    #[arg(long, value_parser = count)]
    pub threads: Option<usize>,
    /// Print each update and the result as newline-delimited JSON (contract events) on stdout
    #[arg(long)]
    pub json: bool,
}

fn positive_fps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(fps) if fps.is_finite() && fps > 0.0 => Ok(fps),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number above 0")),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Analyze(args) => analyze::run(&cli.node, args).await,
        Command::Models => models::run(&cli.node).await,
    }
}
