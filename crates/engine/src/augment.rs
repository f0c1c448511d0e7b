//! Data augmentation of Table 1: random shifts of up to 4 px in width and height and random
//! horizontal flips, producing normalised f32 NCHW batches.
//!
//! Shifts are whole pixels and the uncovered border is zero *after* normalisation (i.e. the
//! training mean colour); see docs/deviations.md. Each image draws from its own stream keyed
//! by (seed, epoch, position in the epoch), so the result does not depend on how rayon
//! schedules the batch and a resumed run draws the same transforms.

use crate::data::{IMAGE_BYTES, ImageSet, Normalization};
use crate::rng;
use rand::RngExt;
use rayon::prelude::*;

/// Largest shift in pixels (4 px as in Table 1 / Lee et al. 2015).
pub const MAX_SHIFT: i32 = 4;

/// The transform drawn for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform {
    /// Shift right (positive) or left (negative), in pixels.
    pub dx: i32,
    /// Shift down (positive) or up (negative), in pixels.
    pub dy: i32,
    pub flip: bool,
}

impl Transform {
    pub const IDENTITY: Transform = Transform {
        dx: 0,
        dy: 0,
        flip: false,
    };

    /// The transform of the image at `position` of epoch `epoch`.
    pub fn draw(seed: u64, epoch: u64, position: u64) -> Transform {
        let mut r = rng::stream(seed, &[rng::TAG_AUGMENT, epoch, position]);
        Transform {
            dx: r.random_range(-MAX_SHIFT..=MAX_SHIFT),
            dy: r.random_range(-MAX_SHIFT..=MAX_SHIFT),
            flip: r.random_bool(0.5),
        }
    }
}

/// Writes the normalised, transformed image `img` (u8 CHW) into `dst` (f32 CHW).
/// Output pixel (y, x) reads input pixel (y - dy, x' - dx) where x' is x mirrored when flipping.
pub fn apply(img: &[u8], t: Transform, norm: &Normalization, dst: &mut [f32]) {
    const W: i32 = 32;
    for c in 0..3 {
        let (m, s) = (norm.mean[c], norm.std[c]);
        let src_plane = &img[c * 1024..(c + 1) * 1024];
        let dst_plane = &mut dst[c * 1024..(c + 1) * 1024];
        for y in 0..W {
            let sy = y - t.dy;
            for x in 0..W {
                let xf = if t.flip { W - 1 - x } else { x };
                let sx = xf - t.dx;
                dst_plane[(y * W + x) as usize] = if (0..W).contains(&sy) && (0..W).contains(&sx) {
                    (src_plane[(sy * W + sx) as usize] as f32 / 255.0 - m) / s
                } else {
                    0.0
                };
            }
        }
    }
}

/// An augmented batch: the images at `idx` of `set`, where `idx[j]` sits at position
/// `first_position + j` of epoch `epoch`. Returns (NCHW f32 data, labels).
pub fn augment_batch(
    set: &ImageSet,
    idx: &[usize],
    norm: &Normalization,
    seed: u64,
    epoch: u64,
    first_position: u64,
) -> (Vec<f32>, Vec<i32>) {
    let mut out = vec![0f32; idx.len() * IMAGE_BYTES];
    out.par_chunks_mut(IMAGE_BYTES)
        .zip(idx.par_iter())
        .enumerate()
        .for_each(|(j, (dst, &i))| {
            let t = Transform::draw(seed, epoch, first_position + j as u64);
            apply(set.image(i), t, norm, dst);
        });
    let labels = idx.iter().map(|&i| set.labels[i] as i32).collect();
    (out, labels)
}

/// Micro-benchmark: augmented images per second on ONE core (a one-thread rayon pool),
/// over `n` synthetic images.
pub fn bench_images_per_sec(n: usize) -> f64 {
    let set = ImageSet {
        pixels: (0..n * IMAGE_BYTES).map(|i| (i * 31 % 251) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    };
    let norm = Normalization {
        mean: [0.49, 0.48, 0.45],
        std: [0.25, 0.24, 0.26],
    };
    let idx: Vec<usize> = (0..n).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread rayon pool");
    pool.install(|| {
        // Warm-up, then the timed pass.
        let _ = augment_batch(&set, &idx[..n.min(64)], &norm, 0, 0, 0);
        let t0 = std::time::Instant::now();
        let (d, _) = augment_batch(&set, &idx, &norm, 1, 1, 0);
        std::hint::black_box(d);
        n as f64 / t0.elapsed().as_secs_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_equals_plain_normalisation() {
        let img: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i % 256) as u8).collect();
        let set = ImageSet {
            pixels: img.clone(),
            labels: vec![3],
        };
        let norm = Normalization {
            mean: [0.5; 3],
            std: [0.25; 3],
        };
        let mut dst = vec![0f32; IMAGE_BYTES];
        apply(&img, Transform::IDENTITY, &norm, &mut dst);
        assert_eq!(dst, crate::data::to_tensor_data(&set, &[0], &norm));
    }
}
