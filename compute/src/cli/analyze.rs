//! `stagecast-node analyze`: one analysis, here, with live progress.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use stagecast_compute::pipeline::{self, Outcome};
use stagecast_compute::{CancellationToken, Catalog, Model, PipelineOptions, Source};
use stagecast_shared::event::AnalysisResult;

use super::progress::Bars;
use super::{AnalyzeArgs, NodeArgs};

/// Regions printed in the human-readable result.
const REGIONS_SHOWN: usize = 20;

pub async fn run(node: &NodeArgs, args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let runtime = node.runtime(args.threads);
    let catalog = Catalog::load(&runtime.models_dir)?;
    let model = tokio::task::spawn_blocking({
        let name = args.model.clone();
        move || Model::load(&catalog, &name, &runtime)
    })
    .await??;
    let source = Source::parse(&args.input)?;
    let options = PipelineOptions {
        fps: args.fps,
        batch_size: args.batch_size,
    };

    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let analysis = tokio::spawn({
        let source = source.clone();
        async move { pipeline::run(Arc::new(model), &source, &options, cancel, tx).await }
    });

    let mut bars = (!args.json).then(Bars::new);
    while let Some(update) = rx.recv().await {
        match &mut bars {
            Some(bars) => bars.show(&update),
            None => println!("{}", serde_json::to_string(&update.to_event())?),
        }
    }
    let outcome = analysis.await.context("the analysis task failed")?;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(Outcome::Completed(result)) => {
            eprintln!(
                "{} frames in {seconds:.1} s ({:.1} frames/s)",
                result.frames_processed,
                result.frames_processed as f64 / seconds
            );
            if !args.json {
                print_result(&args.model, &source, &result);
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Cancelled) => {
            eprintln!("cancelled after {seconds:.1} s");
            Ok(ExitCode::from(130))
        }
        Err(e) => {
            eprintln!(
                "failed ({}, {}): {e}",
                e.code(),
                if e.retryable() {
                    "retryable"
                } else {
                    "not retryable"
                }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_result(model: &str, source: &Source, r: &AnalysisResult) {
    println!(
        "{model} on {source}: {} (score {:.3})",
        if r.flagged { "FLAGGED" } else { "not flagged" },
        r.score
    );
    if r.validation_required {
        println!("low confidence: a person should check this one");
    }
    println!("frames: {} of {}", r.frames_processed, r.total_frames);
    if let Some(summary) = &r.summary {
        println!("summary: {summary}");
    }
    for g in r.regions.iter().take(REGIONS_SHOWN) {
        println!(
            "  frame {:>5}  x {:>5} y {:>5} w {:>5} h {:>5}  score {:.2}  {}",
            g.frame,
            g.x,
            g.y,
            g.w,
            g.h,
            g.score,
            g.label.as_deref().unwrap_or("")
        );
    }
    if r.regions.len() > REGIONS_SHOWN {
        println!(
            "  ... and {} more (see --json)",
            r.regions.len() - REGIONS_SHOWN
        );
    }
}
