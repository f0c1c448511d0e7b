//! Dense layers, `y = x W + b` as burn's `Linear` computes it (`W`: `[din, dout]`), and their
//! two gradients, on the micro-kernel of [`super::micro`] with the weight read in place.
//!
//! Why not burn's matmul (the `gemm` crate): it packs both operands on every call, so each
//! of the three products of VGG-16's 4096 x 4096 layer first copies its 67 MB weight (or
//! writes a 67 MB gradient through a zero-filled buffer). With a batch of 32 rows the
//! products are bound by reading that weight once: ~10 % of a VGG-16 step went there
//! (docs/performance.md, step U). Here:
//! - forward: Y^T (dout x n) = W^T x X^T, each thread's strip of W^T packed one k-block
//!   ([`micro::KC`] k-steps) at a time;
//! - input gradient: dX^T (din x n) = W x dY^T, W's rows read in place
//!   ([`ASource::Gather`]);
//! - weight gradient: dW (din x dout) = X^T x dY, K = the batch.
//!
//! The small operands (X^T, dY^T, dY: batch x features) are packed; results computed transposed
//! are transposed back. Work is split over rows of the result, never over a sum: the same
//! bits for any number of threads.

use super::micro::{
    self, ASource, BPanel, CBlock, NR, PackedA, pack_rows, packed_panel, row_blocks,
};
use rayon::prelude::*;

/// `m` (`[n][len]`, row-major) transposed into B panels of [`NR`] rows of `m`:
/// `[panel][k < len][NR]`, zero past `n`.
fn pack_transposed(m: &[f32], n: usize, len: usize) -> Vec<f32> {
    let mut out = vec![0f32; n.div_ceil(NR) * len * NR];
    out.par_chunks_mut(len * NR)
        .enumerate()
        .for_each(|(j, panel)| {
            for s in j * NR..n.min((j + 1) * NR) {
                for (k, v) in m[s * len..(s + 1) * len].iter().enumerate() {
                    panel[k * NR + s % NR] = *v;
                }
            }
        });
    out
}

/// `c_t` (`m` rows of `n`) = A x P, where P is packed by [`pack_transposed`] (`k` steps) and A
/// is gathered (`rows`, `off`); rows split over threads. Returns `[m][n]`.
fn gemm_gathered_by_packed(
    a: &[f32],
    rows: &[usize],
    off: &[usize],
    packed: &[f32],
    n: usize,
) -> Vec<f32> {
    let m = rows.len();
    let k = off.len();
    let panel_off = micro::packed_offsets(k);
    let mut c = vec![0f32; m * n];
    let (_, blocks) = row_blocks(m, n, &mut c);
    blocks.into_par_iter().for_each(|(first, block)| {
        let r0 = micro::panel_start(m, first);
        let r1 = r0 + block.len() / n.max(1);
        micro::gemm(
            CBlock {
                data: block,
                start: 0,
                ldc: n,
                rows: r1 - r0,
                cols: n,
            },
            false,
            ASource::Gather {
                data: a,
                rows: &rows[r0..r1],
                off,
            },
            n.div_ceil(NR),
            |j| packed_panel(packed, &panel_off, n, j),
        );
    });
    c
}

/// `t` (`[m][n]`) transposed to `[n][m]`.
fn transpose(t: &[f32], m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    out.par_chunks_mut(m.max(1))
        .enumerate()
        .for_each(|(s, row)| {
            for (i, v) in row.iter_mut().enumerate() {
                *v = t[i * n + s];
            }
        });
    out
}

/// `y` (`[n, dout]`) = `x` (`[n, din]`) x `w` (`[din, dout]`) + `b`.
pub fn forward(
    n: usize,
    din: usize,
    dout: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(x.len(), n * din, "dense input has the wrong length");
    assert_eq!(w.len(), din * dout, "dense weight has the wrong length");
    assert!(
        b.is_none_or(|b| b.len() == dout),
        "dense bias has the wrong length"
    );
    if n == 0 || din == 0 || dout == 0 {
        // An empty product (the packing below would cut chunks of zero length): just the bias.
        return (0..n * dout)
            .map(|e| b.map_or(0.0, |b| b[e % dout]))
            .collect();
    }
    // Y^T = W^T x X^T. W^T's rows are W's columns, 4 * dout bytes apart at every k-step: read
    // in place, a block's k-steps fall into a few cache sets and evict each other. So each
    // block of rows packs its strip of W^T one k-block at a time (reading runs of W's rows,
    // each k-block read once), and multiplies it while it is in L2.
    let xt = pack_transposed(x, n, din);
    let mut yt = vec![0f32; dout * n];
    let (_, blocks) = row_blocks(dout, n, &mut yt);
    blocks.into_par_iter().for_each(|(first, block)| {
        let o0 = micro::panel_start(dout, first);
        let rows = block.len() / n.max(1);
        let mut a = PackedA::new(0, 0, |_, _| 0.0);
        for k0 in (0..din).step_by(micro::KC) {
            let kc = micro::KC.min(din - k0);
            a.repack_columns(rows, kc, |kk| &w[(k0 + kk) * dout + o0..][..rows]);
            let off = micro::packed_offsets(kc);
            micro::gemm(
                CBlock {
                    data: block,
                    start: 0,
                    ldc: n,
                    rows,
                    cols: n,
                },
                k0 > 0,
                ASource::Packed(&a),
                n.div_ceil(NR),
                |j| BPanel {
                    data: &xt,
                    off: &off,
                    lo: (j * din + k0) * NR,
                    hi: (j * din + k0) * NR + 8,
                    cols: NR.min(n - j * NR),
                },
            );
        }
    });
    let mut y = transpose(&yt, dout, n);
    if let Some(b) = b {
        for row in y.chunks_exact_mut(dout.max(1)) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
    y
}

/// `dx` (`[n, din]`) = `dy` (`[n, dout]`) x `w`^T.
pub fn backward_input(n: usize, din: usize, dout: usize, dy: &[f32], w: &[f32]) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        n * dout,
        "dense output gradient has the wrong length"
    );
    assert_eq!(w.len(), din * dout, "dense weight has the wrong length");
    if n == 0 || din == 0 || dout == 0 {
        return vec![0.0; n * din];
    }
    // A = W: element (i, o) at w[i * dout + o].
    let rows: Vec<usize> = (0..din).map(|i| i * dout).collect();
    let off: Vec<usize> = (0..dout).collect();
    let dxt = gemm_gathered_by_packed(w, &rows, &off, &pack_transposed(dy, n, dout), n);
    transpose(&dxt, din, n)
}

/// `(dw, db)`: `dw` (`[din, dout]`) = `x`^T x `dy`, `db` (`[dout]`) = the sum of `dy` over
/// the batch, in batch order.
pub fn backward_weight(
    n: usize,
    din: usize,
    dout: usize,
    x: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), n * din, "dense input has the wrong length");
    assert_eq!(
        dy.len(),
        n * dout,
        "dense output gradient has the wrong length"
    );
    if n == 0 || din == 0 || dout == 0 {
        return (vec![0.0; din * dout], vec![0.0; dout]);
    }
    // dW = X^T x dY with both small operands packed (X^T as A, dY in panels of NR columns):
    // read in place, each k-step of either lies 4 * din (or 4 * dout) bytes after the last,
    // the same few cache sets again, and the 6 x 16 tiles re-read them thousands of times.
    let a = PackedA::new(din, n, |i, s| x[s * din + i]);
    let mut packed = Vec::new();
    pack_rows(dy.chunks_exact(dout), dout, &mut packed);
    let off = micro::packed_offsets(n);
    let mut dw = vec![0f32; din * dout];
    let (per, blocks) = row_blocks(din, dout, &mut dw);
    blocks.into_par_iter().for_each(|(first, block)| {
        micro::gemm(
            CBlock {
                rows: block.len() / dout.max(1),
                data: block,
                start: 0,
                ldc: dout,
                cols: dout,
            },
            false,
            ASource::PackedPart {
                a: &a,
                first,
                count: per,
                k: (0, n),
            },
            dout.div_ceil(NR),
            |j| packed_panel(&packed, &off, dout, j),
        );
    });
    let mut db = vec![0f32; dout];
    for row in dy.chunks_exact(dout.max(1)) {
        db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
    }
    (dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::micro::on_every_path;

    fn fill(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Against the definitions (sums in f64): ragged sizes (not multiples of 6, 8 or 16,
    /// k longer than one block of micro::KC either way), a batch of 1, an empty batch, with
    /// and without bias.
    #[test]
    fn dense_matches_the_definitions() {
        on_every_path("dense matches the definitions", || {
            for (n, din, dout) in [
                (3, 5, 7),
                (1, 17, 9),
                (33, 300, 21),
                (32, 40, 4),
                (6, 8, 16),
                (2, 9, 300),
                (0, 4, 5),
            ] {
                let (x, w, dy) = (fill(n * din, 1), fill(din * dout, 2), fill(n * dout, 3));
                let b = fill(dout, 4);
                let close = |got: &[f32], want: &[f64], what: &str| {
                    assert_eq!(got.len(), want.len(), "{what}");
                    for (i, (g, w)) in got.iter().zip(want).enumerate() {
                        assert!(
                            (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "({n}, {din}, {dout}) {what} [{i}]: {g} vs {w}"
                        );
                    }
                };
                let want_y: Vec<f64> = (0..n * dout)
                    .map(|e| {
                        let (s, o) = (e / dout, e % dout);
                        (0..din)
                            .map(|i| x[s * din + i] as f64 * w[i * dout + o] as f64)
                            .sum::<f64>()
                    })
                    .collect();
                close(&forward(n, din, dout, &x, &w, None), &want_y, "forward");
                let with_b: Vec<f64> = want_y
                    .iter()
                    .enumerate()
                    .map(|(e, v)| v + b[e % dout] as f64)
                    .collect();
                close(
                    &forward(n, din, dout, &x, &w, Some(&b)),
                    &with_b,
                    "forward + bias",
                );
                let want_dx: Vec<f64> = (0..n * din)
                    .map(|e| {
                        let (s, i) = (e / din, e % din);
                        (0..dout)
                            .map(|o| dy[s * dout + o] as f64 * w[i * dout + o] as f64)
                            .sum::<f64>()
                    })
                    .collect();
                close(
                    &backward_input(n, din, dout, &dy, &w),
                    &want_dx,
                    "input gradient",
                );
                let want_dw: Vec<f64> = (0..din * dout)
                    .map(|e| {
                        let (i, o) = (e / dout, e % dout);
                        (0..n)
                            .map(|s| x[s * din + i] as f64 * dy[s * dout + o] as f64)
                            .sum::<f64>()
                    })
                    .collect();
                let want_db: Vec<f64> = (0..dout)
                    .map(|o| (0..n).map(|s| dy[s * dout + o] as f64).sum::<f64>())
                    .collect();
                let (dw, db) = backward_weight(n, din, dout, &x, &dy);
                close(&dw, &want_dw, "weight gradient");
                close(&db, &want_db, "bias gradient");
            }
        });
    }
}
