//! Shared by compute's integration tests: the real models, running the pipeline, checking
//! what it found against where the fixtures drew their text or the face is, and the Python
//! reference (scripts/reference.py). The fixtures themselves come from
//! `stagecast-fixtures`.
#![allow(dead_code)] // each test binary uses its own part of this

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use stagecast_compute::pipeline::{self, Outcome};
use stagecast_compute::{
    CancellationToken, Catalog, Error, InputPolicy, Model, PipelineOptions, RuntimeOptions, Source,
    Stage, Update,
};
use stagecast_fixtures::{FACE_VIDEO_FRAMES, LINES, face_video, read_video, video_frame};
use stagecast_shared::event::Region;
use stagecast_shared::{Analysis, AnalysisId, Event, Status};

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
    model_named("text-detect")
}

/// The catalog's model or chain `name` from the models folder, loaded once per test binary.
pub fn model_named(name: &str) -> Arc<Model> {
    static MODELS: OnceLock<Mutex<HashMap<String, Arc<Model>>>> = OnceLock::new();
    let mut models = MODELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    models
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(load(&runtime_options().models_dir, name)))
        .clone()
}

/// Loads `name` from the catalog of `models_dir` (its own manifests, and the .onnx files
/// they name).
pub fn load(models_dir: &Path, name: &str) -> Model {
    let options = RuntimeOptions {
        models_dir: models_dir.to_owned(),
        ..runtime_options()
    };
    let catalog = Catalog::load(models_dir).expect("catalog");
    Model::load(&catalog, name, &options).unwrap_or_else(|e| {
        panic!(
            "{e}\n(the tests need ONNX Runtime and the models: run `make setup`, or set \
             STAGECAST_ORT_DYLIB and STAGECAST_MODELS_DIR)"
        )
    })
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
    analyze_with(model(), input, options).await
}

/// The same with `model`.
pub async fn analyze_with(
    model: Arc<Model>,
    input: &str,
    options: PipelineOptions,
) -> (Result<Outcome, Error>, Vec<Update>) {
    let source = Source::parse(input, &trusted()).expect("source");
    run_with(model, &source, options).await
}

/// Runs the pipeline on `source` to its end; its outcome and every update it sent.
pub async fn run(
    source: &Source,
    options: PipelineOptions,
) -> (Result<Outcome, Error>, Vec<Update>) {
    run_with(model(), source, options).await
}

/// The same with `model`.
pub async fn run_with(
    model: Arc<Model>,
    source: &Source,
    options: PipelineOptions,
) -> (Result<Outcome, Error>, Vec<Update>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = pipeline::run(model, source, &options, CancellationToken::new(), tx).await;
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

/// Where the astronaut's face is in scikit-image's 512x512 astronaut.png, `(x1, y1, x2,
/// y2)`: the box of the Python reference's own MTCNN (`reference.py mtcnn --image
/// astronaut.png`: [179.8, 60.1, 268.1, 173.9]), rounded to whole pixels.
pub const ASTRONAUT_FACE: [f64; 4] = [180.0, 60.0, 268.0, 174.0];
pub const ASTRONAUT_SIZE: (u32, u32) = (512, 512);

/// `(x1, y1, x2, y2)` as `(x, y, w, h)`, what [`iou`] takes.
pub fn xywh([x1, y1, x2, y2]: [f64; 4]) -> (f64, f64, f64, f64) {
    (x1, y1, x2 - x1, y2 - y1)
}

/// A region's corners, `(x1, y1, x2, y2)`.
pub fn corners(r: &Region) -> [f64; 4] {
    [r.x, r.y, r.x + r.w, r.y + r.h]
}

/// scikit-image's astronaut.png, which `make setup` puts in STAGECAST_SAMPLES_DIR.
pub fn astronaut() -> PathBuf {
    let dir = std::env::var_os("STAGECAST_SAMPLES_DIR").unwrap_or_else(|| {
        panic!(
            "STAGECAST_SAMPLES_DIR is not set: run `make setup`, then the tests with `make test`"
        )
    });
    let path = PathBuf::from(dir).join("astronaut.png");
    assert!(
        path.is_file(),
        "{} is missing: run `make setup`",
        path.display()
    );
    path
}

/// The videos drawn for the models' tests, once per test binary.
pub struct Media {
    _dir: tempfile::TempDir,
    /// [`stagecast_fixtures::read_video`].
    pub read_video: PathBuf,
    /// [`stagecast_fixtures::face_video`] of [`astronaut`].
    pub face_video: PathBuf,
    /// Its first and last frames as PNGs, with their numbers.
    pub face_frames: Vec<(u64, PathBuf)>,
}

pub fn media() -> &'static Media {
    static MEDIA: OnceLock<Media> = OnceLock::new();
    MEDIA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        read_video(&p("read.mp4")).expect("drawing the text video");
        face_video(&astronaut(), &p("face.mp4")).expect("drawing the face video");
        let face_frames = [0, u64::from(FACE_VIDEO_FRAMES) - 1]
            .into_iter()
            .map(|n| {
                let png = p(&format!("face-{n}.png"));
                video_frame(&p("face.mp4"), n, &png).expect("a frame of the face video");
                (n, png)
            })
            .collect();
        Media {
            read_video: p("read.mp4"),
            face_video: p("face.mp4"),
            face_frames,
            _dir: dir,
        }
    })
}

/// Each frame's regions, for frames `0..frames`.
pub fn by_frame(regions: &[Region], frames: u64) -> Vec<Vec<&Region>> {
    (0..frames)
        .map(|f| regions.iter().filter(|r| r.frame == f).collect())
        .collect()
}

/// What a run's updates must show of its stages: `started` declares `wanted` (in order,
/// at least), each declared stage reports progress that never goes back and ends at 1,
/// the partial results carry one score for each of `frames` frames, and the edge's own
/// state machine accepts every update as a contract event. Returns the partial scores.
pub fn assert_reports(updates: &[Update], wanted: &[Stage], frames: u64) -> BTreeMap<u64, f64> {
    let Some(Update::Started { stages, .. }) = updates.first() else {
        panic!("the first update is not started: {:?}", updates.first());
    };
    let mut declared = stages.iter();
    for stage in wanted {
        assert!(
            declared.any(|s| s == stage),
            "started declares {stages:?}, without {stage:?} in order"
        );
    }
    for &stage in stages {
        let progress: Vec<f64> = updates
            .iter()
            .filter_map(|u| match u {
                Update::Progress(p) if p.stage == stage => Some(p.progress),
                _ => None,
            })
            .collect();
        assert_eq!(
            progress.last(),
            Some(&1.0),
            "{stage:?} never finished: {progress:?}"
        );
        assert!(
            progress.windows(2).all(|w| w[0] <= w[1]),
            "{stage:?} went back: {progress:?}"
        );
    }
    let mut scores = BTreeMap::new();
    for u in updates {
        if let Update::Partial { scores: s, .. } = u {
            for s in s {
                assert!((0.0..=1.0).contains(&s.score), "{s:?}");
                assert!(
                    scores.insert(s.frame, s.score).is_none(),
                    "frame {} scored twice",
                    s.frame
                );
            }
        }
    }
    assert_eq!(
        scores.keys().copied().collect::<Vec<_>>(),
        (0..frames).collect::<Vec<_>>(),
        "the partial results do not score every frame once"
    );
    assert_contract(updates);
    scores
}

/// The edge's state machine accepts every update, as a contract event, and ends completed.
pub fn assert_contract(updates: &[Update]) {
    let events: Vec<Event> = updates
        .iter()
        .filter_map(Update::to_event)
        .enumerate()
        .map(|(i, kind)| Event {
            id: format!("e{i}"),
            ts: None,
            kind,
        })
        .collect();
    let mut analysis = Analysis::new(AnalysisId::parse("contract").unwrap());
    analysis
        .apply_batch(events, 1_000, |_| false)
        .unwrap_or_else(|e| panic!("event {} refused: {}", e.index, e.kind));
    assert_eq!(analysis.status(), Status::Completed);
    assert_eq!(analysis.snapshot().overall_progress, 1.0);
}

/// The Python reference's version of onnxruntime: the one the node loads.
pub const REFERENCE_ORT: &str = "1.32.0";

/// Runs scripts/reference.py with `args` in the reference venv's python
/// ($STAGECAST_REF_PYTHON, which `make setup` makes) and returns its stdout, JSON or
/// nothing; a failure panics with its stderr.
pub fn reference<S: AsRef<OsStr>>(args: &[S]) -> Vec<u8> {
    let python = reference_python();
    let out = Command::new(python)
        .arg(reference_script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "reference.py {:?} failed ({}):\n{}",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`reference`]'s stdout, parsed.
pub fn reference_json<S: AsRef<OsStr>>(args: &[S]) -> serde_json::Value {
    let stdout = reference(args);
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "reference.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

fn reference_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference.py")
}

/// $STAGECAST_REF_PYTHON, checked once to hold onnxruntime [`REFERENCE_ORT`].
fn reference_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let setup = "run `make setup` (it makes the reference venv), then the tests with \
                     `make test`, or set STAGECAST_REF_PYTHON to that venv's python";
        let python = std::env::var_os("STAGECAST_REF_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("STAGECAST_REF_PYTHON is not set: {setup}"));
        assert!(
            python.is_file(),
            "STAGECAST_REF_PYTHON={} does not exist: {setup}",
            python.display()
        );
        let out = Command::new(&python)
            .arg(reference_script())
            .arg("check")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}; {setup}", python.display()));
        assert!(
            out.status.success(),
            "reference.py check failed: {}; {setup}",
            String::from_utf8_lossy(&out.stderr)
        );
        let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            check["onnxruntime"], REFERENCE_ORT,
            "the reference's onnxruntime is not the node's: {check}"
        );
        python
    })
}
