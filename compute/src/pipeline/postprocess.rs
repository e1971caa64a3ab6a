//! Stage 5: model outputs to per-frame scores and regions in pixels of the original frame.

use image::{GrayImage, Luma};
use imageproc::region_labelling::{Connectivity, connected_components};
use stagecast_shared::event::{Region, Units};

use crate::model::Tensor32;
use crate::model::manifest::{Activation, ClassifierSpec, DetectorSpec, OutputSpec};

/// What one frame holds: its score (0..=1) and regions.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFindings {
    pub frame: u64,
    pub score: f64,
    pub regions: Vec<Region>,
}

/// Splits a batch output of a model that reads whole frames into findings for frames
/// `first_frame..`, each frame being `frame_size = (width, height)` pixels before
/// preprocessing. `characters` are a CTC model's.
pub fn findings(
    output: &Tensor32,
    spec: &OutputSpec,
    characters: &[String],
    first_frame: u64,
    frame_size: (u32, u32),
) -> Vec<FrameFindings> {
    rows(output)
        .zip(first_frame..)
        .map(|(values, frame)| match spec {
            OutputSpec::DetectorProbabilityMap(d) => {
                let (h, w) = (output.shape[2], output.shape[3]);
                detect(values, (w, h), d, frame, frame_size)
            }
            OutputSpec::Classifier(_) | OutputSpec::Ctc(_) | OutputSpec::Mtcnn(_) => {
                let label = label(values, &output.shape, spec, characters);
                whole_frame(label, frame, frame_size)
            }
        })
        .collect()
}

/// One row of a batch output per image.
pub(super) fn rows(output: &Tensor32) -> impl Iterator<Item = &[f32]> {
    let batch = output.shape.first().copied().unwrap_or(0);
    let per_row = output.data.len() / batch.max(1);
    output.data.chunks_exact(per_row.max(1)).take(batch)
}

/// What a labelling model says of one image: a label and a score in 0..=1, and whether
/// the label is one to flag. `None` when it reads nothing (an empty line).
pub(super) struct Label {
    pub text: String,
    pub score: f64,
    pub flagged: bool,
}

/// A classifier's most likely label, scored by its most likely flag label; a CTC
/// model's text, scored by its mean confidence. `shape` is the batch output's.
pub(super) fn label(
    values: &[f32],
    shape: &[usize],
    spec: &OutputSpec,
    characters: &[String],
) -> Option<Label> {
    match spec {
        OutputSpec::Classifier(c) => Some(classify(values, c)),
        OutputSpec::Ctc(_) => read(values, shape.last().copied().unwrap_or(1), characters),
        // the catalog lets only labelling models label
        OutputSpec::DetectorProbabilityMap(_) | OutputSpec::Mtcnn(_) => None,
    }
}

/// A frame the model labelled as a whole: its score, and a frame-wide region when the
/// label is one to flag or a text.
fn whole_frame(label: Option<Label>, frame: u64, frame_size: (u32, u32)) -> FrameFindings {
    let Some(label) = label else {
        return FrameFindings {
            frame,
            score: 0.0,
            regions: Vec::new(),
        };
    };
    let regions = if label.flagged {
        vec![Region {
            frame,
            x: 0.0,
            y: 0.0,
            w: f64::from(frame_size.0),
            h: f64::from(frame_size.1),
            units: Some(Units::Px),
            score: label.score,
            label: Some(label.text),
            points: None,
        }]
    } else {
        Vec::new()
    };
    FrameFindings {
        frame,
        score: label.score,
        regions,
    }
}

/// DB-style: pixels above the threshold form connected components; each component whose
/// mean probability reaches `box_threshold` becomes a box, grown back ("unclipped") by
/// `area * unclip_ratio / perimeter` since DB learns shrunk text kernels.
fn detect(
    map: &[f32],
    map_size: (usize, usize),
    spec: &DetectorSpec,
    frame: u64,
    frame_size: (u32, u32),
) -> FrameFindings {
    let (w, h) = map_size;
    let mask = GrayImage::from_fn(w as u32, h as u32, |x, y| {
        Luma([u8::from(map[y as usize * w + x as usize] > spec.pixel_threshold) * 255])
    });
    let labels = connected_components(&mask, Connectivity::Eight, Luma([0]));

    #[derive(Clone, Copy)]
    struct Component {
        x0: u32,
        y0: u32,
        x1: u32,
        y1: u32,
        sum: f64,
        count: u32,
    }
    let mut components: Vec<Option<Component>> = Vec::new();
    for (x, y, label) in labels.enumerate_pixels() {
        let label = label.0[0] as usize;
        if label == 0 {
            continue;
        }
        if components.len() < label {
            components.resize(label, None);
        }
        let p = f64::from(map[y as usize * w + x as usize]);
        let c = components[label - 1].get_or_insert(Component {
            x0: x,
            y0: y,
            x1: x,
            y1: y,
            sum: 0.0,
            count: 0,
        });
        c.x0 = c.x0.min(x);
        c.y0 = c.y0.min(y);
        c.x1 = c.x1.max(x);
        c.y1 = c.y1.max(y);
        c.sum += p;
        c.count += 1;
    }

    let (fw, fh) = (f64::from(frame_size.0), f64::from(frame_size.1));
    let (sx, sy) = (fw / w as f64, fh / h as f64);
    let min_size = spec.min_size;
    let mut regions: Vec<Region> = components
        .into_iter()
        .flatten()
        .filter(|c| (c.x1 - c.x0 + 1).min(c.y1 - c.y0 + 1) >= min_size)
        .map(|c| (c, c.sum / f64::from(c.count)))
        .filter(|(_, score)| *score >= f64::from(spec.box_threshold))
        .map(|(c, score)| {
            let (bw, bh) = (f64::from(c.x1 - c.x0 + 1), f64::from(c.y1 - c.y0 + 1));
            let grow = bw * bh * f64::from(spec.unclip_ratio) / (2.0 * (bw + bh));
            let x0 = ((f64::from(c.x0) - grow) * sx).clamp(0.0, fw).round();
            let y0 = ((f64::from(c.y0) - grow) * sy).clamp(0.0, fh).round();
            let x1 = ((f64::from(c.x1 + 1) + grow) * sx).clamp(0.0, fw).round();
            let y1 = ((f64::from(c.y1 + 1) + grow) * sy).clamp(0.0, fh).round();
            Region {
                frame,
                x: x0,
                y: y0,
                w: x1 - x0,
                h: y1 - y0,
                units: Some(Units::Px),
                score: score.min(1.0),
                label: Some(spec.label.clone()),
                points: None,
            }
        })
        .collect();
    regions.sort_by(|a, b| {
        (a.y, a.x)
            .partial_cmp(&(b.y, b.x))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    FrameFindings {
        frame,
        score: regions.iter().map(|r| r.score).fold(0.0, f64::max),
        regions,
    }
}

/// The most likely label; the score is the most likely flag label's probability, and
/// the label is flagged when it is that one.
fn classify(values: &[f32], spec: &ClassifierSpec) -> Label {
    let probabilities: Vec<f64> = match spec.activation {
        Activation::Softmax => {
            let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f64> = values.iter().map(|&v| f64::from(v - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        }
        Activation::Sigmoid => values
            .iter()
            .map(|&v| 1.0 / (1.0 + f64::from(-v).exp()))
            .collect(),
        Activation::None => values
            .iter()
            .map(|&v| f64::from(v).clamp(0.0, 1.0))
            .collect(),
    };
    let best = |labels: &mut dyn Iterator<Item = usize>| {
        labels.max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
    };
    let flag = best(
        &mut spec
            .flag_labels
            .iter()
            .filter_map(|l| spec.labels.iter().position(|x| x == l)),
    );
    let top = best(&mut (0..probabilities.len().min(spec.labels.len()))).unwrap_or(0);
    Label {
        text: spec.labels[top].clone(),
        score: flag.map_or(0.0, |i| probabilities[i]),
        flagged: flag == Some(top),
    }
}

/// CTC greedy decoding: the best character of each step, repeats merged, blanks (index
/// 0) dropped; the score is the mean probability of the characters kept.
fn read(values: &[f32], classes: usize, characters: &[String]) -> Option<Label> {
    let mut text = String::new();
    let (mut sum, mut kept) = (0.0, 0u32);
    let mut previous = None;
    for step in values.chunks_exact(classes.max(1)) {
        let (best, p) = step
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        if best != 0 && previous != Some(best) {
            text.push_str(characters.get(best).map_or("", String::as_str));
            sum += f64::from(p);
            kept += 1;
        }
        previous = Some(best);
    }
    let text = text.trim().to_owned();
    (!text.is_empty()).then(|| Label {
        text,
        score: (sum / f64::from(kept.max(1))).clamp(0.0, 1.0),
        flagged: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> OutputSpec {
        OutputSpec::DetectorProbabilityMap(DetectorSpec {
            label: "text".into(),
            pixel_threshold: 0.3,
            box_threshold: 0.6,
            unclip_ratio: 0.0,
            min_size: 2,
        })
    }

    #[test]
    fn components_become_boxes_scaled_to_the_frame() {
        // a 2-frame batch of 8x4 maps; frame 0 has a 3x2 blob and a 1-pixel speck
        let (w, h) = (8, 4);
        let mut data = vec![0.0; 2 * w * h];
        for (x, y) in [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)] {
            data[y * w + x] = 0.9;
        }
        data[3 * w + 7] = 0.95;
        let output = Tensor32 {
            shape: vec![2, 1, h, w],
            data,
        };
        let found = findings(&output, &detector(), &[], 10, (16, 8));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].frame, 10);
        assert_eq!(found[0].regions.len(), 1, "the speck is below min_size");
        let r = &found[0].regions[0];
        assert_eq!((r.x, r.y, r.w, r.h), (2.0, 2.0, 6.0, 4.0));
        assert!((r.score - 0.9).abs() < 1e-6 && (found[0].score - 0.9).abs() < 1e-6);
        assert_eq!((found[1].frame, found[1].score), (11, 0.0));
        assert!(found[1].regions.is_empty());
    }

    #[test]
    fn unclip_grows_boxes_but_stays_inside_the_frame() {
        let OutputSpec::DetectorProbabilityMap(mut d) = detector() else {
            unreachable!()
        };
        d.unclip_ratio = 1.5;
        let (w, h) = (8, 4);
        let data: Vec<f32> = (0..w * h)
            .map(|i| if i % w < 4 { 0.8 } else { 0.0 })
            .collect();
        let found = detect(&data, (w, h), &d, 0, (8, 4));
        let r = &found.regions[0];
        // 4x4 box, area 16, perimeter 16: grows 1.5 each side, clamped at the left edge
        assert_eq!((r.x, r.y, r.w, r.h), (0.0, 0.0, 6.0, 4.0));
    }

    #[test]
    fn classifier_scores_flag_labels() {
        let spec = ClassifierSpec {
            labels: vec!["safe".into(), "unsafe".into(), "other".into()],
            flag_labels: vec!["unsafe".into()],
            activation: Activation::Softmax,
        };
        let output = Tensor32 {
            shape: vec![2, 3],
            data: vec![0.0, 2.0, 0.0, 3.0, 0.0, 0.0],
        };
        let found = findings(&output, &OutputSpec::Classifier(spec), &[], 0, (64, 48));
        let e2 = 2f64.exp();
        assert!((found[0].score - e2 / (e2 + 2.0)).abs() < 1e-9);
        assert_eq!(found[0].regions[0].label.as_deref(), Some("unsafe"));
        assert_eq!((found[0].regions[0].w, found[0].regions[0].h), (64.0, 48.0));
        assert!(found[1].score < 0.1 && found[1].regions.is_empty());
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let characters: Vec<String> = ["", "a", "b", " "].iter().map(|s| s.to_string()).collect();
        // steps: a a blank a b b space(trimmed) -> "aab"
        let best = [1, 1, 0, 1, 2, 2, 3];
        let values: Vec<f32> = best
            .iter()
            .flat_map(|&b| (0..4).map(move |c| if c == b { 0.9 } else { 0.1 / 3.0 }))
            .collect();
        let output = Tensor32 {
            shape: vec![1, best.len(), 4],
            data: values,
        };
        let spec = OutputSpec::Ctc(crate::model::manifest::CtcSpec {
            characters_key: "character".into(),
        });
        let found = findings(&output, &spec, &characters, 0, (100, 20));
        let r = &found[0].regions[0];
        assert_eq!(r.label.as_deref(), Some("aab"));
        assert!((r.score - 0.9).abs() < 1e-6);
        let blank = Tensor32 {
            shape: vec![1, 2, 4],
            data: vec![0.9, 0.0, 0.1, 0.0, 0.9, 0.1, 0.0, 0.0],
        };
        assert!(
            findings(&blank, &spec, &characters, 0, (1, 1))[0]
                .regions
                .is_empty()
        );
    }
}
