//! Hand-written CPU kernels for the operations that dominate a training step on burn Flex:
//! 2-D convolution (forward and both backward passes), BatchNorm (+ residual + ReLU) and the
//! L2 term, each a single custom autodiff operation instead of a graph of generic tensor ops,
//! and the RMSProp update as one pass per parameter. See docs/performance.md for the profile
//! that chose them and the figures they give.
//!
//! The network code stays plain burn: it calls [`conv2d`], [`batch_norm`],
//! [`batch_norm_add_relu`] and [`sum_of_squares`] (the optimiser, [`rmsprop_step`]), which run the
//! kernels when the tensors live on the CPU backend (plain or autodiff) and fall back to burn's
//! own ops on any other backend (the GPU path is untouched) or when `INCRPIPE_KERNELS=reference`.
//! The backend is recognised by a checked downcast of the tensor value, so no generic bound
//! has to be threaded through the model.
//!
//! Every kernel is deterministic: the same inputs give the same bits, whatever the number of
//! threads (sums are split by data, never by thread). Tests against burn's reference ops:
//! tests/engine_fastops.rs; against the definitions: the unit tests of `conv` and `micro`.

pub mod batchnorm;
pub mod conv;
mod dense;
mod flex;
mod geom;
mod micro;
mod pixels;
pub mod profile;
pub mod rmsprop;
pub mod select;

pub use select::{KernelPath, with_path};

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::nn::Linear;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use std::any::Any;

/// Whether the kernels may replace burn's ops on this thread (not on the `reference` path).
pub fn enabled() -> bool {
    select::current() != KernelPath::Reference
}

/// The kernel path the CPU backend takes in this process and thread.
pub fn path() -> KernelPath {
    select::current()
}

/// `value` as a `U` when `T` is `U`, otherwise `value` back. Safe, allocation-free downcast.
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("slot is full")),
        None => Err(slot.expect("slot is full")),
    }
}

/// [`cast`] where the type is known to match: a module's tensors share one backend.
fn same<T: 'static, U: 'static>(value: T) -> U {
    cast(value).unwrap_or_else(|_| unreachable!("a module's tensors share one backend"))
}

/// `conv.forward(x)`, by the convolution kernels (`conv.rs`) on the CPU backend.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let pad = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => Some([t, l]),
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    };
    let geom = pad.and_then(|pad| {
        conv::ConvGeom::new(x.dims(), conv.weight.dims(), conv.stride, pad)
            .filter(|_| conv.groups == 1 && conv.dilation == [1, 1])
    });
    let Some(geom) = geom.filter(|_| enabled()) else {
        return conv.forward(x);
    };
    let bias = conv.bias.as_ref().map(Param::val);
    let x = match cast::<Tensor<B, 4>, Tensor<flex::Ad, 4>>(x) {
        Ok(x) => {
            let w = same(conv.weight.val());
            let b = bias.map(same);
            return same(flex::conv2d_ad(&geom, x, w, b));
        }
        Err(x) => x,
    };
    let x = match cast::<Tensor<B, 4>, Tensor<flex::Plain, 4>>(x) {
        Ok(x) => {
            let w = same(conv.weight.val());
            let b = bias.map(same);
            return same(flex::conv2d(&geom, x, w, b));
        }
        Err(x) => x,
    };
    conv.forward(x)
}

/// `linear.forward(x)` for a batch of rows, by the dense kernels (`dense.rs`) on the CPU
/// backend.
pub fn linear<B: Backend>(linear: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    if !enabled() {
        return linear.forward(x);
    }
    let bias = linear.bias.as_ref().map(Param::val);
    let x = match cast::<Tensor<B, 2>, Tensor<flex::Ad, 2>>(x) {
        Ok(x) => {
            return same(flex::linear_ad(
                x,
                same(linear.weight.val()),
                bias.map(same),
            ));
        }
        Err(x) => x,
    };
    let x = match cast::<Tensor<B, 2>, Tensor<flex::Plain, 2>>(x) {
        Ok(x) => return same(flex::linear(x, same(linear.weight.val()), bias.map(same))),
        Err(x) => x,
    };
    linear.forward(x)
}

/// `bn.forward(x)` followed by ReLU when `relu`, fused on the CPU backend. `Err(x)` when the
/// kernels do not apply (other backends): the caller then uses burn's own ops.
/// Training or inference mode is chosen as burn does: by whether the backend records
/// gradients. In training mode the running statistics are updated as burn-nn does.
pub fn batch_norm<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    relu: bool,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    fused_batch_norm(bn, x, None, relu).map_err(|(x, _)| x)
}

/// `relu(bn.forward(x) + residual)`, the end of a ResNet basic block, as one kernel on the
/// CPU backend. `Err((x, residual))` when the kernels do not apply.
pub fn batch_norm_add_relu<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>)> {
    fused_batch_norm(bn, x, Some(residual), true)
        .map_err(|(x, r)| (x, r.expect("the residual comes back")))
}

type Unfused<B> = (Tensor<B, 4>, Option<Tensor<B, 4>>);

fn fused_batch_norm<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Option<Tensor<B, 4>>,
    relu: bool,
) -> Result<Tensor<B, 4>, Unfused<B>> {
    if !enabled() || residual.as_ref().is_some_and(|r| r.dims() != x.dims()) {
        return Err((x, residual));
    }
    let x = match cast::<Tensor<B, 4>, Tensor<flex::Ad, 4>>(x) {
        Ok(x) => {
            let gamma = same(bn.gamma.val());
            let beta = same(bn.beta.val());
            let residual = residual.map(same);
            let (y, stats) = flex::batch_norm_train_ad(x, gamma, beta, residual, bn.epsilon, relu);
            update_running(bn, &stats);
            return Ok(same(y));
        }
        Err(x) => x,
    };
    let x = match cast::<Tensor<B, 4>, Tensor<flex::Plain, 4>>(x) {
        Ok(x) => {
            let vec = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().expect("f32 parameters");
            let y = flex::batch_norm_infer(
                x,
                &vec(bn.gamma.val()),
                &vec(bn.beta.val()),
                &vec(bn.running_mean.value()),
                &vec(bn.running_var.value()),
                residual.map(same),
                bn.epsilon,
                relu,
            );
            return Ok(same(y));
        }
        Err(x) => x,
    };
    Err((x, residual))
}

/// `sum(w^2)` as a one-element tensor: the L2 term. On the CPU training backend one autodiff
/// node that reads `w` once forward and writes `2 g w` once backward; burn's `square().sum()`
/// allocates and fills a squared copy, then its backward a broadcast gradient and two
/// products (on VGG-16's 34 M kernel weights, several hundred MB of memory traffic a step).
pub fn sum_of_squares<B: Backend, const D: usize>(w: Tensor<B, D>) -> Tensor<B, 1> {
    if !enabled() {
        return w.square().sum();
    }
    match cast::<Tensor<B, D>, Tensor<flex::Ad, D>>(w) {
        Ok(w) => same(flex::sum_of_squares_ad(w)),
        Err(w) => w.square().sum(),
    }
}

/// One RMSProp update of a parameter tensor by the fused kernel on the CPU backend;
/// `Err` hands the inputs back when it does not apply.
pub fn rmsprop_step<B: Backend, const D: usize>(
    c: rmsprop::Consts,
    tensor: Tensor<B, D>,
    grad: Tensor<B, D>,
    state: Option<flex::RmsState<B, D>>,
) -> Result<(Tensor<B, D>, flex::RmsState<B, D>), RmsPropInputs<B, D>> {
    if !enabled() {
        return Err((tensor, grad, state));
    }
    match cast::<RmsPropInputs<B, D>, RmsPropInputs<flex::Plain, D>>((tensor, grad, state)) {
        Ok((t, g, s)) => Ok(same(flex::rmsprop_step(c, t, g, s))),
        Err(inputs) => Err(inputs),
    }
}

/// What [`rmsprop_step`] takes: parameter, gradient, state.
pub type RmsPropInputs<B, const D: usize> =
    (Tensor<B, D>, Tensor<B, D>, Option<flex::RmsState<B, D>>);

/// running = running * (1 - momentum) + batch * momentum, as burn-nn (biased batch variance).
fn update_running<B: Backend>(bn: &BatchNorm<B>, stats: &batchnorm::BnStats) {
    let m = bn.momentum as f32;
    let blend = |running: Tensor<B, 1>, batch: &[f32]| {
        let device = running.device();
        let r = running.into_data().to_vec::<f32>().expect("f32 statistics");
        let v: Vec<f32> = r
            .iter()
            .zip(batch)
            .map(|(r, b)| r * (1.0 - m) + b * m)
            .collect();
        let n = v.len();
        Tensor::<B, 1>::from_data(TensorData::new(v, [n]), &device)
    };
    bn.running_mean
        .update(blend(bn.running_mean.value_sync(), &stats.mean));
    bn.running_var
        .update(blend(bn.running_var.value_sync(), &stats.var));
}

/// Runs `f` inside a function compiled for AVX2 and FMA (and AVX-512F on that path) when the
/// CPU has them, so that the row loops `f` inlines (element-wise passes, 8-lane sums) are
/// vectorised 8 or 16 floats wide instead of the baseline's 4 (SSE2; the crate is built for
/// any x86-64). The results are the same bits: Rust never fuses `a * b + c` on its own, and
/// the vectoriser keeps each lane's order of additions. Helpers that `f` calls must be
/// `#[inline(always)]` to benefit.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match select::current() {
        KernelPath::Avx512 => {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the path is taken only where the CPU has AVX-512F, AVX2 and FMA.
            return unsafe { avx512(f) };
        }
        KernelPath::Avx2Fma => {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the path is taken only where the CPU has AVX2 and FMA.
            return unsafe { avx2(f) };
        }
        KernelPath::Portable | KernelPath::Reference => {}
    }
    f()
}

/// Sum of a row in 8 independent lanes: vectorisable, and in a fixed order.
#[inline(always)]
pub(crate) fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    for (a, x) in acc.iter_mut().zip(rest) {
        *a += x;
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cast_downcasts_only_to_the_same_type() {
        assert_eq!(super::cast::<u32, u32>(7), Ok(7));
        assert_eq!(super::cast::<u32, i32>(7), Err(7));
    }
}
