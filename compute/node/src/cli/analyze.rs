//! `stagecast-node analyze`: one analysis, here, with live progress, published to the
//! edge when one is configured.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use stagecast_compute::jobs::new_analysis_id;
use stagecast_compute::pipeline::{self, Outcome};
use stagecast_compute::publish::Publication;
use stagecast_compute::tracker::Tracker;
use stagecast_compute::{CancellationToken, Catalog, Model, Source};
use stagecast_shared::event::EventKind;
use stagecast_shared::ids::AnalysisId;

use super::edge::EdgeArgs;
use super::progress::{Bars, print_result};
use super::{AnalyzeArgs, NodeArgs};

pub async fn run(node: &NodeArgs, edge: &EdgeArgs, args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let id = match &args.analysis_id {
        Some(id) => AnalysisId::parse(id).context("--analysis-id")?,
        None => new_analysis_id(),
    };
    let publishing = edge.publishing()?;
    let runtime = node.runtime(args.pipeline.threads);
    let catalog = Catalog::load(&runtime.models_dir)?;
    let model = tokio::task::spawn_blocking({
        let name = args.model.clone();
        move || Model::load(&catalog, &name, &runtime)
    })
    .await??;
    // the operator's own command line: local paths are theirs to name
    let source = Source::parse(&args.input, &Arc::new(args.fetch.policy(true)))?;
    let options = args.pipeline.options();

    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        }
    });
    let publication = match &publishing {
        Some(p) => {
            let publication = Publication::start(
                p.edge.clone(),
                &p.outbox,
                id.clone(),
                cancel.clone(),
                Arc::new(|| 0),
            )?;
            eprintln!("publishing to {} as analysis {id}", p.edge.base());
            Some(publication)
        }
        None => None,
    };

    let started = Instant::now();
    let mut tracker = Tracker::new(id.clone());
    let mut bars = (!args.json).then(Bars::new);
    let show = |event: &EventKind| {
        match &mut bars {
            Some(bars) => bars.show(event),
            None => println!("{}", json!(event)),
        }
        tracker.record(event.clone());
    };
    let outcome = pipeline::drive(
        Arc::new(model),
        source.clone(),
        options,
        cancel,
        publication.as_ref(),
        show,
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    drop(bars);
    if args.json {
        println!("{}", json!({ "snapshot": tracker.snapshot() }));
    }
    if let Some(p) = publication {
        deliver(p).await;
    }
    match outcome {
        Ok(Outcome::Completed(result)) => {
            eprintln!(
                "{} frames in {seconds:.1} s ({:.1} frames/s)",
                result.frames_processed,
                result.frames_processed as f64 / seconds
            );
            if !args.json {
                print_result(&format!("{} on {source}", args.model), &result);
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

/// Waits for the edge to confirm everything; Ctrl-C leaves the rest in the outbox.
async fn deliver(publication: Publication) {
    eprintln!("waiting for the edge to confirm every event (Ctrl-C leaves them in the outbox)");
    tokio::select! {
        delivered = publication.finish() => match delivered {
            Ok(d) if d.refused == 0 => eprintln!("the edge has all {} events", d.confirmed),
            Ok(d) => eprintln!("the edge has {} events and refused {} (see the log)", d.confirmed, d.refused),
            Err(e) => eprintln!("publishing failed: {e}"),
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopped waiting: unsent events stay in the outbox; `stagecast-node serve` sends them");
        }
    }
}
