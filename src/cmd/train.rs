//! `incrpipe train`: one training run (baseline, random or lookahead) with checkpoints.

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use incrpipe::engine::backend::{self, Device, WithBackend};
use incrpipe::engine::data::{CIFAR_ENV, Cifar10, cifar_dir_from_env};
use incrpipe::engine::observe;
use incrpipe::engine::outcome::{self, RunOutcome};
use incrpipe::engine::settings::{Built, RunSettings};
use incrpipe::engine::train::{self, Ctx, Progress};
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
    /// CIFAR-10 binary directory (default: $INCRPIPE_CIFAR10).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory: metrics.csv, result.json, ckpt/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl TrainArgs {
    /// The flags as [`RunSettings`]: the same settings a pipeline stage would receive.
    pub fn settings(&self) -> RunSettings {
        let d = RunSettings::default();
        RunSettings {
            net: self.net.clone(),
            method: self.method.clone(),
            seed: self.seed,
            partition: self.partition.clone().unwrap_or_default(),
            train_per_class: self.subset.unwrap_or(0),
            val_per_class: self.val_subset.unwrap_or(0),
            test_per_class: self.test_subset.unwrap_or(0),
            batch: self.batch.unwrap_or(0),
            lr: self.lr.unwrap_or(d.lr),
            ws: self.ws.unwrap_or(d.ws),
            gamma: self.gamma.unwrap_or(d.gamma),
            min_epochs: self.min_epochs.unwrap_or(d.min_epochs),
            max_epochs: self.max_epochs.unwrap_or(d.max_epochs),
            epoch_budget: self.epoch_budget.unwrap_or(0),
            lookahead_epochs: self.lookahead_epochs.unwrap_or(d.lookahead_epochs),
            min_gain_points: self.min_gain.unwrap_or(-1.0),
            augment: !self.no_augment,
            ..d
        }
    }
}

/// Progress, active sub-networks and test confusion matrix of a finished run.
fn finish<B: AutodiffBackend>(
    ctx: Ctx,
    r: train::RunResult<B>,
) -> (Progress, usize, Vec<Vec<u64>>) {
    let net = r.state.net.valid();
    let m = outcome::confusion(
        &net,
        &ctx.data.test,
        &ctx.data.norm,
        ctx.cfg.eval_batch_size,
    );
    (r.state.progress, r.state.net.k(), m)
}

/// A progress bar per epoch (images/s, loss, accuracy) on the terminal.
struct Bar(indicatif::ProgressBar);

impl observe::Observer for Bar {
    fn batch(&self, p: &observe::BatchProgress) {
        self.0.set_length(p.images_total as u64);
        self.0.set_position(p.images_done as u64);
        self.0.set_message(format!(
            "epoch {} {} k={}  loss {:.4}  acc {:.4}  {:.0} img/s",
            p.epoch,
            p.phase.as_str(),
            p.active,
            p.loss,
            p.acc,
            p.images_per_sec
        ));
    }
    fn epoch(&self, r: &train::EpochRecord) {
        self.0.println(r.summary_line());
        self.0.reset();
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("template"),
    );
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if show {
        observe::set_observer(Some(std::sync::Arc::new(Bar(bar.clone()))));
    }
    let settings = args.settings();
    let Built {
        spec,
        data: dcfg,
        train: cfg,
    } = settings.build()?;
    let Some(dir) = args.data.clone().or_else(cifar_dir_from_env) else {
        anyhow::bail!(
            "no CIFAR-10 directory: pass --data DIR (the binary version's data_batch_*.bin) or set {CIFAR_ENV}"
        );
    };
    let data = Cifar10::load(&dir, &dcfg).with_context(|| format!("loading {}", dir.display()))?;
    std::fs::create_dir_all(&args.out)?;
    let ckpt = args.out.join("ckpt");
    let ctx = Ctx {
        spec: &spec,
        data: &data,
        cfg: &cfg,
    };
    let device: Device = args.device.parse()?;
    struct Go<'a>(Ctx<'a>, &'a std::path::Path);
    impl WithBackend for Go<'_> {
        type Output = anyhow::Result<(Progress, usize, Vec<Vec<u64>>)>;
        fn call<B: AutodiffBackend>(self, device: &B::Device, _: &'static str) -> Self::Output {
            Ok(finish(
                self.0,
                train::run::<B>(self.0, Some(self.1), device)?,
            ))
        }
    }
    let (progress, active, confusion) = backend::dispatch(device, Go(ctx, &ckpt))??;
    bar.finish_and_clear();
    if !show {
        for r in &progress.records {
            println!("{}", r.summary_line());
        }
    }
    let mut outcome = RunOutcome::new(&settings, &spec, active, &progress, confusion);
    outcome
        .provenance
        .insert("device".into(), args.device.clone().into());
    outcome
        .provenance
        .insert("hosts".into(), progress.hosts.join(" + ").into());
    outcome.write(&args.out, &progress)?;
    let test_acc = outcome.test_accuracy;
    println!("test accuracy {test_acc:.4}");
    Ok(())
}
