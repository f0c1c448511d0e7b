//! Stride-1 convolutions of small images (at most [`super::conv::SMALL_IMAGE`] output pixels: VGG-16's 4x4
//! and 2x2 layers at CIFAR size) that never multiply by the zero padding.
//!
//! With padding 1, 31 % of a 3x3 kernel's products over a 4x4 image fall in the padding, and
//! 56 % over a 2x2 image; an im2col GEMM over the batch computes them all. Here each kernel
//! tap is summed only over the output pixels it puts inside the image:
//! - forward, and the input gradient (the convolution of dY with the flipped weight, stride 1
//!   again): per tap and output row, Y += W_tap x X over the pixels the tap reaches. W is
//!   packed tap-major (k = (ky, kx, ci)), so that a tap is one range of k
//!   ([`ASource::PackedPart`]); the input is copied once to `[iy][ix][ci][sample]` with
//!   padding, so that B's 16 columns (16 samples of one pixel) are read in place;
//! - weight gradient: per tap, dW_tap (Cout x Cin) = dY x X^T over the (sample, pixel)
//!   pairs where the tap falls inside the image; dY is read in place ([`ASource::Gather`]).
//!
//! Determinism: work is split over output channels (forward) or over (tap, block of input
//! channels) (weight gradient), never over a sum, and each sum runs in a fixed order.

use super::geom::ConvGeom;
use super::micro::{self, ASource, BPanel, CBlock, NR, PackedA, row_blocks};
use rayon::prelude::*;

/// Input channels per task of the weight gradient, in panels of [`NR`]: a k-block of its
/// packed x^T (`micro::KC` x 128 floats) stays in L2 while the gathered rows of dY meet it.
const WEIGHT_PANELS: usize = 8;

/// The weight as this path's A: `m` rows, k tap-major (ky, kx, ci); `at(r, k)` is element
/// (r, k) in the usual order (ci, ky, kx).
pub fn pack_weight(g: &ConvGeom, m: usize, at: impl Fn(usize, usize) -> f32 + Sync) -> PackedA {
    let khw = g.kh * g.kw;
    let from: Vec<usize> = (0..g.k())
        .map(|kt| (kt % g.cin) * khw + kt / g.cin)
        .collect();
    PackedA::new(m, g.k(), |r, kt| at(r, from[kt]))
}

/// `y` (`[N, Cout, Ho, Wo]`) = conv(`x`) + `bias`, for a stride-1 `g`; `a` is the weight
/// packed by [`pack_weight`].
pub fn forward(g: &ConvGeom, x: &[f32], a: &PackedA, bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(g.stride, [1, 1], "the pixels path is for stride 1");
    assert_eq!(
        (a.m(), a.k()),
        (g.cout, g.k()),
        "conv weight has the wrong shape"
    );
    let (cin, p, khw) = (g.cin, g.p(), g.kh * g.kw);
    // Samples rounded up to whole 8-float runs; the extra columns are computed and dropped.
    let n8 = g.n.next_multiple_of(8);
    let (hp, wp) = (g.h + 2 * g.pad[0], g.w + 2 * g.pad[1]);
    // x as [iy][ix][ci][sample], padded (only pixels inside the image are ever read; the
    // padding keeps every offset non-negative).
    let mut xt = vec![0f32; hp * wp * cin * n8];
    xt.par_chunks_mut(cin * n8)
        .enumerate()
        .for_each(|(pix, dst)| {
            let (py, px) = (pix / wp, pix % wp);
            let (Some(iy), Some(ix)) = (py.checked_sub(g.pad[0]), px.checked_sub(g.pad[1])) else {
                return;
            };
            if iy >= g.h || ix >= g.w {
                return;
            }
            for (ci, row) in dst.chunks_exact_mut(n8).enumerate() {
                for (s, v) in row[..g.n].iter_mut().enumerate() {
                    *v = x[((s * cin + ci) * g.h + iy) * g.w + ix];
                }
            }
        });
    // The result as [co][output pixel][sample]; B's k-steps (input channels) are n8 apart.
    let cols = p * n8;
    let lin: Vec<usize> = (0..cin).map(|ci| ci * n8).collect();
    let mut out = vec![0f32; g.cout * cols];
    let (per, blocks) = row_blocks(g.cout, cols, &mut out);
    blocks.into_par_iter().for_each(|(first, c)| {
        let rows = c.len() / cols;
        // Tap by tap: the tap's slice of this block of W (rows x Cin) stays in L2 while it
        // meets every output row it reaches. (Grouping the pixels by the taps they see, one
        // sum per group, reads W 5x as often for a 4x4 image but measured the same.)
        for t in 0..khw {
            let (ky, kx) = (t / g.kw, t % g.kw);
            let (oy0, oy1, _) = ConvGeom::valid(g.ho, g.h, 1, g.pad[0], ky);
            let (ox0, ox1, _) = ConvGeom::valid(g.wo, g.w, 1, g.pad[1], kx);
            let run = (ox1 - ox0) * n8;
            for oy in oy0..oy1 {
                // Column j of the run: output pixel (oy, ox0 + j / n8), sample j % n8, which
                // under tap t reads padded input pixel (oy + ky, ox0 + kx + j / n8).
                let base = ((oy + ky) * wp + ox0 + kx) * cin * n8;
                let at = |j: usize| base + (j / n8) * cin * n8 + j % n8;
                micro::gemm(
                    CBlock {
                        data: c,
                        start: (oy * g.wo + ox0) * n8,
                        ldc: cols,
                        rows,
                        cols: run,
                    },
                    true,
                    ASource::PackedPart {
                        a,
                        first,
                        count: per,
                        k: (t * cin, (t + 1) * cin),
                    },
                    run.div_ceil(NR),
                    |j| {
                        let c0 = j * NR;
                        BPanel {
                            data: &xt,
                            off: &lin,
                            lo: at(c0),
                            hi: at(if c0 + 8 < run { c0 + 8 } else { c0 }),
                            cols: NR.min(run - c0),
                        }
                    },
                );
            }
        }
    });
    // Back to [N, Cout, Ho, Wo].
    y.par_chunks_mut(g.out_len())
        .enumerate()
        .for_each(|(s, y_s)| {
            for (co, row) in y_s.chunks_exact_mut(p).enumerate() {
                for (q, v) in row.iter_mut().enumerate() {
                    *v = out[co * cols + q * n8 + s];
                    if let Some(b) = bias {
                        *v += b[co];
                    }
                }
            }
        });
}

/// dW (`[Cout, Cin, kh, kw]`) of a stride-1 `g` from its input `x` and output gradient `dy`.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(g.stride, [1, 1], "the pixels path is for stride 1");
    let (p, hw, khw) = (g.p(), g.h * g.w, g.kh * g.kw);
    let steps = g.n * hw;
    // x^T in panels of NR input channels: [panel][sample][pixel][NR].
    let panels = g.cin.div_ceil(NR);
    let mut xt = vec![0f32; panels * steps * NR];
    xt.par_chunks_mut(steps * NR)
        .enumerate()
        .for_each(|(j, panel)| {
            for ci in j * NR..g.cin.min((j + 1) * NR) {
                for s in 0..g.n {
                    let plane = &x[(s * g.cin + ci) * hw..][..hw];
                    for (i, v) in plane.iter().enumerate() {
                        panel[(s * hw + i) * NR + ci % NR] = *v;
                    }
                }
            }
        });
    // Per tap, the (sample, output pixel) pairs it puts inside the image: their offsets in
    // dy (A's k-steps; A's rows are the output channels, read in place) and in an x^T panel
    // (B's).
    let rows: Vec<usize> = (0..g.cout).map(|co| co * p).collect();
    let pairs: Vec<(Vec<usize>, Vec<usize>)> = (0..khw)
        .map(|t| {
            let (ky, kx) = (t / g.kw, t % g.kw);
            let (oy0, oy1, iy0) = ConvGeom::valid(g.ho, g.h, 1, g.pad[0], ky);
            let (ox0, ox1, ix0) = ConvGeom::valid(g.wo, g.w, 1, g.pad[1], kx);
            let mut a = Vec::new();
            let mut b = Vec::new();
            for s in 0..g.n {
                for oy in oy0..oy1 {
                    for ox in ox0..ox1 {
                        a.push(s * g.out_len() + oy * g.wo + ox);
                        let i = (iy0 + oy - oy0) * g.w + ix0 + ox - ox0;
                        b.push((s * hw + i) * NR);
                    }
                }
            }
            (a, b)
        })
        .collect();
    let blocks = panels.div_ceil(WEIGHT_PANELS);
    let width = WEIGHT_PANELS * NR;
    // Task (tap, block of input channels): dW_tap for them, `[co][ci in block]`.
    let parts: Vec<Vec<f32>> = (0..khw * blocks)
        .into_par_iter()
        .map(|task| {
            let (t, b) = (task / blocks, task % blocks);
            let (ci0, ci1) = (b * width, g.cin.min((b + 1) * width));
            let (a_off, b_off) = &pairs[t];
            let mut part = vec![0f32; g.cout * (ci1 - ci0)];
            micro::gemm(
                CBlock {
                    data: &mut part,
                    start: 0,
                    ldc: ci1 - ci0,
                    rows: g.cout,
                    cols: ci1 - ci0,
                },
                false,
                ASource::Gather {
                    data: dy,
                    rows: &rows,
                    off: a_off,
                },
                (ci1 - ci0).div_ceil(NR),
                |j| {
                    let panel = ci0 / NR + j;
                    let lo = panel * steps * NR;
                    BPanel {
                        data: &xt,
                        off: b_off,
                        lo,
                        hi: lo + 8,
                        cols: NR.min(g.cin - panel * NR),
                    }
                },
            );
            part
        })
        .collect();
    // dw[co][ci][t] = parts[t, block of ci][co][ci]: for each output channel, khw runs read
    // in order, one written in order.
    let mut dw = vec![0f32; g.cout * g.k()];
    dw.par_chunks_mut(g.k().max(1))
        .enumerate()
        .for_each(|(co, dw_co)| {
            for b in 0..blocks {
                let (ci0, ci1) = (b * width, g.cin.min((b + 1) * width));
                let runs: Vec<&[f32]> = (0..khw)
                    .map(|t| &parts[t * blocks + b][co * (ci1 - ci0)..][..ci1 - ci0])
                    .collect();
                for (i, d) in dw_co[ci0 * khw..ci1 * khw]
                    .chunks_exact_mut(khw)
                    .enumerate()
                {
                    for (v, run) in d.iter_mut().zip(&runs) {
                        *v = run[i];
                    }
                }
            }
        });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The share of a 3x3 kernel's products (padding 1) that fall inside a 4x4 and a 2x2
    /// image, the work this path keeps: 100 of 144 and 16 of 36 (the module documentation's
    /// 31 % and 56 % skipped).
    #[test]
    fn taps_reach_only_the_pixels_inside_the_image() {
        let inside = |side: usize| -> usize {
            let g = ConvGeom::new([1, 1, side, side], [1, 1, 3, 3], [1, 1], [1, 1]).unwrap();
            (0..9)
                .map(|t| {
                    let (y0, y1, _) = ConvGeom::valid(g.ho, g.h, 1, 1, t / 3);
                    let (x0, x1, _) = ConvGeom::valid(g.wo, g.w, 1, 1, t % 3);
                    (y1 - y0) * (x1 - x0)
                })
                .sum()
        };
        assert_eq!(inside(4), 100);
        assert_eq!(inside(2), 16);
    }
}
