//! The CPU fast paths compute what burn's reference ops compute: values, gradients and running
//! statistics of BatchNorm (+ ReLU; training and inference mode), values and gradients of
//! conv2d, and a whole network's loss curve, all within float tolerance; and they are
//! deterministic (same inputs -> bit-identical results, whatever the number of threads).

use burn::module::{AutodiffModule, Param};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use incrpipe::engine::backend::{CpuBackend, CpuTrainBackend, cpu_device};

/// The fused kernel (crate::engine::kernels::batch_norm), which applies on the CPU backend.
fn batch_norm_forward<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm_act(bn, x, false)
}

fn batch_norm_act<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, relu: bool) -> Tensor<B, 4> {
    incrpipe::engine::kernels::batch_norm(bn, x, relu)
        .unwrap_or_else(|_| panic!("the kernels apply on the CPU backend"))
}

type AB = CpuTrainBackend;

/// Deterministic pseudo-random values in [-scale + shift, scale + shift).
fn values(n: usize, seed: u64, scale: f32, shift: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale + shift
        })
        .collect()
}

fn vec_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Largest |a - b| / (1 + |b|).
fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

fn bn_with_params<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
    let mut bn = BatchNormConfig::new(c).init(device);
    bn.gamma = Param::from_data(TensorData::new(values(c, 11, 0.5, 1.0), [c]), device);
    bn.beta = Param::from_data(TensorData::new(values(c, 12, 0.5, 0.0), [c]), device);
    bn
}

struct TrainOut {
    y: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

/// One forward + backward of `sum(bn(x) * r)` with burn's BatchNorm or the fast one; two
/// forwards so that the running statistics are updated twice.
fn train_step(shape: [usize; 4], fast: bool) -> TrainOut {
    train_step_act(shape, fast, false)
}

/// As [`train_step`], with a ReLU after the BatchNorm when `relu` (fused in the kernel).
fn train_step_act(shape: [usize; 4], fast: bool, relu: bool) -> TrainOut {
    let d = cpu_device();
    let n: usize = shape.iter().product();
    let bn = bn_with_params::<AB>(shape[1], &d);
    let x = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 1, 2.0, 0.7), shape), &d)
        .require_grad();
    let r = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 2, 1.0, 0.0), shape), &d);
    let run = |x: Tensor<AB, 4>| {
        if fast {
            batch_norm_act(&bn, x, relu)
        } else if relu {
            burn::tensor::activation::relu(bn.forward(x))
        } else {
            bn.forward(x)
        }
    };
    let _ = run(x.clone().mul_scalar(0.5));
    let y = run(x.clone());
    let grads = (y.clone() * r).sum().backward();
    TrainOut {
        y: vec_of(y.inner()),
        dx: vec_of(x.grad(&grads).unwrap()),
        dgamma: vec_of(bn.gamma.val().grad(&grads).unwrap()),
        dbeta: vec_of(bn.beta.val().grad(&grads).unwrap()),
        running_mean: vec_of(bn.running_mean.value()),
        running_var: vec_of(bn.running_var.value()),
    }
}

#[test]
fn batch_norm_train_matches_burn_values_gradients_and_running_stats() {
    // Shapes: odd sizes, and a ResNet-20-like one.
    for (shape, relu) in [
        ([3, 5, 7, 6], false),
        ([16, 16, 8, 8], false),
        ([2, 64, 1, 1], false),
        ([3, 5, 7, 6], true),
        ([16, 16, 8, 8], true),
    ] {
        let a = train_step_act(shape, true, relu);
        let b = train_step_act(shape, false, relu);
        let tol = 1e-4;
        for (what, fast, reference) in [
            ("y", &a.y, &b.y),
            ("dx", &a.dx, &b.dx),
            ("dgamma", &a.dgamma, &b.dgamma),
            ("dbeta", &a.dbeta, &b.dbeta),
            ("running_mean", &a.running_mean, &b.running_mean),
            ("running_var", &a.running_var, &b.running_var),
        ] {
            let e = max_rel(fast, reference);
            assert!(e < tol, "{shape:?} relu {relu} {what}: max rel error {e}");
        }
    }
}

#[test]
fn batch_norm_train_is_deterministic() {
    let a = train_step([8, 16, 8, 8], true);
    let b = train_step([8, 16, 8, 8], true);
    assert_eq!(a.y, b.y);
    assert_eq!(a.dx, b.dx);
    assert_eq!(a.dgamma, b.dgamma);
    assert_eq!(a.running_var, b.running_var);
}

#[test]
fn batch_norm_inference_matches_burn() {
    let d = cpu_device();
    let shape = [4, 8, 5, 5];
    let n: usize = shape.iter().product();
    let mut bn = bn_with_params::<CpuBackend>(8, &d);
    // Non-trivial running statistics, as after training.
    bn.running_mean = burn::module::RunningState::new(Tensor::from_data(
        TensorData::new(values(8, 21, 0.5, 0.1), [8]),
        &d,
    ));
    bn.running_var = burn::module::RunningState::new(Tensor::from_data(
        TensorData::new(values(8, 22, 0.4, 1.0), [8]),
        &d,
    ));
    let x = Tensor::<CpuBackend, 4>::from_data(TensorData::new(values(n, 3, 2.0, 0.3), shape), &d);
    let fast = vec_of(batch_norm_forward(&bn, x.clone()));
    let reference = vec_of(bn.forward(x));
    let e = max_rel(&fast, &reference);
    assert!(e < 1e-5, "max rel error {e}");
}

struct ConvOut {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Option<Vec<f32>>,
}

/// One forward + backward of `sum(conv(x) * r)` with burn's conv2d or the kernel.
fn conv_step(
    x_shape: [usize; 4],
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    fast: bool,
) -> ConvOut {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    let d = cpu_device();
    let cin = x_shape[1];
    let mut conv = Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(bias)
        .init::<AB>(&d);
    let wn = cout * cin * k * k;
    conv.weight = Param::from_data(
        TensorData::new(values(wn, 5, 0.3, 0.0), [cout, cin, k, k]),
        &d,
    );
    if bias {
        conv.bias = Some(Param::from_data(
            TensorData::new(values(cout, 6, 0.5, 0.1), [cout]),
            &d,
        ));
    }
    let n: usize = x_shape.iter().product();
    let x = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 7, 1.5, 0.2), x_shape), &d)
        .require_grad();
    let y = if fast {
        incrpipe::engine::kernels::conv2d(&conv, x.clone())
    } else {
        conv.forward(x.clone())
    };
    let r = Tensor::<AB, 4>::from_data(
        TensorData::new(values(y.dims().iter().product(), 8, 1.0, 0.0), y.dims()),
        &d,
    );
    let grads = (y.clone() * r).sum().backward();
    ConvOut {
        y: vec_of(y.inner()),
        dx: vec_of(x.grad(&grads).unwrap()),
        dw: vec_of(conv.weight.val().grad(&grads).unwrap()),
        db: conv
            .bias
            .as_ref()
            .map(|b| vec_of(b.val().grad(&grads).unwrap())),
    }
}

const CONV_CASES: [([usize; 4], usize, usize, usize, usize, bool); 9] = [
    // ResNet-like 3x3, batch over two weight-gradient chunks, with and without bias.
    ([11, 3, 9, 7], 4, 3, 1, 1, true),
    // Rows of 8 and 16 pixels: the implicit GEMM (forward and input gradient), one with
    // more kernel taps (270) than one k block of the micro-kernel.
    ([9, 5, 6, 8], 7, 3, 1, 1, true),
    ([2, 30, 4, 16], 13, 3, 1, 1, false),
    ([10, 6, 8, 8], 5, 3, 2, 1, false),
    // 1x1 stride 2 without padding, a 5x5 kernel with padding 2, a stride that skips pixels.
    ([3, 4, 6, 6], 2, 1, 2, 0, true),
    ([2, 2, 5, 5], 3, 5, 1, 2, false),
    ([2, 3, 7, 7], 2, 3, 3, 0, true),
    // VGG-16's small images (4x4, 2x2): the pixels path, which skips the padding.
    ([5, 6, 4, 4], 7, 3, 1, 1, true),
    ([3, 20, 2, 2], 9, 3, 1, 1, true),
];

#[test]
fn conv2d_matches_burn_values_and_gradients() {
    for (x, cout, k, stride, pad, bias) in CONV_CASES {
        let a = conv_step(x, cout, k, stride, pad, bias, true);
        let b = conv_step(x, cout, k, stride, pad, bias, false);
        let case = format!("x {x:?} cout {cout} k {k} stride {stride} pad {pad} bias {bias}");
        for (what, fast, reference) in [
            ("y", &a.y, &b.y),
            ("dx", &a.dx, &b.dx),
            ("dw", &a.dw, &b.dw),
        ] {
            let e = max_rel(fast, reference);
            assert!(e < 1e-4, "{case} {what}: max rel error {e}");
        }
        assert_eq!(
            a.db.is_some(),
            bias,
            "{case}: bias gradient present iff bias"
        );
        if let (Some(fast), Some(reference)) = (&a.db, &b.db) {
            let e = max_rel(fast, reference);
            assert!(e < 1e-4, "{case} db: max rel error {e}");
        }
    }
}

/// One forward + backward of `sum(linear(x) * r)` with burn's `Linear` or the dense
/// kernels: output, input, weight and (with a bias) bias gradients.
fn linear_step(n: usize, din: usize, dout: usize, bias: bool, fast: bool) -> Vec<Vec<f32>> {
    use burn::nn::LinearConfig;
    let d = cpu_device();
    let mut lin = LinearConfig::new(din, dout).with_bias(bias).init::<AB>(&d);
    lin.weight = Param::from_data(
        TensorData::new(values(din * dout, 11, 0.3, 0.0), [din, dout]),
        &d,
    );
    if bias {
        lin.bias = Some(Param::from_data(
            TensorData::new(values(dout, 12, 0.5, 0.1), [dout]),
            &d,
        ));
    }
    let x =
        Tensor::<AB, 2>::from_data(TensorData::new(values(n * din, 13, 1.5, 0.2), [n, din]), &d)
            .require_grad();
    let y = if fast {
        incrpipe::engine::kernels::linear(&lin, x.clone())
    } else {
        lin.forward(x.clone())
    };
    let r = Tensor::<AB, 2>::from_data(
        TensorData::new(values(n * dout, 14, 1.0, 0.0), [n, dout]),
        &d,
    );
    let grads = (y.clone() * r).sum().backward();
    let mut out = vec![
        vec_of(y.inner()),
        vec_of(x.grad(&grads).unwrap()),
        vec_of(lin.weight.val().grad(&grads).unwrap()),
    ];
    if let Some(b) = &lin.bias {
        out.push(vec_of(b.val().grad(&grads).unwrap()));
    }
    // Inference (the plain backend).
    let plain = lin.valid();
    let x = Tensor::<CpuBackend, 2>::from_data(
        TensorData::new(values(n * din, 13, 1.5, 0.2), [n, din]),
        &d,
    );
    out.push(vec_of(if fast {
        incrpipe::engine::kernels::linear(&plain, x)
    } else {
        plain.forward(x)
    }));
    out
}

/// The dense kernels give what burn's `Linear` gives: output, input, weight and bias
/// gradients (training backend), and the inference output (plain backend); ragged sizes, a
/// batch of one, no bias, a layer wider than one k block both ways. The kernels did run
/// (their profile counter moved), so burn is not compared with itself.
#[test]
fn linear_matches_burn_values_and_gradients() {
    use incrpipe::engine::kernels::profile::{self, Op};
    let dense_seconds = || {
        profile::seconds()
            .into_iter()
            .filter(|(op, _)| *op == Op::DenseForward)
            .map(|(_, s)| s)
            .sum::<f64>()
    };
    for (n, din, dout, bias) in [
        (3, 7, 5, true),
        (1, 20, 33, true),
        (9, 600, 17, false),
        (4, 9, 300, true),
    ] {
        let before = dense_seconds();
        let fast = linear_step(n, din, dout, bias, true);
        assert!(dense_seconds() > before, "the dense kernels did not run");
        let reference = linear_step(n, din, dout, bias, false);
        assert_eq!(fast.len(), reference.len());
        for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
            let e = max_rel(a, b);
            assert!(
                e < 1e-4,
                "({n}, {din}, {dout}, bias {bias}) output {i}: max rel error {e}"
            );
        }
    }
}

/// The kernels' results do not depend on the number of threads: sums are split by data.
#[test]
fn kernels_give_the_same_bits_on_one_and_two_threads() {
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (x, cout, k, stride, pad, bias) = CONV_CASES[0];
            let c = conv_step(x, cout, k, stride, pad, bias, true);
            // The pixels path and the dense kernels with enough rows (60 outputs: 10 row
            // panels) that 1 and 2 threads cut them into different blocks.
            let p = conv_step([10, 20, 2, 2], 60, 3, 1, 1, true, true);
            let l = linear_step(10, 70, 60, true, true);
            let b = train_step_act([9, 6, 5, 5], true, true);
            (
                (c.y, c.dx, c.dw, c.db),
                (p.y, p.dx, p.dw, p.db),
                l,
                (b.y, b.dx, b.dgamma, b.dbeta),
            )
        })
    };
    assert!(on(1) == on(2), "results differ between 1 and 2 threads");
}

/// A whole network trained a few steps with the kernels follows the loss curve of the same
/// network trained with burn's reference ops, within float tolerance.
#[test]
fn network_loss_curve_matches_reference_ops() {
    use burn::nn::loss::CrossEntropyLoss;
    use burn::optim::{GradientsParams, Optimizer};
    use incrpipe::engine::kernels::{KernelPath, with_path};
    use incrpipe::engine::model::{Net, NetSpec};
    use incrpipe::engine::train::OptimConfig;
    let d = cpu_device();
    let spec = NetSpec::parse("resnet8-w4").unwrap();
    let batch = 12;
    let curve = || {
        let mut net = Net::<AB>::init(&spec, spec.k(), 3, &d);
        let ocfg = OptimConfig::default();
        let mut optim = ocfg.build::<AB>();
        let loss_fn = CrossEntropyLoss::new(None, &d);
        (0..4)
            .map(|step| {
                let x = Tensor::<AB, 4>::from_data(
                    TensorData::new(
                        values(batch * 3072, 100 + step, 1.0, 0.0),
                        [batch, 3, 32, 32],
                    ),
                    &d,
                );
                let labels: Vec<i32> = (0..batch as i32).map(|i| (i + step as i32) % 10).collect();
                let y = Tensor::<AB, 1, Int>::from_data(TensorData::new(labels, [batch]), &d);
                let loss = loss_fn.forward(net.forward(x), y)
                    + net.kernel_sq_sum().mul_scalar(ocfg.weight_decay);
                let value = loss.clone().into_scalar();
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optim.step(ocfg.lr, net.clone(), grads);
                value
            })
            .collect::<Vec<f32>>()
    };
    let fast = curve();
    let reference = with_path(KernelPath::Reference, curve);
    let e = max_rel(&fast, &reference);
    assert!(e < 1e-4, "loss curves differ: {fast:?} vs {reference:?}");
    assert!(fast[3] != fast[0], "the network did not train: {fast:?}");
}

/// `relu(bn(x) + residual)` fused (the end of a ResNet block) against burn's ops: values,
/// gradients of x, the residual, gamma and beta, and the running statistics.
#[test]
fn batch_norm_add_relu_matches_burn() {
    let d = cpu_device();
    let shape = [5, 6, 7, 3];
    let n: usize = shape.iter().product();
    let run = |fast: bool| {
        let bn = bn_with_params::<AB>(shape[1], &d);
        let x = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 31, 2.0, 0.4), shape), &d)
            .require_grad();
        let res = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 32, 1.5, 0.0), shape), &d)
            .require_grad();
        let r = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 33, 1.0, 0.0), shape), &d);
        let y = if fast {
            incrpipe::engine::kernels::batch_norm_add_relu(&bn, x.clone(), res.clone())
                .unwrap_or_else(|_| panic!("the kernels apply on the CPU backend"))
        } else {
            burn::tensor::activation::relu(bn.forward(x.clone()) + res.clone())
        };
        let grads = (y.clone() * r).sum().backward();
        [
            vec_of(y.inner()),
            vec_of(x.grad(&grads).unwrap()),
            vec_of(res.grad(&grads).unwrap()),
            vec_of(bn.gamma.val().grad(&grads).unwrap()),
            vec_of(bn.beta.val().grad(&grads).unwrap()),
            vec_of(bn.running_mean.value()),
            vec_of(bn.running_var.value()),
        ]
    };
    let (fast, reference) = (run(true), run(false));
    let names = [
        "y",
        "dx",
        "dresidual",
        "dgamma",
        "dbeta",
        "running_mean",
        "running_var",
    ];
    for ((what, a), b) in names.iter().zip(&fast).zip(&reference) {
        let e = max_rel(a, b);
        assert!(e < 1e-4, "{what}: max rel error {e}");
    }
    assert!(fast[0].contains(&0.0), "the ReLU cut somewhere");
}

/// incrpipe's RMSProp (the fused CPU kernel, and its tensor-op fallback) computes what burn's
/// `RmsProp` computes, bit for bit, with and without momentum, over several steps.
#[test]
fn rmsprop_matches_burn_bit_for_bit() {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::{GradientsParams, Optimizer, RmsPropConfig};
    use incrpipe::engine::kernels::{KernelPath, with_path};
    use incrpipe::engine::rmsprop::RmsProp;
    for momentum in [0.0f32, 0.9] {
        let (alpha, epsilon, lr) = (0.9f32, 1e-7f32, 1e-3f64);
        fn train<O: Optimizer<Linear<AB>, AB>>(mut optim: O, lr: f64) -> Vec<f32> {
            let d = cpu_device();
            let mut lin = LinearConfig::new(37, 5).init::<AB>(&d);
            lin.weight =
                Param::from_data(TensorData::new(values(37 * 5, 41, 0.3, 0.0), [37, 5]), &d);
            lin.bias = Some(Param::from_data(
                TensorData::new(values(5, 42, 0.3, 0.0), [5]),
                &d,
            ));
            for step in 0..4 {
                let x = Tensor::<AB, 2>::from_data(
                    TensorData::new(values(3 * 37, 50 + step, 1.0, 0.1), [3, 37]),
                    &d,
                );
                let r = Tensor::<AB, 2>::from_data(
                    TensorData::new(values(15, 60 + step, 1.0, 0.0), [3, 5]),
                    &d,
                );
                let loss = (lin.forward(x) * r).sum();
                let grads = GradientsParams::from_grads(loss.backward(), &lin);
                lin = optim.step(lr, lin, grads);
            }
            let mut v = vec_of(lin.weight.val());
            v.extend(vec_of(lin.bias.unwrap().val()));
            v
        }
        let burn_optim = RmsPropConfig::new()
            .with_alpha(alpha)
            .with_momentum(momentum)
            .with_epsilon(epsilon)
            .init::<AB, Linear<AB>>();
        let ours = || {
            OptimizerAdaptor::<RmsProp, Linear<AB>, AB>::from(RmsProp {
                alpha,
                momentum,
                epsilon,
            })
        };
        let reference = train(burn_optim, lr);
        let fused = train(ours(), lr);
        let fallback = with_path(KernelPath::Reference, || train(ours(), lr));
        assert_eq!(fused, reference, "fused kernel, momentum {momentum}");
        assert_eq!(
            fallback, reference,
            "tensor-op fallback, momentum {momentum}"
        );
    }
}

/// The L2 term `sum(w^2)` as one node: value and gradient against burn's `square().sum()`
/// (through a multiple so that the incoming gradient is not 1), for a 4-D and a 2-D tensor.
#[test]
fn sum_of_squares_matches_burn() {
    use incrpipe::engine::kernels::{KernelPath, sum_of_squares, with_path};
    let d = cpu_device();
    let run = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let data = TensorData::new(values(n, 11, 0.7, -0.1), shape.clone());
        let (value, grad) = if shape.len() == 4 {
            let w = Tensor::<AB, 4>::from_data(data, &d).require_grad();
            let s = sum_of_squares(w.clone()).mul_scalar(3.5);
            let g = s.backward();
            (vec_of(s.inner()), vec_of(w.grad(&g).unwrap()))
        } else {
            let w = Tensor::<AB, 2>::from_data(data, &d).require_grad();
            let s = sum_of_squares(w.clone()).mul_scalar(3.5);
            let g = s.backward();
            (vec_of(s.inner()), vec_of(w.grad(&g).unwrap()))
        };
        (value, grad)
    };
    for shape in [vec![7, 5, 3, 3], vec![40_000, 3]] {
        let fast = run(shape.clone());
        let reference = with_path(KernelPath::Reference, || run(shape.clone()));
        let e = max_rel(&fast.0, &reference.0);
        assert!(
            e < 1e-5,
            "{shape:?} value: {:?} vs {:?}",
            fast.0,
            reference.0
        );
        let e = max_rel(&fast.1, &reference.1);
        assert!(e < 1e-6, "{shape:?} gradient: max rel error {e}");
    }
}
