//! Wall time spent in each kernel, for `incrpipe bench train --breakdown`. Always counted: two
//! clock reads per kernel call, a few dozen calls per training step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The kernels that are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ConvForward,
    ConvBackwardInput,
    ConvBackwardWeight,
    BatchNormForward,
    BatchNormBackward,
    DenseForward,
    DenseBackwardInput,
    DenseBackwardWeight,
    Optimizer,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::ConvForward,
        Op::ConvBackwardInput,
        Op::ConvBackwardWeight,
        Op::BatchNormForward,
        Op::BatchNormBackward,
        Op::DenseForward,
        Op::DenseBackwardInput,
        Op::DenseBackwardWeight,
        Op::Optimizer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::ConvForward => "conv2d forward",
            Op::ConvBackwardInput => "conv2d input gradient",
            Op::ConvBackwardWeight => "conv2d weight gradient",
            Op::BatchNormForward => "batch-norm(+relu) forward",
            Op::BatchNormBackward => "batch-norm(+relu) backward",
            Op::DenseForward => "dense forward",
            Op::DenseBackwardInput => "dense input gradient",
            Op::DenseBackwardWeight => "dense weight gradient",
            Op::Optimizer => "rmsprop update",
        }
    }
}

static NANOS: [AtomicU64; Op::ALL.len()] = [const { AtomicU64::new(0) }; Op::ALL.len()];

/// Runs `f`, adding its wall time to `op`'s counter.
pub fn timed<R>(op: Op, f: impl FnOnce() -> R) -> R {
    let t0 = Instant::now();
    let r = f();
    NANOS[op as usize].fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// Seconds spent in each op since the last [`reset`].
pub fn seconds() -> Vec<(Op, f64)> {
    Op::ALL
        .iter()
        .map(|&op| (op, NANOS[op as usize].load(Ordering::Relaxed) as f64 * 1e-9))
        .collect()
}

pub fn reset() {
    NANOS.iter().for_each(|n| n.store(0, Ordering::Relaxed));
}
