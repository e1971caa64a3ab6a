//! Stagecast compute node: runs ONNX analyses of images and videos and reports their
//! progress as typed updates that map onto the wire contract's events.
//!
//! - [`config`]: node and analysis settings; [`error`]: failures with contract codes.
//! - [`model`]: manifests, the catalog, loaded models; [`runtime`]: ONNX Runtime itself.
//! - [`pipeline`]: one analysis, stage by stage ([`pipeline::run`]).

pub mod config;
pub mod error;
pub mod model;
pub mod pipeline;
pub mod runtime;

pub use config::{Device, PipelineOptions, RuntimeOptions};
pub use error::Error;
pub use model::{Catalog, Model};
pub use pipeline::{Outcome, Source, Stage, StageUpdate, Update};
pub use tokio_util::sync::CancellationToken;
