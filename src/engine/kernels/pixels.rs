//! Stride-1 convolutions of small images (at most [`MAX_PIXELS`] output pixels: VGG-16's 4x4
//! and 2x2 layers at CIFAR size) that never multiply by the zero padding.
//!
//! With padding 1, 31 % of a 3x3 kernel's products over a 4x4 image fall in the padding, and
//! 56 % over a 2x2 image; an im2col GEMM over the batch computes them all. Here the output
//! pixels are grouped by which kernel taps fall inside the image (a rectangle of taps per
//! pixel; at most 9 groups for a 3x3 kernel), and each group is one sum over only its taps:
//! - forward, and the input gradient (the convolution of dY with the flipped weight, stride 1
//!   again): per group, Y = W x X over the group's taps. W is packed tap-major (k = (ky, kx,
//!   ci)), so that the taps of one kernel row are one range of k ([`ASource::PackedPart`]);
//!   the input is copied once to `[iy][ix][ci][sample]` with padding, so that B's 16 columns
//!   (16 samples of one output pixel) are read in place under every tap;
//! - weight gradient: per tap, dW_tap (Cout x Cin) = dY x X^T over the (sample, pixel)
//!   pairs where the tap falls inside the image; dY is read in place ([`ASource::Gather`]).
//!
//! Determinism: work is split over output channels (forward) or over (tap, block of input
//! channels) (weight gradient), never over a sum, and each sum runs in a fixed order.

use super::conv::{ConvGeom, row_blocks};
use super::micro::{self, ASource, BPanel, CBlock, NR, PackedA};
use rayon::prelude::*;

/// The largest output image (pixels) this path takes.
pub const MAX_PIXELS: usize = 16;

/// Input channels per task of the weight gradient, in panels of [`NR`]: a k-block of its
/// packed x^T (`micro::KC` x 128 floats) stays in L2 while the gathered rows of dY meet it.
const WEIGHT_PANELS: usize = 8;

/// Output pixels that see the same kernel taps: rows `ky.0..ky.1` x columns `kx.0..kx.1`.
#[derive(Debug, PartialEq)]
struct Group {
    ky: (usize, usize),
    kx: (usize, usize),
    pixels: Vec<usize>,
}

/// The kernel offsets along an axis that put output position `o` (stride 1) inside an input
/// of `size`: those with `0 <= o + k - pad < size`.
fn taps(o: usize, size: usize, pad: usize, k: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(o).min(k);
    let hi = (size + pad).saturating_sub(o).min(k).max(lo);
    (lo, hi)
}

/// The output pixels of `g` grouped by their taps, in order of first appearance.
fn groups(g: &ConvGeom) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let ky = taps(oy, g.h, g.pad[0], g.kh);
            let kx = taps(ox, g.w, g.pad[1], g.kw);
            let q = oy * g.wo + ox;
            match out.iter_mut().find(|gr| gr.ky == ky && gr.kx == kx) {
                Some(gr) => gr.pixels.push(q),
                None => out.push(Group {
                    ky,
                    kx,
                    pixels: vec![q],
                }),
            }
        }
    }
    out
}

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
    let (cin, p) = (g.cin, g.p());
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
    let groups = groups(g);
    // Columns of the result: group by group, pixel by pixel, n8 samples each.
    let cols = p * n8;
    let mut pixel_col = vec![0; p];
    let mut group_col = Vec::with_capacity(groups.len());
    let mut col = 0;
    for gr in &groups {
        group_col.push(col);
        for &q in &gr.pixels {
            pixel_col[q] = col;
            col += n8;
        }
    }
    // B's offsets under the taps of one kernel row: k = (kx, ci) steps of n8 floats.
    let lin: Vec<usize> = (0..g.kw * cin).map(|j| j * n8).collect();
    // Where column c of group `gr` reads tap (ky, kx0).
    let at = |gr: &Group, c: usize, ky: usize, kx0: usize| {
        let q = gr.pixels[c / n8];
        let (oy, ox) = (q / g.wo, q % g.wo);
        ((oy + ky) * wp + ox + kx0) * cin * n8 + c % n8
    };
    let mut out = vec![0f32; g.cout * cols];
    let (per, blocks) = row_blocks(g.cout, cols, &mut out);
    blocks.into_par_iter().for_each(|(first, c)| {
        let rows = c.len() / cols;
        for (gr, &col0) in groups.iter().zip(&group_col) {
            let (gcols, (kx0, kx1)) = (gr.pixels.len() * n8, gr.kx);
            for ky in gr.ky.0..gr.ky.1 {
                let k0 = (ky * g.kw + kx0) * cin;
                micro::gemm(
                    CBlock {
                        data: c,
                        start: col0,
                        ldc: cols,
                        rows,
                        cols: gcols,
                    },
                    ky > gr.ky.0,
                    ASource::PackedPart {
                        a,
                        first,
                        count: per,
                        k: (k0, k0 + (kx1 - kx0) * cin),
                    },
                    gcols.div_ceil(NR),
                    |j| {
                        let c0 = j * NR;
                        let lo = at(gr, c0, ky, kx0);
                        BPanel {
                            data: &xt,
                            off: &lin[..(kx1 - kx0) * cin],
                            lo,
                            hi: if c0 + 8 < gcols {
                                at(gr, c0 + 8, ky, kx0)
                            } else {
                                lo
                            },
                            cols: NR.min(gcols - c0),
                        }
                    },
                );
            }
        }
    });
    // Back to [N, Cout, Ho, Wo] (groups without a tap inside the image stay zero).
    y.par_chunks_mut(g.out_len())
        .enumerate()
        .for_each(|(s, y_s)| {
            for (co, row) in y_s.chunks_exact_mut(p).enumerate() {
                let b = bias.map_or(0.0, |b| b[co]);
                for (q, v) in row.iter_mut().enumerate() {
                    *v = out[co * cols + pixel_col[q] + s];
                    if bias.is_some() {
                        *v += b;
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

    /// A 4x4 image under a 3x3 kernel with padding 1: corners see 4 taps, edges 6, the
    /// middle 9; 100 of the 144 products lie inside the image.
    #[test]
    fn groups_hold_the_taps_inside_the_image() {
        let g = ConvGeom::new([1, 1, 4, 4], [1, 1, 3, 3], [1, 1], [1, 1]).unwrap();
        let gs = groups(&g);
        assert_eq!(gs.len(), 9);
        let taps: usize = gs
            .iter()
            .map(|gr| gr.pixels.len() * (gr.ky.1 - gr.ky.0) * (gr.kx.1 - gr.kx.0))
            .sum();
        assert_eq!(taps, 100);
        assert_eq!(
            gs[0],
            Group {
                ky: (1, 3),
                kx: (1, 3),
                pixels: vec![0]
            }
        );
        let middle = gs.iter().find(|gr| gr.ky == (0, 3) && gr.kx == (0, 3));
        assert_eq!(middle.map(|gr| gr.pixels.clone()), Some(vec![5, 6, 9, 10]));
        // A 1x1 image sees only the kernel's centre.
        let g = ConvGeom::new([1, 1, 1, 1], [1, 1, 3, 3], [1, 1], [1, 1]).unwrap();
        assert_eq!(
            groups(&g),
            vec![Group {
                ky: (1, 2),
                kx: (1, 2),
                pixels: vec![0]
            }]
        );
    }
}
