//! `incrpipe bench train|infer|augment`: throughput measurements.

use anyhow::bail;
use burn::tensor::backend::AutodiffBackend;
use incrpipe::engine::augment;
use incrpipe::engine::backend::{self, Device};
use incrpipe::engine::bench::{BenchResult, bench_infer, bench_train};
use incrpipe::engine::model::NetSpec;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value = "resnet20")]
    pub net: String,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// `cpu`, `cuda:N`, or `libtorch` (burn's libtorch backend on the CPU, for comparison;
    /// needs a build with the `tch` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images for `bench augment`.
    #[arg(long, default_value_t = 20000)]
    pub images: usize,
}

pub fn run(what: &str, args: BenchArgs) -> anyhow::Result<()> {
    if what == "augment" {
        let ips = augment::bench_images_per_sec(args.images);
        println!(
            "augment: {ips:.0} images/s on one core ({} images)",
            args.images
        );
        return Ok(());
    }
    let spec = NetSpec::parse(&args.net)?;
    // `libtorch`: burn's tch backend, for comparison only (the `tch` cargo feature).
    if args.device == "libtorch" {
        #[cfg(feature = "tch")]
        {
            let r = bench_on::<backend::LibTorchTrainBackend>(
                what,
                &spec,
                &args,
                &burn::backend::libtorch::LibTorchDevice::Cpu,
            )?;
            return report(&r, "libtorch-cpu");
        }
        #[cfg(not(feature = "tch"))]
        bail!(
            "this binary was built without the `tch` feature (burn's libtorch backend, for \
             comparison only: docs/performance.md says how to build it)"
        );
    }
    let device: Device = args.device.parse()?;
    let r: BenchResult = match device {
        Device::Cpu => {
            bench_on::<backend::CpuTrainBackend>(what, &spec, &args, &backend::cpu_device())?
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => {
            bench_on::<backend::CudaTrainBackend>(what, &spec, &args, &backend::cuda_device(i))?
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => bail!("this binary was built without the `cuda` feature"),
    };
    report(&r, &device.to_string())
}

fn bench_on<B: AutodiffBackend>(
    what: &str,
    spec: &NetSpec,
    args: &BenchArgs,
    device: &B::Device,
) -> anyhow::Result<BenchResult> {
    Ok(match what {
        "train" => bench_train::<B>(spec, args.batch, args.warmup, args.steps, device),
        "infer" => bench_infer::<B>(spec, args.batch, args.warmup, args.steps, device),
        w => bail!("unknown benchmark {w:?} (train|infer|augment)"),
    })
}

fn report(r: &BenchResult, device: &str) -> anyhow::Result<()> {
    println!(
        "{} {} batch {} on {}: {:.1} images/s (median step {:.4} s over {} steps; fastest {:.4} s = {:.1} images/s)",
        r.what,
        r.net,
        r.batch,
        device,
        r.images_per_sec,
        r.median_step_seconds,
        r.steps,
        r.fastest_step_seconds,
        r.batch as f64 / r.fastest_step_seconds
    );
    let step: f64 = r.breakdown.iter().map(|b| b.1).sum();
    for (what, secs) in &r.breakdown {
        println!(
            "  {what:<28} {:>8.1} ms/step {:>5.1} %",
            secs * 1e3,
            100.0 * secs / step.max(f64::MIN_POSITIVE)
        );
    }
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// `incrpipe bench kernels`: the kernels on the layer shapes of `net` at `batch` (the
/// network's Table 1 batch when `None`), against burn's ops unless `without_burn`.
pub fn kernels(
    net: &str,
    batch: Option<usize>,
    repeats: usize,
    without_burn: bool,
) -> anyhow::Result<()> {
    let spec = NetSpec::parse(net)?;
    let batch = batch.unwrap_or_else(|| spec.paper_batch_size());
    println!(
        "{:<34} {:<32} {:>10} {:>10} {:>7} {:>8}",
        "op", "shape (x layers)", "kernel ms", "burn ms", "speedup", "GFLOP/s"
    );
    let timings = incrpipe::engine::kernels::bench::run(&spec, batch, repeats, !without_burn);
    for t in &timings {
        println!(
            "{:<34} {:<32} {:>10.2} {:>10.2} {:>7.2} {:>8.1}",
            t.op,
            format!("{} x{}", t.shape, t.count),
            t.kernel_ms,
            t.burn_ms,
            t.burn_ms / t.kernel_ms,
            t.kernel_gflops
        );
        println!("{}", serde_json::to_string(t)?);
    }
    // What the convolutions of one training step cost, summed over the network's layers.
    let per_step: f64 = timings
        .iter()
        .filter(|t| t.op == "conv2d forward" || t.op == "conv2d input + weight gradients")
        .map(|t| t.kernel_ms * t.count as f64)
        .sum();
    println!("convolutions of one {net} training step at batch {batch}: {per_step:.1} ms");
    Ok(())
}
