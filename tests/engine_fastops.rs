//! The CPU fast paths compute what burn's reference ops compute: values, gradients and running
//! statistics of BatchNorm (training and inference mode) within float tolerance, and they are
//! deterministic (same inputs, same thread count -> bit-identical results).

use burn::module::Param;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use incrpipe::engine::backend::{CpuBackend, CpuTrainBackend, cpu_device};
use incrpipe::engine::model::norm::batch_norm_forward;

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
    let d = cpu_device();
    let n: usize = shape.iter().product();
    let bn = bn_with_params::<AB>(shape[1], &d);
    let x = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 1, 2.0, 0.7), shape), &d)
        .require_grad();
    let r = Tensor::<AB, 4>::from_data(TensorData::new(values(n, 2, 1.0, 0.0), shape), &d);
    let run = |x: Tensor<AB, 4>| {
        if fast {
            batch_norm_forward(&bn, x)
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
    for shape in [[3, 5, 7, 6], [16, 16, 8, 8], [2, 64, 1, 1]] {
        let a = train_step(shape, true);
        let b = train_step(shape, false);
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
            assert!(e < tol, "{shape:?} {what}: max rel error {e}");
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
