//! `incrpipe bench kernels`: each kernel against burn Flex's own op on the layer shapes of
//! ResNet-20 (batch 128), forward and backward, in ms per call and GFLOP/s.

use super::batchnorm::{self, BnGeom};
use super::conv::{self, ConvGeom};
use crate::engine::backend::{CpuTrainBackend, cpu_device};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::time::Instant;

/// One line of the micro-benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelTiming {
    pub op: String,
    pub shape: String,
    /// Median milliseconds per call of the kernel.
    pub kernel_ms: f64,
    /// Median milliseconds per call of burn's op (forward, or forward + backward minus
    /// forward for the gradients: autodiff computes both gradients in one backward).
    pub burn_ms: f64,
    /// Useful GFLOP/s of the kernel (2 flops per multiply-add of the convolution).
    pub kernel_gflops: f64,
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 2000) as f32 / 1000.0) - 1.0)
        .collect()
}

/// The distinct conv shapes of ResNet-20 (`[N, Cin, H, W]`, Cout, stride).
const CONVS: [([usize; 4], usize, usize); 5] = [
    ([128, 16, 32, 32], 16, 1),
    ([128, 16, 32, 32], 32, 2),
    ([128, 32, 16, 16], 32, 1),
    ([128, 32, 16, 16], 64, 2),
    ([128, 64, 8, 8], 64, 1),
];

/// Times every kernel `reps` times (median) against burn's op.
pub fn run(reps: usize) -> Vec<KernelTiming> {
    type AB = CpuTrainBackend;
    let d = cpu_device();
    let mut out = Vec::new();
    for (xs, cout, stride) in CONVS {
        let g = ConvGeom::new(xs, [cout, xs[1], 3, 3], [stride, stride], [1, 1]).expect("shape");
        let x = data(g.n * g.in_len(), 1);
        let w = data(g.cout * g.k(), 2);
        let dy = data(g.n * g.out_len(), 3);
        let flops = 2.0 * (g.n * g.out_len() * g.k()) as f64;
        let shape = format!("{xs:?} -> {cout} s{stride}");
        let mut y = vec![0f32; g.n * g.out_len()];
        let mut dx = vec![0f32; g.n * g.in_len()];
        let fwd = median_ms(reps, || conv::forward(&g, &x, &w, None, &mut y));
        let bin = median_ms(reps, || conv::backward_input(&g, &dy, &w, &mut dx));
        let bw = median_ms(reps, || {
            conv::backward_weight(&g, &x, &dy);
        });
        // burn: forward alone, then forward + backward of sum(conv(x) * dy).
        let xt = Tensor::<AB, 4>::from_data(TensorData::new(x.clone(), xs), &d);
        let wt = Tensor::<AB, 4>::from_data(TensorData::new(w.clone(), [cout, xs[1], 3, 3]), &d);
        let dyt =
            Tensor::<AB, 4>::from_data(TensorData::new(dy.clone(), [g.n, g.cout, g.ho, g.wo]), &d);
        let opts = burn::tensor::ops::ConvOptions::new([stride, stride], [1, 1], [1, 1], 1);
        let burn_fwd = median_ms(reps, || {
            let _ = burn::tensor::module::conv2d(xt.clone(), wt.clone(), None, opts.clone())
                .into_data();
        });
        let burn_both = median_ms(reps, || {
            let (xg, wg) = (xt.clone().require_grad(), wt.clone().require_grad());
            let y = burn::tensor::module::conv2d(xg.clone(), wg.clone(), None, opts.clone());
            let grads = (y * dyt.clone()).sum().backward();
            let _ = (xg.grad(&grads), wg.grad(&grads));
        });
        let burn_bwd = (burn_both - burn_fwd).max(0.0);
        for (op, ms, burn_ms) in [
            ("conv2d forward", fwd, burn_fwd),
            ("conv2d input + weight gradients", bin + bw, burn_bwd),
            ("  of which input gradient", bin, f64::NAN),
            ("  of which weight gradient", bw, f64::NAN),
        ] {
            let f = if op.starts_with("  ") {
                flops
            } else if op.contains('+') {
                2.0 * flops
            } else {
                flops
            };
            out.push(KernelTiming {
                op: op.into(),
                shape: shape.clone(),
                kernel_ms: ms,
                burn_ms,
                kernel_gflops: f / (ms * 1e-3) * 1e-9,
            });
        }
    }
    // BatchNorm(+ReLU) on the largest activation of ResNet-20.
    let bn = BnGeom {
        n: 128,
        c: 16,
        l: 32 * 32,
    };
    let x = data(bn.n * bn.c * bn.l, 4);
    let dy = data(bn.n * bn.c * bn.l, 5);
    let gamma = vec![1.0f32; bn.c];
    let beta = vec![0.0f32; bn.c];
    let mut stats = None;
    let fwd = median_ms(reps, || {
        let s = batchnorm::stats(&bn, &x, 1e-5);
        let (scale, shift) = batchnorm::scale_shift(&s.mean, &s.inv_std, &gamma, &beta);
        let y = batchnorm::affine(&bn, &x, &scale, &shift, None, true);
        stats = Some((s, y));
    });
    let (s, y) = stats.expect("ran at least once");
    let mut grad = dy.clone();
    let bwd = median_ms(reps, || {
        // In place: each call turns the gradient into dx (its values do not matter here).
        batchnorm::backward(&bn, &x, Some(&y), &mut grad, &s, &gamma, None);
    });
    let shape = format!("[{}, {}, {}] +relu", bn.n, bn.c, bn.l);
    let nbn = burn::nn::BatchNormConfig::new(bn.c).init::<AB>(&d);
    let xt = Tensor::<AB, 4>::from_data(TensorData::new(x.clone(), [bn.n, bn.c, 32, 32]), &d);
    let dyt = Tensor::<AB, 4>::from_data(TensorData::new(dy.clone(), [bn.n, bn.c, 32, 32]), &d);
    let burn_fwd = median_ms(reps, || {
        let _ = burn::tensor::activation::relu(nbn.forward(xt.clone())).into_data();
    });
    let burn_both = median_ms(reps, || {
        let xg = xt.clone().require_grad();
        let y = burn::tensor::activation::relu(nbn.forward(xg.clone()));
        let grads = (y * dyt.clone()).sum().backward();
        let _ = xg.grad(&grads);
    });
    for (op, ms, burn_ms) in [
        ("batch-norm+relu forward", fwd, burn_fwd),
        (
            "batch-norm+relu backward",
            bwd,
            (burn_both - burn_fwd).max(0.0),
        ),
    ] {
        out.push(KernelTiming {
            op: op.into(),
            shape: shape.clone(),
            kernel_ms: ms,
            burn_ms,
            kernel_gflops: f64::NAN,
        });
    }
    out
}
