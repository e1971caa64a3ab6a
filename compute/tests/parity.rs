//! Parity with Python's onnxruntime: the Rust preprocessing matches numpy on the same
//! pixels, and the Rust inference matches `onnxruntime.InferenceSession` on the same
//! tensor, within 1e-4. Python, onnxruntime 1.32.0 and numpy are installed once into a
//! venv under ~/.cache/stagecast/py (or $STAGECAST_PY_VENV).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ort::session::RunOptions;
use stagecast_compute::config;
use stagecast_compute::model::manifest::ChannelOrder;
use stagecast_compute::pipeline::preprocess;
use stagecast_fixtures::{HEIGHT, WIDTH, fixtures};

const ORT_VERSION: &str = "1.32.0";
const TOLERANCE: f64 = 1e-4;

const SCRIPT: &str = r#"
import json, sys
import numpy as np
import onnxruntime as ort

args = json.loads(sys.argv[1])
n, c, h, w = args["shape"]
pixels = np.fromfile(args["pixels"], dtype=np.uint8).reshape(n, h, w, 3)
if args["bgr"]:
    pixels = pixels[..., ::-1]
scale = np.float32(args["scale"])
mean = np.array(args["mean"], dtype=np.float32)
std = np.array(args["std"], dtype=np.float32)
expected = ((pixels.astype(np.float32) * scale - mean) / std).transpose(0, 3, 1, 2)
tensor = np.fromfile(args["tensor"], dtype=np.float32).reshape(n, c, h, w)

session = ort.InferenceSession(args["model"], providers=["CPUExecutionProvider"])
output = session.run(None, {args["input"]: tensor})[0]
rust = np.fromfile(args["output"], dtype=np.float32).reshape(output.shape)
print(json.dumps({
    "ort_version": ort.__version__,
    "preprocess_max_diff": float(np.abs(expected - tensor).max()),
    "output_max_diff": float(np.abs(output - rust).max()),
    "output_shape": list(output.shape),
}))
"#;

#[test]
fn rust_matches_python_onnxruntime() {
    let python = python_with_onnxruntime();
    let model = model();
    let spec = &model.manifest().input;
    let f = fixtures();
    // a batch of two, text and blank, at a size the model takes without resizing
    let images: Vec<_> = [&f.text_png, &f.blank_png]
        .iter()
        .map(|p| image::open(p).unwrap().into_rgb8())
        .collect();
    assert_eq!(spec.size_for(WIDTH, HEIGHT), (WIDTH, HEIGHT));
    let tensor = preprocess::batch(&images, spec, (WIDTH, HEIGHT));
    let output = model
        .run(tensor.clone(), &RunOptions::new().unwrap())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let pixels: Vec<u8> = images
        .iter()
        .flat_map(|i| i.as_raw().iter().copied())
        .collect();
    let args = serde_json::json!({
        "pixels": file("pixels.u8", &pixels),
        "tensor": file("tensor.f32", &f32_bytes(&tensor.data)),
        "output": file("output.f32", &f32_bytes(&output.data)),
        "shape": tensor.shape,
        "bgr": spec.channel_order == ChannelOrder::Bgr,
        "scale": spec.scale,
        "mean": spec.mean,
        "std": spec.std,
        "model": runtime_options().models_dir.join(&model.manifest().file),
        "input": spec.name,
    });
    let out = Command::new(&python)
        .args(["-c", SCRIPT, &args.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Python side failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("parity: {report}");
    assert_eq!(report["ort_version"], ORT_VERSION);
    assert_eq!(report["output_shape"], serde_json::json!(output.shape));
    let diff = |k: &str| report[k].as_f64().unwrap();
    assert!(diff("preprocess_max_diff") <= TOLERANCE, "{report}");
    assert!(diff("output_max_diff") <= TOLERANCE, "{report}");
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The venv's python, after installing what is missing (idempotent; a second run only
/// checks the imports).
fn python_with_onnxruntime() -> PathBuf {
    let venv = std::env::var_os("STAGECAST_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| config::cache_dir().join("py"));
    let python = venv.join("bin/python");
    if ready(&python) {
        return python;
    }
    if !python.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (python3 with venv is required)",
        );
    }
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            &format!("onnxruntime=={ORT_VERSION}"),
            "numpy",
        ]),
        "pip install onnxruntime numpy",
    );
    assert!(
        ready(&python),
        "{} still cannot import onnxruntime {ORT_VERSION} and numpy",
        python.display()
    );
    python
}

fn ready(python: &Path) -> bool {
    let check =
        format!("import numpy, onnxruntime; assert onnxruntime.__version__ == '{ORT_VERSION}'");
    Command::new(python)
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}
