//! Shared by the integration tests: the real model, inputs drawn with ffmpeg, and helpers.
#![allow(dead_code)] // each test binary uses its own part of this

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use stagecast_compute::pipeline::{self, Outcome};
use stagecast_compute::{
    CancellationToken, Catalog, Error, Model, PipelineOptions, RuntimeOptions, Source, Update,
};
use stagecast_shared::event::Region;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A line of text drawn into the fixtures.
pub struct Line {
    pub text: &'static str,
    pub size: u32,
    pub x: u32,
    pub y: u32,
}

pub const LINES: [Line; 2] = [
    Line {
        text: "HELLO STAGECAST",
        size: 40,
        x: 40,
        y: 50,
    },
    Line {
        text: "Live progress 2026",
        size: 32,
        x: 260,
        y: 260,
    },
];

/// 640x352 is what the model takes as is (multiples of 32), so no resize happens.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 352;

pub struct Fixtures {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    /// `LINES` in black on white, `WIDTH` x `HEIGHT`.
    pub text_png: PathBuf,
    pub blank_png: PathBuf,
    /// 1280x720 (bigger than the model takes), 2 s at 25 fps: white for 1 s, then
    /// `LINES` drawn twice as big.
    pub video: PathBuf,
    /// A frame of `video` from after the text appears.
    pub video_frame_png: PathBuf,
    /// 20 s of `LINES`, for cancelling.
    pub long_video: PathBuf,
    /// An mp4 header then garbage.
    pub corrupt_mp4: PathBuf,
    /// The first 200 bytes of `text_png`.
    pub truncated_png: PathBuf,
}

/// The ffmpeg filters drawing `LINES` magnified `scale` times.
fn draw_lines(scale: u32, enable: &str) -> String {
    LINES
        .iter()
        .map(|l| {
            format!(
                "drawtext=fontfile={FONT}:text='{}':fontsize={}:fontcolor=black:x={}:y={}{enable}",
                l.text,
                l.size * scale,
                l.x * scale,
                l.y * scale
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_owned();
        let p = |name: &str| dir.join(name);
        let white = |size: &str, seconds: u32| format!("color=c=white:s={size}:d={seconds}:r=25");
        let small = format!("{WIDTH}x{HEIGHT}");
        let one_frame = ["-frames:v", "1"];
        let h264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"];
        let lavfi = |size: &str, seconds: u32, filters: String, rest: &[&str], out: &str| {
            let source = white(size, seconds);
            let mut args = vec!["-f", "lavfi", "-i", &source];
            if !filters.is_empty() {
                args.extend(["-vf", &filters]);
            }
            args.extend(rest);
            ffmpeg(&args, &p(out));
        };
        lavfi(&small, 1, draw_lines(1, ""), &one_frame, "text.png");
        lavfi(&small, 1, String::new(), &one_frame, "blank.png");
        lavfi(
            "1280x720",
            2,
            draw_lines(2, ":enable='gte(t,1)'"),
            &h264,
            "video.mp4",
        );
        lavfi(&small, 20, draw_lines(1, ""), &h264, "long.mp4");
        ffmpeg(
            &["-ss", "1.5", "-i", path(&p("video.mp4")), "-frames:v", "1"],
            &p("video_frame.png"),
        );
        let mut corrupt = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec();
        corrupt.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        std::fs::write(p("corrupt.mp4"), corrupt).unwrap();
        let png = std::fs::read(p("text.png")).unwrap();
        std::fs::write(p("truncated.png"), &png[..200]).unwrap();
        Fixtures {
            text_png: p("text.png"),
            blank_png: p("blank.png"),
            video: p("video.mp4"),
            video_frame_png: p("video_frame.png"),
            long_video: p("long.mp4"),
            corrupt_mp4: p("corrupt.mp4"),
            truncated_png: p("truncated.png"),
            dir,
            _dir: tmp,
        }
    })
}

fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg must be installed (apt-get install ffmpeg) to draw the test inputs");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

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

/// Runs the pipeline to its end; returns its outcome and every update it sent.
pub async fn analyze(
    input: &str,
    options: PipelineOptions,
) -> (Result<Outcome, Error>, Vec<Update>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let source = Source::parse(input).expect("source");
    let outcome = pipeline::run(model(), &source, &options, CancellationToken::new(), tx).await;
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

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The `stagecast-node` binary of this build.
pub fn node_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stagecast-node"))
}

/// A node publishing to `edge`, ready to take analyses.
pub async fn ready_node(edge: &stagecast_e2e::Edge) -> stagecast_e2e::Node {
    let mut node = stagecast_e2e::Node::start(node_bin(), Some(&edge.base_url()), &[])
        .await
        .unwrap();
    node.ready(std::time::Duration::from_secs(180))
        .await
        .unwrap();
    node
}
