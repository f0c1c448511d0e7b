//! `incrpipe train`: one training run (baseline, random or lookahead) with checkpoints.

use anyhow::{Context, bail};
use incrpipe::engine::backend::{self, Device};
use incrpipe::engine::data::{Cifar10, DataConfig, default_cifar_dir};
use incrpipe::engine::model::NetSpec;
use incrpipe::engine::partition::parse_starts;
use incrpipe::engine::train::{self, Ctx, Method, TrainConfig};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[arg(long, default_value = "resnet20")]
    pub net: String,
    /// baseline | random | lookahead
    #[arg(long, default_value = "lookahead")]
    pub method: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Training images per class (first N after the split); all when absent.
    #[arg(long)]
    pub subset: Option<usize>,
    /// Validation images per class.
    #[arg(long)]
    pub val_subset: Option<usize>,
    /// Test images per class.
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// Maximum epochs per phase.
    #[arg(long)]
    pub max_epochs: Option<usize>,
    #[arg(long)]
    pub min_epochs: Option<usize>,
    /// Termination window (epochs).
    #[arg(long)]
    pub ws: Option<usize>,
    #[arg(long)]
    pub gamma: Option<f64>,
    #[arg(long)]
    pub lookahead_epochs: Option<usize>,
    /// Total epochs over all phases.
    #[arg(long)]
    pub epoch_budget: Option<usize>,
    /// Stop growing when a sub-network adds less than this many accuracy points.
    #[arg(long)]
    pub min_gain: Option<f64>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Unit indices where S1..SK start, e.g. `0,7,13`.
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub no_augment: bool,
    /// CIFAR-10 binary directory (default: $INCRPIPE_CIFAR10 or ../shared/data/cifar-10-batches-bin).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory: metrics.csv, result.json, ckpt/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut spec = NetSpec::parse(&args.net)?;
    if let Some(p) = &args.partition {
        spec = spec.with_partition_starts(&parse_starts(p)?)?;
    }
    let method: Method = args.method.parse()?;
    let run_id = format!("{}-{}-s{}", spec.name, args.method, args.seed);
    let mut cfg = TrainConfig::new(&run_id, &spec, method, args.seed);
    if let Some(v) = args.max_epochs {
        cfg.termination.max_epochs = v;
    }
    if let Some(v) = args.min_epochs {
        cfg.termination.min_epochs = v;
    }
    if let Some(v) = args.ws {
        cfg.termination.ws = v;
    }
    if let Some(v) = args.gamma {
        cfg.termination.gamma = v;
    }
    if let Some(v) = args.lookahead_epochs {
        cfg.lookahead_epochs = v;
    }
    if let Some(v) = args.batch {
        cfg.batch_size = v;
    }
    if let Some(v) = args.lr {
        cfg.optim.lr = v;
    }
    cfg.epoch_budget = args.epoch_budget;
    cfg.min_gain_points = args.min_gain;
    cfg.augment = !args.no_augment;
    let dcfg = DataConfig {
        train_per_class: args.subset,
        val_per_class: args.val_subset,
        test_per_class: args.test_subset,
        ..DataConfig::default()
    };
    let dir = args.data.clone().unwrap_or_else(default_cifar_dir);
    let data = Cifar10::load(&dir, &dcfg).with_context(|| format!("loading {}", dir.display()))?;
    std::fs::create_dir_all(&args.out)?;
    let ckpt = args.out.join("ckpt");
    let ctx = Ctx {
        spec: &spec,
        data: &data,
        cfg: &cfg,
    };
    let device: Device = args.device.parse()?;
    let (progress, test_acc) = match device {
        Device::Cpu => {
            let r =
                train::run::<backend::CpuTrainBackend>(ctx, Some(&ckpt), &backend::cpu_device())?;
            (r.state.progress, r.test_acc)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => {
            let r = train::run::<backend::CudaTrainBackend>(
                ctx,
                Some(&ckpt),
                &backend::cuda_device(i),
            )?;
            (r.state.progress, r.test_acc)
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => bail!("this binary was built without the `cuda` feature"),
    };
    let mut w = csv::Writer::from_path(args.out.join("metrics.csv"))?;
    for r in &progress.records {
        w.serialize(r)?;
        println!(
            "epoch {:>3} {:<9} k={} loss {:.4} train {:.4} val {:.4} FLOPs/inf {:.3e} cum {:.3e} {:.1}s",
            r.epoch,
            r.phase.as_str(),
            r.active,
            r.train_loss,
            r.train_acc,
            r.val_acc,
            r.flops_per_inference as f64,
            r.cum_train_flops as f64,
            r.seconds
        );
    }
    w.flush()?;
    let result = serde_json::json!({
        "run_id": run_id,
        "config": cfg,
        "test_acc": test_acc,
        "phases": progress.phases,
        "epochs": progress.epochs_done,
        "cum_train_flops": progress.cum_train_flops,
        "cum_eval_flops": progress.cum_eval_flops,
    });
    std::fs::write(
        args.out.join("result.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    println!("test accuracy {test_acc:.4}");
    Ok(())
}
