//! Shared by compute's integration tests: the real model, running the pipeline, and
//! checking what it found against where the fixtures drew their text. The fixtures
//! themselves come from `stagecast-fixtures`.
#![allow(dead_code)] // each test binary uses its own part of this

use std::path::Path;
use std::sync::{Arc, OnceLock};

use stagecast_compute::pipeline::{self, Outcome};
use stagecast_compute::{
    CancellationToken, Catalog, Error, InputPolicy, Model, PipelineOptions, RuntimeOptions, Source,
    Update,
};
use stagecast_fixtures::LINES;
use stagecast_shared::event::Region;

/// The bounding box `(x, y, w, h)` of each line's dark pixels in `image`, where `LINES`
/// were drawn `scale` times as big: where the text really is, measured rather than
/// assumed from font metrics.
pub fn text_boxes(image: &Path, scale: u32) -> Vec<(f64, f64, f64, f64)> {
    let image = image::open(image).expect("fixture image").into_rgb8();
    LINES
        .iter()
        .map(|l| {
            let (y, size) = (l.y * scale, l.size * scale);
            let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
            for y in y.saturating_sub(size / 2)..(y + 2 * size).min(image.height()) {
                for x in 0..image.width() {
                    if image.get_pixel(x, y).0.iter().all(|&c| c < 128) {
                        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                    }
                }
            }
            assert!(x0 <= x1, "no dark pixels found for {:?}", l.text);
            (
                f64::from(x0),
                f64::from(y0),
                f64::from(x1 - x0 + 1),
                f64::from(y1 - y0 + 1),
            )
        })
        .collect()
}

pub fn iou(r: &Region, (x, y, w, h): (f64, f64, f64, f64)) -> f64 {
    let ix = ((r.x + r.w).min(x + w) - r.x.max(x)).max(0.0);
    let iy = ((r.y + r.h).min(y + h) - r.y.max(y)).max(0.0);
    let inter = ix * iy;
    inter / (r.w * r.h + w * h - inter)
}

/// Every text line is matched by a region of `frame` (IoU >= 0.5) and every region
/// matches a line: nothing missed, nothing made up.
pub fn assert_finds_lines(regions: &[Region], frame: u64, truth: &[(f64, f64, f64, f64)]) {
    let mine: Vec<&Region> = regions.iter().filter(|r| r.frame == frame).collect();
    for (line, &b) in LINES.iter().zip(truth) {
        let best = mine.iter().map(|r| iou(r, b)).fold(0.0, f64::max);
        assert!(
            best >= 0.5,
            "frame {frame}: {:?} at {b:?} best IoU {best:.2}; regions {mine:?}",
            line.text
        );
    }
    for r in &mine {
        assert!(
            truth.iter().any(|&b| iou(r, b) > 0.3),
            "frame {frame}: region {r:?} matches no text"
        );
    }
}

pub fn runtime_options() -> RuntimeOptions {
    RuntimeOptions::default()
}

/// The demo model, loaded once per test binary.
pub fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let options = runtime_options();
            let catalog = Catalog::load(&options.models_dir).expect("catalog");
            let model = Model::load(&catalog, "text-detect", &options).unwrap_or_else(|e| {
                panic!(
                    "{e}\n(the tests need ONNX Runtime and the PP-OCRv4 model: run `make setup`, \
                     or set STAGECAST_ORT_DYLIB and STAGECAST_MODELS_DIR)"
                )
            });
            Arc::new(model)
        })
        .clone()
}

/// What the operator's own command line may name: local paths, and URLs on 127.0.0.1.
pub fn trusted() -> Arc<InputPolicy> {
    Arc::new(InputPolicy {
        local_paths: true,
        allowed_hosts: vec!["127.0.0.1".into()],
        ..InputPolicy::default()
    })
}

/// Runs the pipeline to its end under [`trusted`]; returns its outcome and every update
/// it sent.
pub async fn analyze(
    input: &str,
    options: PipelineOptions,
) -> (Result<Outcome, Error>, Vec<Update>) {
    let source = Source::parse(input, &trusted()).expect("source");
    run(&source, options).await
}

/// Runs the pipeline on `source` to its end; its outcome and every update it sent.
pub async fn run(
    source: &Source,
    options: PipelineOptions,
) -> (Result<Outcome, Error>, Vec<Update>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = pipeline::run(model(), source, &options, CancellationToken::new(), tx).await;
    let mut updates = Vec::new();
    while let Ok(u) = rx.try_recv() {
        updates.push(u);
    }
    (outcome, updates)
}

pub fn completed(outcome: Result<Outcome, Error>) -> stagecast_shared::event::AnalysisResult {
    match outcome {
        Ok(Outcome::Completed(r)) => r,
        other => panic!("expected completed, got {other:?}"),
    }
}
