//! 2-D convolution (NCHW, groups 1, dilation 1) and its two backward passes on plain `f32`
//! slices: im2col + GEMM per sample.
//!
//! Why not burn Flex's own convolution: it goes through a 3-D convolution, reshaping every
//! input to 5-D with a strided copy, and its weight gradient is a convolution with swapped
//! dimensions; together ~25 % of a ResNet-20 step (docs/performance.md).
//!
//! Determinism: work is split over samples (forward, input gradient) or over fixed chunks of
//! [`WEIGHT_CHUNK`] samples (weight gradient, whose partial sums are then added in chunk
//! order), never over a sum by thread. The result is the same bits for any number of threads.

use super::gemm::{Mat, MatMut, matmul};
use rayon::prelude::*;

/// Samples per partial sum of the weight gradient. Fixed, so that the order of the sum over
/// the batch does not depend on the number of threads.
pub const WEIGHT_CHUNK: usize = 8;

/// Shapes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Zero padding (top = bottom, left = right).
    pub pad: [usize; 2],
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// `x`: `[N, Cin, H, W]`, `weight`: `[Cout, Cin, kh, kw]`. `None` when the kernel does not
    /// fit the padded input or a stride is zero.
    pub fn new(
        x: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Option<Self> {
        let [n, cin, h, w] = x;
        let [cout, wcin, kh, kw] = weight;
        if wcin != cin || stride.contains(&0) || kh == 0 || kw == 0 {
            return None;
        }
        let (hp, wp) = (h + 2 * pad[0], w + 2 * pad[1]);
        if hp < kh || wp < kw {
            return None;
        }
        Some(ConvGeom {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            pad,
            ho: (hp - kh) / stride[0] + 1,
            wo: (wp - kw) / stride[1] + 1,
        })
    }

    /// Rows of the im2col matrix (Cin * kh * kw).
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// Output pixels per channel (Ho * Wo).
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }
    pub fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.cout * self.p()
    }

    /// For kernel offset `k` along an axis of input size `size`, stride `s`, padding `pad`:
    /// the range of output positions whose input position is inside the image, and the input
    /// position of the first of them.
    fn valid(out: usize, size: usize, s: usize, pad: usize, k: usize) -> (usize, usize, usize) {
        // input = o * s + k - pad must satisfy 0 <= input < size.
        let lo = if k >= pad { 0 } else { (pad - k).div_ceil(s) };
        let hi = if size + pad > k {
            ((size + pad - k - 1) / s + 1).min(out)
        } else {
            0
        };
        let lo = lo.min(hi);
        (lo, hi, (lo * s + k).saturating_sub(pad))
    }
}

/// Output columns per im2col tile: the tile (`K x cols` floats) and its packed copy stay in
/// the L2 cache instead of streaming a whole sample's patch matrix through memory.
pub const TILE_COLUMNS: usize = 256;

/// Output rows per tile: whole rows, at least one, at most all.
fn tile_rows(g: &ConvGeom, columns: usize) -> usize {
    (columns / g.wo.max(1)).clamp(1, g.ho.max(1))
}

/// The im2col buffer for tiles of `columns`.
fn tile_buffer(g: &ConvGeom, columns: usize) -> Vec<f32> {
    vec![0f32; g.k() * tile_rows(g, columns) * g.wo]
}

/// Output rows `[oy0, oy1)` of each tile.
fn tiles(g: &ConvGeom, columns: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
    let rows = tile_rows(g, columns);
    let ho = g.ho;
    (0..ho)
        .step_by(rows)
        .map(move |oy0| (oy0, (oy0 + rows).min(ho)))
}

/// `col` (`[K, (oy1 - oy0) * Wo]`, row-major) = the patches of output rows `[oy0, oy1)` of one
/// sample `x_n` (`[Cin, H, W]`).
fn im2col(g: &ConvGeom, x_n: &[f32], (oy0, oy1): (usize, usize), col: &mut [f32]) {
    let wo = g.wo;
    let p = (oy1 - oy0) * wo;
    for ci in 0..g.cin {
        let plane = &x_n[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            let (ylo, yhi, iy0) = ConvGeom::valid(g.ho, g.h, g.stride[0], g.pad[0], ky);
            let (lo, hi) = (ylo.clamp(oy0, oy1), yhi.clamp(oy0, oy1));
            for kx in 0..g.kw {
                let (xlo, xhi, ix0) = ConvGeom::valid(g.wo, g.w, g.stride[1], g.pad[1], kx);
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * p..(row + 1) * p];
                dst[..(lo - oy0) * wo].fill(0.0);
                dst[(hi - oy0) * wo..].fill(0.0);
                for oy in lo..hi {
                    let iy = iy0 + (oy - ylo) * g.stride[0];
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    let out = &mut dst[(oy - oy0) * wo..(oy - oy0 + 1) * wo];
                    out[..xlo].fill(0.0);
                    out[xhi..].fill(0.0);
                    if g.stride[1] == 1 {
                        out[xlo..xhi].copy_from_slice(&src[ix0..ix0 + (xhi - xlo)]);
                    } else {
                        for (j, o) in out[xlo..xhi].iter_mut().enumerate() {
                            *o = src[ix0 + j * g.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// `dx_n` (`[Cin, H, W]`) += the patches in `col` (as made by [`im2col`] for the same rows)
/// put back where they came from.
fn col2im(g: &ConvGeom, col: &[f32], (oy0, oy1): (usize, usize), dx_n: &mut [f32]) {
    let wo = g.wo;
    let p = (oy1 - oy0) * wo;
    for ci in 0..g.cin {
        let plane = &mut dx_n[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            let (ylo, yhi, iy0) = ConvGeom::valid(g.ho, g.h, g.stride[0], g.pad[0], ky);
            let (lo, hi) = (ylo.clamp(oy0, oy1), yhi.clamp(oy0, oy1));
            for kx in 0..g.kw {
                let (xlo, xhi, ix0) = ConvGeom::valid(g.wo, g.w, g.stride[1], g.pad[1], kx);
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &col[row * p..(row + 1) * p];
                for oy in lo..hi {
                    let iy = iy0 + (oy - ylo) * g.stride[0];
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let s = &src[(oy - oy0) * wo + xlo..(oy - oy0) * wo + xhi];
                    if g.stride[1] == 1 {
                        for (d, v) in dst[ix0..ix0 + s.len()].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (j, v) in s.iter().enumerate() {
                            dst[ix0 + j * g.stride[1]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// `y` (`[N, Cout, Ho, Wo]`) = conv(`x`, `weight`) + `bias`.
pub fn forward(g: &ConvGeom, x: &[f32], weight: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    forward_tiled(g, x, weight, bias, y, TILE_COLUMNS)
}

fn forward_tiled(
    g: &ConvGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    columns: usize,
) {
    check(g, x, weight, y);
    let (k, p) = (g.k(), g.p());
    y.par_chunks_mut(g.out_len())
        .zip(x.par_chunks(g.in_len()))
        .for_each_init(
            || tile_buffer(g, columns),
            |col, (y_n, x_n)| {
                for (oy0, oy1) in tiles(g, columns) {
                    let cols = (oy1 - oy0) * g.wo;
                    let col = &mut col[..k * cols];
                    im2col(g, x_n, (oy0, oy1), col);
                    matmul(
                        MatMut::columns(y_n, g.cout, p, oy0 * g.wo, cols),
                        false,
                        Mat::rows(weight, g.cout, k),
                        Mat::rows(col, k, cols),
                    );
                }
                if let Some(b) = bias {
                    for (row, bv) in y_n.chunks_exact_mut(p).zip(b) {
                        row.iter_mut().for_each(|v| *v += bv);
                    }
                }
            },
        );
}

/// `dx` (`[N, Cin, H, W]`) = the gradient of the input, from `dy` (`[N, Cout, Ho, Wo]`).
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    backward_input_tiled(g, dy, weight, dx, TILE_COLUMNS)
}

fn backward_input_tiled(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32], columns: usize) {
    check(g, dx, weight, dy);
    let (k, p) = (g.k(), g.p());
    dx.par_chunks_mut(g.in_len())
        .zip(dy.par_chunks(g.out_len()))
        .for_each_init(
            || tile_buffer(g, columns),
            |dcol, (dx_n, dy_n)| {
                dx_n.fill(0.0);
                for (oy0, oy1) in tiles(g, columns) {
                    let cols = (oy1 - oy0) * g.wo;
                    let dcol = &mut dcol[..k * cols];
                    // dcol = W^T (K x Cout) * dy_n[:, tile] (Cout x cols)
                    matmul(
                        MatMut::rows(dcol, k, cols),
                        false,
                        Mat::transposed(weight, k, g.cout),
                        Mat::columns(dy_n, g.cout, p, oy0 * g.wo, cols),
                    );
                    col2im(g, dcol, (oy0, oy1), dx_n);
                }
            },
        );
}

/// The gradients of the weight (`[Cout, Cin, kh, kw]`) and of the bias (`[Cout]`, summed over
/// samples and pixels in a fixed order).
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    backward_weight_tiled(g, x, dy, TILE_COLUMNS)
}

fn backward_weight_tiled(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    columns: usize,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), g.n * g.in_len(), "conv input has the wrong length");
    assert_eq!(
        dy.len(),
        g.n * g.out_len(),
        "conv output gradient has the wrong length"
    );
    let (k, p) = (g.k(), g.p());
    let chunks = g.n.div_ceil(WEIGHT_CHUNK);
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map_init(
            || tile_buffer(g, columns),
            |col, c| {
                let mut acc = vec![0f32; g.cout * k];
                let mut first = true;
                for i in c * WEIGHT_CHUNK..g.n.min((c + 1) * WEIGHT_CHUNK) {
                    let x_i = &x[i * g.in_len()..(i + 1) * g.in_len()];
                    let dy_i = &dy[i * g.out_len()..(i + 1) * g.out_len()];
                    for (oy0, oy1) in tiles(g, columns) {
                        let cols = (oy1 - oy0) * g.wo;
                        let col = &mut col[..k * cols];
                        im2col(g, x_i, (oy0, oy1), col);
                        // acc += dy_i[:, tile] (Cout x cols) * col^T (cols x K). (The
                        // transposed form, acc^T += col * dy^T, measured slower.)
                        matmul(
                            MatMut::rows(&mut acc, g.cout, k),
                            !first,
                            Mat::columns(dy_i, g.cout, p, oy0 * g.wo, cols),
                            Mat::transposed(col, cols, k),
                        );
                        first = false;
                    }
                }
                acc
            },
        )
        .collect();
    let mut dw = vec![0f32; g.cout * k];
    for part in &partials {
        dw.iter_mut().zip(part).for_each(|(d, v)| *d += v);
    }
    let mut db = vec![0f32; g.cout];
    for dy_n in dy.chunks_exact(g.out_len()) {
        for (d, row) in db.iter_mut().zip(dy_n.chunks_exact(p)) {
            *d += super::sum(row);
        }
    }
    (dw, db)
}

fn check(g: &ConvGeom, x: &[f32], weight: &[f32], y: &[f32]) {
    assert_eq!(x.len(), g.n * g.in_len(), "conv input has the wrong length");
    assert_eq!(
        weight.len(),
        g.cout * g.k(),
        "conv weight has the wrong length"
    );
    assert_eq!(
        y.len(),
        g.n * g.out_len(),
        "conv output has the wrong length"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, the definition.
    fn naive(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; g.n * g.out_len()];
        for n in 0..g.n {
            for co in 0..g.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut s = 0f64;
                        for ci in 0..g.cin {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride[0] + ky) as isize - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + kx) as isize - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * g.cin + ci) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    let wv = w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx];
                                    s += (xv * wv) as f64;
                                }
                            }
                        }
                        y[((n * g.cout + co) * g.ho + oy) * g.wo + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_the_definition_for_odd_shapes() {
        for (x, w, s, p) in [
            ([2, 3, 7, 5], [4, 3, 3, 3], [1, 1], [1, 1]),
            ([3, 2, 8, 9], [5, 2, 3, 3], [2, 2], [1, 1]),
            ([1, 4, 6, 6], [2, 4, 1, 1], [2, 1], [0, 0]),
            ([2, 1, 4, 4], [3, 1, 5, 5], [1, 1], [2, 2]),
            ([1, 2, 3, 3], [1, 2, 3, 3], [3, 3], [0, 0]),
        ] {
            let g = ConvGeom::new(x, w, s, p).unwrap();
            let xv: Vec<f32> = (0..g.n * g.in_len())
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let wv: Vec<f32> = (0..g.cout * g.k())
                .map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0)
                .collect();
            let mut y = vec![f32::NAN; g.n * g.out_len()];
            forward(&g, &xv, &wv, None, &mut y);
            let want = naive(&g, &xv, &wv);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
            }
        }
    }

    /// Tiles of one output row (and of a row and a half, rounded down to one) give what a
    /// single tile per sample gives.
    #[test]
    fn tiling_does_not_change_the_results() {
        let g = ConvGeom::new([9, 3, 7, 5], [4, 3, 3, 3], [1, 1], [1, 1]).unwrap();
        let x: Vec<f32> = (0..g.n * g.in_len())
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..g.cout * g.k())
            .map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0)
            .collect();
        let dy: Vec<f32> = (0..g.n * g.out_len())
            .map(|i| ((i * 29 % 17) as f32 - 8.0) / 3.0)
            .collect();
        let run = |columns: usize| {
            let mut y = vec![0f32; g.n * g.out_len()];
            forward_tiled(&g, &x, &w, None, &mut y, columns);
            let mut dx = vec![0f32; g.n * g.in_len()];
            backward_input_tiled(&g, &dy, &w, &mut dx, columns);
            let (dw, _) = backward_weight_tiled(&g, &x, &dy, columns);
            (y, dx, dw)
        };
        let whole = run(usize::MAX / 2);
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
        };
        for columns in [1, g.wo, g.wo + g.wo / 2, 3 * g.wo] {
            let t = run(columns);
            assert!(close(&t.0, &whole.0), "forward, {columns} columns per tile");
            assert!(
                close(&t.1, &whole.1),
                "input gradient, {columns} columns per tile"
            );
            assert!(
                close(&t.2, &whole.2),
                "weight gradient, {columns} columns per tile"
            );
        }
        assert!(
            close(&whole.0, &naive(&g, &x, &w)),
            "forward against the definition"
        );
    }

    #[test]
    fn geometry_rejects_kernels_larger_than_the_padded_input() {
        assert!(ConvGeom::new([1, 1, 2, 2], [1, 1, 3, 3], [1, 1], [0, 0]).is_none());
        assert!(ConvGeom::new([1, 2, 4, 4], [1, 1, 3, 3], [1, 1], [1, 1]).is_none());
        assert!(ConvGeom::new([1, 1, 4, 4], [1, 1, 3, 3], [0, 1], [1, 1]).is_none());
    }
}
