//! Stage 3: frames to the model's input tensor: resize, reorder channels, normalise.

use image::RgbImage;
use image::imageops::{self, FilterType};

use crate::model::Tensor32;
use crate::model::manifest::{ChannelOrder, InputSpec};

/// `[B, 3, H, W]` for `images` resized to `size = (width, height)`.
pub fn batch(images: &[RgbImage], spec: &InputSpec, size: (u32, u32)) -> Tensor32 {
    let (width, height) = size;
    let table = lookup_table(spec);
    let plane = width as usize * height as usize;
    let mut data = Vec::with_capacity(images.len() * 3 * plane);
    for image in images {
        let resized;
        let image = if image.dimensions() == size {
            image
        } else {
            resized = imageops::resize(image, width, height, FilterType::Triangle);
            &resized
        };
        for channel in 0..3 {
            let source = match spec.channel_order {
                ChannelOrder::Rgb => channel,
                ChannelOrder::Bgr => 2 - channel,
            };
            let table = &table[channel];
            data.extend(image.pixels().map(|p| table[p.0[source] as usize]));
        }
    }
    Tensor32 {
        shape: vec![images.len(), 3, height as usize, width as usize],
        data,
    }
}

/// `(value * scale - mean) / std` for every byte value, per model channel; computed in
/// f32 in that order so it matches numpy on the same inputs.
fn lookup_table(spec: &InputSpec) -> [[f32; 256]; 3] {
    std::array::from_fn(|c| {
        std::array::from_fn(|v| (v as f32 * spec.scale - spec.mean[c]) / spec.std[c])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn spec(order: ChannelOrder) -> InputSpec {
        InputSpec {
            name: "x".into(),
            shape: [-1, 3, -1, -1],
            size_multiple: 1,
            max_side: Some(100),
            channel_order: order,
            scale: 1.0 / 255.0,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 1.0],
        }
    }

    #[test]
    fn layout_is_chw_and_normalised() {
        let mut image = RgbImage::new(2, 1);
        image.put_pixel(0, 0, Rgb([255, 0, 0]));
        image.put_pixel(1, 0, Rgb([0, 255, 51]));
        let t = batch(&[image.clone(), image], &spec(ChannelOrder::Rgb), (2, 1));
        assert_eq!(t.shape, [2, 3, 1, 2]);
        let expected = [1.0, -1.0, -1.0, 3.0, 0.0, 0.2];
        assert!(
            t.data[..6]
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{:?}",
            &t.data[..6]
        );
    }

    #[test]
    fn bgr_swaps_channels_and_resize_hits_the_size() {
        let image = RgbImage::from_pixel(8, 4, Rgb([255, 0, 0]));
        let t = batch(&[image], &spec(ChannelOrder::Bgr), (4, 2));
        assert_eq!(t.shape, [1, 3, 2, 4]);
        // model channel 0 reads blue (0), channel 2 reads red (255)
        assert!(t.data[..8].iter().all(|&v| v == -1.0));
        assert!(t.data[16..].iter().all(|&v| v == 1.0));
    }
}
