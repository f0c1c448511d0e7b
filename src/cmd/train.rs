//! `incrpipe train`: one training run (baseline, random or lookahead) with checkpoints.

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use incrpipe::engine::backend::{self, Device, WithBackend};
use incrpipe::engine::data::{CIFAR_ENV, Cifar10, cifar_dir_from_env};
use incrpipe::engine::observe;
use incrpipe::engine::outcome::{self, RunOutcome};
use incrpipe::engine::params;
use incrpipe::engine::settings::{Built, RunSettings};
use incrpipe::engine::train::{self, Ctx, Progress};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub settings: SettingFlags,
    /// CIFAR-10 binary directory (default: $INCRPIPE_CIFAR10).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory: metrics.csv, result.json, ckpt/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One flag per declared setting ([`params::DECLS`]): `--train-per-class` for
/// `train_per_class`, its help and default from the declaration, required where it has none;
/// `--no-augment` for a setting that defaults to `true`. The flags give every setting, so
/// `incrpipe train` and a pipeline stage build their runs from the same [`RunSettings`].
#[derive(Debug, Clone)]
pub struct SettingFlags(pub RunSettings);

fn flag(name: &str) -> &'static str {
    // Once per flag and process: clap keeps `&'static str` names.
    Box::leak(name.replace('_', "-").into_boxed_str())
}

/// A setting whose default is `true` is switched off by `--no-NAME`.
fn is_switch(d: &params::Decl) -> bool {
    d.default == Some("true")
}

impl clap::Args for SettingFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for d in params::DECLS {
            let arg = if is_switch(d) {
                clap::Arg::new(d.name)
                    .long(flag(&format!("no_{}", d.name)))
                    .action(clap::ArgAction::SetTrue)
                    .help(format!("no {}", d.help))
            } else {
                let arg = clap::Arg::new(d.name)
                    .long(flag(d.name))
                    .value_name(&*Box::leak(d.name.to_uppercase().into_boxed_str()))
                    .allow_negative_numbers(true)
                    .help(d.help)
                    .visible_aliases(d.aliases.iter().copied());
                match d.default {
                    Some(v) => arg.default_value(v.trim_matches('"')),
                    None => arg.required(true),
                }
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut params = serde_json::Map::new();
        for d in params::DECLS {
            let v = if is_switch(d) {
                serde_json::Value::Bool(!m.get_flag(d.name))
            } else {
                let text = m.get_one::<String>(d.name).expect("required or defaulted");
                json_of(d, text)?
            };
            params.insert(d.name.to_string(), v);
        }
        RunSettings::from_params(params)
            .map(SettingFlags)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// A flag's text as the JSON its setting takes: text for a text setting, else a JSON value.
fn json_of(d: &params::Decl, text: &str) -> Result<serde_json::Value, clap::Error> {
    let textual = d.default.is_none_or(|v| v.starts_with('"'));
    if textual {
        return Ok(text.into());
    }
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(|v| v.is_number())
        .ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value '{text}' for '--{}': expected a number ({})\n",
                    d.name.replace('_', "-"),
                    d.help
                ),
            )
        })
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
    fn epoch(&self, r: &train::EpochRecord, p: &observe::PhaseProgress) {
        self.0
            .println(format!("{} | {}", r.summary_line(), p.describe(r)));
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
    let settings = args.settings.0.clone();
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
