//! A register-blocked GEMM for the convolution kernels: `C (m x n) (+)= A (m x k) * B (k x n)`
//! computed in micro-tiles of [`MR`] rows by [`NR`] columns held in 12 AVX registers.
//!
//! Why not the `gemm` crate alone: it packs both operands on every call. For a convolution
//! that means copying the im2col matrix a second time and repacking the same weights for
//! every tile and sample; in a `perf` profile of a ResNet-20 step only ~30 % of the time was
//! its micro-kernel (docs/performance.md, step H, has the command). Here `A` is packed by the
//! caller once per call ([`PackedA`]) and `B` is read wherever it already is: each k-step's 16
//! columns are two 8-float vectors at `lo + off[k]` and `hi + off[k]` of one slice
//! ([`BPanel`]). That covers a packed panel (`off[k] = 16 k`) and, for a convolution, the
//! zero-padded (and, when strided, phase-split) input itself (`off[k]` = the input offset of
//! kernel tap `k`, `lo`/`hi` = where two runs of 8 output pixels start): an implicit GEMM
//! with no im2col at all. A may likewise be read in place
//! ([`ASource::Gather`]: element (r, k) at `rows[r] + off[k]`), which the weight gradient
//! uses to read its patch matrix straight from the padded input.
//!
//! Determinism: each element of C is one sum over k in increasing order (per k block, the
//! blocks in increasing order), independent of threads. The AVX2 path fuses multiply-add and
//! the portable path does not, so the two differ in the last bits; a machine always takes the
//! same one.

/// Most rows of a micro-tile.
pub const MR: usize = 6;
/// Columns of a micro-tile (two 8-float vectors).
pub const NR: usize = 16;
/// k-steps per block: a packed B panel of a block (16 x 256 floats) stays in L1.
pub const KC: usize = 256;

/// How many row panels an `m`-row A is cut into: `ceil(m / MR)`.
pub fn row_panels(m: usize) -> usize {
    m.div_ceil(MR)
}

/// The first row of panel `i` (`i == row_panels(m)` gives `m`). The rows are shared out as evenly
/// as the panel count allows (16 rows: 6 + 5 + 5, not 6 + 6 + 4 or 6 + 6 + 6 with two rows of
/// zeros): a tile of h rows does h / MR of a full one's multiply-adds, so no row is computed
/// twice or wasted, and whenever m >= 8 every tile has at least 4 rows, i.e. 8 independent
/// sums, enough to keep both FMA units busy through their latency.
/// It depends on `m` only, so the sums (and the bits) do not depend on how work is split.
pub fn panel_start(m: usize, i: usize) -> usize {
    let n = row_panels(m).max(1);
    debug_assert!(i <= n);
    let (base, extra) = (m / n, m % n);
    i * base + i.min(extra)
}

/// `out` (`m` rows of `cols`) cut into blocks of whole micro-panels of rows, about four per
/// thread, for work split by rows (no sum is split): `(panels per block, [(first panel,
/// block)])`.
pub fn row_blocks(m: usize, cols: usize, out: &mut [f32]) -> (usize, Vec<(usize, &mut [f32])>) {
    let panels = row_panels(m);
    let per = panels.div_ceil(4 * rayon::current_num_threads()).max(1);
    let mut blocks = Vec::new();
    let mut rest = out;
    for first in (0..panels).step_by(per) {
        let rows = panel_start(m, (first + per).min(panels)) - panel_start(m, first);
        let (block, tail) = rest.split_at_mut(rows * cols);
        blocks.push((first, block));
        rest = tail;
    }
    (per, blocks)
}

/// `A` packed in row panels ([`panel_start`]): element (r, k) of the panel of `h` rows that
/// starts at row `s` is at `s * k_len + k * h + (r - s)`. No padding rows.
pub struct PackedA {
    data: Vec<f32>,
    m: usize,
    k: usize,
}

impl PackedA {
    /// Packs the `m x k` matrix whose element (r, k) is `at(r, k)`.
    pub fn new(m: usize, k: usize, at: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let mut p = PackedA {
            data: Vec::new(),
            m: 0,
            k: 0,
        };
        p.repack(m, k, at);
        p
    }

    /// Packs again into the same buffer (no allocation when it is large enough). Panels in
    /// parallel, each written in order, k by k: `at` then reads a panel's few rows at one k
    /// at a time, which for a weight (and its flipped transpose) stays within a few cache
    /// lines that the next k-steps reuse. (Row by row, each read of a k-step fell on another
    /// line of a multi-MB weight: the input gradient of VGG-16's 512-channel layers spent
    /// ~3-5 ms a call packing.)
    pub fn repack(&mut self, m: usize, k: usize, at: impl Fn(usize, usize) -> f32 + Sync) {
        self.data.clear();
        self.data.resize(m * k, 0.0);
        let mut panels = Vec::with_capacity(row_panels(m));
        let mut rest = &mut self.data[..];
        for i in 0..row_panels(m) {
            let (s, e) = (panel_start(m, i), panel_start(m, i + 1));
            let (panel, tail) = rest.split_at_mut((e - s) * k);
            panels.push((s, e - s, panel));
            rest = tail;
        }
        use rayon::prelude::*;
        panels.into_par_iter().for_each(|(s, h, panel)| {
            for (kk, col) in panel.chunks_exact_mut(h).enumerate() {
                for (j, v) in col.iter_mut().enumerate() {
                    *v = at(s + j, kk);
                }
            }
        });
        self.m = m;
        self.k = k;
    }

    /// Packs again, on the calling thread, the `m x k` matrix whose column `kk` is the `m`
    /// values `col(kk)` (A^T row-major): each column is read once, in order, and spread over
    /// the panels, so a strip of a large row-major matrix is read as runs of its rows.
    pub fn repack_columns<'c>(&mut self, m: usize, k: usize, col: impl Fn(usize) -> &'c [f32]) {
        self.data.clear();
        self.data.resize(m * k, 0.0);
        let panels: Vec<(usize, usize)> = (0..row_panels(m))
            .map(|i| (panel_start(m, i), panel_start(m, i + 1) - panel_start(m, i)))
            .collect();
        for kk in 0..k {
            let c = &col(kk)[..m];
            for &(s, h) in &panels {
                self.data[s * k + kk * h..][..h].copy_from_slice(&c[s..s + h]);
            }
        }
        self.m = m;
        self.k = k;
    }

    /// Packs a row-major `m x k` matrix.
    #[cfg(test)]
    pub fn rows(a: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(a.len(), m * k, "packed A: wrong length");
        Self::new(m, k, |r, kk| a[r * k + kk])
    }

    pub fn m(&self) -> usize {
        self.m
    }
    pub fn k(&self) -> usize {
        self.k
    }

    /// Panel `i`: `[k][h]`.
    fn panel(&self, i: usize) -> &[f32] {
        let (s, e) = (panel_start(self.m, i), panel_start(self.m, i + 1));
        &self.data[s * self.k..e * self.k]
    }
}

/// Where the [`NR`] columns of B of every k-step are: `data[lo + off[k]..][..8]` and
/// `data[hi + off[k]..][..8]`. Only the first `cols` columns are used (the rest may be
/// anything readable).
#[derive(Clone, Copy)]
pub struct BPanel<'a> {
    pub data: &'a [f32],
    pub off: &'a [usize],
    pub lo: usize,
    pub hi: usize,
    pub cols: usize,
}

impl BPanel<'_> {
    /// Whether a k-step's 16 columns lie together (`hi = lo + 8`), so one 16-float load reads them.
    fn whole(&self) -> bool {
        self.hi == self.lo + 8
    }
}

/// `off[k] = NR * k`: the offsets of a packed panel (`[k][NR]`).
pub fn packed_offsets(k: usize) -> Vec<usize> {
    (0..k).map(|kk| kk * NR).collect()
}

/// Copies `rows` (each `len` values) into packed panels of [`NR`] columns (`[panel][row][NR]`,
/// zero-padded), as [`micro::gemm`] reads B.
pub fn pack_rows<'a>(
    rows: impl ExactSizeIterator<Item = &'a [f32]>,
    len: usize,
    out: &mut Vec<f32>,
) {
    let n = rows.len();
    out.clear();
    out.resize(len.div_ceil(NR) * n * NR, 0.0);
    for (r, row) in rows.enumerate() {
        put_row(out, n, r, &row[..len]);
    }
}

/// Writes `row` as row `r` of packed panels of [`NR`] columns with `rows` rows each.
pub fn put_row(out: &mut [f32], rows: usize, r: usize, row: &[f32]) {
    for (j, chunk) in row.chunks(NR).enumerate() {
        out[(j * rows + r) * NR..][..chunk.len()].copy_from_slice(chunk);
    }
}

/// The B panels of a packed `[panel][k][NR]` buffer with `k` steps and `cols` columns.
pub fn packed_panel<'a>(data: &'a [f32], off: &'a [usize], cols: usize, j: usize) -> BPanel<'a> {
    let start = j * off.len() * NR;
    BPanel {
        data,
        off,
        lo: start,
        hi: start + 8,
        cols: NR.min(cols - j * NR),
    }
}

/// A writable row-major block of C: `rows x cols` at `data[start..]`, rows `ldc` apart.
pub struct CBlock<'a> {
    pub data: &'a mut [f32],
    pub start: usize,
    pub ldc: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Where A comes from.
#[derive(Clone, Copy)]
pub enum ASource<'a> {
    /// Packed by the caller.
    Packed(&'a PackedA),
    /// Row panels `first..first + count` of a packed A (rows from `panel_start(m, first)`),
    /// columns `k.0..k.1` only: for work split by rows, and for sums over part of k.
    PackedPart {
        a: &'a PackedA,
        first: usize,
        count: usize,
        k: (usize, usize),
    },
    /// Read in place: element (r, k) is `data[rows[r] + off[k]]` (for a convolution's weight
    /// gradient: row r a kernel tap, k an output pixel, `data` the zero-padded input).
    Gather {
        data: &'a [f32],
        rows: &'a [usize],
        off: &'a [usize],
    },
}

impl ASource<'_> {
    /// The row split this source reads: the rows of the whole split matrix, and which of its
    /// panels. A packed A brings its own split; a gathered one is split the same way.
    fn panels(&self) -> (usize, std::ops::Range<usize>) {
        match *self {
            ASource::Packed(a) => (a.m, 0..row_panels(a.m)),
            ASource::PackedPart {
                a, first, count, ..
            } => {
                let n = row_panels(a.m);
                (a.m, first.min(n)..(first + count).min(n))
            }
            ASource::Gather { rows, .. } => (rows.len(), 0..row_panels(rows.len())),
        }
    }

    fn shape(&self) -> (usize, usize) {
        let (total, panels) = self.panels();
        let k = match self {
            ASource::Packed(a) => a.k,
            ASource::PackedPart { k: (k0, k1), .. } => k1 - k0,
            ASource::Gather { off, .. } => off.len(),
        };
        (
            panel_start(total, panels.end) - panel_start(total, panels.start),
            k,
        )
    }
}

/// `C (+)= A * B` where B's column panels are `panel(0)`, `panel(1)`, ... each [`NR`] columns
/// wide (the last may be narrower: its `cols`). `accumulate`: add to C instead of
/// overwriting it. The k dimension is worked in blocks of [`KC`].
pub fn gemm<'b>(
    c: CBlock<'_>,
    accumulate: bool,
    a: ASource<'_>,
    panels: usize,
    panel: impl Fn(usize) -> BPanel<'b>,
) {
    if let ASource::PackedPart { a, k: (k0, k1), .. } = a {
        assert!(
            k0 <= k1 && k1 <= a.k,
            "micro gemm: columns {k0}..{k1} of a {}-column A",
            a.k
        );
    }
    let (m, k) = a.shape();
    assert_eq!(c.rows, m, "micro gemm: C has {} rows, A {m}", c.rows);
    if m == 0 || c.cols == 0 {
        return;
    }
    assert!(c.cols <= c.ldc || m == 1, "micro gemm: rows of C overlap");
    assert!(
        c.start + (m - 1) * c.ldc + c.cols <= c.data.len(),
        "micro gemm: C overruns its slice"
    );
    if let ASource::Gather { data, rows, off } = a {
        let top = rows.iter().max().copied().unwrap_or(0) + off.iter().max().copied().unwrap_or(0);
        assert!(
            k == 0 || top < data.len(),
            "micro gemm: A overruns its slice"
        );
    }
    let bs: Vec<BPanel<'b>> = (0..panels).map(&panel).collect();
    let mut col0 = 0;
    // Panels usually share one offset table: its maximum is computed once.
    let mut max_off: Option<(*const usize, usize)> = None;
    for b in &bs {
        assert!(
            b.cols >= 1 && b.cols <= NR,
            "micro gemm: a panel of {} columns",
            b.cols
        );
        assert_eq!(
            b.off.len(),
            k,
            "micro gemm: B has {} k-steps, A {k}",
            b.off.len()
        );
        let top = match max_off {
            Some((p, top)) if p == b.off.as_ptr() => top,
            _ => {
                let top = b.off.iter().copied().max().unwrap_or(0);
                max_off = Some((b.off.as_ptr(), top));
                top
            }
        };
        let last = top + b.lo.max(b.hi) + 8;
        assert!(
            k == 0 || last <= b.data.len(),
            "micro gemm: a B panel overruns its slice"
        );
        col0 += b.cols;
    }
    assert_eq!(
        col0, c.cols,
        "micro gemm: panels cover {col0} of {} columns",
        c.cols
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                let s = c.start + r * c.ldc;
                c.data[s..s + c.cols].fill(0.0);
            }
        }
        return;
    }
    let path = super::select::current();
    // First column of each panel.
    let cols: Vec<usize> = bs
        .iter()
        .scan(0, |col, b| {
            let at = *col;
            *col += b.cols;
            Some(at)
        })
        .collect();
    // The B side of a tile: one panel, or on AVX-512 two side by side (a 32-column tile),
    // whenever the first is full (so that the second starts NR columns further on) and each
    // panel's 16 columns lie together (one load; split ones take the AVX2 tile, which was
    // faster on 8x8 images: docs/performance.md).
    let pair = path == super::KernelPath::Avx512;
    let mut groups: Vec<(usize, bool)> = Vec::with_capacity(bs.len());
    let mut j = 0;
    while j < bs.len() {
        let two =
            pair && j + 1 < bs.len() && bs[j].cols == NR && bs[j].whole() && bs[j + 1].whole();
        groups.push((j, two));
        j += 1 + two as usize;
    }
    // Row panels of this call as (panel of A, first row in C, rows).
    let (total, panels) = a.panels();
    let base = panel_start(total, panels.start);
    let a_panels: Vec<(usize, usize, usize)> = panels
        .map(|i| {
            let s = panel_start(total, i);
            (i, s - base, panel_start(total, i + 1) - s)
        })
        .collect();
    // Packed A: each B panel (L1) meets every A panel (L2) in turn. Gathered A: each A panel
    // is gathered into L1 from wherever it lies and meets every B panel (L2) in turn.
    let a_outer = matches!(a, ASource::Gather { .. });
    let (outer, inner) = if a_outer {
        (a_panels.len(), groups.len())
    } else {
        (groups.len(), a_panels.len())
    };
    for k0 in (0..k).step_by(KC) {
        let k1 = (k0 + KC).min(k);
        for o in 0..outer {
            for n in 0..inner {
                let (i, g) = if a_outer { (o, n) } else { (n, o) };
                let (j, two) = groups[g];
                let (panel, row0, rows) = a_panels[i];
                let a = match a {
                    ASource::Packed(p) => TileA::Packed(&p.panel(panel)[k0 * rows..k1 * rows]),
                    ASource::PackedPart {
                        a: p, k: (ka, _), ..
                    } => TileA::Packed(&p.panel(panel)[(ka + k0) * rows..(ka + k1) * rows]),
                    ASource::Gather { data, rows: r, off } => {
                        // Rows past the panel's repeat its first row; they are not read.
                        let mut at = [r[row0]; MR];
                        at[..rows].copy_from_slice(&r[row0..row0 + rows]);
                        TileA::Gather {
                            data,
                            rows: at,
                            off: &off[k0..k1],
                        }
                    }
                };
                let block = |b: &BPanel<'b>| BPanel {
                    off: &b.off[k0..k1],
                    ..*b
                };
                let tile = Tile {
                    a,
                    b: block(&bs[j]),
                    b2: two.then(|| block(&bs[j + 1])),
                    rows,
                    accumulate: accumulate || k0 > 0,
                };
                // The tile's last element lies inside C (checked above for the whole block).
                let at = c.start + row0 * c.ldc + cols[j];
                tile.run(path, &mut c.data[at..], c.ldc);
            }
        }
    }
}

/// A micro-tile's rows of A.
#[derive(Clone, Copy)]
enum TileA<'a> {
    /// `[k][rows]`.
    Packed(&'a [f32]),
    /// Element (r, k) at `data[rows[r] + off[k]]`.
    Gather {
        data: &'a [f32],
        rows: [usize; MR],
        off: &'a [usize],
    },
}

/// One micro-tile's work: rows x b.cols of C (then, with `b2`, the next rows x b2.cols, NR
/// columns on), over the k-steps of `a` and `b.off`.
struct Tile<'a> {
    a: TileA<'a>,
    b: BPanel<'a>,
    /// A second panel, on the AVX-512 path only (both then [`BPanel::whole`]).
    b2: Option<BPanel<'a>>,
    rows: usize,
    accumulate: bool,
}

/// Reads of A in the AVX2 kernel: the address of element (r, k) of a tile of `R` rows.
trait RowsOfA: Copy {
    /// # Safety
    /// (r, k) must be inside the tile (bounds were checked by `gemm`).
    unsafe fn at<const R: usize>(self, r: usize, k: usize) -> *const f32;
}

#[derive(Clone, Copy)]
struct PackedRows(*const f32);

impl RowsOfA for PackedRows {
    #[inline(always)]
    unsafe fn at<const R: usize>(self, r: usize, k: usize) -> *const f32 {
        // SAFETY: see the trait.
        unsafe { self.0.add(k * R + r) }
    }
}

#[derive(Clone, Copy)]
struct GatheredRows {
    data: *const f32,
    rows: [usize; MR],
    off: *const usize,
}

impl RowsOfA for GatheredRows {
    #[inline(always)]
    unsafe fn at<const R: usize>(self, r: usize, k: usize) -> *const f32 {
        // SAFETY: see the trait.
        unsafe { self.data.add(self.rows[r] + *self.off.add(k)) }
    }
}

impl Tile<'_> {
    fn run(&self, path: super::KernelPath, c: &mut [f32], ldc: usize) {
        debug_assert!(self.rows >= 1 && (self.rows - 1) * ldc + self.b.cols <= c.len());
        debug_assert!(self.b2.is_none() || path == super::KernelPath::Avx512);
        #[cfg(target_arch = "x86_64")]
        if path.fuses() {
            // SAFETY: the CPU has AVX2 and FMA, and AVX-512F on that path (`select` checks
            // `available` before a path is taken); every address the kernel reads or writes
            // was bounds-checked by `gemm` (A: the panel slice, or max(rows) + max(off) <
            // len; B: max(off) + max(lo, hi) + 8 <= len; C: rows and cols inside the slice).
            unsafe {
                let avx512 = path == super::KernelPath::Avx512;
                match self.a {
                    TileA::Packed(a) => self.run_fused(avx512, PackedRows(a.as_ptr()), c, ldc),
                    TileA::Gather { data, rows, off } => self.run_fused(
                        avx512,
                        GatheredRows {
                            data: data.as_ptr(),
                            rows,
                            off: off.as_ptr(),
                        },
                        c,
                        ldc,
                    ),
                }
            };
            return;
        }
        let _ = path;
        self.run_portable(c, ldc);
    }

    /// # Safety
    /// See `run`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run_fused<A: RowsOfA>(&self, avx512: bool, a: A, c: &mut [f32], ldc: usize) {
        // SAFETY: see `run`.
        unsafe {
            if avx512 && self.b2.is_some() {
                self.run_zmm_rows::<A, 2>(a, c, ldc)
            } else if avx512 && self.b.whole() {
                self.run_zmm_rows::<A, 1>(a, c, ldc)
            } else {
                self.run_fma_rows(a, c, ldc)
            }
        }
    }

    fn store(&self, acc: &[[f32; NR]], c: &mut [f32], ldc: usize) {
        for (r, row) in acc.iter().enumerate().take(self.rows) {
            let dst = &mut c[r * ldc..r * ldc + self.b.cols];
            if self.accumulate {
                dst.iter_mut().zip(row).for_each(|(d, v)| *d += v);
            } else {
                dst.copy_from_slice(&row[..self.b.cols]);
            }
        }
    }

    /// The same sums in plain Rust (separate multiply and add), for CPUs without FMA.
    fn run_portable(&self, c: &mut [f32], ldc: usize) {
        let b = &self.b;
        let mut acc = [[0f32; NR]; MR];
        for (kk, &o) in b.off.iter().enumerate() {
            let lo = &b.data[b.lo + o..b.lo + o + 8];
            let hi = &b.data[b.hi + o..b.hi + o + 8];
            for (r, row) in acc.iter_mut().enumerate().take(self.rows) {
                let av = match self.a {
                    TileA::Packed(a) => a[kk * self.rows + r],
                    TileA::Gather { data, rows, off } => data[rows[r] + off[kk]],
                };
                for j in 0..8 {
                    row[j] += av * lo[j];
                    row[8 + j] += av * hi[j];
                }
            }
        }
        self.store(&acc, c, ldc);
    }

    /// The AVX2 kernel compiled for the tile's number of rows: a tile of h < MR rows does
    /// h / MR of a full tile's work.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_fma_rows<A: RowsOfA>(&self, a: A, c: &mut [f32], ldc: usize) {
        // SAFETY: see `run`.
        unsafe {
            match self.rows {
                6 => self.run_fma::<A, 6>(a, c, ldc),
                5 => self.run_fma::<A, 5>(a, c, ldc),
                4 => self.run_fma::<A, 4>(a, c, ldc),
                3 => self.run_fma::<A, 3>(a, c, ldc),
                2 => self.run_fma::<A, 2>(a, c, ldc),
                1 => self.run_fma::<A, 1>(a, c, ldc),
                r => unreachable!("a micro-tile of {r} rows"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_fma<A: RowsOfA, const R: usize>(&self, a: A, c: &mut [f32], ldc: usize) {
        use std::arch::x86_64::*;
        let b = &self.b;
        let (bp, op) = (b.data.as_ptr(), b.off.as_ptr());
        // SAFETY (whole body): see `run`.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for kk in 0..b.off.len() {
                let o = *op.add(kk);
                let b0 = _mm256_loadu_ps(bp.add(b.lo + o));
                let b1 = _mm256_loadu_ps(bp.add(b.hi + o));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.at::<R>(r, kk));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
            if b.cols == NR {
                let cp = c.as_mut_ptr();
                for (r, row) in acc.iter().enumerate() {
                    let d = cp.add(r * ldc);
                    if self.accumulate {
                        _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), row[0]));
                        _mm256_storeu_ps(
                            d.add(8),
                            _mm256_add_ps(_mm256_loadu_ps(d.add(8)), row[1]),
                        );
                    } else {
                        _mm256_storeu_ps(d, row[0]);
                        _mm256_storeu_ps(d.add(8), row[1]);
                    }
                }
            } else {
                let mut out = [[0f32; NR]; R];
                for (o, row) in out.iter_mut().zip(&acc) {
                    _mm256_storeu_ps(o.as_mut_ptr(), row[0]);
                    _mm256_storeu_ps(o.as_mut_ptr().add(8), row[1]);
                }
                self.store(&out, c, ldc);
            }
        }
    }
    /// The AVX-512 kernel for the tile's number of rows, on `P` panels (P x NR columns).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_zmm_rows<A: RowsOfA, const P: usize>(&self, a: A, c: &mut [f32], ldc: usize) {
        // SAFETY: see `run`.
        unsafe {
            match self.rows {
                6 => self.run_zmm::<A, 6, P>(a, c, ldc),
                5 => self.run_zmm::<A, 5, P>(a, c, ldc),
                4 => self.run_zmm::<A, 4, P>(a, c, ldc),
                3 => self.run_zmm::<A, 3, P>(a, c, ldc),
                2 => self.run_zmm::<A, 2, P>(a, c, ldc),
                1 => self.run_zmm::<A, 1, P>(a, c, ldc),
                r => unreachable!("a micro-tile of {r} rows"),
            }
        }
    }

    /// R rows x P panels of 16 adjacent columns, one zmm register each. Each lane does what a lane
    /// of `run_fma` does: the same FMAs in the same k order, then one add into C, so the
    /// two give the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_zmm<A: RowsOfA, const R: usize, const P: usize>(
        &self,
        a: A,
        c: &mut [f32],
        ldc: usize,
    ) {
        use std::arch::x86_64::*;
        let panels = [&self.b, self.b2.as_ref().unwrap_or(&self.b)];
        let bp: [*const f32; P] = std::array::from_fn(|p| panels[p].data.as_ptr());
        let op: [*const usize; P] = std::array::from_fn(|p| panels[p].off.as_ptr());
        let lo: [usize; P] = std::array::from_fn(|p| panels[p].lo);
        debug_assert!(panels.iter().all(|b| b.whole()));
        // SAFETY (whole body): see `run`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for kk in 0..self.b.off.len() {
                let mut b = [_mm512_setzero_ps(); P];
                for p in 0..P {
                    b[p] = _mm512_loadu_ps(bp[p].add(lo[p] + *op[p].add(kk)));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.at::<R>(r, kk));
                    for p in 0..P {
                        row[p] = _mm512_fmadd_ps(av, b[p], row[p]);
                    }
                }
            }
            let cp = c.as_mut_ptr();
            for p in 0..P {
                let cols = panels[p].cols;
                let mask: __mmask16 = if cols == NR { !0 } else { (1 << cols) - 1 };
                for (r, row) in acc.iter().enumerate() {
                    let d = cp.add(r * ldc + p * NR);
                    let v = if self.accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, d), row[p])
                    } else {
                        row[p]
                    };
                    _mm512_mask_storeu_ps(d, mask, v);
                }
            }
        }
    }
}

/// Runs `f` on `path`, its parallel parts included: on a new thread that is the only worker
/// of its own rayon pool, so that the work `f` fans out stays where [`super::with_path`]
/// holds.
#[cfg(test)]
pub fn on_path<R: Send>(path: super::KernelPath, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .use_current_thread()
                .build()
                .expect("a one-thread pool on a new thread");
            super::with_path(path, || pool.install(f))
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Runs `f` with the portable kernel (tests compare both).
#[cfg(test)]
pub fn with_portable_kernel<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    on_path(super::KernelPath::Portable, f)
}

/// `f` on each FMA path (AVX2, AVX-512) the CPU has ([`on_path`]), for tests that they give
/// the same bits; a path the CPU lacks is named on stderr as not run (scripts/test.sh says so
/// in its summary too).
#[cfg(test)]
pub fn on_fused_paths<R: Send>(
    what: &str,
    f: impl Fn() -> R + Sync,
) -> Vec<(super::KernelPath, R)> {
    use super::KernelPath;
    [KernelPath::Avx2Fma, KernelPath::Avx512]
        .into_iter()
        .filter(|p| {
            let ok = p.available();
            if !ok {
                eprintln!("{what}: kernel path {p} not run (this CPU lacks it)");
            }
            ok
        })
        .map(|p| (p, on_path(p, &f)))
        .collect()
}

/// Runs `f` (a test against the definitions) on every kernel path the CPU has: portable,
/// then each FMA path ([`on_fused_paths`]).
#[cfg(test)]
pub fn on_every_path(what: &str, f: impl Fn() + Sync) {
    on_path(super::KernelPath::Portable, &f);
    on_fused_paths(what, &f);
}

/// Asserts that every FMA path the CPU has gives `f`'s bits (compared with `==` on `R`).
#[cfg(test)]
pub fn assert_fused_paths_agree<R: PartialEq + std::fmt::Debug + Send>(
    what: &str,
    f: impl Fn() -> R + Sync,
) {
    let runs = on_fused_paths(what, f);
    if let Some((first, want)) = runs.first() {
        for (p, got) in &runs[1..] {
            assert!(got == want, "{what}: {p} and {first} give different bits");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|q| (a[i * k + q] * b[q * n + j]) as f64).sum();
            }
        }
        c
    }

    /// B (row-major k x n) packed in panels of NR columns, zero-padded.
    fn pack_b(k: usize, n: usize, b: &[f32]) -> Vec<f32> {
        let panels = n.div_ceil(NR);
        let mut p = vec![0f32; panels * k * NR];
        for j in 0..n {
            for q in 0..k {
                p[((j / NR) * k + q) * NR + j % NR] = b[q * n + j];
            }
        }
        p
    }

    fn run(m: usize, n: usize, k: usize, accumulate: bool) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0)
            .collect();
        let pa = PackedA::rows(&a, m, k);
        let pb = pack_b(k, n, &b);
        let off = packed_offsets(k);
        // C is a block inside a wider matrix (ldc = n + 3, starting at column 2) so that
        // stores outside the block would show.
        let ldc = n + 3;
        let go = || {
            let mut c = vec![1.5f32; m * ldc + 2];
            gemm(
                CBlock {
                    data: &mut c,
                    start: 2,
                    ldc,
                    rows: m,
                    cols: n,
                },
                accumulate,
                ASource::Packed(&pa),
                n.div_ceil(NR),
                |j| BPanel {
                    data: &pb,
                    off: &off,
                    lo: j * k * NR,
                    hi: j * k * NR + 8,
                    cols: NR.min(n - j * NR),
                },
            );
            c
        };
        let mut want = naive(m, n, k, &a, &b);
        if accumulate {
            want.iter_mut().for_each(|v| *v += 1.5);
        }
        let fast = go();
        let portable = with_portable_kernel(go);
        (fast, portable, want)
    }

    #[test]
    fn both_kernels_compute_the_product_on_ragged_shapes() {
        for (m, n, k) in [
            (1, 1, 1),
            (6, 16, 5),
            (7, 17, 300),
            (16, 40, 600),
            (13, 3, 2),
            (5, 33, 0),
            (32, 16, 40),
            (64, 20, 9),
            (4, 16, 7),
        ] {
            for accumulate in [false, true] {
                let (fast, portable, want) = run(m, n, k, accumulate);
                let ldc = n + 3;
                for (name, c) in [("fma", &fast), ("portable", &portable)] {
                    for i in 0..m {
                        for j in 0..n {
                            let (got, w) = (c[2 + i * ldc + j] as f64, want[i * n + j]);
                            assert!(
                                (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "{name} {m}x{n}x{k} acc={accumulate} ({i},{j}): {got} vs {w}"
                            );
                        }
                        // Outside the block: untouched.
                        for j in n..ldc {
                            if 2 + i * ldc + j < c.len() && (i + 1 < m || j < n) {
                                assert_eq!(c[2 + i * ldc + j], 1.5, "{name}: wrote outside C");
                            }
                        }
                    }
                    assert_eq!(&c[..2], &[1.5, 1.5], "{name}: wrote before C");
                }
            }
        }
    }

    #[test]
    fn row_panels_share_the_rows_out_evenly() {
        for m in 0..200 {
            let n = row_panels(m);
            assert_eq!((panel_start(m, 0), panel_start(m, n)), (0, m), "m={m}");
            let heights: Vec<usize> = (0..n)
                .map(|i| panel_start(m, i + 1) - panel_start(m, i))
                .collect();
            let (lo, hi) = (heights.iter().min(), heights.iter().max());
            if let (Some(&lo), Some(&hi)) = (lo, hi) {
                assert!(lo >= 1 && hi <= MR && hi - lo <= 1, "m={m}: {heights:?}");
                assert!(m < 8 || lo >= 4, "m={m}: a tile of {lo} rows: {heights:?}");
            }
        }
        let heights =
            |m| (0..row_panels(m)).map(move |i| panel_start(m, i + 1) - panel_start(m, i));
        assert_eq!(heights(16).collect::<Vec<_>>(), [6, 5, 5]);
        assert_eq!(heights(32).collect::<Vec<_>>(), [6, 6, 5, 5, 5, 5]);
    }

    #[test]
    fn a_panel_may_read_b_in_place_through_offsets() {
        // B's columns 0..8 and 8..16 at two unrelated places of one slice, k-steps 3 apart.
        let (m, k) = (3, 4);
        let data: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let off: Vec<usize> = (0..k).map(|q| q * 3).collect();
        let a = PackedA::new(m, k, |r, q| (r + q) as f32);
        let mut c = vec![0f32; m * NR];
        gemm(
            CBlock {
                data: &mut c,
                start: 0,
                ldc: NR,
                rows: m,
                cols: NR,
            },
            false,
            ASource::Packed(&a),
            1,
            |_| BPanel {
                data: &data,
                off: &off,
                lo: 10,
                hi: 50,
                cols: NR,
            },
        );
        for r in 0..m {
            for j in 0..NR {
                let base = if j < 8 { 10 + j } else { 50 + j - 8 };
                let want: f32 = (0..k).map(|q| (r + q) as f32 * data[base + q * 3]).sum();
                assert_eq!(c[r * NR + j], want, "({r},{j})");
            }
        }
    }

    /// A gathered A (element (r, k) at data[rows[r] + off[k]]) gives what the same matrix
    /// packed gives, on both kernels, for a partial row panel and more than one k block.
    #[test]
    fn a_gathered_a_matches_the_packed_one() {
        let (m, n, k) = (8, 20, 300);
        let data: Vec<f32> = (0..2000)
            .map(|i| ((i * 31 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let rows: Vec<usize> = (0..m).map(|r| r * 7).collect();
        let off: Vec<usize> = (0..k).map(|q| q * 5 + q % 3).collect();
        let packed = PackedA::new(m, k, |r, q| data[rows[r] + off[q]]);
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0)
            .collect();
        let pb = pack_b(k, n, &b);
        let boff = packed_offsets(k);
        let go = |a: ASource<'_>| {
            let mut c = vec![0f32; m * n];
            gemm(
                CBlock {
                    data: &mut c,
                    start: 0,
                    ldc: n,
                    rows: m,
                    cols: n,
                },
                false,
                a,
                n.div_ceil(NR),
                |j| BPanel {
                    data: &pb,
                    off: &boff,
                    lo: j * k * NR,
                    hi: j * k * NR + 8,
                    cols: NR.min(n - j * NR),
                },
            );
            c
        };
        let gathered = ASource::Gather {
            data: &data,
            rows: &rows,
            off: &off,
        };
        for portable in [false, true] {
            let run = |a| {
                if portable {
                    with_portable_kernel(|| go(a))
                } else {
                    go(a)
                }
            };
            assert_eq!(
                run(gathered),
                run(ASource::Packed(&packed)),
                "portable={portable}"
            );
        }
    }

    /// AVX-512's 32-column tiles (and a 16-column one for an odd last panel, with a mask for
    /// a narrow one) give AVX2's bits: packed, gathered and in-place B with split halves,
    /// several k blocks, overwriting and accumulating.
    #[test]
    fn avx512_gives_the_bits_of_avx2() {
        for (m, n, k) in [
            (1, 1, 1),
            (6, 32, 5),
            (7, 17, 300),
            (16, 40, 600),
            (13, 48, 2),
            (32, 16, 40),
            (64, 20, 257),
            (5, 100, 9),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 19) as f32 - 9.0) / 3.0)
                .collect();
            let pa = PackedA::rows(&a, m, k);
            let pb = pack_b(k, n, &b);
            let off = packed_offsets(k);
            // The same B read in place with its halves apart: 8 columns at `lo`, 8 at `hi`.
            let split: Vec<f32> = pb
                .chunks(NR)
                .flat_map(|c| c[..8].iter().chain(&[0.0; 5]).chain(&c[8..]).copied())
                .collect();
            let soff: Vec<usize> = (0..k).map(|q| q * (NR + 5)).collect();
            let rows: Vec<usize> = (0..m).map(|r| r * k).collect();
            let aoff: Vec<usize> = (0..k).collect();
            for accumulate in [false, true] {
                for (name, gathered, in_place) in [
                    ("packed", false, false),
                    ("gathered A", true, false),
                    ("split B", false, true),
                ] {
                    let go = || {
                        let ldc = n + 3;
                        let mut c: Vec<f32> = (0..m * ldc + 2).map(|i| i as f32 / 9.0).collect();
                        let src = if gathered {
                            ASource::Gather {
                                data: &a,
                                rows: &rows,
                                off: &aoff,
                            }
                        } else {
                            ASource::Packed(&pa)
                        };
                        gemm(
                            CBlock {
                                data: &mut c,
                                start: 2,
                                ldc,
                                rows: m,
                                cols: n,
                            },
                            accumulate,
                            src,
                            n.div_ceil(NR),
                            |j| {
                                let (data, off, lo, hi) = if in_place {
                                    let s = j * k * (NR + 5);
                                    (&split[..], &soff[..], s, s + 13)
                                } else {
                                    (&pb[..], &off[..], j * k * NR, j * k * NR + 8)
                                };
                                BPanel {
                                    data,
                                    off,
                                    lo,
                                    hi,
                                    cols: NR.min(n - j * NR),
                                }
                            },
                        );
                        c.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
                    };
                    let what = format!("{m}x{n}x{k} {name} acc={accumulate}");
                    assert_fused_paths_agree(&what, go);
                }
            }
        }
    }

    /// The comparisons above can fail: `on_path` holds in the work rayon fans out, and a
    /// path that rounds differently (portable: no fused multiply-add) shows in the bits.
    #[test]
    fn paths_hold_in_parallel_work_and_their_bits_show() {
        use super::super::KernelPath;
        use rayon::prelude::*;
        for p in KernelPath::available_here() {
            let seen: Vec<KernelPath> = on_path(p, || {
                (0..64)
                    .into_par_iter()
                    .map(|_| super::super::path())
                    .collect()
            });
            assert!(seen.iter().all(|&s| s == p), "{p}: {seen:?}");
        }
        if KernelPath::Avx2Fma.available() {
            let bits = |p| {
                let (fast, _, _) = on_path(p, || run(7, 17, 300, false));
                fast.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
            };
            assert_ne!(bits(KernelPath::Portable), bits(KernelPath::Avx2Fma));
        }
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn a_panel_past_the_end_of_its_slice_is_refused() {
        let a = PackedA::new(1, 2, |_, _| 1.0);
        let data = vec![0f32; 20];
        let off = [0, 8];
        let mut c = vec![0f32; NR];
        gemm(
            CBlock {
                data: &mut c,
                start: 0,
                ldc: NR,
                rows: 1,
                cols: NR,
            },
            false,
            ASource::Packed(&a),
            1,
            |_| BPanel {
                data: &data,
                off: &off,
                lo: 0,
                hi: 8,
                cols: NR,
            },
        );
    }
}
