//! One RMSProp update of a parameter tensor in a single pass over plain `f32` slices.
//!
//! burn's `RmsProp` runs ~9 tensor ops per parameter tensor, each a full pass that allocates
//! its result; on VGG-16's 34 M parameters that is a large part of a CPU step. The arithmetic
//! here is the same f32 operations in the same order (see [`crate::rmsprop`]), so the
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

/// One element's update: `(new square average, update, new parameter)`, where the update is
/// the new momentum value when `MOMENTUM` (momentum > 0). `old_sa` and `old_buf` are `None`
/// on the first step.
#[inline(always)]
fn update<const MOMENTUM: bool>(
    c: Consts,
    p: f32,
    g: f32,
    old_sa: Option<f32>,
    old_buf: Option<f32>,
) -> (f32, f32, f32) {
    let t = (g * g) * (1.0 - c.alpha);
    let sa = match old_sa {
        Some(s) => s * c.alpha + t,
        None => t,
    };
    let d = g / (sa.sqrt() + c.epsilon);
    let v = match (MOMENTUM, old_buf) {
        (true, Some(b)) => b * c.momentum + d,
        _ => d,
    };
    (sa, v, p - v * c.lr)
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
    let parts = param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(square_avg.par_chunks_mut(CHUNK));
    // One loop per combination of the flags, each without branches and inside `wide`: the
    // loop is then vectorised 8 lanes wide (sqrt and division included, both correctly
    // rounded in every lane, so the bits are those of the scalar loop). With the flags as
    // run-time `Option`s the compiler had kept it scalar: VGG-16's update took 64-68 ms a
    // step against 31-35 ms now (`bench train --net vgg16 --batch 32`, 3 alternated rounds).
    match (buf, has_sa, has_buf) {
        (Some((buf, _)), true, true) => {
            parts
                .zip(buf.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), s), b)| {
                    super::wide(|| with_momentum::<true, true>(c, p, g, s, b))
                })
        }
        (Some((buf, _)), true, false) => {
            parts
                .zip(buf.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), s), b)| {
                    super::wide(|| with_momentum::<true, false>(c, p, g, s, b))
                })
        }
        (Some((buf, _)), false, has_buf) => {
            // burn's state holds both or neither: a buffer without a square average would
            // be a state this optimiser never wrote.
            debug_assert!(!has_buf, "a momentum buffer without a square average");
            parts
                .zip(buf.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), s), b)| {
                    super::wide(|| with_momentum::<false, false>(c, p, g, s, b))
                })
        }
        (None, true, _) => parts.for_each(|((p, g), s)| super::wide(|| plain::<true>(c, p, g, s))),
        (None, false, _) => {
            parts.for_each(|((p, g), s)| super::wide(|| plain::<false>(c, p, g, s)))
        }
    }
}

/// One chunk without momentum; `HAS_SA`: the square average holds values (not the first step).
#[inline(always)]
fn plain<const HAS_SA: bool>(c: Consts, p: &mut [f32], g: &[f32], s: &mut [f32]) {
    for ((p, g), s) in p.iter_mut().zip(g).zip(s.iter_mut()) {
        let (sa, _, np) = update::<false>(c, *p, *g, HAS_SA.then_some(*s), None);
        *s = sa;
        *p = np;
    }
}

/// One chunk with momentum; `HAS_BUF`: the momentum buffer holds values.
#[inline(always)]
fn with_momentum<const HAS_SA: bool, const HAS_BUF: bool>(
    c: Consts,
    p: &mut [f32],
    g: &[f32],
    s: &mut [f32],
    b: &mut [f32],
) {
    for (((p, g), s), b) in p.iter_mut().zip(g).zip(s.iter_mut()).zip(b.iter_mut()) {
        let (sa, v, np) = update::<true>(c, *p, *g, HAS_SA.then_some(*s), HAS_BUF.then_some(*b));
        *s = sa;
        *b = v;
        *p = np;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-scale, scale] over sizes that span several parallel chunks.
    fn v(seed: usize, scale: f32) -> Vec<f32> {
        (0..2 * CHUNK + 77)
            .map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0 - 1.0) * scale)
            .collect()
    }

    /// Every FMA path gives the portable loops' bits (the update has no multiply-add that
    /// could fuse), over sizes that span several parallel chunks and a vector tail.
    #[test]
    fn wide_loops_give_the_baseline_bits() {
        use crate::kernels::micro::{on_fused_paths, with_portable_kernel};
        let sa: Vec<f32> = v(3, 0.01).iter().map(|x| x.abs()).collect();
        for momentum in [0.0, 0.9] {
            let c = Consts {
                alpha: 0.9,
                momentum,
                epsilon: 1e-8,
                lr: 1e-3,
            };
            let run = || {
                let (mut p, mut s, mut b) = (v(1, 1.0), sa.clone(), v(4, 0.05));
                step_in_place(
                    c,
                    &mut p,
                    &v(2, 0.1),
                    &mut s,
                    (momentum > 0.0).then_some(b.as_mut_slice()),
                );
                [p, s, b].map(|x| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
            };
            let baseline = with_portable_kernel(run);
            for (path, got) in on_fused_paths("rmsprop", run) {
                assert!(
                    got == baseline,
                    "{path}: other bits than the portable loops, momentum {momentum}"
                );
            }
        }
    }

    /// In place gives the same bits as the allocating form, with and without momentum,
    /// over sizes that span several parallel chunks.
    #[test]
    fn in_place_matches_the_allocating_step() {
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
