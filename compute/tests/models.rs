//! The shipped models and chains on media whose truth is known: `text-read` reads drawn
//! lines, `faces` finds the astronaut in a picture and through a video panning and zooming
//! on it, `moderation` scores safe frames low, and a chain written into a models folder
//! labels each face with a classifier, reporting its stages as the contract wants.

mod common;

use std::path::Path;

use common::*;
use stagecast_compute::{PipelineOptions, Stage};
use stagecast_fixtures::{
    FACE_VIDEO_FRAMES, FACE_VIDEO_SIDE, READ_LINES, READ_SECONDS, face_video_window, fixtures, path,
};
use stagecast_shared::event::Region;

fn options(fps: f64, batch_size: usize) -> PipelineOptions {
    PipelineOptions { fps, batch_size }
}

/// The stages a chain's run declares: one model's, then the chain's own.
fn chain_stages() -> Vec<Stage> {
    Stage::ONE_MODEL
        .into_iter()
        .chain([Stage::Crop, Stage::Label])
        .collect()
}

/// Edits to turn `read` into `reference`, per character (Levenshtein).
fn edit_distance(reference: &str, read: &str) -> usize {
    let read: Vec<char> = read.chars().collect();
    let mut row: Vec<usize> = (0..=read.len()).collect();
    for (i, a) in reference.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &b) in read.iter().enumerate() {
            let substituted = diagonal + usize::from(a != b);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[read.len()]
}

/// Character error rate of `read` against `reference`.
fn cer(reference: &str, read: &str) -> f64 {
    edit_distance(reference, read) as f64 / reference.chars().count() as f64
}

#[test]
fn edit_distance_counts_insertions_deletions_and_substitutions() {
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("Live progress 2026", "Liveprogress2026"), 2);
    assert_eq!(edit_distance("abc", ""), 3);
    assert_eq!(edit_distance("", "ab"), 2);
    assert_eq!(cer("NODE 7 ONLINE", "NODE 7 ONLINE"), 0.0);
}

/// `text-read` (text-detect, then text-rec on each line) reads every drawn line on every
/// sampled frame, each line one region whose label is the text, at most 5% of its
/// characters wrong; the chain's stages report as the contract wants.
#[tokio::test(flavor = "multi_thread")]
async fn text_read_reads_every_line_of_a_video() {
    let video = &media().read_video;
    let (outcome, updates) =
        analyze_with(model_named("text-read"), path(video), options(2.0, 4)).await;
    let result = completed(outcome);
    let frames = u64::from(READ_SECONDS) * 2;
    assert_eq!(result.frames_processed, frames, "{result:?}");
    let mut worst = vec![(0.0, String::new()); READ_LINES.len()];
    for (frame, regions) in by_frame(&result.regions, frames).iter().enumerate() {
        let labels: Vec<(&str, f64)> = regions
            .iter()
            .map(|r| (r.label.as_deref().unwrap_or(""), r.score))
            .collect();
        assert_eq!(
            regions.len(),
            READ_LINES.len(),
            "frame {frame}: one region a line, got {labels:?}"
        );
        for (line, worst) in READ_LINES.iter().zip(&mut worst) {
            let (label, score) = labels
                .iter()
                .copied()
                .min_by(|a, b| cer(line.text, a.0).total_cmp(&cer(line.text, b.0)))
                .unwrap();
            let rate = cer(line.text, label);
            eprintln!(
                "frame {frame}: {:?} read {label:?} (score {score:.3}), CER {:.1}%",
                line.text,
                rate * 100.0
            );
            assert!(
                rate <= 0.05,
                "frame {frame}: {:?} read as {label:?}, CER {:.1}% > 5%; labels {labels:?}",
                line.text,
                rate * 100.0
            );
            assert!((0.5..=1.0).contains(&score), "{label:?} scored {score}");
            if rate >= worst.0 {
                *worst = (rate, label.to_owned());
            }
        }
    }
    for (line, (rate, label)) in READ_LINES.iter().zip(&worst) {
        eprintln!(
            "CER {:?}: worst {:.1}% ({label:?})",
            line.text,
            rate * 100.0
        );
    }
    assert_reports(&updates, &chain_stages(), frames);
}

/// The box of `face` (corners in the picture) in frame `n` of the face video.
fn face_in_frame([x1, y1, x2, y2]: [f64; 4], n: u64) -> [f64; 4] {
    let (x, y, w, h) = face_video_window(n, ASTRONAUT_SIZE);
    let side = f64::from(FACE_VIDEO_SIDE);
    let (sx, sy) = (side / w, side / h);
    [(x1 - x) * sx, (y1 - y) * sy, (x2 - x) * sx, (y2 - y) * sy]
}

/// Exactly one face in `regions`, overlapping `truth` by IoU 0.5 or more, its landmarks
/// inside its box. Returns the IoU.
fn assert_one_face(regions: &[&Region], truth: [f64; 4], what: &str) -> f64 {
    let [face] = regions else {
        panic!("{what}: expected one face, got {regions:?}");
    };
    assert_eq!(face.label.as_deref(), Some("face"), "{what}");
    assert!(face.score >= 0.9, "{what}: {face:?}");
    let overlap = iou(face, xywh(truth));
    assert!(
        overlap >= 0.5,
        "{what}: IoU {overlap:.2} with the face at {truth:?}: {face:?}"
    );
    let points = face.points.as_ref().expect("landmarks");
    assert_eq!(points.len(), 5, "{what}");
    let [x1, y1, x2, y2] = corners(face);
    assert!(
        points
            .iter()
            .all(|&[x, y]| (x1..=x2).contains(&x) && (y1..=y2).contains(&y)),
        "{what}: landmarks outside the box: {face:?}"
    );
    overlap
}

/// `faces` finds the astronaut's face, and only it, in the picture and in every frame of
/// a video panning and zooming in on it, where the face's box moves as the pan says.
#[tokio::test(flavor = "multi_thread")]
async fn faces_finds_the_astronaut_in_a_picture_and_through_a_video() {
    let faces = model_named("faces");
    let (outcome, _) = analyze_with(faces.clone(), path(&astronaut()), options(1.0, 1)).await;
    let result = completed(outcome);
    let picture = by_frame(&result.regions, 1);
    let overlap = assert_one_face(&picture[0], ASTRONAUT_FACE, "astronaut.png");
    eprintln!("astronaut.png: IoU {overlap:.3}");
    assert!(result.flagged, "a face that sure is flagged: {result:?}");

    let fps = f64::from(stagecast_fixtures::FACE_VIDEO_FPS);
    let (outcome, _) = analyze_with(faces, path(&media().face_video), options(fps, 4)).await;
    let result = completed(outcome);
    let frames = u64::from(FACE_VIDEO_FRAMES);
    assert_eq!(result.frames_processed, frames, "{result:?}");
    for (n, regions) in by_frame(&result.regions, frames).iter().enumerate() {
        let truth = face_in_frame(ASTRONAUT_FACE, n as u64);
        let overlap = assert_one_face(regions, truth, &format!("face video frame {n}"));
        eprintln!("face video frame {n}: IoU {overlap:.3} (truth {truth:.1?})");
    }
}

/// Open NSFW scores drawn text, a blank frame and the astronaut as safe.
#[tokio::test(flavor = "multi_thread")]
async fn moderation_scores_safe_frames_low() {
    let f = fixtures();
    let astronaut = astronaut();
    for input in [&f.text_png, &f.blank_png, &astronaut] {
        let (outcome, updates) =
            analyze_with(model_named("moderation"), path(input), options(1.0, 1)).await;
        let result = completed(outcome);
        let name = input.file_name().unwrap().to_string_lossy();
        eprintln!("moderation {name}: score {:.4}", result.score);
        assert!(result.score < 0.2 && !result.flagged, "{name}: {result:?}");
        assert!(result.regions.is_empty(), "{name}: {:?}", result.regions);
        let scores = assert_reports(&updates, &Stage::ONE_MODEL, 1);
        assert_eq!(scores[&0], result.score, "{name}");
    }
}

/// A folder holding the real models (linked) and one chain manifest, `text`.
fn models_folder_with(chain: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = runtime_options().models_dir;
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap().path();
        let name = entry.file_name().unwrap();
        if Path::new(name).extension().is_none_or(|x| x != "toml") {
            std::os::unix::fs::symlink(&entry, dir.path().join(name)).unwrap();
        }
    }
    std::fs::write(dir.path().join(format!("{chain}.toml")), text).unwrap();
    dir
}

/// A chain a user writes, no code: `faces`, then a classifier on each face. Open NSFW is
/// no deepfake detector; it stands in for the user's own classifier here (any model of
/// output kind `classifier` plugs in the same way). Every frame of the face video has one
/// region, the face, labelled with the classifier's top label and scored by its flag label.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_manifest_labels_each_face_with_a_classifier() {
    let folder = models_folder_with(
        "face-check",
        r#"
name = "face-check"
description = "faces, each labelled by a classifier (here Open NSFW, standing in)"
chain = ["faces", "moderation"]

[crop]
margin = 0.1
max_regions = 4

[decision]
threshold = 0.8
review_band = 0.1
"#,
    );
    let chain = std::sync::Arc::new(load(folder.path(), "face-check"));
    assert_eq!(chain.links().len(), 2);
    let fps = f64::from(stagecast_fixtures::FACE_VIDEO_FPS);
    let (outcome, updates) = analyze_with(chain, path(&media().face_video), options(fps, 4)).await;
    let result = completed(outcome);
    let frames = u64::from(FACE_VIDEO_FRAMES);
    assert_eq!(result.frames_processed, frames, "{result:?}");
    for (n, regions) in by_frame(&result.regions, frames).iter().enumerate() {
        let [face] = regions[..] else {
            panic!("frame {n}: expected one region, got {regions:?}");
        };
        // the classifier's top label; its score is the flag label's (nsfw) probability
        assert_eq!(face.label.as_deref(), Some("sfw"), "frame {n}: {face:?}");
        assert!(
            (0.0..0.5).contains(&face.score),
            "frame {n}: sfw on top, so nsfw is below one half: {face:?}"
        );
        // still the face's box
        let overlap = iou(face, xywh(face_in_frame(ASTRONAUT_FACE, n as u64)));
        assert!(overlap >= 0.5, "frame {n}: IoU {overlap:.2}: {face:?}");
        eprintln!(
            "face-check frame {n}: {:?} nsfw {:.5}",
            face.label, face.score
        );
    }
    let scores = assert_reports(&updates, &chain_stages(), frames);
    for region in &result.regions {
        assert_eq!(scores[&region.frame], region.score, "{region:?}");
    }
    assert!(!result.flagged && result.score < 0.5, "{result:?}");
}
