//! RMSProp, computed as burn's `RmsProp` computes it (non-centred, no weight-decay term: the
//! engine adds its L2 term to the loss), with its CPU update done by one fused kernel
//! ([`crate::kernels::rmsprop`]) instead of ~9 allocating tensor ops per parameter.
//!
//! The formula and the order of its f32 operations follow burn 0.21's `RmsProp`:
//! `s = s * alpha + (g * g) * (1 - alpha)` (first step: `(g * g) * (1 - alpha)`),
//! `d = g / (sqrt(s) + epsilon)`, with momentum `b = b * momentum + d` (first step: `b = d`),
//! `p = p - update * lr`. tests/engine_fastops.rs checks both paths against burn's optimiser
//! bit for bit.

use burn::optim::LearningRate;
use burn::optim::SimpleOptimizer;
use burn::prelude::*;
use burn::record::Record;

use crate::kernels;

/// The optimiser (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct RmsProp {
    pub alpha: f32,
    pub momentum: f32,
    pub epsilon: f32,
}

/// Per-parameter state: the running average of squared gradients, and the momentum buffer
/// when momentum is on.
#[derive(Record, Clone)]
pub struct RmsPropState<B: Backend, const D: usize> {
    pub square_avg: Tensor<B, D>,
    pub momentum: Option<Tensor<B, D>>,
}

impl<B: Backend> SimpleOptimizer<B> for RmsProp {
    type State<const D: usize> = RmsPropState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let consts = kernels::rmsprop::Consts {
            alpha: self.alpha,
            momentum: self.momentum,
            epsilon: self.epsilon,
            lr: lr as f32,
        };
        let plain = state.map(|s| (s.square_avg, s.momentum));
        let (tensor, grad, plain) = match kernels::rmsprop_step(consts, tensor, grad, plain) {
            Ok((p, (square_avg, momentum))) => {
                return (
                    p,
                    Some(RmsPropState {
                        square_avg,
                        momentum,
                    }),
                );
            }
            Err(unfused) => unfused,
        };
        let state = plain.map(|(square_avg, momentum)| RmsPropState {
            square_avg,
            momentum,
        });
        let (p, s) = reference_step(self, lr, tensor, grad, state);
        (p, Some(s))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.square_avg = state.square_avg.to_device(device);
        state.momentum = state.momentum.map(|b| b.to_device(device));
        state
    }
}

/// The update with burn's tensor ops (every backend but the CPU one, and the reference side
/// of the tests).
pub fn reference_step<B: Backend, const D: usize>(
    o: &RmsProp,
    lr: LearningRate,
    tensor: Tensor<B, D>,
    grad: Tensor<B, D>,
    state: Option<RmsPropState<B, D>>,
) -> (Tensor<B, D>, RmsPropState<B, D>) {
    let (square_avg, buf) = match state {
        Some(s) => (Some(s.square_avg), s.momentum),
        None => (None, None),
    };
    let t = grad.clone().square().mul_scalar(1.0 - o.alpha);
    let square_avg = match square_avg {
        Some(s) => s.mul_scalar(o.alpha).add(t),
        None => t,
    };
    let d = grad.div(square_avg.clone().sqrt().add_scalar(o.epsilon));
    let (update, momentum) = if o.momentum > 0.0 {
        let b = match buf {
            Some(b) => b.mul_scalar(o.momentum).add(d),
            None => d,
        };
        (b.clone(), Some(b))
    } else {
        (d, None)
    };
    (
        tensor - update.mul_scalar(lr),
        RmsPropState {
            square_avg,
            momentum,
        },
    )
}
