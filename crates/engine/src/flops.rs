//! Analytic parameter and FLOP counts.
//!
//! FLOPs count the multiply-accumulates of conv and dense layers only (BatchNorm, ReLU,
//! pooling, additions are ignored), 1 MAC = 2 FLOPs. Training: the forward pass runs through
//! every active layer; the backward pass costs 2x the forward FLOPs of every layer that trains
//! (gradients w.r.t. inputs and weights) and nothing for frozen layers, since no backward pass
//! runs through them. Validation/test passes are forward only and are counted separately.

use crate::model::spec::{NetSpec, classifier_macs, classifier_params};

pub const FLOPS_PER_MAC: u64 = 2;

/// Trainable parameters of sub-network `s` (0-based).
pub fn subnet_params(spec: &NetSpec, s: usize) -> u64 {
    spec.group_units(s).iter().map(|u| u.params()).sum()
}

/// MACs per image of sub-network `s`.
pub fn subnet_macs(spec: &NetSpec, s: usize) -> u64 {
    spec.group_units(s).iter().map(|u| u.macs()).sum()
}

/// Trainable parameters of the network with `k` active sub-networks (classifier included).
pub fn net_params(spec: &NetSpec, k: usize) -> u64 {
    (0..k).map(|s| subnet_params(spec, s)).sum::<u64>()
        + classifier_params(spec.output_after(k), spec.classes)
}

/// BatchNorm running-statistic entries of the network with `k` sub-networks.
pub fn net_running_stats(spec: &NetSpec, k: usize) -> u64 {
    (0..k)
        .flat_map(|s| spec.group_units(s).iter())
        .map(|u| u.running_stats())
        .sum()
}

/// MACs per image of the network with `k` active sub-networks (classifier included).
pub fn net_macs(spec: &NetSpec, k: usize) -> u64 {
    (0..k).map(|s| subnet_macs(spec, s)).sum::<u64>()
        + classifier_macs(spec.output_after(k), spec.classes)
}

/// FLOPs of one inference (forward pass of one image).
pub fn flops_per_inference(spec: &NetSpec, k: usize) -> u64 {
    FLOPS_PER_MAC * net_macs(spec, k)
}

/// FLOPs of one training image with `k` active sub-networks of which the first `frozen`
/// do not train: forward of everything + 2x forward of the trained part.
pub fn train_flops_per_image(spec: &NetSpec, k: usize, frozen: usize) -> u64 {
    let frozen_macs: u64 = (0..frozen).map(|s| subnet_macs(spec, s)).sum();
    let total = net_macs(spec, k);
    FLOPS_PER_MAC * (total + 2 * (total - frozen_macs))
}
