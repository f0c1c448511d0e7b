//! A safe face for the one `unsafe` call into the `gemm` crate (the GEMM that burn Flex itself
//! uses): strided matrix views whose every element is checked to lie inside its slice.

/// A read-only strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `cols x rows` matrix (no copy).
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }

    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "{what}: a {}x{} view with strides ({}, {}) overruns {} elements",
                self.rows,
                self.cols,
                self.rs,
                self.cs,
                self.data.len()
            );
        }
    }
}

/// A writable strided matrix (see [`Mat`]).
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatMut<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// Columns `start..start + cols` of a row-major matrix with `stride` columns.
    pub fn columns(
        data: &'a mut [f32],
        rows: usize,
        stride: usize,
        start: usize,
        cols: usize,
    ) -> Self {
        MatMut {
            data: &mut data[start..],
            rows,
            cols,
            rs: stride,
            cs: 1,
        }
    }

    fn view(&self) -> Mat<'_> {
        Mat {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
}

impl<'a> Mat<'a> {
    /// Columns `start..start + cols` of a row-major matrix with `stride` columns.
    pub fn columns(data: &'a [f32], rows: usize, stride: usize, start: usize, cols: usize) -> Self {
        Mat {
            data: &data[start..],
            rows,
            cols,
            rs: stride,
            cs: 1,
        }
    }
}

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`, or `dst += ...` when `accumulate`.
/// Single-threaded: callers parallelise over independent problems, so that the order of every
/// floating-point sum is fixed and results do not depend on the number of threads.
pub fn matmul(dst: MatMut<'_>, accumulate: bool, lhs: Mat<'_>, rhs: Mat<'_>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions differ");
    assert_eq!(
        (dst.rows, dst.cols),
        (m, n),
        "matmul: destination is not {m}x{n}"
    );
    assert!(
        dst.rs >= n * dst.cs || dst.cs >= m * dst.rs,
        "matmul: destination elements overlap"
    );
    dst.view().check("matmul dst");
    lhs.check("matmul lhs");
    rhs.check("matmul rhs");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: every element the views address lies inside its slice (checked above), the
    // destination's elements are distinct (checked above) and `dst` is borrowed mutably, so
    // it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
