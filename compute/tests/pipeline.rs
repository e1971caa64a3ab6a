//! The pipeline end to end on real inputs with the real model: nothing mocked.

mod common;

use std::time::{Duration, Instant};

use common::*;
use stagecast_compute::pipeline::{self, Artifact, MAX_SIDE, Outcome};
use stagecast_compute::{CancellationToken, PipelineOptions, Source, Stage, Update};
use stagecast_fixtures::{fixtures, path};
use stagecast_shared::EventKind;
use stagecast_shared::media::{KIND_KEY_FRAME, KIND_RESULT};

fn options(fps: f64, batch_size: usize) -> PipelineOptions {
    PipelineOptions { fps, batch_size }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_regions_cover_the_drawn_text() {
    let f = fixtures();
    let (outcome, _) = analyze(path(&f.text_png), options(1.0, 1)).await;
    let result = completed(outcome);
    let truth = text_boxes(&f.text_png, 1);
    assert_finds_lines(&result.regions, 0, &truth);
    assert!(result.flagged && result.score > 0.8, "{result:?}");
    assert_eq!((result.frames_processed, result.total_frames), (1, 1));
    assert!(
        result
            .regions
            .iter()
            .all(|r| r.units == Some(stagecast_shared::event::Units::Px))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blank_image_has_no_regions() {
    let (outcome, _) = analyze(path(&fixtures().blank_png), options(1.0, 1)).await;
    let result = completed(outcome);
    assert!(result.regions.is_empty(), "{:?}", result.regions);
    assert!(!result.flagged && result.score == 0.0 && !result.validation_required);
}

#[tokio::test(flavor = "multi_thread")]
async fn video_finds_text_only_once_it_appears() {
    let f = fixtures();
    let (outcome, updates) = analyze(path(&f.video), options(4.0, 3)).await;
    let result = completed(outcome);
    // 2 s at 4 fps; the text appears at 1 s, i.e. from frame 4
    assert_eq!(result.frames_processed, 8, "{result:?}");
    // boxes are in pixels of the 1280x720 video, though the model saw 960x544
    let truth = text_boxes(&f.video_frame_png, 2);
    for frame in 0..=2 {
        assert!(
            result.regions.iter().all(|r| r.frame != frame),
            "blank frame {frame} has regions"
        );
    }
    for frame in 5..=7 {
        assert_finds_lines(&result.regions, frame, &truth);
    }
    // partial results came batch by batch and add up to the final list
    let partial: usize = updates
        .iter()
        .filter_map(|u| match u {
            Update::Partial { regions, .. } => Some(regions.len()),
            _ => None,
        })
        .sum();
    assert_eq!(partial, result.regions.len());
    assert!(
        updates
            .iter()
            .filter(|u| matches!(u, Update::Partial { .. }))
            .count()
            >= 2
    );
}

/// Each batch that found something leaves its best frame's picture, and the result its
/// best region's, before `completed`: JPEGs of the real frame, at most 640 px wide.
#[tokio::test(flavor = "multi_thread")]
async fn key_frames_and_the_result_frame_are_pictured() {
    let (outcome, updates) = analyze(path(&fixtures().video), options(4.0, 3)).await;
    let result = completed(outcome);
    let pictures: Vec<&Artifact> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Artifact(a) => Some(a),
            _ => None,
        })
        .collect();
    // frames 0..=3 are blank: batches [0,1,2] find nothing, [3,4,5] and [6,7] do
    let keys: Vec<&str> = pictures
        .iter()
        .filter(|a| a.kind == KIND_KEY_FRAME)
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let best =
        result.regions.iter().fold(
            &result.regions[0],
            |b, r| if r.score > b.score { r } else { b },
        );
    let last = pictures.last().unwrap();
    assert_eq!(last.kind, KIND_RESULT);
    assert_eq!(last.name.as_str(), format!("result-{}.jpg", best.frame));
    let at = |p: fn(&Update) -> bool| updates.iter().position(p).unwrap();
    assert!(
        at(|u| matches!(u, Update::Artifact(a) if a.kind == KIND_RESULT))
            < at(|u| matches!(u, Update::Completed(_)))
    );
    for picture in &pictures {
        let image = image::load_from_memory_with_format(&picture.bytes, image::ImageFormat::Jpeg)
            .unwrap_or_else(|e| panic!("{}: {e}", picture.name.as_str()));
        // the 1280x720 video (decoded at the model's 960x544), 640 on its longest side
        let (w, h) = (image.width(), image.height());
        assert!(w == MAX_SIDE && h.abs_diff(360) <= 2, "{w}x{h}");
        // the real frame: text on it, not a blank picture
        let gray = image.to_luma8();
        let dark = gray.pixels().filter(|p| p.0[0] < 100).count();
        assert!(dark > 100, "{}: {dark} dark pixels", picture.name.as_str());
    }
    assert!(Update::Artifact((*last).clone()).to_event().is_none());
}

/// Every update, as a contract event, is accepted by the edge's own state machine.
#[tokio::test(flavor = "multi_thread")]
async fn updates_follow_the_contract() {
    let (outcome, updates) = analyze(path(&fixtures().video), options(4.0, 2)).await;
    let result = completed(outcome);
    assert!(matches!(updates.last(), Some(Update::Completed(_))));
    assert_eq!(updates.iter().filter(|u| u.is_terminal()).count(), 1);
    // every stage finishes, never going back; every frame scored once; the state machine
    // takes it all
    assert_reports(&updates, &Stage::ONE_MODEL, result.frames_processed);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_inputs_fail_with_decode_failed() {
    let f = fixtures();
    for input in [&f.corrupt_mp4, &f.truncated_png] {
        let (outcome, updates) = analyze(path(input), options(2.0, 2)).await;
        let e = outcome.expect_err("a corrupt file cannot complete");
        assert_eq!((e.code(), e.retryable()), ("decode_failed", false), "{e}");
        match updates.last() {
            Some(Update::Failed(info)) => assert_eq!(info.code, "decode_failed"),
            other => panic!("expected a failed update last, got {other:?}"),
        }
        assert!(matches!(updates.first(), Some(Update::Started { .. })));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_input_is_input_not_found() {
    let (outcome, updates) = analyze("/nonexistent/clip.mp4", options(2.0, 2)).await;
    assert_eq!(outcome.unwrap_err().code(), "input_not_found");
    let Some(EventKind::Failed { error }) = updates.last().unwrap().to_event() else {
        panic!("expected failed");
    };
    assert!(
        !error.retryable && error.message.contains("/nonexistent/clip.mp4"),
        "{error:?}"
    );
}

#[test]
fn only_paths_and_http_urls_are_inputs() {
    for ok in [
        "/tmp/a.mp4",
        "clip.mp4",
        "http://127.0.0.1/a.png",
        "https://x.test/v.mp4",
    ] {
        assert!(Source::parse(ok, &trusted()).is_ok(), "{ok}");
    }
    for bad in ["", "  ", "ftp://host/a.mp4", "s3://bucket/key", "https://"] {
        let e = Source::parse(bad, &trusted()).expect_err(bad);
        assert_eq!(
            (e.code(), e.retryable()),
            ("unsupported_input", false),
            "{bad}"
        );
    }
}

/// Cancelling while a batch is on the model stops that batch (ONNX Runtime's terminate
/// flag) instead of waiting for it, and the run ends `Cancelled` with one terminal update.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_run_stops_the_batch_in_flight() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let source = Source::parse(path(&fixtures().long_video), &trusted()).unwrap();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { pipeline::run(model(), &source, &options(4.0, 8), cancel, tx).await }
    });

    // Batch 1 times a whole batch on the model; batch 2 is cancelled a quarter into it.
    let (mut preprocessed, mut batch_time, mut cancelled_at) = (None, None, None);
    let mut updates = Vec::new();
    while let Some(u) = rx.recv().await {
        if let Update::Progress(p) = &u {
            match (p.stage, batch_time) {
                (Stage::Preprocess, _) => preprocessed = Some(Instant::now()),
                (Stage::Infer, None) => batch_time = preprocessed.map(|t| t.elapsed()),
                _ => {}
            }
            if let (Stage::Preprocess, Some(batch)) = (p.stage, batch_time)
                && cancelled_at.is_none()
            {
                tokio::time::sleep(batch / 4).await;
                cancel.cancel();
                cancelled_at = Some(Instant::now());
            }
        }
        updates.push(u);
    }
    let stopped_after = cancelled_at.expect("cancelled").elapsed();
    let batch = batch_time.unwrap();
    eprintln!("a batch of 8 takes {batch:?}; stopping took {stopped_after:?}");
    assert_eq!(run.await.unwrap().unwrap(), Outcome::Cancelled);
    assert!(matches!(updates.last(), Some(Update::Cancelled)));
    assert_eq!(updates.iter().filter(|u| u.is_terminal()).count(), 1);
    let inferred = updates
        .iter()
        .filter(|u| matches!(u, Update::Progress(p) if p.stage == Stage::Infer))
        .count();
    assert_eq!(inferred, 1, "only the first batch finished");
    assert!(
        stopped_after < batch / 2,
        "stopping took {stopped_after:?}, a whole batch takes {batch:?}"
    );
    assert!(Duration::ZERO < batch);
}

/// http(s) inputs are downloaded first; a 404 is `input_unavailable` for good, a server
/// that does not answer is `input_unavailable` for now.
#[tokio::test(flavor = "multi_thread")]
async fn url_inputs_are_fetched() {
    let server = HttpServer::start(&fixtures().dir);
    let (outcome, updates) = analyze(&format!("{}/text.png", server.url), options(1.0, 1)).await;
    let result = completed(outcome);
    let truth = text_boxes(&fixtures().text_png, 1);
    assert_finds_lines(&result.regions, 0, &truth);
    assert!(
        updates.iter().any(
            |u| matches!(u, Update::Progress(p) if p.stage == Stage::Fetch && p.progress == 1.0)
        )
    );

    let (outcome, _) = analyze(&format!("{}/missing.png", server.url), options(1.0, 1)).await;
    let e = outcome.unwrap_err();
    assert_eq!(
        (e.code(), e.retryable()),
        ("input_unavailable", false),
        "{e}"
    );
    assert!(e.to_string().contains("404"), "{e}");
    let (outcome, _) = analyze("http://127.0.0.1:9/x.png", options(1.0, 1)).await;
    let e = outcome.unwrap_err();
    assert_eq!(
        (e.code(), e.retryable()),
        ("input_unavailable", true),
        "{e}"
    );
}

/// Python's http.server over a folder, on a free loopback port, stopped on drop.
struct HttpServer {
    child: std::process::Child,
    url: String,
}

impl HttpServer {
    fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 is needed to serve test files over HTTP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_pool_of_sessions_runs_batches_side_by_side_with_the_same_answers() {
    let options = stagecast_compute::RuntimeOptions {
        sessions: 2,
        intra_threads: 1,
        ..runtime_options()
    };
    let catalog = stagecast_compute::Catalog::load(&options.models_dir).unwrap();
    let model = std::sync::Arc::new(
        stagecast_compute::Model::load(&catalog, "text-detect", &options).unwrap(),
    );
    let image = image::open(&fixtures().text_png).unwrap().to_rgb8();
    let spec = model.manifest().input.clone();
    let size = spec.size_for(image.width(), image.height());
    let tensor = pipeline::preprocess::batch(&[image], &spec, size);
    let outputs: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let (model, tensor) = (&model, tensor.clone());
                s.spawn(move || {
                    model
                        .run(tensor, &ort::session::RunOptions::new().unwrap())
                        .unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "sessions disagree"
    );
}
