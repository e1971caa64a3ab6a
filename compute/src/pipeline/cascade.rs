//! A chain's second half: the detector's best regions of each frame are cut out (with a
//! margin) and labelled by the next model in batches; its output becomes each region's
//! label and score, and a frame scores its best region.

use std::sync::Arc;

use image::RgbImage;
use tokio_util::sync::CancellationToken;

use super::infer::infer;
use super::postprocess::{self, FrameFindings};
use super::preprocess;
use crate::error::Error;
use crate::model::{CropSpec, Model};

/// Labels the regions of `found` (frames `found[i]` being `images[i]`, scaled from
/// `frame_size`), `batch_size` crops a run. `None` if cancelled. Returns how many were
/// labelled.
pub(crate) async fn label(
    model: &Arc<Model>,
    images: &[RgbImage],
    found: &mut [FrameFindings],
    frame_size: (u32, u32),
    batch_size: usize,
    cancel: &CancellationToken,
) -> Result<Option<usize>, Error> {
    let Some((next, crop)) = model.next() else {
        return Ok(Some(0));
    };
    let mut picked = pick(found, crop);
    // PaddleOCR's order: crops of like aspect ratio go together, so a batch of text lines
    // pads little (gray padding makes the recogniser drop spaces)
    let ratio = |&(f, r): &(usize, usize)| {
        let region = &found[f].regions[r];
        region.w / region.h.max(f64::MIN_POSITIVE)
    };
    picked.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let spec = next.manifest().input.clone();
    for chunk in picked.chunks(batch_size.max(1)) {
        let crops: Vec<RgbImage> = chunk
            .iter()
            .map(|&(f, r)| cut(&images[f], &found[f].regions[r], crop.margin, frame_size))
            .collect();
        let spec = spec.clone();
        let tensor = tokio::task::spawn_blocking(move || preprocess::crops(&crops, &spec)).await?;
        let Some(outputs) = infer(model, (1, 0), tensor, cancel).await? else {
            return Ok(None);
        };
        let output = &outputs[0];
        for (&(f, r), values) in chunk.iter().zip(postprocess::rows(output)) {
            let said = postprocess::label(
                values,
                &output.shape,
                &next.manifest().output,
                next.characters(),
            );
            // a region the next model reads nothing in keeps the detector's word
            if let Some(said) = said {
                let region = &mut found[f].regions[r];
                region.label = Some(said.text);
                region.score = said.score;
            }
        }
    }
    for f in found.iter_mut() {
        f.score = f.regions.iter().map(|r| r.score).fold(0.0, f64::max);
    }
    Ok(Some(picked.len()))
}

/// `(frame, region)` indices of each frame's best `max_regions` regions.
fn pick(found: &[FrameFindings], crop: CropSpec) -> Vec<(usize, usize)> {
    found
        .iter()
        .enumerate()
        .flat_map(|(f, findings)| {
            let mut order: Vec<usize> = (0..findings.regions.len()).collect();
            order.sort_by(|&a, &b| {
                findings.regions[b]
                    .score
                    .total_cmp(&findings.regions[a].score)
            });
            order.truncate(crop.max_regions);
            order.into_iter().map(move |r| (f, r))
        })
        .collect()
}

/// The region, grown by `margin` of its size on each side and clamped to the frame, cut
/// out of `image` (the frame, possibly scaled from `frame_size`).
pub fn cut(
    image: &RgbImage,
    region: &stagecast_shared::event::Region,
    margin: f32,
    frame_size: (u32, u32),
) -> RgbImage {
    let (iw, ih) = image.dimensions();
    let sx = f64::from(iw) / f64::from(frame_size.0.max(1));
    let sy = f64::from(ih) / f64::from(frame_size.1.max(1));
    let (mx, my) = (region.w * f64::from(margin), region.h * f64::from(margin));
    let x0 = ((region.x - mx) * sx).floor().clamp(0.0, f64::from(iw - 1));
    let y0 = ((region.y - my) * sy).floor().clamp(0.0, f64::from(ih - 1));
    let x1 = ((region.x + region.w + mx) * sx)
        .ceil()
        .clamp(x0 + 1.0, f64::from(iw));
    let y1 = ((region.y + region.h + my) * sy)
        .ceil()
        .clamp(y0 + 1.0, f64::from(ih));
    image::imageops::crop_imm(
        image,
        x0 as u32,
        y0 as u32,
        (x1 - x0) as u32,
        (y1 - y0) as u32,
    )
    .to_image()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tally::tests::region;

    #[test]
    fn each_frame_gives_its_best_regions() {
        let frame = |scores: &[f64]| FrameFindings {
            frame: 0,
            score: 0.0,
            regions: scores.iter().map(|&s| region(0, s)).collect(),
        };
        let found = [frame(&[0.2, 0.9, 0.5]), frame(&[]), frame(&[0.4])];
        let crop = CropSpec {
            margin: 0.0,
            max_regions: 2,
        };
        assert_eq!(pick(&found, crop), [(0, 1), (0, 2), (2, 0)]);
    }

    #[test]
    fn cuts_grow_by_the_margin_and_stay_inside() {
        let image = RgbImage::new(50, 25);
        let mut r = region(0, 1.0);
        (r.x, r.y, r.w, r.h) = (20.0, 10.0, 40.0, 10.0);
        // the frame was 100 x 50, the image is half that
        let c = cut(&image, &r, 0.25, (100, 50));
        // x: 10..70 -> 5..35; y: 7.5..22.5 -> 3..12 (floor, ceil)
        assert_eq!(c.dimensions(), (30, 9));
        (r.x, r.w) = (90.0, 40.0);
        assert_eq!(cut(&image, &r, 0.0, (100, 50)).width(), 5);
    }
}
