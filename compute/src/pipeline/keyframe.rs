//! The pictures of a run (15 of the contract): the key frame of each batch that found
//! something, and the result's, as JPEGs no larger than a viewer shows them.

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{FilterType, resize};
use stagecast_shared::event::Region;
use stagecast_shared::media::{ArtifactName, KIND_KEY_FRAME, KIND_RESULT, MAX_ARTIFACTS};

use super::update::Artifact;

/// Key frames per analysis; the edge's cap leaves room for the result's.
pub const MAX_KEY_FRAMES: u32 = 48;
const _: () = assert!(MAX_KEY_FRAMES < MAX_ARTIFACTS);
/// The longest side of a picture, in pixels.
pub const MAX_SIDE: u32 = 640;
const QUALITY: u8 = 80;

/// `image` as a JPEG, scaled down so its longest side is at most [`MAX_SIDE`].
pub(crate) fn jpeg(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let (w, h) = image.dimensions();
    let longest = w.max(h);
    let mut bytes = Vec::new();
    let encoder = JpegEncoder::new_with_quality(&mut bytes, QUALITY);
    if longest > MAX_SIDE {
        let scale = |side: u32| (u64::from(side) * u64::from(MAX_SIDE) / u64::from(longest)).max(1);
        let small = resize(
            image,
            scale(w) as u32,
            scale(h) as u32,
            FilterType::Triangle,
        );
        small.write_with_encoder(encoder)?;
    } else {
        image.write_with_encoder(encoder)?;
    }
    Ok(bytes)
}

/// Which frames a run pictures: up to [`MAX_KEY_FRAMES`] key frames, and the best one's
/// picture kept for the result.
#[derive(Default)]
pub(crate) struct KeyFrames {
    sent: u32,
    /// The best region's score, its frame and that frame's JPEG.
    best: Option<(f64, u64, Vec<u8>)>,
}

impl KeyFrames {
    /// The frame of a batch's best region (the first of equals, as viewers pick it) and its
    /// score, when its picture is wanted: a key frame is left, or it beats the best so far.
    pub(crate) fn wanted(&self, regions: &[Region]) -> Option<(u64, f64)> {
        let best = regions.iter().fold(None::<&Region>, |best, r| match best {
            Some(b) if b.score >= r.score => Some(b),
            _ => Some(r),
        })?;
        let better = self.best.as_ref().is_none_or(|(s, ..)| best.score > *s);
        (self.sent < MAX_KEY_FRAMES || better).then_some((best.frame, best.score))
    }

    /// Takes the picture of `frame`; the key frame to send, while any are left.
    pub(crate) fn take(&mut self, frame: u64, score: f64, jpeg: Vec<u8>) -> Option<Artifact> {
        let key = (self.sent < MAX_KEY_FRAMES).then(|| {
            self.sent += 1;
            artifact(KIND_KEY_FRAME, "key", frame, jpeg.clone())
        });
        if self.best.as_ref().is_none_or(|(s, ..)| score > *s) {
            self.best = Some((score, frame, jpeg));
        }
        key
    }

    /// The result's picture: the frame of the best region, if any was found.
    pub(crate) fn result(self) -> Option<Artifact> {
        let (_, frame, jpeg) = self.best?;
        Some(artifact(KIND_RESULT, "result", frame, jpeg))
    }
}

fn artifact(kind: &'static str, prefix: &str, frame: u64, bytes: Vec<u8>) -> Artifact {
    let name = ArtifactName::parse(&format!("{prefix}-{frame}.jpg")).expect("a valid name");
    Artifact {
        name,
        kind,
        frame,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tally::tests::region;

    #[test]
    fn pictures_are_jpegs_at_most_640_on_their_longest_side() {
        for (w, h, expect) in [
            (1920, 1080, (640, 360)),
            (360, 1280, (180, 640)),
            (320, 200, (320, 200)),
        ] {
            let bytes = jpeg(&RgbImage::from_pixel(w, h, image::Rgb([200, 30, 30]))).unwrap();
            let back =
                image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
            assert_eq!((back.width(), back.height()), expect);
        }
    }

    #[test]
    fn key_frames_stop_at_the_cap_and_the_result_is_the_best_frame() {
        let mut frames = KeyFrames::default();
        assert_eq!(frames.wanted(&[]), None);
        // the first of equal scores, as the dashboard picks it
        let first = frames.wanted(&[region(3, 0.5), region(4, 0.9), region(5, 0.9)]);
        assert_eq!(first, Some((4, 0.9)));
        let key = frames.take(4, 0.9, vec![1]).unwrap();
        assert_eq!(
            (key.name.as_str(), key.kind, key.frame),
            ("key-4.jpg", KIND_KEY_FRAME, 4)
        );
        for frame in 10..10 + u64::from(MAX_KEY_FRAMES) - 1 {
            assert!(frames.take(frame, 0.1, vec![2]).is_some());
        }
        // no key frame left: only a better frame is wanted, for the result
        assert_eq!(frames.wanted(&[region(90, 0.9)]), None);
        assert_eq!(frames.wanted(&[region(91, 0.95)]), Some((91, 0.95)));
        assert!(frames.take(91, 0.95, vec![3]).is_none());
        let result = frames.result().unwrap();
        assert_eq!(
            (
                result.name.as_str(),
                result.kind,
                result.frame,
                result.bytes
            ),
            ("result-91.jpg", KIND_RESULT, 91, vec![3])
        );
        assert!(KeyFrames::default().result().is_none());
    }
}
