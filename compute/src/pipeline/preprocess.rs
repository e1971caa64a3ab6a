//! Stage 3: frames (or a chain's crops) to a model's input tensor: resize, reorder
//! channels, normalise, in the manifest's layout.

use image::RgbImage;
use image::imageops::{self, FilterType};

use crate::model::Tensor32;
use crate::model::manifest::{ChannelOrder, InputSpec, Layout};

/// `[B, 3, H, W]` (in the spec's layout) for `images` resized to `size = (width, height)`.
pub fn batch(images: &[RgbImage], spec: &InputSpec, size: (u32, u32)) -> Tensor32 {
    tensor(images.iter().map(|i| (i, size)), images.len(), spec, size)
}

/// Crops for a model that labels regions: each resized to what the spec makes of its
/// aspect ratio. Lines of a dynamic width share the widest one's, padded with zeros on the
/// right (PaddleOCR's rule).
pub fn crops(images: &[RgbImage], spec: &InputSpec) -> Tensor32 {
    let sizes: Vec<(u32, u32)> = images
        .iter()
        .map(|i| spec.size_for(i.width(), i.height()))
        .collect();
    let padded = (
        sizes.iter().map(|s| s.0).max().unwrap_or(1),
        sizes.iter().map(|s| s.1).max().unwrap_or(1),
    );
    tensor(images.iter().zip(sizes), images.len(), spec, padded)
}

fn tensor<'a>(
    images: impl Iterator<Item = (&'a RgbImage, (u32, u32))>,
    count: usize,
    spec: &InputSpec,
    (width, height): (u32, u32),
) -> Tensor32 {
    let table = lookup_table(spec);
    let (w, h) = (width as usize, height as usize);
    let per_image = 3 * w * h;
    let mut data = vec![0.0; count * per_image];
    for ((image, size), out) in images.zip(data.chunks_exact_mut(per_image)) {
        let resized;
        let image = if image.dimensions() == size {
            image
        } else {
            resized = imageops::resize(image, size.0, size.1, FilterType::Triangle);
            &resized
        };
        let source = |c: usize| match spec.channel_order {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        };
        for (x, y, pixel) in image.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            for (c, table) in table.iter().enumerate() {
                let at = match spec.layout {
                    Layout::Nchw => (c * h + y) * w + x,
                    Layout::Nhwc => (y * w + x) * 3 + c,
                    Layout::Nwhc => (x * h + y) * 3 + c,
                };
                out[at] = table[pixel.0[source(c)] as usize];
            }
        }
    }
    let shape = spec.layout.order([count as i64, 3, h as i64, w as i64]);
    Tensor32 {
        shape: shape.iter().map(|&d| d as usize).collect(),
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
            layout: Layout::Nchw,
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

    #[test]
    fn channels_last_layouts_put_pixels_where_they_belong() {
        // 2 wide, 1 high: pixel (1, 0) is red
        let mut image = RgbImage::new(2, 1);
        image.put_pixel(1, 0, Rgb([255, 0, 0]));
        let mut s = spec(ChannelOrder::Rgb);
        s.mean = [0.0; 3];
        s.std = [1.0; 3];
        s.layout = Layout::Nhwc;
        let t = batch(std::slice::from_ref(&image), &s, (2, 1));
        assert_eq!(t.shape, [1, 1, 2, 3]);
        assert_eq!(t.data, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        s.layout = Layout::Nwhc;
        let t = batch(&[image], &s, (2, 1));
        assert_eq!(t.shape, [1, 2, 1, 3]);
        assert_eq!(t.data, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn crops_of_a_dynamic_width_are_padded_to_the_widest() {
        let mut s = spec(ChannelOrder::Rgb);
        s.shape = [-1, 3, 2, -1];
        s.mean = [0.0; 3];
        s.std = [1.0; 3];
        let wide = RgbImage::from_pixel(8, 2, Rgb([255, 255, 255]));
        let narrow = RgbImage::from_pixel(2, 2, Rgb([255, 255, 255]));
        let t = crops(&[wide, narrow], &s);
        assert_eq!(t.shape, [2, 3, 2, 8]);
        // the narrow crop fills 2 of 8 columns in each row, zeros after
        let first_row = &t.data[3 * 16..3 * 16 + 8];
        assert_eq!(first_row, [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
