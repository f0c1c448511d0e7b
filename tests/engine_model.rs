//! Networks: shapes, partitions, analytic counts against the built modules, He init.

use burn::module::Module;
use burn::prelude::*;
use incrpipe::engine::backend::{CpuBackend, cpu_device};
use incrpipe::engine::flops;
use incrpipe::engine::model::{Net, NetSpec, Unit};

type B = CpuBackend;

fn trainable(net: &Net<B>, spec: &NetSpec) -> u64 {
    // num_params also counts BatchNorm running mean/var: subtract them.
    net.num_params() as u64 - flops::net_running_stats(spec, net.k())
}

#[test]
fn resnet_shapes_and_counts_match_built_modules() {
    let d = cpu_device();
    for name in [
        "resnet8",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet8-w4",
    ] {
        let spec = NetSpec::parse(name).unwrap();
        assert_eq!(spec.k(), 3, "{name}");
        let mut net = Net::<B>::init(&spec, 1, 7, &d);
        loop {
            let x = Tensor::<B, 4>::zeros([2, 3, 32, 32], &d);
            assert_eq!(net.forward(x).dims(), [2, 10], "{name} k={}", net.k());
            assert_eq!(
                trainable(&net, &spec),
                flops::net_params(&spec, net.k()),
                "{name} k={}",
                net.k()
            );
            if net.k() == spec.k() {
                break;
            }
            net = net.grow(&spec, 7, &d);
        }
    }
}

#[test]
fn resnet20_and_56_figures() {
    let r20 = NetSpec::parse("resnet20").unwrap();
    assert_eq!(flops::net_params(&r20, 3), 269_722);
    let m20 = flops::net_macs(&r20, 3) as f64;
    assert!((40.0e6..42.0e6).contains(&m20), "ResNet-20 MACs {m20}");
    assert_eq!(r20.partition.starts(), vec![0, 4, 7]);
    let r56 = NetSpec::parse("resnet56").unwrap();
    let p56 = flops::net_params(&r56, 3) as f64;
    assert!((0.84e6..0.86e6).contains(&p56), "ResNet-56 params {p56}");
    let m56 = flops::net_macs(&r56, 3) as f64;
    assert!((124e6..127e6).contains(&m56), "ResNet-56 MACs {m56}");
    // First conv goes with stage 1: S1 = stem + 9 blocks.
    assert_eq!(r56.partition.starts(), vec![0, 10, 19]);
    let net = Net::<B>::init(&r56, 3, 1, &cpu_device());
    assert_eq!(trainable(&net, &r56), flops::net_params(&r56, 3));
}

#[test]
fn vgg16_partition_and_fractions() {
    let spec = NetSpec::parse("vgg16").unwrap();
    assert_eq!(spec.k(), 6);
    let widths: Vec<(usize, usize)> = (0..6)
        .map(|s| {
            let u = spec.group_units(s);
            (u[0].width(), u.iter().filter(|u| u.has_weights()).count())
        })
        .collect();
    assert_eq!(
        widths,
        vec![(64, 2), (128, 2), (256, 3), (512, 3), (512, 3), (4096, 2)]
    );
    let total = flops::net_params(&spec, 6) as f64;
    assert!((33.0e6..35.0e6).contains(&total), "VGG params {total}");
    let s: Vec<f64> = (0..6)
        .map(|k| flops::subnet_params(&spec, k) as f64)
        .collect();
    let f13 = (s[0] + s[1] + s[2]) / total;
    assert!((0.05..0.054).contains(&f13), "S1-S3 fraction {f13}");
    let s15 = s[..5].iter().sum::<f64>();
    assert!((14.6e6..14.8e6).contains(&s15), "S1-S5 {s15}");
    let last_two = (s[4] + s[5]) / total;
    assert!((0.76..0.78).contains(&last_two), "S5+S6 share {last_two}");
    // FLOPs added by S5 and S6 relative to the network without them.
    let m4 = (0..4).map(|k| flops::subnet_macs(&spec, k)).sum::<u64>() as f64;
    let m56 = (flops::subnet_macs(&spec, 4) + flops::subnet_macs(&spec, 5)) as f64;
    let added = m56 / m4;
    assert!((0.16..0.17).contains(&added), "S5+S6 FLOP increase {added}");
}

#[test]
fn vgg16_builds_grows_and_counts() {
    // Narrow VGG for all k (fast), full VGG once for the parameter count.
    let d = cpu_device();
    let spec = NetSpec::parse("vgg16-w8").unwrap();
    let mut net = Net::<B>::init(&spec, 1, 3, &d);
    loop {
        let x = Tensor::<B, 4>::zeros([2, 3, 32, 32], &d);
        assert_eq!(net.forward(x).dims(), [2, 10]);
        assert_eq!(trainable(&net, &spec), flops::net_params(&spec, net.k()));
        if net.k() == 6 {
            break;
        }
        net = net.grow(&spec, 3, &d);
    }
    let full = NetSpec::parse("vgg16").unwrap();
    let net = Net::<B>::init(&full, 6, 3, &d);
    assert_eq!(trainable(&net, &full), flops::net_params(&full, 6));
    assert_eq!(
        net.forward(Tensor::<B, 4>::zeros([1, 3, 32, 32], &d))
            .dims(),
        [1, 10]
    );
    // He init of the 512 -> 4096 dense layer (fan_in 512).
    let Unit::Dense(dense) = &net.subnets[5].units[0] else {
        panic!("S6 starts with a dense layer")
    };
    check_std(dense.linear.weight.val(), 512);
}

fn check_std<const D: usize>(w: Tensor<B, D>, fan_in: usize) {
    let v = w.into_data().to_vec::<f32>().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let want = (2.0 / fan_in as f64).sqrt();
    // Tolerances of 4 standard errors of the estimates (2% at least): fan_out scaling would
    // be off by a factor sqrt(fan_out / fan_in) (2.3 for the stem, 2 for 16 -> 32 convs).
    assert!(mean.abs() < 4.0 * want / n.sqrt(), "mean {mean}");
    let tol = (4.0 / (2.0 * n).sqrt()).max(0.02);
    assert!(
        (std / want - 1.0).abs() < tol,
        "std {std} vs sqrt(2/fan_in) = {want} (fan_in {fan_in}, n {n})"
    );
}

#[test]
fn he_init_scales_with_fan_in() {
    let spec = NetSpec::parse("resnet20").unwrap();
    let net = Net::<B>::init(&spec, 3, 11, &cpu_device());
    // Last block of stage 3: conv 64 -> 64, fan_in 576 (fan_out would also be 576, so check a
    // layer where they differ too: the first conv of stage 2, 16 -> 32, fan_in 144).
    let Unit::Block(b) = net.subnets[2].units.last().unwrap() else {
        panic!()
    };
    check_std(b.conv2.weight.val(), 64 * 9);
    let Unit::Block(b) = &net.subnets[1].units[0] else {
        panic!()
    };
    check_std(b.conv1.weight.val(), 16 * 9);
    let Unit::Conv(stem) = &net.subnets[0].units[0] else {
        panic!()
    };
    check_std(stem.conv.weight.val(), 27);
}

#[test]
fn partition_override_and_errors() {
    let spec = NetSpec::parse("resnet20")
        .unwrap()
        .with_partition_starts(&[0, 2, 4, 7])
        .unwrap();
    assert_eq!(spec.k(), 4);
    let net = Net::<B>::init(&spec, 4, 1, &cpu_device());
    assert_eq!(trainable(&net, &spec), 269_722);
    assert!(
        NetSpec::parse("resnet20")
            .unwrap()
            .with_partition_starts(&[1, 4])
            .is_err()
    );
    assert!(
        NetSpec::parse("resnet20")
            .unwrap()
            .with_partition_starts(&[0, 4, 4])
            .is_err()
    );
    // A sub-network made of a pooling layer alone is rejected.
    assert!(
        NetSpec::parse("vgg16")
            .unwrap()
            .with_partition_starts(&[0, 2, 3])
            .is_err()
    );
    assert!(NetSpec::parse("resnet21").is_err());
    assert!(NetSpec::parse("vgg19").is_err());
}

#[test]
fn same_seed_same_weights_different_seed_different() {
    let spec = NetSpec::parse("resnet8-w4").unwrap();
    let d = cpu_device();
    let get = |seed| {
        Net::<B>::init(&spec, 3, seed, &d)
            .classifier
            .fc
            .weight
            .val()
            .into_data()
    };
    assert_eq!(get(5), get(5));
    assert_ne!(get(5), get(6));
    // Growing gives the same S2 as building k = 2 directly.
    let a = Net::<B>::init(&spec, 1, 5, &d).grow(&spec, 5, &d);
    let b = Net::<B>::init(&spec, 2, 5, &d);
    let w = |n: &Net<B>| match &n.subnets[1].units[0] {
        Unit::Block(b) => b.conv1.weight.val().into_data(),
        _ => panic!(),
    };
    assert_eq!(w(&a), w(&b));
}
