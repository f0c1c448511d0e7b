//! One RMSProp update of a parameter tensor in a single pass over plain `f32` slices.
//!
//! burn's `RmsProp` runs ~9 tensor ops per parameter tensor, each a full pass that allocates
//! its result; on VGG-16's 34 M parameters that is a large part of a CPU step. The arithmetic
//! here is the same f32 operations in the same order (see [`crate::engine::rmsprop`]), so the
//! results are the same bits. Element-wise only: deterministic for any number of threads.

use rayon::prelude::*;

/// RMSProp's constants, the learning rate already in f32 (as burn converts it).
#[derive(Debug, Clone, Copy)]
pub struct Consts {
    pub alpha: f32,
    pub momentum: f32,
    pub epsilon: f32,
    pub lr: f32,
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// New parameters, new square average, new momentum buffer (when `momentum > 0`).
pub fn step(
    c: Consts,
    param: &[f32],
    grad: &[f32],
    square_avg: Option<&[f32]>,
    buf: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let n = param.len();
    assert_eq!(grad.len(), n, "gradient and parameter differ in length");
    assert!(
        square_avg.is_none_or(|s| s.len() == n),
        "state has the wrong length"
    );
    assert!(
        buf.is_none_or(|b| b.len() == n),
        "state has the wrong length"
    );
    let with_momentum = c.momentum > 0.0;
    let mut new_p = vec![0f32; n];
    let mut new_sa = vec![0f32; n];
    let mut new_buf = if with_momentum {
        vec![0f32; n]
    } else {
        Vec::new()
    };
    let one_minus_alpha = 1.0 - c.alpha;
    let body = |start: usize, p_out: &mut [f32], sa_out: &mut [f32], b_out: Option<&mut [f32]>| {
        let mut b_out = b_out;
        for j in 0..p_out.len() {
            let i = start + j;
            let g = grad[i];
            let t = (g * g) * one_minus_alpha;
            let sa = match square_avg {
                Some(s) => s[i] * c.alpha + t,
                None => t,
            };
            sa_out[j] = sa;
            let d = g / (sa.sqrt() + c.epsilon);
            let u = match b_out.as_deref_mut() {
                Some(b) => {
                    let v = match buf {
                        Some(old) => old[i] * c.momentum + d,
                        None => d,
                    };
                    b[j] = v;
                    v
                }
                None => d,
            };
            p_out[j] = param[i] - u * c.lr;
        }
    };
    if with_momentum {
        new_p
            .par_chunks_mut(CHUNK)
            .zip(new_sa.par_chunks_mut(CHUNK))
            .zip(new_buf.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(k, ((p, s), b))| body(k * CHUNK, p, s, Some(b)));
    } else {
        new_p
            .par_chunks_mut(CHUNK)
            .zip(new_sa.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(k, (p, s))| body(k * CHUNK, p, s, None));
    }
    (new_p, new_sa, with_momentum.then_some(new_buf))
}
