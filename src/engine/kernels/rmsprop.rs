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

/// One element's update: `(new square average, new momentum value, new parameter)`. `old_sa`
/// and `old_buf` are `None` on the first step; the momentum value is `None` without momentum.
#[inline(always)]
fn update(
    c: Consts,
    p: f32,
    g: f32,
    old_sa: Option<f32>,
    old_buf: Option<f32>,
) -> (f32, Option<f32>, f32) {
    let t = (g * g) * (1.0 - c.alpha);
    let sa = match old_sa {
        Some(s) => s * c.alpha + t,
        None => t,
    };
    let d = g / (sa.sqrt() + c.epsilon);
    let v = (c.momentum > 0.0).then_some(match old_buf {
        Some(b) => b * c.momentum + d,
        None => d,
    });
    (sa, v, p - v.unwrap_or(d) * c.lr)
}

/// New parameters, new square average, new momentum buffer (when `momentum > 0`): copies of
/// the inputs (zeros for state that does not exist yet) updated by [`update_all`].
pub fn step(
    c: Consts,
    param: &[f32],
    grad: &[f32],
    square_avg: Option<&[f32]>,
    buf: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let n = param.len();
    let state = |s: Option<&[f32]>| s.map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
    let mut new_p = param.to_vec();
    let mut new_sa = state(square_avg);
    let mut new_buf = (c.momentum > 0.0).then(|| state(buf));
    update_all(
        c,
        &mut new_p,
        grad,
        (&mut new_sa, square_avg.is_some()),
        new_buf.as_deref_mut().map(|b| (b, buf.is_some())),
    );
    (new_p, new_sa, new_buf)
}

/// The same update in place, for a step after the first whose tensors are owned by nobody
/// else (no allocation and no copies). `buf` must be given exactly when `momentum > 0`.
pub fn step_in_place(
    c: Consts,
    param: &mut [f32],
    grad: &[f32],
    square_avg: &mut [f32],
    buf: Option<&mut [f32]>,
) {
    update_all(c, param, grad, (square_avg, true), buf.map(|b| (b, true)));
}

/// Updates `param` and the state in place. Each state comes with whether it holds values yet
/// (false on the first step: its contents are then ignored, as burn treats missing state).
fn update_all(
    c: Consts,
    param: &mut [f32],
    grad: &[f32],
    (square_avg, has_sa): (&mut [f32], bool),
    buf: Option<(&mut [f32], bool)>,
) {
    let n = param.len();
    assert_eq!(grad.len(), n, "gradient and parameter differ in length");
    assert_eq!(square_avg.len(), n, "state has the wrong length");
    assert_eq!(
        buf.is_some(),
        c.momentum > 0.0,
        "momentum buffer given iff momentum"
    );
    assert!(
        buf.as_ref().is_none_or(|(b, _)| b.len() == n),
        "state has the wrong length"
    );
    let has_buf = buf.as_ref().is_some_and(|(_, has)| *has);
    let body = |p: &mut [f32], g: &[f32], s: &mut [f32], mut b: Option<&mut [f32]>| {
        for j in 0..p.len() {
            let old_b = b.as_deref().filter(|_| has_buf).map(|b| b[j]);
            let (sa, v, np) = update(c, p[j], g[j], has_sa.then(|| s[j]), old_b);
            s[j] = sa;
            if let (Some(b), Some(v)) = (b.as_deref_mut(), v) {
                b[j] = v;
            }
            p[j] = np;
        }
    };
    let parts = param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(square_avg.par_chunks_mut(CHUNK));
    match buf {
        Some((buf, _)) => parts
            .zip(buf.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), s), b)| body(p, g, s, Some(b))),
        None => parts.for_each(|((p, g), s)| body(p, g, s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In place gives the same bits as the allocating form, with and without momentum,
    /// over sizes that span several parallel chunks.
    #[test]
    fn in_place_matches_the_allocating_step() {
        let n = 2 * CHUNK + 77;
        let v = |seed: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0 - 1.0) * scale)
                .collect()
        };
        let (p, g, sa, b) = (
            v(1, 1.0),
            v(2, 0.1),
            v(3, 0.01).iter().map(|x| x.abs()).collect::<Vec<_>>(),
            v(4, 0.05),
        );
        for momentum in [0.0, 0.9] {
            let c = Consts {
                alpha: 0.9,
                momentum,
                epsilon: 1e-8,
                lr: 1e-3,
            };
            let old_b = (momentum > 0.0).then_some(b.as_slice());
            let (np, nsa, nb) = step(c, &p, &g, Some(&sa), old_b);
            let (mut ip, mut isa, mut ib) = (p.clone(), sa.clone(), b.clone());
            step_in_place(
                c,
                &mut ip,
                &g,
                &mut isa,
                (momentum > 0.0).then_some(ib.as_mut_slice()),
            );
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&ip), bits(&np), "params, momentum {momentum}");
            assert_eq!(
                bits(&isa),
                bits(&nsa),
                "square average, momentum {momentum}"
            );
            if let Some(nb) = nb {
                assert_eq!(bits(&ib), bits(&nb), "momentum buffer");
            }
        }
    }
}
