//! MTCNN (Zhang et al. 2016) as ipazc/mtcnn runs it: P-Net over an image pyramid proposes
//! windows, R-Net refines them, O-Net refines again and places five landmarks; NMS
//! between each. The networks run in batches: every frame of a batch at one pyramid
//! level, then every window of the batch at once.

use std::sync::Arc;

use image::RgbImage;
use stagecast_shared::event::{Region, Units};
use tokio_util::sync::CancellationToken;

use super::infer::infer;
use super::postprocess::FrameFindings;
use super::preprocess;
use crate::error::Error;
use crate::model::manifest::{InputSpec, MtcnnSpec};
use crate::model::{Model, Tensor32};

/// P-Net looks at 12x12 windows, moving 2 pixels a step.
const CELL: f64 = 12.0;
const STRIDE: f64 = 2.0;
/// R-Net's and O-Net's input sides.
const RNET_SIDE: u32 = 24;
const ONET_SIDE: u32 = 48;

/// A face window in frame pixels (corners inclusive, as MTCNN counts them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    /// Which image of the batch.
    image: usize,
    x1: f64,
    y1: f64,
    x2: f64,
    y2: f64,
    score: f64,
    /// Box offsets, as fractions of the window's size.
    reg: [f64; 4],
    points: [[f64; 2]; 5],
}

/// The faces in `images` (the frames `first..` of a batch, scaled to `image_size`
/// from `frame_size`); `None` if cancelled. Runs on the model's first link.
pub(crate) async fn detect(
    model: &Arc<Model>,
    spec: &MtcnnSpec,
    images: &[RgbImage],
    first: u64,
    frame_size: (u32, u32),
    cancel: &CancellationToken,
) -> Result<Option<Vec<FrameFindings>>, Error> {
    let input = model.manifest().input.clone();
    let Some(image) = images.first() else {
        return Ok(Some(Vec::new()));
    };
    let (w, h) = image.dimensions();

    // P-Net, every level of the pyramid for the whole batch at once
    let mut windows = Vec::new();
    for scale in scales(w, h, spec) {
        let size = (
            (f64::from(w) * scale).ceil() as u32,
            (f64::from(h) * scale).ceil() as u32,
        );
        let (owned, spec_in) = (images.to_vec(), input.clone());
        let tensor =
            tokio::task::spawn_blocking(move || preprocess::batch(&owned, &spec_in, size)).await?;
        let Some(out) = infer(model, (0, 0), tensor, cancel).await? else {
            return Ok(None);
        };
        for i in 0..images.len() {
            let mut level = proposals(&out[0], &out[1], i, scale, spec.thresholds[0]);
            keep(&mut level, 0.5, Overlap::Union);
            windows.extend(level);
        }
    }
    let mut windows = per_image(windows, images.len(), |w| {
        keep(w, 0.7, Overlap::Union);
        for window in w.iter_mut() {
            // P-Net's offsets scale with the window's size less one, as ipazc's does
            let (rw, rh) = (window.x2 - window.x1, window.y2 - window.y1);
            shift(window, rw, rh);
            square(window);
            truncate(window);
        }
    });

    // R-Net on every window of the batch
    let Some(out) = refine(model, 1, &input, images, &windows, RNET_SIDE, cancel).await? else {
        return Ok(None);
    };
    windows = judged(&windows, &out[1], &out[0], None, spec.thresholds[1]);
    windows = per_image(windows, images.len(), |w| {
        keep(w, 0.7, Overlap::Union);
        for window in w.iter_mut() {
            let (bw, bh) = (window.x2 - window.x1 + 1.0, window.y2 - window.y1 + 1.0);
            shift(window, bw, bh);
            square(window);
        }
    });

    // O-Net: the last word, and the landmarks
    windows.iter_mut().for_each(truncate);
    let Some(out) = refine(model, 2, &input, images, &windows, ONET_SIDE, cancel).await? else {
        return Ok(None);
    };
    windows = judged(
        &windows,
        &out[2],
        &out[0],
        Some(&out[1]),
        spec.thresholds[2],
    );
    let windows = per_image(windows, images.len(), |w| {
        for window in w.iter_mut() {
            let (bw, bh) = (window.x2 - window.x1 + 1.0, window.y2 - window.y1 + 1.0);
            shift(window, bw, bh);
        }
        keep(w, 0.7, Overlap::Min);
    });

    let (sx, sy) = (
        f64::from(frame_size.0) / f64::from(w),
        f64::from(frame_size.1) / f64::from(h),
    );
    let mut found: Vec<FrameFindings> = (first..first + images.len() as u64)
        .map(|frame| FrameFindings {
            frame,
            score: 0.0,
            regions: Vec::new(),
        })
        .collect();
    for window in windows {
        let f = &mut found[window.image];
        f.score = f.score.max(window.score);
        f.regions
            .push(region(&window, f.frame, &spec.label, (sx, sy), frame_size));
    }
    Ok(Some(found))
}

/// The pyramid: scales from `12 / min_face_size` down by `scale_factor` while the
/// shorter side stays at least 12 pixels.
pub fn scales(w: u32, h: u32, spec: &MtcnnSpec) -> Vec<f64> {
    let m = CELL / f64::from(spec.min_face_size);
    let factor = spec.scale_factor;
    let mut side = f64::from(w.min(h)) * m;
    let mut scales = Vec::new();
    while side >= CELL {
        scales.push(m * factor.powi(scales.len() as i32));
        side *= factor;
    }
    scales
}

/// P-Net's windows of image `i` above `threshold`, from its offsets `[B, W', H', 4]` and
/// probabilities `[B, W', H', 2]` at `scale`.
fn proposals(reg: &Tensor32, prob: &Tensor32, i: usize, scale: f64, threshold: f32) -> Vec<Window> {
    let (cols, rows) = (prob.shape[1], prob.shape[2]);
    let cells = cols * rows;
    let prob = &prob.data[i * cells * 2..(i + 1) * cells * 2];
    let reg = &reg.data[i * cells * 4..(i + 1) * cells * 4];
    let mut out = Vec::new();
    for col in 0..cols {
        for row in 0..rows {
            let cell = col * rows + row;
            let p = prob[cell * 2 + 1];
            if p < threshold {
                continue;
            }
            let at = |offset: f64, d: usize| ((STRIDE * d as f64 + offset) / scale).trunc();
            let r = &reg[cell * 4..cell * 4 + 4];
            out.push(Window {
                image: i,
                x1: at(1.0, col),
                y1: at(1.0, row),
                x2: at(CELL, col),
                y2: at(CELL, row),
                score: f64::from(p),
                reg: std::array::from_fn(|k| f64::from(r[k])),
                points: [[0.0; 2]; 5],
            });
        }
    }
    out
}

/// Runs `f` on each image's windows and gathers them again, in image order.
fn per_image(
    windows: Vec<Window>,
    images: usize,
    mut f: impl FnMut(&mut Vec<Window>),
) -> Vec<Window> {
    let mut groups = vec![Vec::new(); images];
    for w in windows {
        groups[w.image].push(w);
    }
    groups
        .into_iter()
        .flat_map(|mut g| {
            f(&mut g);
            g
        })
        .collect()
}

/// Crops every window (zeros outside the frame) to `side x side` and runs network `net`.
async fn refine(
    model: &Arc<Model>,
    net: usize,
    input: &InputSpec,
    images: &[RgbImage],
    windows: &[Window],
    side: u32,
    cancel: &CancellationToken,
) -> Result<Option<Vec<Tensor32>>, Error> {
    if windows.is_empty() {
        // no outputs to read: `judged` returns before looking at them
        return Ok(Some(vec![
            Tensor32 {
                shape: vec![0],
                data: Vec::new()
            };
            3
        ]));
    }
    let crops: Vec<RgbImage> = windows.iter().map(|w| crop(&images[w.image], w)).collect();
    let input = input.clone();
    let tensor =
        tokio::task::spawn_blocking(move || preprocess::batch(&crops, &input, (side, side)))
            .await?;
    infer(model, (0, net), tensor, cancel).await
}

/// The windows whose face probability (`prob[:, 1]`) beats `threshold`, with their new
/// offsets and, from O-Net, their landmarks.
fn judged(
    windows: &[Window],
    prob: &Tensor32,
    reg: &Tensor32,
    points: Option<&Tensor32>,
    threshold: f32,
) -> Vec<Window> {
    if windows.is_empty() {
        return Vec::new();
    }
    windows
        .iter()
        .enumerate()
        .filter(|(i, _)| prob.data[i * 2 + 1] > threshold)
        .map(|(i, w)| {
            let mut w = *w;
            w.score = f64::from(prob.data[i * 2 + 1]);
            w.reg = std::array::from_fn(|k| f64::from(reg.data[i * 4 + k]));
            if let Some(p) = points {
                let (bw, bh) = (w.x2 - w.x1 + 1.0, w.y2 - w.y1 + 1.0);
                let p = &p.data[i * 10..i * 10 + 10];
                w.points = std::array::from_fn(|k| {
                    [
                        bw * f64::from(p[k]) + w.x1 - 1.0,
                        bh * f64::from(p[k + 5]) + w.y1 - 1.0,
                    ]
                });
            }
            w
        })
        .collect()
}

/// The window's pixels, 1-based corners as MTCNN's MATLAB origins count them; zeros where
/// it leaves the image.
fn crop(image: &RgbImage, w: &Window) -> RgbImage {
    let (iw, ih) = image.dimensions();
    let (cw, ch) = ((w.x2 - w.x1 + 1.0).max(1.0), (w.y2 - w.y1 + 1.0).max(1.0));
    let (x0, y0) = (w.x1 as i64 - 1, w.y1 as i64 - 1);
    RgbImage::from_fn(cw as u32, ch as u32, |cx, cy| {
        let (x, y) = (x0 + i64::from(cx), y0 + i64::from(cy));
        if (0..i64::from(iw)).contains(&x) && (0..i64::from(ih)).contains(&y) {
            *image.get_pixel(x as u32, y as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Moves the corners by the window's offsets, in units of `(w, h)`.
fn shift(window: &mut Window, w: f64, h: f64) {
    let [dx1, dy1, dx2, dy2] = window.reg;
    window.x1 += dx1 * w;
    window.y1 += dy1 * h;
    window.x2 += dx2 * w;
    window.y2 += dy2 * h;
}

/// The square of the longer side around the window's centre.
fn square(window: &mut Window) {
    let (w, h) = (window.x2 - window.x1, window.y2 - window.y1);
    let side = w.max(h);
    window.x1 += w * 0.5 - side * 0.5;
    window.y1 += h * 0.5 - side * 0.5;
    window.x2 = window.x1 + side;
    window.y2 = window.y1 + side;
}

fn truncate(window: &mut Window) {
    for v in [
        &mut window.x1,
        &mut window.y1,
        &mut window.x2,
        &mut window.y2,
    ] {
        *v = v.trunc();
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Overlap {
    /// Intersection over union.
    Union,
    /// Intersection over the smaller window: drops faces nested in others.
    Min,
}

/// Non-maximum suppression: the best window stays, and those overlapping it by more than
/// `threshold` go; repeated. Windows are left best first.
fn keep(windows: &mut Vec<Window>, threshold: f64, overlap: Overlap) {
    windows.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |w: &Window| (w.x2 - w.x1 + 1.0) * (w.y2 - w.y1 + 1.0);
    let mut kept: Vec<Window> = Vec::with_capacity(windows.len());
    for w in windows.drain(..) {
        let overlaps = kept.iter().any(|k| {
            let iw = (k.x2.min(w.x2) - k.x1.max(w.x1) + 1.0).max(0.0);
            let ih = (k.y2.min(w.y2) - k.y1.max(w.y1) + 1.0).max(0.0);
            let inter = iw * ih;
            let o = match overlap {
                Overlap::Union => inter / (area(k) + area(&w) - inter),
                Overlap::Min => inter / area(k).min(area(&w)),
            };
            o > threshold
        });
        if !overlaps {
            kept.push(w);
        }
    }
    *windows = kept;
}

/// A face as a region of the frame: the window clamped to it, in frame pixels.
fn region(
    w: &Window,
    frame: u64,
    label: &str,
    (sx, sy): (f64, f64),
    (fw, fh): (u32, u32),
) -> Region {
    let (fw, fh) = (f64::from(fw), f64::from(fh));
    let x = |v: f64| (v * sx).clamp(0.0, fw);
    let y = |v: f64| (v * sy).clamp(0.0, fh);
    let (x0, y0) = (x(w.x1), y(w.y1));
    Region {
        frame,
        x: x0,
        y: y0,
        w: x(w.x2) - x0,
        h: y(w.y2) - y0,
        units: Some(Units::Px),
        score: w.score.clamp(0.0, 1.0),
        label: Some(label.to_owned()),
        points: Some(w.points.iter().map(|&[px, py]| [x(px), y(py)]).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(x1: f64, y1: f64, x2: f64, y2: f64, score: f64) -> Window {
        Window {
            image: 0,
            x1,
            y1,
            x2,
            y2,
            score,
            reg: [0.0; 4],
            points: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn the_pyramid_stops_at_twelve_pixels() {
        let spec = MtcnnSpec {
            rnet: "r".into(),
            onet: "o".into(),
            label: "face".into(),
            min_face_size: 20,
            scale_factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
        };
        let s = scales(512, 512, &spec);
        // 512 * 0.6 = 307 down to >= 12 by 0.709: 10 levels
        assert_eq!(s.len(), 10);
        assert!((s[0] - 0.6).abs() < 1e-12 && (s[1] - 0.6 * 0.709).abs() < 1e-12);
        assert!(512.0 * s[9] >= 12.0 && 512.0 * s[9] * 0.709 < 12.0);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_windows() {
        let mut w = vec![
            window(0.0, 0.0, 9.0, 9.0, 0.8),
            window(1.0, 1.0, 10.0, 10.0, 0.9),
            window(50.0, 50.0, 59.0, 59.0, 0.7),
        ];
        keep(&mut w, 0.5, Overlap::Union);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].score, w[1].score), (0.9, 0.7));
        // a small window inside a big one: Min drops it, Union keeps it
        let nested = vec![
            window(0.0, 0.0, 99.0, 99.0, 0.9),
            window(10.0, 10.0, 29.0, 29.0, 0.95),
        ];
        let mut union = nested.clone();
        keep(&mut union, 0.7, Overlap::Union);
        assert_eq!(union.len(), 2);
        let mut min = nested;
        keep(&mut min, 0.7, Overlap::Min);
        assert_eq!(min.len(), 1);
    }

    #[test]
    fn windows_become_squares_and_crops_pad_with_zeros() {
        let mut w = window(10.0, 10.0, 30.0, 20.0, 1.0);
        square(&mut w);
        assert_eq!((w.x1, w.y1, w.x2, w.y2), (10.0, 5.0, 30.0, 25.0));
        let image = RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]));
        // 1-based (0, 0)..(2, 2): one column and one row outside the image
        let c = crop(&image, &window(0.0, 0.0, 2.0, 2.0, 1.0));
        assert_eq!(c.dimensions(), (3, 3));
        assert_eq!(c.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(1, 1).0, [9, 9, 9]);
    }

    #[test]
    fn proposals_read_cells_width_first() {
        // one image, 2 columns x 3 rows of cells; only cell (col 1, row 2) is a face
        let (cols, rows) = (2, 3);
        let mut prob = vec![0.0; cols * rows * 2];
        prob[(rows + 2) * 2 + 1] = 0.9;
        let reg = vec![0.0; cols * rows * 4];
        let t = |data, c| Tensor32 {
            shape: vec![1, cols, rows, c],
            data,
        };
        let p = proposals(&t(reg, 4), &t(prob, 2), 0, 0.5, 0.6);
        assert_eq!(p.len(), 1);
        // (2 * 1 + 1) / 0.5 = 6, (2 * 2 + 1) / 0.5 = 10; + 12 - 1 ahead
        assert_eq!(
            (p[0].x1, p[0].y1, p[0].x2, p[0].y2),
            (6.0, 10.0, 28.0, 32.0)
        );
    }
}
