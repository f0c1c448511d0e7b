//! The shapes of one convolution, shared by its paths ([`super::conv`], [`super::pixels`]).

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

    /// Rows of the patch matrix (Cin * kh * kw).
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
    pub(super) fn valid(
        out: usize,
        size: usize,
        s: usize,
        pad: usize,
        k: usize,
    ) -> (usize, usize, usize) {
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
