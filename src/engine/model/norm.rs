//! BatchNorm forward written so that every broadcast hits a SIMD fast path of the CPU backend.
//!
//! burn-nn's `BatchNorm` broadcasts `[1, C, 1, 1]` statistics against `[N, C, H, W]`
//! activations. Burn Flex has SIMD kernels only for two broadcast patterns ("shared row" and
//! "per-row scalar"); `[1, C, 1, 1]` is neither, so each of those ops (and their autodiff
//! backward) walks the tensor element by element through a strided iterator. That was ~60 % of a
//! ResNet-20 training step (docs/performance.md). Here the per-channel vectors are repeated to
//! `[N, C, 1]` (N x C floats, negligible) and the activations viewed as `[N, C, H*W]`: the
//! operand then advances one scalar per contiguous row, the "per-row scalar" pattern, and the
//! statistics are last-dimension reductions over contiguous rows.
//!
//! Same maths as burn-nn 0.21 (biased batch variance for normalisation and for the running
//! variance, momentum update of the running statistics, `epsilon` inside the square root); only
//! the association of the floating-point operations differs, so results agree to float
//! tolerance (checked by the `batch_norm_*` tests in tests/engine_model.rs).

use burn::nn::BatchNorm;
use burn::prelude::*;

/// `bn.forward(x)` for a 4-D input, training or inference mode chosen as burn does (by whether
/// the backend records gradients), computed in the broadcast-friendly layout described above.
pub fn batch_norm_forward<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if B::ad_enabled(&x.device()) {
        batch_norm_train(bn, x)
    } else {
        batch_norm_infer(bn, x)
    }
}

/// `[C]` -> `[N, C, 1]`, contiguous, so that it broadcasts as one scalar per row of `[N, C, L]`.
fn per_row<B: Backend>(v: Tensor<B, 3>, n: usize) -> Tensor<B, 3> {
    v.repeat_dim(0, n)
}

fn batch_norm_train<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let count = (n * h * w) as f64;
    let x3 = x.reshape([n, c, h * w]);

    // Sum each contiguous row first ([N, C, 1]), then the N rows of each channel.
    let mean = x3.clone().sum_dim(2).sum_dim(0).div_scalar(count); // [1, C, 1]
    let centred = x3 - per_row(mean.clone(), n);
    let var = centred
        .clone()
        .square()
        .sum_dim(2)
        .sum_dim(0)
        .div_scalar(count); // [1, C, 1], biased, as burn-nn

    let momentum = bn.momentum;
    let running_mean = bn
        .running_mean
        .value_sync()
        .to_device(&mean.device())
        .mul_scalar(1.0 - momentum)
        .add(mean.detach().mul_scalar(momentum).reshape([c]));
    let running_var = bn
        .running_var
        .value_sync()
        .to_device(&var.device())
        .mul_scalar(1.0 - momentum)
        .add(var.clone().detach().mul_scalar(momentum).reshape([c]));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());

    // y = (x - mean) * (gamma / sqrt(var + eps)) + beta
    let scale = bn.gamma.val().reshape([1, c, 1]) / var.add_scalar(bn.epsilon).sqrt();
    let y = centred * per_row(scale, n) + per_row(bn.beta.val().reshape([1, c, 1]), n);
    y.reshape([n, c, h, w])
}

fn batch_norm_infer<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let mean = bn.running_mean.value().to_device(&device);
    let var = bn.running_var.value().to_device(&device);
    // y = x * scale + shift, scale = gamma / sqrt(var + eps), shift = beta - mean * scale
    let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - mean * scale.clone();
    let y = x.reshape([n, c, h * w]) * per_row(scale.reshape([1, c, 1]), n)
        + per_row(shift.reshape([1, c, 1]), n);
    y.reshape([n, c, h, w])
}
