//! 2-D convolution (NCHW, groups 1, dilation 1) and its two backward passes on plain `f32`
//! slices, on the register-blocked GEMM of [`super::micro`]:
//! - forward, output rows a multiple of 8 (any stride): an implicit GEMM that reads a
//!   zero-padded (phase-split) copy of each sample in place (no patch matrix); small stride-1
//!   images (at most [`SMALL_IMAGE`] pixels) tap by tap over only the output pixels each tap
//!   reaches ([`super::pixels`], no products with the padding); other shapes pack patch rows straight
//!   into the micro-kernel's panels, in tiles of [`TILE_COLUMNS`] pixels, or for small
//!   strided images all samples side by side;
//! - input gradient, stride 1: a forward convolution of the output gradient with the flipped,
//!   transposed weight (so the same paths again); strided: W^T x dY per tile, then col2im;
//! - weight gradient: the patch matrix read in place from the padded sample (any stride), or
//!   for small stride-1 images per tap over only the pixels it reaches ([`super::pixels`]).
//!
//! Why not burn Flex's own convolution: it goes through a 3-D convolution, reshaping every
//! input to 5-D with a strided copy, and its weight gradient is a convolution with swapped
//! dimensions; together ~25 % of a ResNet-20 step (docs/performance.md).
//!
//! Determinism: work is split over samples (forward, input gradient) or over blocks of kernel
//! taps (weight gradient: rows of its result, each summed over the whole batch in one order),
//! never over a sum. The result is the same bits for any number of threads.

pub use super::geom::ConvGeom;
use super::micro::{
    self, ASource, BPanel, CBlock, NR, PackedA, pack_rows, packed_panel, put_row, row_blocks,
};
use super::pixels;
use rayon::prelude::*;

/// The most output pixels an image may have to take [`Path::Pixels`] (stride 1) or
/// [`Path::Batched`] (strided).
pub const SMALL_IMAGE: usize = 16;

/// Output columns per tile of the packed path: the tile's packed patch matrix (`K x cols`
/// floats) stays in the L2 cache instead of streaming a whole sample's through memory.
pub const TILE_COLUMNS: usize = 256;

/// How a forward convolution reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Straight from a zero-padded, phased copy of each sample ([`pad_into`]; implicit GEMM,
    /// no im2col): output rows a multiple of 8 pixels, so that every 8 adjacent output pixels
    /// read 8 adjacent input values.
    Implicit,
    /// Patches copied into packed panels, tiles of about `columns` output pixels.
    Packed { columns: usize },
    /// Small strided images (at most 16 pixels): the patches of every sample side by side as
    /// one wide B, so that the micro-kernel's 16 columns are not mostly padding; threads split
    /// the output channels. (Each thread then reads all of B: for ResNet-20's 8x8 stride-2
    /// layer, a 9 MB B, that was 1.5-2.5x slower than tiles per sample.)
    Batched,
    /// Small stride-1 images (at most [`SMALL_IMAGE`] pixels: VGG's 4x4 and 2x2): tap by tap
    /// over only the output pixels each tap reaches, no product with the padding
    /// ([`super::pixels`]).
    Pixels,
}

impl ConvGeom {
    fn path(&self) -> Path {
        if self.wo.is_multiple_of(8) {
            Path::Implicit
        } else if self.p() <= SMALL_IMAGE && self.stride == [1, 1] {
            Path::Pixels
        } else if self.p() <= SMALL_IMAGE {
            Path::Batched
        } else {
            Path::Packed {
                columns: TILE_COLUMNS,
            }
        }
    }

    /// The input gradient of a stride-1 convolution is itself a stride-1 convolution: of the
    /// output gradient, padded by `k - 1 - pad`, with the weight flipped in space and its two
    /// channel axes swapped. `None` for other strides (and padding wider than the kernel).
    fn transposed(&self) -> Option<ConvGeom> {
        if self.stride != [1, 1] || self.pad[0] >= self.kh || self.pad[1] >= self.kw {
            return None;
        }
        ConvGeom::new(
            [self.n, self.cout, self.ho, self.wo],
            [self.cin, self.cout, self.kh, self.kw],
            [1, 1],
            [self.kh - 1 - self.pad[0], self.kw - 1 - self.pad[1]],
        )
    }

    /// Kernel tap `k` (a row of the patch matrix) as (channel, ky, kx).
    fn tap(&self, k: usize) -> (usize, usize, usize) {
        (k / (self.kh * self.kw), k / self.kw % self.kh, k % self.kw)
    }
}

/// Output rows per tile: whole rows, at least one, at most all.
fn tile_rows(g: &ConvGeom, columns: usize) -> usize {
    (columns / g.wo.max(1)).clamp(1, g.ho.max(1))
}

/// Output rows `[oy0, oy1)` of each tile.
fn tiles(g: &ConvGeom, columns: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
    let rows = tile_rows(g, columns);
    let ho = g.ho;
    (0..ho)
        .step_by(rows)
        .map(move |oy0| (oy0, (oy0 + rows).min(ho)))
}

/// `dst` (`(oy1 - oy0) * Wo` values) = row `k` of the patch matrix of output rows
/// `[oy0, oy1)` of one sample `x_n` (`[Cin, H, W]`): the input value under kernel tap `k`
/// for each of those output pixels, zero where the tap falls in the padding.
fn patch_row(g: &ConvGeom, x_n: &[f32], k: usize, (oy0, oy1): (usize, usize), dst: &mut [f32]) {
    let wo = g.wo;
    let (ci, ky, kx) = g.tap(k);
    let plane = &x_n[ci * g.h * g.w..(ci + 1) * g.h * g.w];
    let (ylo, yhi, iy0) = ConvGeom::valid(g.ho, g.h, g.stride[0], g.pad[0], ky);
    let (lo, hi) = (ylo.clamp(oy0, oy1), yhi.clamp(oy0, oy1));
    let (xlo, xhi, ix0) = ConvGeom::valid(g.wo, g.w, g.stride[1], g.pad[1], kx);
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

/// `dx_n` (`[Cin, H, W]`) += the patches in `col` (`[K, (oy1 - oy0) * Wo]`, row-major) put
/// back where [`patch_row`] took them from.
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
    check(g, x, weight, y);
    let k = g.k();
    forward_with(g, x, |r, kk| weight[r * k + kk], bias, y, g.path());
}

/// The weight as A for `path`: `m` rows; `at(r, k)` is element (r, k) in the usual k order
/// (ci, ky, kx), which every path but [`Path::Pixels`] (tap-major) sums in.
fn pack_weight(
    g: &ConvGeom,
    path: Path,
    m: usize,
    at: impl Fn(usize, usize) -> f32 + Sync,
) -> PackedA {
    match path {
        Path::Pixels => pixels::pack_weight(g, m, at),
        _ => PackedA::new(m, g.k(), at),
    }
}

/// [`forward`] by `path`, of the weight whose element (co, k) in the usual k order (ci, ky,
/// kx) is `weight(co, k)`; it is packed here, in the order `path` sums it.
fn forward_with(
    g: &ConvGeom,
    x: &[f32],
    weight: impl Fn(usize, usize) -> f32 + Sync,
    bias: Option<&[f32]>,
    y: &mut [f32],
    path: Path,
) {
    let a = &pack_weight(g, path, g.cout, weight);
    assert_eq!(
        (a.m(), a.k()),
        (g.cout, g.k()),
        "conv weight has the wrong shape"
    );
    assert_eq!(x.len(), g.n * g.in_len(), "conv input has the wrong length");
    assert_eq!(
        y.len(),
        g.n * g.out_len(),
        "conv output has the wrong length"
    );
    let (k, p) = (g.k(), g.p());
    let per_sample = |y_n: &mut [f32], x_n: &[f32], buf: &mut Buffers| match path {
        Path::Implicit => {
            buf.pad(g, x_n);
            let base = |c: usize| g.pixel_offset(c);
            let (padded, off) = (&buf.padded, &buf.taps);
            micro::gemm(
                CBlock {
                    data: y_n,
                    start: 0,
                    ldc: p,
                    rows: g.cout,
                    cols: p,
                },
                false,
                ASource::Packed(a),
                p.div_ceil(NR),
                |j| {
                    let c0 = j * NR;
                    let cols = NR.min(p - c0);
                    // Output rows are a multiple of 8 pixels, so a panel is 8 or 16 pixels,
                    // each run of 8 inside one output row.
                    BPanel {
                        data: padded,
                        off,
                        lo: base(c0),
                        hi: base(c0 + cols - 8),
                        cols,
                    }
                },
            );
        }
        Path::Batched | Path::Pixels => {
            unreachable!("batched and pixels convolutions do not go sample by sample")
        }
        Path::Packed { columns } => {
            if buf.off.len() != k {
                buf.off = micro::packed_offsets(k);
            }
            for (oy0, oy1) in tiles(g, columns) {
                let cols = (oy1 - oy0) * g.wo;
                buf.row.resize(cols, 0.0);
                let panels = cols.div_ceil(NR);
                buf.packed.clear();
                buf.packed.resize(panels * k * NR, 0.0);
                for kk in 0..k {
                    patch_row(g, x_n, kk, (oy0, oy1), &mut buf.row);
                    put_row(&mut buf.packed, k, kk, &buf.row);
                }
                let (packed, off) = (&buf.packed, &buf.off);
                micro::gemm(
                    CBlock {
                        data: y_n,
                        start: oy0 * g.wo,
                        ldc: p,
                        rows: g.cout,
                        cols,
                    },
                    false,
                    ASource::Packed(a),
                    panels,
                    |j| packed_panel(packed, off, cols, j),
                );
            }
        }
    };
    let add_bias = |y_n: &mut [f32]| {
        if let Some(b) = bias {
            for (row, bv) in y_n.chunks_exact_mut(p).zip(b) {
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    };
    if path == Path::Pixels {
        pixels::forward(g, x, a, bias, y);
        return;
    }
    if path == Path::Batched {
        forward_batched(g, x, a, y);
        y.par_chunks_mut(g.out_len()).for_each(add_bias);
        return;
    }
    y.par_chunks_mut(g.out_len())
        .zip(x.par_chunks(g.in_len()))
        .for_each_init(Buffers::default, |buf, (y_n, x_n)| {
            per_sample(y_n, x_n, buf);
            add_bias(y_n);
        });
}

/// [`Path::Batched`]: Y (Cout x N*P) = W * patches (K x N*P), then scattered to NCHW.
fn forward_batched(g: &ConvGeom, x: &[f32], a: &PackedA, y: &mut [f32]) {
    let (k, p) = (g.k(), g.p());
    let cols = g.n * p;
    // B packed per panel of NR (sample, pixel) columns, in parallel over panels.
    let mut packed = vec![0f32; cols.div_ceil(NR) * k * NR];
    packed
        .par_chunks_mut(k * NR)
        .enumerate()
        .for_each(|(j, panel)| {
            // Per column: its sample's input, and the input position of tap (0, 0).
            let at: Vec<(usize, isize, isize)> = (j * NR..cols.min((j + 1) * NR))
                .map(|q| {
                    let (s, c) = (q / p, q % p);
                    let iy = (c / g.wo * g.stride[0]) as isize - g.pad[0] as isize;
                    let ix = (c % g.wo * g.stride[1]) as isize - g.pad[1] as isize;
                    (s * g.in_len(), iy, ix)
                })
                .collect();
            for kk in 0..k {
                let (ci, ky, kx) = g.tap(kk);
                let row = &mut panel[kk * NR..(kk + 1) * NR];
                for (v, &(base, iy, ix)) in row.iter_mut().zip(&at) {
                    let (iy, ix) = (iy + ky as isize, ix + kx as isize);
                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                        *v = x[base + (ci * g.h + iy as usize) * g.w + ix as usize];
                    }
                }
            }
        });
    let off = micro::packed_offsets(k);
    let mut out = vec![0f32; g.cout * cols];
    let (per, blocks) = row_blocks(g.cout, cols, &mut out);
    blocks.into_par_iter().for_each(|(first, c)| {
        let rows = c.len() / cols;
        micro::gemm(
            CBlock {
                data: c,
                start: 0,
                ldc: cols,
                rows,
                cols,
            },
            false,
            ASource::PackedPart {
                a,
                first,
                count: per,
                k: (0, k),
            },
            cols.div_ceil(NR),
            |j| packed_panel(&packed, &off, cols, j),
        );
    });
    y.par_chunks_mut(g.out_len())
        .enumerate()
        .for_each(|(s, y_s)| {
            for (co, row) in y_s.chunks_exact_mut(p).enumerate() {
                row.copy_from_slice(&out[co * cols + s * p..][..p]);
            }
        });
}

/// Per-thread scratch space of the kernels, reused across samples.
#[derive(Default)]
struct Buffers {
    /// Phased copies of samples ([`pad_into`]), for the implicit paths.
    padded: Vec<f32>,
    /// The (samples, channels) that `padded` is laid out for.
    padded_for: (usize, usize),
    /// The offset in `padded` of each kernel tap, relative to its output pixel's.
    taps: Vec<usize>,
    /// B's offset table (packed path).
    off: Vec<usize>,
    /// Packed B panels.
    packed: Vec<f32>,
    /// One row of a patch matrix.
    row: Vec<f32>,
    /// A's column offsets (weight gradient: one per sample-pixel).
    pixel: Vec<usize>,
    /// A tile's patch-matrix gradient (input gradient of strided convolutions).
    col: Vec<f32>,
}

impl Buffers {
    /// Copies sample `x_n` into the middle of `padded` (and sets up `taps` on first use).
    fn pad(&mut self, g: &ConvGeom, x_n: &[f32]) {
        if self.phased(g, 1, g.cin) {
            self.taps = g.tap_offsets(g.cin);
        }
        pad_into(g, x_n, &mut self.padded);
    }

    /// Makes `padded` hold phased copies of `samples` samples of `channels` channels each
    /// (`[s][phased copy]`); returns whether it was laid out afresh. Its borders stay zero from
    /// the allocation, so callers only rewrite the interiors; which values are border depends
    /// on the layout, not only on the length.
    fn phased(&mut self, g: &ConvGeom, samples: usize, channels: usize) -> bool {
        let fresh = self.padded_for != (samples, channels);
        if fresh {
            self.padded = vec![0f32; samples * g.phased_len(channels)];
            self.padded_for = (samples, channels);
        }
        fresh
    }
}

/// The kernels' copy of the input: zero-padded and split into stride phases,
/// `[phase y][phase x][channel][hq][wq]`, where phase (a, b) holds the padded pixels
/// (s0 * i + a, s1 * j + b) at (i, j). Kernel tap (ky, kx) of output pixel (oy, ox) is then
/// pixel (oy + ky / s0, ox + kx / s1) of phase (ky % s0, kx % s1): adjacent output pixels read
/// adjacent values for any stride, so a strided convolution is an implicit GEMM too. With
/// stride 1 it is the plain padded input.
impl ConvGeom {
    /// Size of a phase plane: (hq, wq).
    fn phase_plane(&self) -> (usize, usize) {
        let (hp, wp) = (self.h + 2 * self.pad[0], self.w + 2 * self.pad[1]);
        (hp.div_ceil(self.stride[0]), wp.div_ceil(self.stride[1]))
    }

    /// Values of the phased copy of `channels` channels of one sample.
    fn phased_len(&self, channels: usize) -> usize {
        let (hq, wq) = self.phase_plane();
        self.stride[0] * self.stride[1] * channels * hq * wq
    }

    /// The offset in the phased copy of `channels` channels of each of their kernel taps,
    /// relative to its output pixel's ([`ConvGeom::pixel_offset`]).
    fn tap_offsets(&self, channels: usize) -> Vec<usize> {
        let (hq, wq) = self.phase_plane();
        let [s0, s1] = self.stride;
        (0..channels * self.kh * self.kw)
            .map(|kk| {
                let (ci, ky, kx) = self.tap(kk);
                let phase = (ky % s0) * s1 + kx % s1;
                ((phase * channels + ci) * hq + ky / s0) * wq + kx / s1
            })
            .collect()
    }

    /// The offset in a phased copy of output pixel `c` (its tap (0, 0)).
    fn pixel_offset(&self, c: usize) -> usize {
        (c / self.wo) * self.phase_plane().1 + c % self.wo
    }
}

/// Writes the channel planes `x_n` (a whole sample, or some of its channels) into the
/// interior of `dst`, their phased copy ([`ConvGeom::phase_plane`]) whose borders are zero.
fn pad_into(g: &ConvGeom, x_n: &[f32], dst: &mut [f32]) {
    let (hq, wq) = g.phase_plane();
    let [s0, s1] = g.stride;
    let channels = x_n.len() / (g.h * g.w).max(1);
    let phase_len = channels * hq * wq;
    for (ci, plane) in x_n.chunks_exact(g.h * g.w).enumerate() {
        for (iy, row) in plane.chunks_exact(g.w).enumerate() {
            let py = iy + g.pad[0];
            let line = (py % s0) * s1 * phase_len + (ci * hq + py / s0) * wq;
            if s1 == 1 {
                let at = line + g.pad[1];
                dst[at..at + g.w].copy_from_slice(row);
            } else {
                for (ix, v) in row.iter().enumerate() {
                    let px = ix + g.pad[1];
                    dst[line + (px % s1) * phase_len + px / s1] = *v;
                }
            }
        }
    }
}

/// `dx` (`[N, Cin, H, W]`) = the gradient of the input, from `dy` (`[N, Cout, Ho, Wo]`).
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    check(g, dx, weight, dy);
    match g.transposed() {
        Some(t) => {
            // W'[ci][co][ky][kx] = W[co][ci][kh-1-ky][kw-1-kx]: where each tap of W' reads
            // from channel 0 (a table, so the packing does no divisions).
            let from: Vec<usize> = (0..t.k())
                .map(|kk| {
                    let (co, ky, kx) = t.tap(kk);
                    (co * g.cin * g.kh + g.kh - 1 - ky) * g.kw + g.kw - 1 - kx
                })
                .collect();
            let per_channel = g.kh * g.kw;
            let w = |ci: usize, kk: usize| weight[from[kk] + ci * per_channel];
            forward_with(&t, dy, w, None, dx, t.path());
        }
        None => backward_input_strided(g, dy, weight, dx, TILE_COLUMNS),
    }
}

/// The input gradient of a strided convolution: per tile, the patch matrix's gradient
/// W^T x dY, put back by [`col2im`].
fn backward_input_strided(
    g: &ConvGeom,
    dy: &[f32],
    weight: &[f32],
    dx: &mut [f32],
    columns: usize,
) {
    let (k, p) = (g.k(), g.p());
    let a = PackedA::new(k, g.cout, |r, co| weight[co * k + r]);
    dx.par_chunks_mut(g.in_len())
        .zip(dy.par_chunks(g.out_len()))
        .for_each_init(Buffers::default, |buf, (dx_n, dy_n)| {
            dx_n.fill(0.0);
            if buf.off.len() != g.cout {
                buf.off = micro::packed_offsets(g.cout);
            }
            for (oy0, oy1) in tiles(g, columns) {
                let cols = (oy1 - oy0) * g.wo;
                let rows = (0..g.cout).map(|co| &dy_n[co * p + oy0 * g.wo..][..cols]);
                pack_rows(rows, cols, &mut buf.packed);
                buf.col.resize(k * cols, 0.0);
                let (packed, off) = (&buf.packed, &buf.off);
                micro::gemm(
                    CBlock {
                        data: &mut buf.col,
                        start: 0,
                        ldc: cols,
                        rows: k,
                        cols,
                    },
                    false,
                    ASource::Packed(&a),
                    cols.div_ceil(NR),
                    |j| packed_panel(packed, off, cols, j),
                );
                col2im(g, &buf.col, (oy0, oy1), dx_n);
            }
        });
}

/// Fewest samples per partial sum of the weight gradient.
const WEIGHT_CHUNK: usize = 8;

/// The gradients of the weight (`[Cout, Cin, kh, kw]`) and of the bias (`[Cout]`, summed over
/// samples and pixels in a fixed order): small stride-1 images by [`pixels::backward_weight`],
/// the others by [`backward_weight_gathered`].
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), g.n * g.in_len(), "conv input has the wrong length");
    assert_eq!(
        dy.len(),
        g.n * g.out_len(),
        "conv output gradient has the wrong length"
    );
    let dw = match g.path() {
        Path::Pixels => pixels::backward_weight(g, x, dy),
        _ => backward_weight_gathered(g, x, dy),
    };
    let mut db = vec![0f32; g.cout];
    for dy_n in dy.chunks_exact(g.out_len()) {
        for (d, row) in db.iter_mut().zip(dy_n.chunks_exact(g.p())) {
            *d += super::sum(row);
        }
    }
    (dw, db)
}

/// The weight gradient of [`backward_weight`] for every path but [`Path::Pixels`].
///
/// dW^T (K x Cout) = patches (K x N*P) * dY^T (N*P x Cout), without building the patch
/// matrix: row `k` at (sample s, pixel c) is a padded copy of the input at `taps[k] +
/// pixel[s, c]`, read in place by the micro-kernel (any stride); dY^T is packed (1/K of the
/// work). The batch is cut into chunks of whole samples (at least [`WEIGHT_CHUNK`], and at
/// least 512 sample-pixels, so that small images still give the kernel long sums), each a
/// partial sum; the partials are added in chunk order. The chunk size depends on the shape
/// only, so the bits do not depend on the number of threads. For parallelism when there are
/// few chunks, each chunk is also cut into blocks of input channels (rows of the result,
/// which split no sum).
fn backward_weight_gathered(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p, taps_per_ch) = (g.k(), g.p(), g.kh * g.kw);
    let chunk = 512usize
        .div_ceil(p.max(1))
        .max(WEIGHT_CHUNK)
        .min(g.n.max(1));
    let chunks = g.n.div_ceil(chunk);
    let per_block = g.cin.div_ceil(
        (4 * rayon::current_num_threads())
            .div_ceil(chunks.max(1))
            .max(1),
    );
    let blocks = g.cin.div_ceil(per_block);
    let partials: Vec<Vec<f32>> = (0..chunks * blocks)
        .into_par_iter()
        .map_init(Buffers::default, |buf, t| {
            let (c, b) = (t / blocks, t % blocks);
            let samples = c * chunk..g.n.min((c + 1) * chunk);
            let channels = b * per_block..g.cin.min((b + 1) * per_block);
            let (ns, nch) = (samples.len(), channels.len());
            let plane = g.phased_len(nch);
            // The chunk's samples, this block's channels.
            buf.phased(g, ns, nch);
            let hw = g.h * g.w;
            for (sl, s) in samples.clone().enumerate() {
                let planes = &x[(s * g.cin + channels.start) * hw..][..nch * hw];
                pad_into(g, planes, &mut buf.padded[sl * plane..][..plane]);
            }
            buf.taps = g.tap_offsets(nch);
            buf.pixel.clear();
            buf.pixel.extend((0..ns * p).map(|q| {
                let (sl, c) = (q / p, q % p);
                sl * plane + g.pixel_offset(c)
            }));
            // dY^T of the chunk in panels of NR output channels: [panel][s, pixel][NR].
            let steps = ns * p;
            buf.packed.clear();
            buf.packed.resize(g.cout.div_ceil(NR) * steps * NR, 0.0);
            for (sl, s) in samples.enumerate() {
                for co in 0..g.cout {
                    let row = &dy[(s * g.cout + co) * p..][..p];
                    let panel = &mut buf.packed[((co / NR) * steps + sl * p) * NR..];
                    for (c, v) in row.iter().enumerate() {
                        panel[c * NR + co % NR] = *v;
                    }
                }
            }
            if buf.off.len() != steps {
                buf.off = micro::packed_offsets(steps);
            }
            let mut part = vec![0f32; nch * taps_per_ch * g.cout];
            let (packed, off) = (&buf.packed, &buf.off);
            micro::gemm(
                CBlock {
                    data: &mut part,
                    start: 0,
                    ldc: g.cout,
                    rows: nch * taps_per_ch,
                    cols: g.cout,
                },
                false,
                ASource::Gather {
                    data: &buf.padded,
                    rows: &buf.taps,
                    off: &buf.pixel,
                },
                g.cout.div_ceil(NR),
                |j| packed_panel(packed, off, g.cout, j),
            );
            part
        })
        .collect();
    // dW[co][k] = the chunks' partials of its block, added in chunk order.
    let mut dw = vec![0f32; g.cout * k];
    for (t, part) in partials.iter().enumerate() {
        let first_tap = (t % blocks) * per_block * taps_per_ch;
        let taps = part.len() / g.cout.max(1);
        // Written in order, read with a stride (cheaper than the other way round).
        for (co, dw_co) in dw.chunks_exact_mut(k).enumerate() {
            for (kk, d) in dw_co[first_tap..first_tap + taps].iter_mut().enumerate() {
                *d += part[kk * g.cout + co];
            }
        }
    }
    dw
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
    use crate::kernels::micro::{assert_fused_paths_agree, on_every_path};

    /// Every (output element, input element, weight element) that the convolution multiplies:
    /// the definition, as flat indices into y, x and the weight.
    fn each_product(g: &ConvGeom, mut f: impl FnMut(usize, usize, usize)) {
        for n in 0..g.n {
            for co in 0..g.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let yi = ((n * g.cout + co) * g.ho + oy) * g.wo + ox;
                        for ci in 0..g.cin {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride[0] + ky) as isize - g.pad[0] as isize;
                                    let ix = (ox * g.stride[1] + kx) as isize - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((n * g.cin + ci) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((co * g.cin + ci) * g.kh + ky) * g.kw + kx;
                                    f(yi, xi, wi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sums in f64, returned as f32.
    fn summed(
        len: usize,
        g: &ConvGeom,
        f: impl Fn(usize, usize, usize) -> (usize, f64),
    ) -> Vec<f32> {
        let mut acc = vec![0f64; len];
        each_product(g, |yi, xi, wi| {
            let (at, v) = f(yi, xi, wi);
            acc[at] += v;
        });
        acc.into_iter().map(|v| v as f32).collect()
    }

    /// Deterministic input, weight and output gradient for `g`.
    fn inputs(g: &ConvGeom) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let fill = |n: usize, a: usize, b: usize, c: f32, d: f32| -> Vec<f32> {
            (0..n).map(|i| ((i * a % b) as f32 - c) / d).collect()
        };
        (
            fill(g.n * g.in_len(), 37, 23, 11.0, 7.0),
            fill(g.cout * g.k(), 53, 19, 9.0, 5.0),
            fill(g.n * g.out_len(), 29, 17, 8.0, 3.0),
        )
    }

    /// Direct convolution, the definition.
    fn naive(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
        summed(g.n * g.out_len(), g, |yi, xi, wi| {
            (yi, (x[xi] * w[wi]) as f64)
        })
    }

    /// The weight gradient by its definition: the sum over samples and output pixels of
    /// dy times the input under each tap.
    fn naive_weight_gradient(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
        summed(g.cout * g.k(), g, |yi, xi, wi| {
            (wi, (x[xi] * dy[yi]) as f64)
        })
    }

    /// The input gradient by its definition: dx[n][ci][iy][ix] = sum of w * dy over the
    /// output pixels whose patch covers (iy, ix).
    fn naive_input_gradient(g: &ConvGeom, dy: &[f32], w: &[f32]) -> Vec<f32> {
        summed(g.n * g.in_len(), g, |yi, xi, wi| {
            (xi, (w[wi] * dy[yi]) as f64)
        })
    }

    #[test]
    fn forward_matches_the_definition_for_odd_shapes() {
        on_every_path("forward matches the definition for odd shapes", || {
            for (x, w, s, p) in [
                ([2, 3, 7, 5], [4, 3, 3, 3], [1, 1], [1, 1]),
                ([3, 2, 8, 9], [5, 2, 3, 3], [2, 2], [1, 1]),
                ([1, 4, 6, 6], [2, 4, 1, 1], [2, 1], [0, 0]),
                ([2, 1, 4, 4], [3, 1, 5, 5], [1, 1], [2, 2]),
                ([1, 2, 3, 3], [1, 2, 3, 3], [3, 3], [0, 0]),
                // Weight gradient in two chunks of samples (16 + 4) and channel blocks.
                ([20, 5, 4, 8], [3, 5, 3, 3], [1, 1], [1, 1]),
            ] {
                let g = ConvGeom::new(x, w, s, p).unwrap();
                let (xv, wv, dy) = inputs(&g);
                let mut y = vec![f32::NAN; g.n * g.out_len()];
                forward(&g, &xv, &wv, None, &mut y);
                let mut dx = vec![f32::NAN; g.n * g.in_len()];
                backward_input(&g, &dy, &wv, &mut dx);
                let (dw, _) = backward_weight(&g, &xv, &dy);
                for (what, got, want) in [
                    ("forward", y, naive(&g, &xv, &wv)),
                    ("input gradient", dx, naive_input_gradient(&g, &dy, &wv)),
                    ("weight gradient", dw, naive_weight_gradient(&g, &xv, &dy)),
                ] {
                    for (a, b) in got.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{g:?} {what}: {a} vs {b}"
                        );
                    }
                }
            }
        });
    }

    /// Tiles of one output row (and of a row and a half, rounded down to one) give what a
    /// single tile per sample gives.
    #[test]
    fn tiling_does_not_change_the_results() {
        let g = ConvGeom::new([9, 3, 7, 5], [4, 3, 3, 3], [1, 1], [1, 1]).unwrap();
        let (x, w, dy) = inputs(&g);
        let run = |columns: usize| {
            let mut y = vec![0f32; g.n * g.out_len()];
            let w_at = |r: usize, kk: usize| w[r * g.k() + kk];
            forward_with(&g, &x, w_at, None, &mut y, Path::Packed { columns });
            let mut dx = vec![0f32; g.n * g.in_len()];
            backward_input_strided(&g, &dy, &w, &mut dx, columns);
            (y, dx)
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
        }
        assert!(
            close(&whole.0, &naive(&g, &x, &w)),
            "forward against the definition"
        );
    }

    /// Shapes whose output rows are a multiple of 8 take the implicit path (forward, and for
    /// stride 1 the input gradient as a transposed convolution), strided ones through the
    /// phased copy of the input (odd padded sizes included); it gives what the packed path
    /// and the definitions give, including k > one block of micro::KC and partial
    /// micro-tiles. The weight gradient reads the same phased copy.
    #[test]
    fn implicit_and_packed_paths_agree_with_the_definitions() {
        on_every_path(
            "implicit and packed paths agree with the definitions",
            || {
                for (x, w, p, s) in [
                    ([3, 5, 6, 8], [7, 5, 3, 3], [1, 1], [1, 1]),
                    ([2, 30, 4, 16], [13, 30, 3, 3], [1, 1], [1, 1]),
                    ([2, 6, 5, 8], [8, 6, 1, 1], [0, 0], [1, 1]),
                    ([1, 2, 6, 16], [3, 2, 5, 5], [2, 2], [1, 1]),
                    ([2, 5, 32, 32], [16, 5, 3, 3], [1, 1], [2, 2]),
                    ([1, 3, 17, 16], [4, 3, 3, 3], [1, 1], [2, 2]),
                    ([2, 4, 16, 16], [6, 4, 1, 1], [0, 0], [2, 2]),
                    ([1, 2, 7, 48], [3, 2, 3, 3], [0, 0], [1, 3]),
                ] {
                    let g = ConvGeom::new(x, w, s, p).unwrap();
                    assert_eq!(g.path(), Path::Implicit, "{g:?}");
                    let (xv, wv, dy) = inputs(&g);
                    let w_at = |r: usize, kk: usize| wv[r * g.k() + kk];
                    let close = |a: &[f32], b: &[f32], what: &str| {
                        for (i, (a, b)) in a.iter().zip(b).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{g:?} {what} [{i}]: {a} vs {b}"
                            );
                        }
                    };
                    let want = naive(&g, &xv, &wv);
                    for path in [Path::Implicit, Path::Packed { columns: 7 }, Path::Batched] {
                        let mut y = vec![f32::NAN; g.n * g.out_len()];
                        forward_with(&g, &xv, w_at, None, &mut y, path);
                        close(&y, &want, &format!("forward {path:?}"));
                    }
                    let want = naive_input_gradient(&g, &dy, &wv);
                    let mut dx = vec![f32::NAN; g.n * g.in_len()];
                    backward_input(&g, &dy, &wv, &mut dx);
                    close(&dx, &want, "input gradient, transposed");
                    let mut dx = vec![f32::NAN; g.n * g.in_len()];
                    backward_input_strided(&g, &dy, &wv, &mut dx, 7);
                    close(&dx, &want, "input gradient, col2im");
                    let (dw, _) = backward_weight(&g, &xv, &dy);
                    close(&dw, &naive_weight_gradient(&g, &xv, &dy), "weight gradient");
                }
            },
        );
    }

    /// Small stride-1 images take the pixels path (forward, input gradient and weight
    /// gradient), which sums only the taps inside the image; it gives what the definitions
    /// and the batched path give: batches that are not a multiple of 8, a 1x1 image, other
    /// kernel sizes and paddings, several channel panels and blocks, and k-runs longer than
    /// one block of micro::KC.
    #[test]
    fn pixels_path_agrees_with_the_definitions() {
        on_every_path("pixels path agrees with the definitions", || {
            for (x, w, p) in [
                ([3, 5, 4, 4], [7, 5, 3, 3], [1, 1]),
                ([2, 4, 2, 2], [3, 4, 3, 3], [1, 1]),
                ([9, 3, 1, 1], [4, 3, 3, 3], [1, 1]),
                ([2, 3, 3, 3], [5, 3, 3, 3], [1, 1]),
                ([2, 2, 4, 4], [3, 2, 5, 5], [2, 2]),
                ([2, 3, 4, 3], [2, 3, 1, 1], [0, 0]),
                ([2, 3, 4, 3], [2, 3, 3, 3], [0, 0]),
                ([2, 3, 2, 4], [4, 3, 3, 3], [1, 0]),
                ([17, 40, 4, 4], [20, 40, 3, 3], [1, 1]),
                ([4, 300, 2, 2], [33, 300, 3, 3], [1, 1]),
            ] {
                let g = ConvGeom::new(x, w, [1, 1], p).unwrap();
                assert_eq!(g.path(), Path::Pixels, "{g:?}");
                let (xv, wv, dy) = inputs(&g);
                let close = |a: &[f32], b: &[f32], what: &str| {
                    assert_eq!(a.len(), b.len());
                    for (i, (a, b)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{g:?} {what} [{i}]: {a} vs {b}"
                        );
                    }
                };
                let want = naive(&g, &xv, &wv);
                let mut y = vec![f32::NAN; g.n * g.out_len()];
                forward(&g, &xv, &wv, None, &mut y);
                close(&y, &want, "forward");
                let w_at = |r: usize, kk: usize| wv[r * g.k() + kk];
                let mut y = vec![f32::NAN; g.n * g.out_len()];
                forward_with(&g, &xv, w_at, None, &mut y, Path::Batched);
                close(&y, &want, "forward, batched");
                let bias: Vec<f32> = (0..g.cout).map(|c| c as f32 - 1.5).collect();
                let mut yb = vec![f32::NAN; g.n * g.out_len()];
                forward(&g, &xv, &wv, Some(&bias), &mut yb);
                let with_bias: Vec<f32> = want
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v + bias[i / g.p() % g.cout])
                    .collect();
                close(&yb, &with_bias, "forward with bias");
                let mut dx = vec![f32::NAN; g.n * g.in_len()];
                backward_input(&g, &dy, &wv, &mut dx);
                close(&dx, &naive_input_gradient(&g, &dy, &wv), "input gradient");
                let (dw, db) = backward_weight(&g, &xv, &dy);
                close(&dw, &naive_weight_gradient(&g, &xv, &dy), "weight gradient");
                let want_db: Vec<f32> = (0..g.cout)
                    .map(|co| {
                        (0..g.n)
                            .map(|s| dy[(s * g.cout + co) * g.p()..][..g.p()].iter().sum::<f32>())
                            .sum()
                    })
                    .collect();
                close(&db, &want_db, "bias gradient");
            }
        });
    }

    /// AVX-512 gives AVX2's bits on every convolution path: implicit on 32x32, 16x16 and
    /// 8x8 images (whose 16 columns are two runs of 8 apart), strided, packed, batched and
    /// pixels, forward and both gradients.
    #[test]
    fn every_fma_path_gives_the_same_bits() {
        for (x, w, s) in [
            ([2, 3, 32, 32], [16, 3, 3, 3], [1, 1]),
            ([2, 16, 16, 16], [32, 16, 3, 3], [1, 1]),
            ([3, 32, 8, 8], [40, 32, 3, 3], [1, 1]),
            ([2, 16, 32, 32], [32, 16, 3, 3], [2, 2]),
            ([9, 3, 7, 5], [4, 3, 3, 3], [1, 1]),
            ([17, 40, 4, 4], [20, 40, 3, 3], [1, 1]),
        ] {
            let g = ConvGeom::new(x, w, s, [1, 1]).unwrap();
            let (xv, wv, dy) = inputs(&g);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            assert_fused_paths_agree(&format!("{g:?}"), || {
                let mut y = vec![0f32; g.n * g.out_len()];
                forward(&g, &xv, &wv, None, &mut y);
                let mut dx = vec![0f32; g.n * g.in_len()];
                backward_input(&g, &dy, &wv, &mut dx);
                let (dw, _) = backward_weight(&g, &xv, &dy);
                let mut paths = vec![bits(&y), bits(&dx), bits(&dw)];
                for path in [Path::Packed { columns: 7 }, Path::Batched] {
                    let w_at = |r: usize, kk: usize| wv[r * g.k() + kk];
                    forward_with(&g, &xv, w_at, None, &mut y, path);
                    paths.push(bits(&y));
                }
                backward_input_strided(&g, &dy, &wv, &mut dx, 7);
                paths.push(bits(&dx));
                paths
            });
        }
    }

    #[test]
    fn geometry_rejects_kernels_larger_than_the_padded_input() {
        assert!(ConvGeom::new([1, 1, 2, 2], [1, 1, 3, 3], [1, 1], [0, 0]).is_none());
        assert!(ConvGeom::new([1, 2, 4, 4], [1, 1, 3, 3], [1, 1], [1, 1]).is_none());
        assert!(ConvGeom::new([1, 1, 4, 4], [1, 1, 3, 3], [0, 1], [1, 1]).is_none());
    }
}
