//! `incrpipe bench kernels`: each kernel against burn Flex's own op on the distinct layer
//! shapes of a network (ResNet-20 at batch 128 by default), forward and backward, in ms per
//! call and GFLOP/s.

use crate::backend::{CpuTrainBackend, cpu_device};
use crate::kernels::batchnorm::{self, BnGeom};
use crate::kernels::conv::{self, ConvGeom};
use crate::model::spec::{Feat, NetSpec, UnitKind};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::time::Instant;

/// One line of the micro-benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelTiming {
    pub op: String,
    pub shape: String,
    /// How many layers of the network have this shape.
    pub count: usize,
    /// Median milliseconds per call of the kernel.
    pub kernel_ms: f64,
    /// Median milliseconds per call of burn's op (forward, or forward + backward minus
    /// forward for the gradients: autodiff computes both gradients in one backward); NaN
    /// when burn's ops were not timed.
    pub burn_ms: f64,
    /// GFLOP/s of the kernel, counting 2 flops per multiply-add of the zero-padded
    /// convolution (the pixels path skips the products with the padding, so on small
    /// images its figure reads up to 2.25x its true rate).
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

/// A convolution's shape: `[N, Cin, H, W]`, Cout, stride (3x3 kernel, padding 1).
type ConvShape = ([usize; 4], usize, usize);

/// The distinct 3x3 convolutions of `spec` at batch `n`, in network order, each with how many
/// layers have it.
pub fn conv_shapes(spec: &NetSpec, n: usize) -> Vec<(ConvShape, usize)> {
    let mut out: Vec<(ConvShape, usize)> = Vec::new();
    let mut add = |shape: ConvShape| match out.iter_mut().find(|(s, _)| *s == shape) {
        Some((_, count)) => *count += 1,
        None => out.push((shape, 1)),
    };
    for u in &spec.units {
        let (Feat::Map { c, h, w }, Feat::Map { h: ho, w: wo, .. }) = (u.input, u.output) else {
            continue;
        };
        match u.kind {
            UnitKind::Conv { cout, stride, .. } => add(([n, c, h, w], cout, stride)),
            UnitKind::Block { cout, stride, .. } => {
                add(([n, c, h, w], cout, stride));
                add(([n, cout, ho, wo], cout, 1));
            }
            UnitKind::Pool | UnitKind::Dense { .. } => {}
        }
    }
    out
}

/// Times every kernel on the layer shapes of `spec` at batch `n`, `reps` times (median),
/// against burn's op when `with_burn` (burn's convolution backward takes seconds per call on
/// the larger networks).
pub fn run(spec: &NetSpec, n: usize, reps: usize, with_burn: bool) -> Vec<KernelTiming> {
    type AB = CpuTrainBackend;
    let d = cpu_device();
    let mut out = Vec::new();
    let burn_ms = |f: &mut dyn FnMut()| {
        if with_burn {
            median_ms(reps, f)
        } else {
            f64::NAN
        }
    };
    // A backward time as (forward + backward) - forward; NaN stays NaN (`max` would not).
    let backward = |both: f64, fwd: f64| {
        if with_burn {
            (both - fwd).max(0.0)
        } else {
            f64::NAN
        }
    };
    let shapes = conv_shapes(spec, n);
    for &((xs, cout, stride), count) in &shapes {
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
        let burn_fwd = burn_ms(&mut || {
            let _ = burn::tensor::module::conv2d(xt.clone(), wt.clone(), None, opts.clone())
                .into_data();
        });
        let burn_both = burn_ms(&mut || {
            let (xg, wg) = (xt.clone().require_grad(), wt.clone().require_grad());
            let y = burn::tensor::module::conv2d(xg.clone(), wg.clone(), None, opts.clone());
            let grads = (y * dyt.clone()).sum().backward();
            let _ = (xg.grad(&grads), wg.grad(&grads));
        });
        let burn_bwd = backward(burn_both, burn_fwd);
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
                count,
                kernel_ms: ms,
                burn_ms,
                kernel_gflops: f / (ms * 1e-3) * 1e-9,
            });
        }
    }
    // BatchNorm(+ReLU) on the first convolution's output, the network's largest activation.
    let out_shape = |&(([_, _, h, w], c, stride), _): &(ConvShape, usize)| {
        (c, h.div_ceil(stride), w.div_ceil(stride))
    };
    let Some((c, h, w)) = shapes.first().map(out_shape) else {
        return out;
    };
    let count = shapes
        .iter()
        .filter(|s| out_shape(s) == (c, h, w))
        .map(|s| s.1)
        .sum();
    let bn = BnGeom { n, c, l: h * w };
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
    let xt = Tensor::<AB, 4>::from_data(TensorData::new(x.clone(), [bn.n, bn.c, h, w]), &d);
    let dyt = Tensor::<AB, 4>::from_data(TensorData::new(dy.clone(), [bn.n, bn.c, h, w]), &d);
    let burn_fwd = burn_ms(&mut || {
        let _ = burn::tensor::activation::relu(nbn.forward(xt.clone())).into_data();
    });
    let burn_both = burn_ms(&mut || {
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
            backward(burn_both, burn_fwd),
        ),
    ] {
        out.push(KernelTiming {
            op: op.into(),
            shape: shape.clone(),
            count,
            kernel_ms: ms,
            burn_ms,
            kernel_gflops: f64::NAN,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timed shapes are the network's: every 3x3 convolution counted once, in order.
    #[test]
    fn conv_shapes_cover_every_layer_of_the_network() {
        let vgg = conv_shapes(&NetSpec::parse("vgg16").expect("spec"), 32);
        let expect: [(ConvShape, usize); 9] = [
            (([32, 3, 32, 32], 64, 1), 1),
            (([32, 64, 32, 32], 64, 1), 1),
            (([32, 64, 16, 16], 128, 1), 1),
            (([32, 128, 16, 16], 128, 1), 1),
            (([32, 128, 8, 8], 256, 1), 1),
            (([32, 256, 8, 8], 256, 1), 2),
            (([32, 256, 4, 4], 512, 1), 1),
            (([32, 512, 4, 4], 512, 1), 2),
            (([32, 512, 2, 2], 512, 1), 3),
        ];
        assert_eq!(vgg, expect);
        let resnet = conv_shapes(&NetSpec::parse("resnet20").expect("spec"), 128);
        let expect: [(ConvShape, usize); 6] = [
            (([128, 3, 32, 32], 16, 1), 1),
            (([128, 16, 32, 32], 16, 1), 6),
            (([128, 16, 32, 32], 32, 2), 1),
            (([128, 32, 16, 16], 32, 1), 5),
            (([128, 32, 16, 16], 64, 2), 1),
            (([128, 64, 8, 8], 64, 1), 5),
        ];
        assert_eq!(resnet, expect);
    }
}
