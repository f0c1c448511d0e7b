//! The engine's benchmarks, all in this module: throughput of training steps (forward,
//! backward, RMSProp update, L2 term included) and inference on synthetic data (here; warm-up
//! steps first, then the median of the timed steps), the kernels against burn's ops
//! ([`kernels`]) and the CPU's multiply-add peak ([`peak`]).

pub mod kernels;
pub mod peak;

use crate::kernels::profile;
use crate::model::{Net, NetSpec};
use crate::train::OptimConfig;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub what: String,
    pub net: String,
    pub batch: usize,
    pub steps: usize,
    pub median_step_seconds: f64,
    /// The fastest timed step: on a machine whose speed drifts (a shared host), the least
    /// disturbed figure, for comparing two builds run alternately.
    pub fastest_step_seconds: f64,
    pub images_per_sec: f64,
    /// The network's FLOPs at the median step's rate (crate::flops: 2 per multiply-add;
    /// training counts the forward once and the trained part's backward twice), to set
    /// beside `incrpipe bench peak`.
    pub gflops: f64,
    /// Mean seconds per timed step in each CPU kernel (crate::kernels), then
    /// "other" (everything else: element-wise ops, pooling, loss, autodiff bookkeeping,
    /// allocation, the L2 term). Kernels that did not run (GPU, `INCRPIPE_KERNELS=reference`) read 0.
    pub breakdown: Vec<(String, f64)>,
}

/// Per-step seconds in each kernel since the profile was reset, and the rest of `times`.
fn breakdown(times: &[f64]) -> Vec<(String, f64)> {
    let steps = times.len().max(1) as f64;
    let mean_step = times.iter().sum::<f64>() / steps;
    let mut rows: Vec<(String, f64)> = profile::seconds()
        .into_iter()
        .map(|(op, s)| (op.name().to_string(), s / steps))
        .collect();
    let kernels: f64 = rows.iter().map(|r| r.1).sum();
    rows.push(("other".into(), (mean_step - kernels).max(0.0)));
    rows
}

fn synthetic(batch: usize) -> (Vec<f32>, Vec<i32>) {
    let x = (0..batch * 3072)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y = (0..batch).map(|i| (i % 10) as i32).collect();
    (x, y)
}

/// (median, fastest) of the step times.
fn median_and_fastest(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// Times `steps` training steps of the whole network after `warmup` untimed ones.
pub fn bench_train<B: AutodiffBackend>(
    spec: &NetSpec,
    batch: usize,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> BenchResult {
    let mut net = Net::<B>::init(spec, spec.k(), 0, device);
    let ocfg = OptimConfig::default();
    let mut optim = ocfg.build::<B>();
    let loss_fn = CrossEntropyLoss::new(None, device);
    let (x, y) = synthetic(batch);
    let mut times = Vec::new();
    for i in 0..warmup + steps.max(1) {
        if i == warmup {
            profile::reset();
        }
        let t0 = Instant::now();
        let xt = Tensor::<B, 4>::from_data(TensorData::new(x.clone(), [batch, 3, 32, 32]), device);
        let yt = Tensor::<B, 1, Int>::from_data(TensorData::new(y.clone(), [batch]), device);
        let loss = loss_fn.forward(net.forward(xt), yt)
            + net.kernel_sq_sum().mul_scalar(ocfg.weight_decay);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(ocfg.lr, net, grads);
        // Force the update to finish before stopping the clock (asynchronous backends).
        let _ = net.classifier.fc.weight.val().into_data();
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let rows = breakdown(&times);
    let (m, fastest) = median_and_fastest(times);
    BenchResult {
        what: "train".into(),
        net: spec.name.clone(),
        batch,
        steps: steps.max(1),
        median_step_seconds: m,
        fastest_step_seconds: fastest,
        images_per_sec: batch as f64 / m,
        gflops: batch as f64 / m * crate::flops::train_flops_per_image(spec, spec.k(), 0) as f64
            / 1e9,
        breakdown: rows,
    }
}

/// Times inference (BatchNorm in inference mode) of the whole network.
pub fn bench_infer<B: AutodiffBackend>(
    spec: &NetSpec,
    batch: usize,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> BenchResult {
    let net = Net::<B>::init(spec, spec.k(), 0, device).valid();
    let (x, _) = synthetic(batch);
    let mut times = Vec::new();
    for i in 0..warmup + steps.max(1) {
        if i == warmup {
            profile::reset();
        }
        let t0 = Instant::now();
        let xt = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(x.clone(), [batch, 3, 32, 32]),
            device,
        );
        let _ = net.forward(xt).into_data();
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let rows = breakdown(&times);
    let (m, fastest) = median_and_fastest(times);
    BenchResult {
        what: "infer".into(),
        net: spec.name.clone(),
        batch,
        steps: steps.max(1),
        median_step_seconds: m,
        fastest_step_seconds: fastest,
        images_per_sec: batch as f64 / m,
        gflops: batch as f64 / m * crate::flops::flops_per_inference(spec, spec.k()) as f64 / 1e9,
        breakdown: rows,
    }
}
