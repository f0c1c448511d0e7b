//! BatchNorm over `[N, C, L]` activations (L = H * W), optionally followed by ReLU, forward
//! and backward in one pass each on plain `f32` slices.
//!
//! Same maths as burn-nn 0.21's `BatchNorm` in training mode: batch mean, biased batch variance,
//! `epsilon` inside the square root. Burn computes this as ~12 broadcast tensor ops (each with
//! its own autodiff node, temporary tensor and, on Flex without SIMD, a scalar strided walk);
//! here it is two reads of the input forward and two reads of the gradient backward.
//!
//! Determinism: statistics are per channel, each summed by one thread in a fixed order
//! ([`super::sum`] per row, rows added in f64); the element-wise passes have no sums.

use super::{sum, wide};
use rayon::prelude::*;

/// Shapes: `n` samples, `c` channels, `l` values per channel and sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnGeom {
    pub n: usize,
    pub c: usize,
    pub l: usize,
}

impl BnGeom {
    fn count(&self) -> f64 {
        (self.n * self.l) as f64
    }
    pub(crate) fn len(&self) -> usize {
        self.n * self.c * self.l
    }
    /// The `l` values of sample `i`, channel `ch`.
    fn row<'a>(&self, t: &'a [f32], i: usize, ch: usize) -> &'a [f32] {
        let start = (i * self.c + ch) * self.l;
        &t[start..start + self.l]
    }
}

/// Batch statistics of each channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BnStats {
    pub mean: Vec<f32>,
    /// Biased (divided by N * L), as burn-nn.
    pub var: Vec<f32>,
    /// 1 / sqrt(var + epsilon).
    pub inv_std: Vec<f32>,
}

/// Per-channel mean and biased variance (two passes: the variance of the centred values).
pub fn stats(g: &BnGeom, x: &[f32], epsilon: f64) -> BnStats {
    assert_eq!(x.len(), g.len(), "batch-norm input has the wrong length");
    let per: Vec<(f32, f32, f32)> = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            wide(|| {
                let total: f64 = (0..g.n).map(|i| sum(g.row(x, i, ch)) as f64).sum();
                let mean = (total / g.count()) as f32;
                let sq: f64 = (0..g.n)
                    .map(|i| sum_sq_centred(g.row(x, i, ch), mean) as f64)
                    .sum();
                let var = sq / g.count();
                (mean, var as f32, (1.0 / (var + epsilon).sqrt()) as f32)
            })
        })
        .collect();
    BnStats {
        mean: per.iter().map(|s| s.0).collect(),
        var: per.iter().map(|s| s.1).collect(),
        inv_std: per.iter().map(|s| s.2).collect(),
    }
}

/// `y = x * scale[c] + shift[c]` (`+ residual`, the shortcut of a residual block, when
/// given), then `max(y, 0)` when `relu`.
pub fn affine(
    g: &BnGeom,
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    assert_eq!(x.len(), g.len(), "batch-norm input has the wrong length");
    if let Some(r) = residual {
        assert_eq!(r.len(), g.len(), "residual has the wrong length");
    }
    // Written once, element by element, into fresh memory: no zero-fill first (memset was
    // ~5 % of a ResNet-20 step across the kernels' outputs) and one pass for the affine map,
    // the residual and the ReLU together.
    let mut y: Vec<f32> = Vec::with_capacity(g.len());
    y.spare_capacity_mut()[..g.len()]
        .par_chunks_mut(g.l.max(1))
        .zip(x.par_chunks(g.l.max(1)))
        .enumerate()
        .for_each(|(r, (yr, xr))| {
            let (a, b) = (scale[r % g.c], shift[r % g.c]);
            let res = residual.map(|res| &res[r * g.l..(r + 1) * g.l]);
            wide(|| {
                if relu {
                    affine_row::<true>(yr, xr, res, a, b)
                } else {
                    affine_row::<false>(yr, xr, res, a, b)
                }
            })
        });
    // SAFETY: the loop above wrote all g.len() values (x has g.len() values, checked above,
    // and every chunk of x meets its chunk of y).
    unsafe { y.set_len(g.len()) };
    y
}

/// One row of [`affine`]: `x * a + b (+ res)`, then `max(_, 0)` when `RELU`. The branches
/// are outside the loops (a constant, and one match), so each loop vectorises.
#[inline(always)]
fn affine_row<const RELU: bool>(
    y: &mut [std::mem::MaybeUninit<f32>],
    x: &[f32],
    res: Option<&[f32]>,
    a: f32,
    b: f32,
) {
    let out = |v: f32| if RELU { v.max(0.0) } else { v };
    match res {
        None => {
            for (y, x) in y.iter_mut().zip(x) {
                y.write(out(x * a + b));
            }
        }
        Some(res) => {
            for ((y, x), v) in y.iter_mut().zip(x).zip(res) {
                y.write(out(x * a + b + v));
            }
        }
    }
}

/// Scale and shift that normalise with `mean`/`inv_std` and then apply `gamma`/`beta`.
pub fn scale_shift(
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(inv_std).map(|(g, s)| g * s).collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

/// Gradients of the training-mode BatchNorm (+ residual + ReLU when `y_relu` is given: the
/// forward's output, whose zeros mark where ReLU cut), in place: returns `(dgamma, dbeta)`.
///
/// `dy` is overwritten with dz, the gradient after the ReLU mask (which is the residual's
/// gradient), during the first pass. The input gradient then goes into `dx` when given (the
/// residual case, which needs dz as well), else over dz in `dy`. Working in the incoming
/// gradient's buffer saves a fresh output (its page faults and zeroing) and lets the second
/// pass read dz instead of dy and y.
pub fn backward(
    g: &BnGeom,
    x: &[f32],
    y_relu: Option<&[f32]>,
    dy: &mut [f32],
    stats: &BnStats,
    gamma: &[f32],
    dx: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        dy.len(),
        g.len(),
        "batch-norm gradient has the wrong length"
    );
    assert_eq!(x.len(), g.len(), "batch-norm input has the wrong length");
    assert!(
        y_relu.is_none_or(|y| y.len() == g.len()),
        "batch-norm output has the wrong length"
    );
    assert!(
        dx.as_ref().is_none_or(|d| d.len() == g.len()),
        "input gradient has the wrong length"
    );
    // The rows of each channel, to be masked and summed by one thread in sample order.
    let mut by_channel: Vec<Vec<&mut [f32]>> = (0..g.c).map(|_| Vec::with_capacity(g.n)).collect();
    for (r, row) in dy.chunks_mut(g.l.max(1)).enumerate() {
        by_channel[r % g.c].push(row);
    }
    // Per channel: dz (burn's relu_backward: zero where y <= 0), then the sums of dz and of
    // dz * x_hat.
    let sums: Vec<(f32, f32)> = by_channel
        .into_par_iter()
        .enumerate()
        .map(|(ch, rows)| {
            wide(|| {
                let (m, s) = (stats.mean[ch], stats.inv_std[ch]);
                let (mut sd, mut sdx) = (0f64, 0f64);
                for (i, dz) in rows.into_iter().enumerate() {
                    if let Some(y) = y_relu {
                        // A select, not a conditional store: it vectorises.
                        for (d, y) in dz.iter_mut().zip(g.row(y, i, ch)) {
                            *d = if *y <= 0.0 { 0.0 } else { *d };
                        }
                    }
                    let (a, b) = sums_dz_xhat(dz, g.row(x, i, ch), m, s);
                    sd += a as f64;
                    sdx += b as f64;
                }
                (sd as f32, sdx as f32)
            })
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1).collect();
    let count = g.count() as f32;
    // dx = gamma * inv_std * (dz - mean(dz) - x_hat * mean(dz * x_hat)), row by row.
    let row_dx = |r: usize, dz: &[f32], out: &mut [f32]| {
        let (i, ch) = (r / g.c, r % g.c);
        let (m, s) = (stats.mean[ch], stats.inv_std[ch]);
        let k = gamma[ch] * s;
        let (mdb, mdg) = (dbeta[ch] / count, dgamma[ch] / count);
        wide(|| {
            for ((o, d), x) in out.iter_mut().zip(dz).zip(g.row(x, i, ch)) {
                let xh = (x - m) * s;
                *o = k * (d - mdb - xh * mdg);
            }
        })
    };
    match dx {
        Some(dx) => dx
            .par_chunks_mut(g.l.max(1))
            .zip(dy.par_chunks(g.l.max(1)))
            .enumerate()
            .for_each(|(r, (out, dz))| row_dx(r, dz, out)),
        None => {
            dy.par_chunks_mut(g.l.max(1))
                .enumerate()
                .for_each_init(Vec::new, |dz, (r, row)| {
                    // A row's dz is copied out (L1) before the row is overwritten.
                    dz.clear();
                    dz.extend_from_slice(row);
                    row_dx(r, dz, row);
                })
        }
    }
    (dgamma, dbeta)
}

/// `(sum dz, sum dz * (x - mean) * inv_std)` over a row, in 8 independent lanes.
#[inline(always)]
fn sums_dz_xhat(dz: &[f32], x: &[f32], mean: f32, inv_std: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let (dc, xc) = (dz.chunks_exact(8), x.chunks_exact(8));
    let (dr, xr) = (dc.remainder(), xc.remainder());
    for (d8, x8) in dc.zip(xc) {
        for l in 0..8 {
            a[l] += d8[l];
            b[l] += d8[l] * ((x8[l] - mean) * inv_std);
        }
    }
    for (l, (d, x)) in dr.iter().zip(xr).enumerate() {
        a[l] += d;
        b[l] += d * ((x - mean) * inv_std);
    }
    (a.iter().sum(), b.iter().sum())
}

/// Sum of `(v - mean)^2` in 8 independent lanes (vectorisable, fixed order).
#[inline(always)]
fn sum_sq_centred(v: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            let d = x - mean;
            *a += d * d;
        }
    }
    for (a, x) in acc.iter_mut().zip(rest) {
        let d = x - mean;
        *a += d * d;
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::micro::{on_fused_paths, with_portable_kernel};

    /// The row loops give the same bits AVX2- and AVX-512-wide ([`wide`]) as at the baseline
    /// width (the portable switch turns `wide` off), for every variant of the forward and
    /// backward.
    #[test]
    fn wide_loops_give_the_baseline_bits() {
        let g = BnGeom { n: 3, c: 5, l: 37 };
        let fill = |a: usize, b: usize, c: f32| -> Vec<f32> {
            (0..g.len())
                .map(|i| ((i * a % b) as f32 - c) / 7.0)
                .collect()
        };
        let (x, res, dy) = (fill(37, 23, 11.0), fill(53, 19, 9.0), fill(29, 17, 8.0));
        let (gamma, beta) = (vec![1.3f32; g.c], vec![-0.2f32; g.c]);
        let all = || {
            let st = stats(&g, &x, 1e-5);
            let (scale, shift) = scale_shift(&st.mean, &st.inv_std, &gamma, &beta);
            let mut out = vec![st.mean.clone(), st.var.clone(), st.inv_std.clone()];
            for (residual, relu) in [(None, false), (None, true), (Some(&res[..]), false)] {
                out.push(affine(&g, &x, &scale, &shift, residual, relu));
            }
            let y = affine(&g, &x, &scale, &shift, Some(&res), true);
            let (mut d1, mut d2) = (dy.clone(), dy.clone());
            let mut dx = vec![0f32; g.len()];
            let (dg1, db1) = backward(&g, &x, Some(&y), &mut d1, &st, &gamma, None);
            let (dg2, db2) = backward(&g, &x, Some(&y), &mut d2, &st, &gamma, Some(&mut dx));
            out.extend([y, d1, d2, dx, dg1, db1, dg2, db2]);
            out
        };
        let baseline = with_portable_kernel(all);
        for (path, fast) in on_fused_paths("batchnorm row loops", all) {
            for (i, (f, b)) in fast.iter().zip(&baseline).enumerate() {
                let same = f.iter().zip(b).all(|(f, b)| f.to_bits() == b.to_bits());
                assert!(
                    same,
                    "output {i} differs between the {path} and the baseline loops"
                );
            }
        }
    }
}
