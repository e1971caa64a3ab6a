//! Stagecast compute node: runs ONNX analyses of images and videos and reports their
//! progress as typed updates that map onto the wire contract's events.
//!
//! - [`config`]: node and analysis settings; [`clock`]: the wall clock; [`error`]:
//!   failures with contract codes.
//! - [`model`]: manifests, the catalog, loaded models; [`runtime`]: ONNX Runtime itself;
//!   [`gpu`]: GPU figures from NVML where there is one.
//! - [`pipeline`]: one analysis, stage by stage ([`pipeline::run`], and [`pipeline::drive`]
//!   to hand its events on); [`InputPolicy`]: which inputs a caller may name, and the
//!   address, size and time rules their download keeps.
//! - [`publish`]: its events to the edge, through a durable outbox, never losing one.
//! - [`jobs`] and [`api`]: the daemon's queue and its HTTP API (what `serve` runs);
//!   [`tracker`]: an analysis' state as the edge will show it.
//! - [`pool`]: membership of a pool at the edge (`serve --pool`): leases over one
//!   outbound WebSocket, run through [`jobs`] under their attempt.
//!
//! ```no_run
//! # async fn node() -> Result<(), stagecast_compute::Error> {
//! use std::sync::Arc;
//! use stagecast_compute::{pipeline, CancellationToken, Catalog, InputPolicy, Model, PipelineOptions, RuntimeOptions, Source};
//!
//! let runtime = RuntimeOptions::default();
//! let catalog = Catalog::load(&runtime.models_dir)?;
//! // blocking, once per model: keep the Arc and share it between analyses
//! let model = Arc::new(Model::load(&catalog, "text-detect", &runtime)?);
//! // the default policy is for untrusted inputs: public http(s) URLs, size and time capped
//! let source = Source::parse("https://example.com/clip.mp4", &Arc::new(InputPolicy::default()))?;
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let cancel = CancellationToken::new(); // cancel() it when the edge asks
//! let analysis = tokio::spawn(async move {
//!     pipeline::run(model, &source, &PipelineOptions::default(), cancel, tx).await
//! });
//! while let Some(update) = rx.recv().await {
//!     // give it an id and publish it (an artifact is uploaded instead)
//!     let event = update.to_event();
//! #   let _ = event;
//! }
//! let outcome = analysis.await;
//! # let _ = outcome;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod clock;
pub mod config;
pub mod edge_socket;
pub mod error;
pub mod gpu;
pub mod jobs;
pub mod model;
pub mod pipeline;
pub mod pool;
pub mod publish;
pub mod runtime;
pub mod tracker;

pub use config::{Device, PipelineOptions, RuntimeOptions};
pub use error::Error;
pub use model::{Catalog, Model};
pub use pipeline::{InputPolicy, Outcome, Source, Stage, StageUpdate, Update};
pub use tokio_util::sync::CancellationToken;
