//! Command line: flags, and one module per command. Every flag also reads an environment
//! variable and a key of the `--config` TOML file, in that order of precedence.

mod analyze;
mod config_file;
mod edge;
mod input;
mod models;
mod progress;
mod serve;
mod submit;
mod token;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stagecast_compute::config::{self, Device, ENV_MODELS_DIR, ENV_ORT_DYLIB};
use stagecast_compute::model::DEFAULT_MODEL;
use stagecast_compute::{PipelineOptions, RuntimeOptions};

pub use config_file::parse;
use edge::EdgeArgs;
use input::InputArgs;

#[derive(Debug, Parser)]
#[command(
    name = "stagecast-node",
    version,
    about = "Stagecast compute node: runs ONNX analyses and publishes their progress to the edge",
    after_help = "Every flag can also be set by its environment variable or, below that, by a key \
                  of the --config TOML file: top-level keys for the global flags (e.g. edge = \
                  \"http://127.0.0.1:8787\"), a [serve], [analyze], [watch], [submit] or [token] table for \
                  a command's own (e.g. [serve] concurrency = 2). Keys are the long flag names."
)]
pub struct Cli {
    /// TOML file of settings (flags and environment variables override it)
    #[arg(long, global = true, env = "STAGECAST_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
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
            sessions: 1,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon: an HTTP API that queues analyses and publishes them to the edge
    Serve(serve::ServeArgs),
    /// Analyse one image or video (a local path, or an http(s) URL under the same address
    /// rules as serve's) here, showing each stage's progress; publishes to the edge when
    /// --edge is set
    Analyze(AnalyzeArgs),
    /// Follow an analysis on the edge from the terminal, to its result
    Watch(watch::WatchArgs),
    /// Have a file or URL analysed by a pool: uploads a local file to the edge, submits it,
    /// prints the dashboard URL and follows it like watch
    Submit(submit::SubmitArgs),
    /// Mint a development token (viewer, node or admin) with this node's key
    Token(token::TokenArgs),
    /// List the model manifests and check that each model loads
    Models,
}

/// How each analysis runs; `analyze` takes them per run, `serve` as defaults.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Video frames sampled per second of footage
    #[arg(long, env = "STAGECAST_FPS", default_value_t = PipelineOptions::default().fps, value_parser = positive_fps)]
    pub fps: f64,
    /// Frames per inference call
    #[arg(long, env = "STAGECAST_BATCH_SIZE", default_value_t = PipelineOptions::default().batch_size, value_parser = count)]
    pub batch_size: usize,
    /// Threads ONNX Runtime uses inside an operator [default: all cores]
    #[arg(long, env = "STAGECAST_THREADS", value_parser = count)]
    pub threads: Option<usize>,
}

impl PipelineArgs {
    fn options(&self) -> PipelineOptions {
        PipelineOptions {
            fps: self.fps,
            batch_size: self.batch_size,
        }
    }
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Image or video: a local path or an http(s) URL
    pub input: String,
    /// Model manifest to run (see `stagecast-node models`)
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Analysis id on the edge [default: a new random one]
    #[arg(long)]
    pub analysis_id: Option<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub fetch: InputArgs,
    /// Print each update as newline-delimited JSON (contract events), then the final
    /// snapshot as {"snapshot": ...}, on stdout
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
        Command::Serve(args) => serve::run(&cli.node, &cli.edge, args).await,
        Command::Analyze(args) => analyze::run(&cli.node, &cli.edge, args).await,
        Command::Watch(args) => watch::run(&cli.edge, args).await,
        Command::Submit(args) => submit::run(&cli.edge, args).await,
        Command::Token(args) => token::run(&cli.edge, args),
        Command::Models => models::run(&cli.node).await,
    }
}
