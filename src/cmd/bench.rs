//! `incrpipe bench`: throughput of training, inference, augmentation, the kernels and the runner.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use burn::tensor::backend::AutodiffBackend;
use incrpipe::engine::augment;
use incrpipe::engine::backend::{self, Device};
use incrpipe::engine::bench::{BenchResult, bench_infer, bench_train};
use incrpipe::engine::model::NetSpec;

use super::fail;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// The runner on a synthetic pipeline of LAYERS x WIDTH trivial stages.
    Runner {
        #[arg(long, default_value_t = 50)]
        width: usize,
        #[arg(long, default_value_t = 20)]
        layers: usize,
        #[arg(short, long, default_value_t = 1)]
        jobs: u32,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Training steps (forward, backward, RMSProp): images/s.
    Train(BenchArgs),
    /// Inference: images/s.
    Infer(BenchArgs),
    /// Data augmentation on one core: images/s.
    Augment(BenchArgs),
    /// The CPU's f32 multiply-add peak per vector width, on each thread count: GFLOP/s.
    Peak {
        /// Thread counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
        threads: Vec<usize>,
        /// Runs per figure (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
    },
    /// The CPU kernels against burn's ops on a network's layer shapes: ms per call.
    Kernels {
        /// The network whose distinct layer shapes are timed.
        #[arg(long, default_value = "resnet20")]
        net: String,
        /// Batch size (default: the network's Table 1 batch, 128 for ResNets, 32 for VGG).
        #[arg(long)]
        batch: Option<usize>,
        /// Timed calls per op (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Time the kernels only, not burn's ops (its convolution backward takes seconds).
        #[arg(long)]
        without_burn: bool,
    },
}

pub fn dispatch(cmd: BenchCmd) -> ExitCode {
    match cmd {
        BenchCmd::Train(a) => super::report(run("train", a)),
        BenchCmd::Infer(a) => super::report(run("infer", a)),
        BenchCmd::Augment(a) => super::report(run("augment", a)),
        BenchCmd::Kernels {
            net,
            batch,
            repeats,
            without_burn,
        } => super::report(kernels(&net, batch, repeats, without_burn)),
        BenchCmd::Peak {
            threads,
            repeats,
            seconds,
        } => super::report(peak(&threads, repeats, seconds)),
        BenchCmd::Runner {
            width,
            layers,
            jobs,
            repeats,
        } => runner(width, layers, jobs, repeats),
    }
}

/// The runner on a synthetic pipeline, in a temporary directory.
fn runner(width: usize, layers: usize, jobs: u32, repeats: usize) -> ExitCode {
    let dir = match tempfile_dir() {
        Ok(d) => d,
        Err(e) => return fail(1, &e.to_string()),
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("incrpipe"));
    let r = incrpipe::bench_runner::run(&exe, &dir, width, layers, jobs, repeats);
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(b) => {
            use incrpipe::bench_runner::median;
            println!(
                "runner benchmark: {} stages ({layers} layers x {width}), -j {jobs}",
                b.stages
            );
            println!(
                "  cold run            {:8.2} s  (commands themselves {:.2} s)",
                b.cold_s, b.commands_s
            );
            println!(
                "  overhead per stage  {:8.2} ms (cold wall x jobs - commands) / stages",
                b.overhead_ms_per_stage
            );
            println!(
                "  commands alone      {:8.2} s  (bash -c each, in order, no runner)",
                b.alone_s
            );
            println!(
                "  overhead per stage  {:8.2} ms (cold wall x jobs - commands alone) / stages",
                b.overhead_vs_alone_ms
            );
            println!(
                "  no-op rerun         {:8.1} ms median of {repeats} (min {:.1})",
                median(&b.noop_rerun_ms),
                b.noop_rerun_ms.iter().cloned().fold(f64::MAX, f64::min)
            );
            println!(
                "  status              {:8.1} ms median of {repeats} (min {:.1})",
                median(&b.status_ms),
                b.status_ms.iter().cloned().fold(f64::MAX, f64::min)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("incrpipe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

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
    println!(
        "  {:.1} GFLOP/s at the median step (set it beside `incrpipe bench peak`)",
        r.gflops
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

/// `incrpipe bench peak`: one line per vector width and thread count, then each as JSON.
fn peak(threads: &[usize], repeats: usize, seconds: f64) -> anyhow::Result<()> {
    if threads.contains(&0) {
        bail!("--threads: a thread count must be at least 1");
    }
    if !(seconds > 0.0 && seconds.is_finite()) {
        bail!("--seconds {seconds}: give a positive number of seconds per run");
    }
    let peaks = incrpipe::engine::bench::peak::measure(threads, repeats, seconds);
    if peaks.is_empty() {
        bail!("this CPU has no FMA instructions the peak benchmark knows (x86-64 FMA, AVX-512F)");
    }
    println!("host: {}", incrpipe::engine::host::cpu());
    for p in &peaks {
        println!(
            "fma f32 {} ({:>2} lanes), {} thread{}: {:8.1} GFLOP/s (median of {repeats})",
            p.width,
            p.lanes,
            p.threads,
            if p.threads == 1 { " " } else { "s" },
            p.gflops
        );
    }
    for p in &peaks {
        println!("{}", serde_json::to_string(p)?);
    }
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
    let timings = incrpipe::engine::bench::kernels::run(&spec, batch, repeats, !without_burn);
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
