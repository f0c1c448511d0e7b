//! Human-readable description of a network and its partition (for `incrpipe model NET`).

use super::spec::{NetSpec, classifier_macs, classifier_params};
use crate::flops;
use std::fmt::Write;

fn human(x: u64) -> String {
    let x = x as f64;
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x}")
    }
}

/// Each sub-network with its units, parameters and FLOPs per inference, then the grown
/// networks S1..Sk (with their classifier) for k = 1..K.
pub fn describe(spec: &NetSpec) -> String {
    let mut s = String::new();
    let total_p = flops::net_params(spec, spec.k());
    let total_f = flops::flops_per_inference(spec, spec.k());
    let _ = writeln!(
        s,
        "{}: K = {} sub-networks, {} trainable parameters, {} FLOPs per inference (1 MAC = 2 FLOPs)",
        spec.name,
        spec.k(),
        total_p,
        human(total_f)
    );
    let _ = writeln!(
        s,
        "partition starts (unit indices): {:?}",
        spec.partition.starts()
    );
    for k in 0..spec.k() {
        let g = &spec.partition.groups[k];
        let p = flops::subnet_params(spec, k);
        let f = flops::FLOPS_PER_MAC * flops::subnet_macs(spec, k);
        let _ = writeln!(
            s,
            "S{} (units {}..{}): {} params ({:.1}%), {} FLOPs ({:.1}%)",
            k + 1,
            g.start,
            g.end - 1,
            p,
            100.0 * p as f64 / total_p as f64,
            human(f),
            100.0 * f as f64 / total_f as f64
        );
        for (i, u) in spec.group_units(k).iter().enumerate() {
            let _ = writeln!(
                s,
                "  [{:>2}] {:<58} out {:?}  params {:>9}  FLOPs {:>8}",
                g.start + i,
                u.describe(),
                u.output,
                u.params(),
                human(flops::FLOPS_PER_MAC * u.macs())
            );
        }
    }
    let out = spec.output_after(spec.k());
    let _ = writeln!(
        s,
        "classifier (follows the deepest active S_k): global average pool + dense {}->{}: {} params, {} FLOPs (for all K)",
        out.width(),
        spec.classes,
        classifier_params(out, spec.classes),
        human(flops::FLOPS_PER_MAC * classifier_macs(out, spec.classes))
    );
    let _ = writeln!(s, "grown networks:");
    for k in 1..=spec.k() {
        let _ = writeln!(
            s,
            "  S1..S{k} + classifier: {} params, {} FLOPs per inference",
            flops::net_params(spec, k),
            human(flops::flops_per_inference(spec, k))
        );
    }
    s
}
