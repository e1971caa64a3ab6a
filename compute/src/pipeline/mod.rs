//! One analysis: fetch -> decode -> preprocess -> infer -> postprocess, reporting as it goes.
//!
//! Frames stream through in batches: the decoder (an ffmpeg process for videos) keeps a
//! few frames ahead while a batch is on the model, so memory stays flat on long videos.
//! CPU-heavy steps run on blocking threads, never on the tokio reactor.

pub mod cascade;
mod decode;
mod drive;
pub mod faces;
mod fetch;
mod infer;
mod keyframe;
mod postprocess;
pub mod preprocess;
mod report;
mod tally;
pub mod update;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use stagecast_shared::event::{AnalysisResult, FrameScore, Region};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

pub use drive::drive;
pub use fetch::{
    DEFAULT_INPUT_TIMEOUT, DEFAULT_MAX_INPUT_BYTES, DOWNLOAD_PREFIX, InputPolicy, Remote, Source,
    Upload,
};
pub use keyframe::{MAX_KEY_FRAMES, MAX_SIDE};
pub use update::{Artifact, Stage, StageUpdate, Update};

use crate::config::PipelineOptions;
use crate::error::Error;
use crate::model::Model;
use crate::model::manifest::OutputSpec;
use keyframe::KeyFrames;
use postprocess::FrameFindings;
use report::Reporter;
use tally::Tally;

/// How an analysis that did not fail ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(AnalysisResult),
    /// `cancel` fired; the pipeline stopped between batches or cut the batch in flight.
    Cancelled,
}

/// Runs one analysis of `source` with `model`.
///
/// `updates` receives [`Update::Started`] first, then progress and partial results, and
/// last exactly one terminal update matching the return value (an error becomes
/// [`Update::Failed`]). Cancelling `cancel` ends the run with [`Outcome::Cancelled`].
pub async fn run(
    model: Arc<Model>,
    source: &Source,
    options: &PipelineOptions,
    cancel: CancellationToken,
    updates: UnboundedSender<Update>,
) -> Result<Outcome, Error> {
    let mut report = Reporter::new(updates);
    report.send(Update::Started {
        model: model.name().to_owned(),
        stages: stages(&model),
    });
    let outcome = analyze(&model, source, options, &cancel, &mut report).await;
    match &outcome {
        Ok(Outcome::Completed(result)) => {
            tracing::info!(%source, score = result.score, frames = result.frames_processed, "analysis completed");
            report.send(Update::Completed(result.clone()));
        }
        Ok(Outcome::Cancelled) => {
            tracing::info!(%source, "analysis cancelled");
            report.send(Update::Cancelled);
        }
        Err(e) => {
            tracing::warn!(%source, code = e.code(), "analysis failed: {e}");
            report.send(Update::Failed(e.to_info()));
        }
    }
    outcome
}

async fn analyze(
    model: &Arc<Model>,
    source: &Source,
    options: &PipelineOptions,
    cancel: &CancellationToken,
    report: &mut Reporter,
) -> Result<Outcome, Error> {
    let manifest = model.manifest();
    let batch_size = options
        .batch_size
        .clamp(1, manifest.input.max_batch().unwrap_or(usize::MAX));

    let Some(local) = until_cancelled(cancel, fetch::fetch(source, report))
        .await
        .transpose()?
    else {
        return Ok(Outcome::Cancelled);
    };
    let input = &manifest.input;
    let open = decode::open(local.path(), options.fps, 2 * batch_size, |w, h| {
        input.size_for(w, h)
    });
    let Some(mut frames) = until_cancelled(cancel, open).await.transpose()? else {
        return Ok(Outcome::Cancelled);
    };
    let frame_size = (frames.width, frames.height);
    let input_size = input.size_for(frames.width, frames.height);
    let expected = frames.expected;
    tracing::debug!(?frame_size, ?input_size, ?expected, batch_size, "decoding");

    let mut tally = Tally::default();
    let mut pictures = KeyFrames::default();
    loop {
        // milliseconds since the previous lap, for the debug log of each batch
        let mut clock = Instant::now();
        let mut lap = move || {
            let ms = clock.elapsed().as_millis();
            clock = Instant::now();
            ms
        };
        let mut batch = Vec::with_capacity(batch_size);
        while batch.len() < batch_size {
            match until_cancelled(cancel, frames.next()).await {
                None => return Ok(Outcome::Cancelled),
                Some(None) => break,
                Some(Some(frame)) => batch.push(frame?),
            }
        }
        let Some(first) = batch.first().map(|f| f.index) else {
            break;
        };
        let done = tally.frames() + batch.len() as u64;
        report.frames(Stage::Decode, done, expected);
        let decode_ms = lap();

        let images: Vec<_> = batch.into_iter().map(|f| f.image).collect();
        let batch = Batch {
            first,
            done,
            expected,
            frame_size,
            input_size,
        };
        let Some((mut found, images)) = first_model(model, images, &batch, report, cancel).await?
        else {
            return Ok(Outcome::Cancelled);
        };
        report.frames(Stage::Postprocess, done, expected);
        let model_ms = lap();
        if model.next().is_some() {
            report.frames(Stage::Crop, done, expected);
            let labelled =
                cascade::label(model, &images, &mut found, frame_size, batch_size, cancel);
            let Some(regions) = labelled.await? else {
                return Ok(Outcome::Cancelled);
            };
            report.frames_with(
                Stage::Label,
                done,
                expected,
                format!("{regions} regions labelled"),
            );
        }
        let label_ms = lap();
        tracing::debug!(first, done, decode_ms, model_ms, label_ms, "batch");

        let regions: Vec<Region> = found
            .iter()
            .flat_map(|f| f.regions.iter().cloned())
            .collect();
        let scores = found
            .iter()
            .map(|f| FrameScore {
                frame: f.frame,
                score: f.score,
            })
            .collect();
        report.partial(&regions, scores);
        if let Some((frame, score)) = pictures.wanted(&regions)
            && let Some(image) = images.into_iter().nth((frame - first) as usize)
        {
            match tokio::task::spawn_blocking(move || keyframe::jpeg(&image)).await? {
                Ok(jpeg) => {
                    if let Some(key) = pictures.take(frame, score, jpeg) {
                        report.send(Update::Artifact(key));
                    }
                }
                Err(e) => tracing::warn!(frame, "key frame not encoded: {e}"),
            }
        }
        tally.add(found);
        if cancel.is_cancelled() {
            return Ok(Outcome::Cancelled);
        }
    }
    let total = tally.frames();
    if total == 0 {
        return Err(Error::DecodeFailed(format!("{source}: no frames")));
    }
    for stage in stages(model).into_iter().skip(1) {
        report.finish(stage, Some(total), None);
    }
    if let Some(picture) = pictures.result() {
        report.send(Update::Artifact(picture));
    }
    Ok(Outcome::Completed(
        tally.finish(model.decision(), frame_size),
    ))
}

/// Where a batch is in the run.
struct Batch {
    first: u64,
    done: u64,
    expected: Option<u64>,
    frame_size: (u32, u32),
    input_size: (u32, u32),
}

/// The first model on a batch of frames: what it finds in each, and the frames back (for
/// a chain's crops and the key frame). `None` if cancelled.
async fn first_model(
    model: &Arc<Model>,
    images: Vec<RgbImage>,
    batch: &Batch,
    report: &mut Reporter,
    cancel: &CancellationToken,
) -> Result<Option<(Vec<FrameFindings>, Vec<RgbImage>)>, Error> {
    let (done, expected) = (batch.done, batch.expected);
    let link = &model.links()[0];
    let found = match &link.manifest().output {
        OutputSpec::Mtcnn(spec) => {
            // MTCNN preprocesses each pyramid level and window itself
            report.frames(Stage::Preprocess, done, expected);
            let faces = faces::detect(model, spec, &images, batch.first, batch.frame_size, cancel);
            let Some(found) = faces.await? else {
                return Ok(None);
            };
            report.frames(Stage::Infer, done, expected);
            (found, images)
        }
        output => {
            let (spec, size) = (link.manifest().input.clone(), batch.input_size);
            let (tensor, images) = tokio::task::spawn_blocking(move || {
                (preprocess::batch(&images, &spec, size), images)
            })
            .await?;
            report.frames(Stage::Preprocess, done, expected);
            let Some(outputs) = infer::infer(model, (0, 0), tensor, cancel).await? else {
                return Ok(None);
            };
            report.frames(Stage::Infer, done, expected);
            let (output, characters) = (output.clone(), link.characters().to_vec());
            let (first, frame_size) = (batch.first, batch.frame_size);
            let found = tokio::task::spawn_blocking(move || {
                postprocess::findings(&outputs[0], &output, &characters, first, frame_size)
            })
            .await?;
            (found, images)
        }
    };
    Ok(Some(found))
}

/// The stages a run of `model` declares, [`Stage::Fetch`] first.
fn stages(model: &Model) -> Vec<Stage> {
    let chain = [Stage::Crop, Stage::Label];
    let extra = if model.next().is_some() {
        &chain[..]
    } else {
        &[]
    };
    Stage::ONE_MODEL.iter().chain(extra).copied().collect()
}

/// `None` if `cancel` fires before `work` is done.
async fn until_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        out = work => Some(out),
    }
}
