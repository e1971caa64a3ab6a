//! Node benchmarks, printed as markdown (`make bench`, or
//! `cargo bench -p stagecast-e2e --bench node`; it lives beside the end-to-end harness because
//! it publishes to a real edge):
//! - the pipeline's inference stage against a bare ONNX Runtime loop over the same
//!   preprocessed batches, same model, batch and threads;
//! - end-to-end frames/s against the straightforward Python pipeline (bench/python_pipeline.py);
//! - what progress reporting costs: no reporting, publishing to a real edge, and
//!   publishing with the edge down (outbox and retries).
//!
//! Needs ffmpeg, ONNX Runtime and the models from `make setup`, the edge built, and a
//! Python with onnxruntime, numpy and requests in STAGECAST_BENCH_PYTHON (bench.sh sets it).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ort::session::RunOptions;
use stagecast_compute::pipeline::{self, preprocess};
use stagecast_compute::publish::{EdgeClient, NodeIdentity, Outbox, Publication, cpu_seconds};
use stagecast_compute::{
    CancellationToken, Catalog, Model, Outcome, PipelineOptions, RuntimeOptions, Source,
};
use stagecast_e2e::client::DEV_SECRET;
use stagecast_e2e::edge::free_port;
use stagecast_e2e::{Edge, Tokens};
use stagecast_shared::event::EventKind;
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::token::SigningKey;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const SECONDS: u32 = 20;
const FPS: f64 = 4.0;
const BATCH: usize = 4;
const RUNS: usize = 3;

#[derive(Default)]
struct Runs {
    fps: Vec<f64>,
    cpu_ms: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Reporting {
    None,
    Edge,
    EdgeDown,
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .expect("metrics recorder");
    let work = tempfile::tempdir().expect("temp dir");
    let video = work.path().join("bench.mp4");
    stagecast_fixtures::text_video(&video, WIDTH, HEIGHT, SECONDS).expect("the input video");

    let options = RuntimeOptions {
        intra_threads: threads,
        ..RuntimeOptions::default()
    };
    let catalog = Catalog::load(&options.models_dir).expect("catalog");
    let model = Arc::new(Model::load(&catalog, "text-detect", &options).expect("model"));
    let spec = model.manifest().input.clone();
    let size = spec.size_for(WIDTH, HEIGHT);
    let pipeline_options = PipelineOptions {
        fps: FPS,
        batch_size: BATCH,
    };

    println!("## Node benchmarks\n");
    println!("Command: `cargo bench -p stagecast-e2e --bench node` (run by `make bench`)  ");
    println!(
        "Machine: {}; ONNX Runtime 1.32.0 CPU, {threads} intra-op threads; no GPU was measured  ",
        stagecast_e2e::host::describe()
    );
    println!(
        "Input: {SECONDS} s of {WIDTH}x{HEIGHT} H.264 with text, sampled at {FPS} fps, model input {}x{}, batch {BATCH}; medians of {RUNS} runs\n",
        size.0, size.1
    );

    // 1. inference: the pipeline's stage against a bare loop over the same batches
    let images = decode_all(&video, size);
    let frames = images.len();
    let bare = bare_loop(&model, &images, &spec, size);
    let mut infer_fps = Vec::new();
    for _ in 0..RUNS {
        let before = inference_seconds(&metrics);
        let run = runtime.block_on(run_pipeline(
            &model,
            &video,
            &pipeline_options,
            Reporting::None,
            None,
        ));
        let n = run.frames;
        assert_eq!(
            n, frames,
            "the pipeline and ffmpeg sampled different frames"
        );
        infer_fps.push(n as f64 / (inference_seconds(&metrics) - before));
    }
    let infer = median(&mut infer_fps);
    println!("### Inference stage against a bare ONNX Runtime loop\n");
    println!("| | frames/s | ratio |\n|---|---|---|");
    println!("| bare `session.run` loop over preprocessed batches | {bare:.2} | 1.00 |");
    println!(
        "| pipeline inference stage (same batches, in the running pipeline) | {infer:.2} | {:.3} |",
        infer / bare
    );
    println!("\nTarget: at least 0.95.\n");

    // 2. end to end against Python, both publishing to the same real edge
    let edge = runtime.block_on(Edge::dev()).expect("edge");
    // per variant: frames/s (wall) and the node's CPU milliseconds per frame
    let (mut none, mut with_edge, mut edge_down) =
        (Runs::default(), Runs::default(), Runs::default());
    let mut python = Vec::new();
    let (mut alone, mut events) = (Vec::new(), 0);
    let node_client = edge_client(&edge.base_url());
    for run in 0..RUNS {
        let dead = format!("http://127.0.0.1:{}", free_port());
        let variants = [
            (Reporting::Edge, Some(edge.base_url()), &mut with_edge),
            (Reporting::EdgeDown, Some(dead), &mut edge_down),
            (Reporting::None, None, &mut none),
        ];
        // interleaved, so drift in the machine's speed hits every variant alike
        for (reporting, url, runs) in variants {
            let run = runtime.block_on(run_pipeline(
                &model,
                &video,
                &pipeline_options,
                reporting,
                url.as_deref(),
            ));
            runs.fps.push(run.frames as f64 / run.seconds);
            runs.cpu_ms.push(run.cpu * 1000.0 / run.frames as f64);
            if reporting == Reporting::None {
                let cpu = runtime.block_on(reporter_alone(&run.stream, node_client.clone()));
                alone.push(cpu * 1000.0 / run.frames as f64);
                events = run.stream.len();
            }
        }
        python.push(run_python(
            &catalog.model_path(model.manifest()),
            &video,
            size,
            threads,
            &spec,
            &edge.base_url(),
            &format!("py-{run}"),
        ));
    }
    let py_fps = median(&mut python);
    let (none_fps, edge_fps) = (median(&mut none.fps), median(&mut with_edge.fps));
    println!("### End to end against the Python pipeline\n");
    println!("| pipeline | frames/s (runs) | ratio to Python |\n|---|---|---|");
    println!(
        "| Python: ffmpeg + numpy + onnxruntime + requests, posting progress to the edge | {py_fps:.2} ({}) | 1.00 |",
        list(&python)
    );
    println!(
        "| Stagecast node, publishing to the same edge | {edge_fps:.2} ({}) | {:.2} |",
        list(&with_edge.fps),
        edge_fps / py_fps
    );
    println!("\nTarget: at least 1.5.\n");
    println!("### Cost of progress reporting\n");
    println!(
        "Wall time counts everything on this 2-core machine, the local workerd included; \
         node CPU counts only the node process (pipeline, ONNX Runtime, reporter).\n"
    );
    println!(
        "| reporting | frames/s (runs) | wall cost | node CPU ms/frame (runs) | CPU cost |\n|---|---|---|---|---|"
    );
    let none_cpu = median(&mut none.cpu_ms);
    println!(
        "| none (updates dropped) | {none_fps:.2} ({}) | - | {none_cpu:.1} ({}) | - |",
        list(&none.fps),
        list(&none.cpu_ms)
    );
    for (name, runs) in [
        ("published to the real edge", &mut with_edge),
        ("edge down: outbox and retries", &mut edge_down),
    ] {
        let fps = median(&mut runs.fps);
        let cpu = median(&mut runs.cpu_ms);
        println!(
            "| {name} | {fps:.2} ({}) | {:+.1}% | {cpu:.1} ({}) | {:+.1}% |",
            list(&runs.fps),
            (none_fps / fps - 1.0) * 100.0,
            list(&runs.cpu_ms),
            (cpu / none_cpu - 1.0) * 100.0
        );
    }
    let alone_ms = median(&mut alone);
    println!(
        "| the reporter alone: the same {events} pipeline events replayed at their pace into a publication to the real edge, no pipeline running | - | - | {alone_ms:.2} ({}) | {:.1}% of the pipeline's |",
        list(&alone),
        alone_ms / none_cpu * 100.0
    );
    println!(
        "\nTarget: under 1%. A cost is extra time (or CPU) per frame; negative means within noise. \
         With the edge on the same two cores, workerd's work and ONNX Runtime's spinning \
         threads under contention land in the first two columns; the last row is the \
         reporter's own share."
    );
    drop(edge);
}

/// The sampled frames at the model's input size, decoded once by ffmpeg.
fn decode_all(video: &Path, (w, h): (u32, u32)) -> Vec<RgbImage> {
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(video)
        .args(["-vf", &format!("fps={FPS},scale={w}:{h}")])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let mut raw = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut raw)
        .expect("frames");
    child.wait().expect("ffmpeg");
    raw.chunks_exact((w * h * 3) as usize)
        .map(|f| RgbImage::from_raw(w, h, f.to_vec()).expect("frame"))
        .collect()
}

/// Frames/s of `session.run` alone over the same batches.
fn bare_loop(
    model: &Model,
    images: &[RgbImage],
    spec: &stagecast_compute::model::manifest::InputSpec,
    size: (u32, u32),
) -> f64 {
    let tensors: Vec<_> = images
        .chunks(BATCH)
        .map(|batch| preprocess::batch(batch, spec, size))
        .collect();
    let options = RunOptions::new().expect("run options");
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let mut busy = Duration::ZERO;
        for tensor in &tensors {
            let t = Instant::now();
            model.run(tensor.clone(), &options).expect("inference");
            busy += t.elapsed();
        }
        runs.push(images.len() as f64 / busy.as_secs_f64());
    }
    median(&mut runs)
}

/// One analysis: its wall time, frame count, and the node's CPU seconds (this process:
/// the pipeline, ONNX Runtime, the reporter; not ffmpeg nor workerd).
async fn run_pipeline(
    model: &Arc<Model>,
    video: &Path,
    options: &PipelineOptions,
    reporting: Reporting,
    edge: Option<&str>,
) -> Run {
    let state = tempfile::tempdir().expect("state");
    let id = AnalysisId::parse(&format!("bench-{:x}", fastrand::u64(..))).expect("id");
    let cancel = CancellationToken::new();
    let publication = (reporting != Reporting::None).then(|| {
        let client = edge_client(edge.expect("an edge URL"));
        let outbox = Outbox::new(state.path()).expect("outbox");
        Publication::start(client, &outbox, id.clone(), cancel.clone(), Arc::new(|| 0))
            .expect("publication")
    });
    let source = Source::Path(video.to_owned());
    let started = Instant::now();
    let cpu_before = cpu_seconds().unwrap_or(0.0);
    let mut stream = Vec::new();
    let record = |event: &EventKind| stream.push((started.elapsed(), event.clone()));
    let outcome = pipeline::drive(
        model.clone(),
        source,
        options.clone(),
        cancel,
        publication.as_ref(),
        record,
    )
    .await
    .expect("analysis");
    // the analysis is done when its result is: delivery to the edge goes on after
    let seconds = started.elapsed().as_secs_f64();
    let mut cpu = cpu_seconds().unwrap_or(0.0) - cpu_before;
    match publication {
        Some(p) if reporting == Reporting::Edge => {
            // delivering what is left is the reporter's work too
            let drain = cpu_seconds().unwrap_or(0.0);
            p.finish().await.expect("delivered");
            cpu += cpu_seconds().unwrap_or(0.0) - drain;
        }
        Some(p) => p.abort(),
        None => {}
    }
    let Outcome::Completed(result) = outcome else {
        panic!("not completed")
    };
    Run {
        seconds,
        frames: result.frames_processed as usize,
        cpu,
        stream,
    }
}

/// One analysis as the bench saw it.
struct Run {
    seconds: f64,
    frames: usize,
    /// The node's CPU seconds.
    cpu: f64,
    /// Every event the pipeline sent, with when.
    stream: Vec<(Duration, EventKind)>,
}

/// The client a node keeps of `edge` (one per node, shared by its analyses).
fn edge_client(edge: &str) -> Arc<EdgeClient> {
    let identity = NodeIdentity {
        tenant: "dev".into(),
        node_id: "bench".into(),
        key: SigningKey::dev(DEV_SECRET).expect("key"),
    };
    Arc::new(EdgeClient::new(edge, identity).expect("edge client"))
}

/// The reporter alone: `stream` replayed at its own pace into a publication over `client`
/// (no pipeline running); the node's CPU seconds it took, delivery included.
async fn reporter_alone(stream: &[(Duration, EventKind)], client: Arc<EdgeClient>) -> f64 {
    let state = tempfile::tempdir().expect("state");
    let id = AnalysisId::parse(&format!("replay-{:x}", fastrand::u64(..))).expect("id");
    let outbox = Outbox::new(state.path()).expect("outbox");
    let cpu_before = cpu_seconds().unwrap_or(0.0);
    let start = tokio::time::Instant::now();
    let publication = Publication::start(
        client,
        &outbox,
        id,
        CancellationToken::new(),
        Arc::new(|| 0),
    )
    .expect("publication");
    for (at, event) in stream {
        tokio::time::sleep_until(start + *at).await;
        publication.send(event.clone());
    }
    publication.finish().await.expect("delivered");
    cpu_seconds().unwrap_or(0.0) - cpu_before
}

fn run_python(
    model: &Path,
    video: &Path,
    (w, h): (u32, u32),
    threads: usize,
    spec: &stagecast_compute::model::manifest::InputSpec,
    edge: &str,
    analysis: &str,
) -> f64 {
    let python = std::env::var_os("STAGECAST_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/python_pipeline.py");
    let f = |v: f32| v.to_string();
    let out = Command::new(&python)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(video)
        .args(["--fps", &FPS.to_string(), "--width", &w.to_string()])
        .args(["--height", &h.to_string(), "--batch", &BATCH.to_string()])
        .args(["--threads", &threads.to_string(), "--edge", edge])
        .args(["--token", &Tokens::node(analysis), "--analysis", analysis])
        .arg("--mean")
        .args(spec.mean.map(f))
        .arg("--std")
        .args(spec.std.map(f))
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "the Python pipeline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python output");
    v["frames"].as_f64().unwrap() / v["seconds"].as_f64().unwrap()
}

fn inference_seconds(metrics: &PrometheusHandle) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("stagecast_inference_seconds_sum "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
