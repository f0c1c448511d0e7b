//! The paper's training as pipeline stages.
//!
//! `incremental` is what a pipeline names: one run (network, method, seed). At
//! plan time it expands into a chain, so each growth phase is its own cached stage:
//! ```text
//! baseline:  train -> evaluate
//! random:    train-stage-1 -> train-stage-2 -> ... -> train-stage-K -> evaluate
//! lookahead: train-stage-1 -> look-ahead-2 -> train-stage-2 -> ... -> train-stage-K -> evaluate
//! ```
//! `train-stage-1` does not depend on the method, so `random` and `lookahead`
//! share it (one node, one cache entry). Each stage hands the network and the
//! run's progress to the next through its out directory, checkpoints every epoch
//! into INCRPIPE_SCRATCH and resumes there after a kill. When growth stops early
//! (epoch budget, growth rule) later stages pass the model through unchanged.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde_json::Value;

use crate::engine::augment::MAX_SHIFT;
use crate::engine::backend::{self, Device, WithBackend};
use crate::engine::checkpoint;
use crate::engine::data::{Cifar10, SplitPlan, load_cifar10};
use crate::engine::observe;
use crate::engine::outcome::{self, RunOutcome};
use crate::engine::params;
use crate::engine::settings::{Built, DataSettings, RunSettings};
use crate::engine::train::{self, Ctx, Method, NextStep, Stage};
use crate::registry::{ExpandInput, Expanded, KindMeta, ParamDecl, StageContext, StageKind};

/// A declared setting as a kind's param.
const fn param(d: &params::Decl) -> ParamDecl {
    ParamDecl {
        name: d.name,
        default: d.default,
        help: d.help,
    }
}

/// The device a training stage runs on: not a setting of the run (its results do not depend on it).
const DEVICE: ParamDecl = ParamDecl {
    name: "device",
    default: Some("\"cpu\""),
    help: "cpu or cuda:N (N within CUDA_VISIBLE_DEVICES)",
};

/// Every param of the training kinds: each declared setting ([`params::DECLS`]) and the device.
static PARAMS: std::sync::LazyLock<Vec<ParamDecl>> =
    std::sync::LazyLock::new(|| params::DECLS.iter().map(param).chain([DEVICE]).collect());

/// The data settings: the `augment` kind's params, and part of every training kind's [`PARAMS`].
static AUGMENT_PARAMS: std::sync::LazyLock<Vec<ParamDecl>> =
    std::sync::LazyLock::new(|| params::DECLS.iter().filter(|d| d.data).map(param).collect());

/// Params that do not change what train-stage-1 computes; it is keyed without them.
const STAGE1_NEUTRAL: &[(&str, &str)] = &[
    ("method", "\"random\""),
    ("lookahead_epochs", "0"),
    ("min_gain_points", "-1.0"),
];

fn settings_of(params: &serde_json::Map<String, Value>) -> anyhow::Result<(RunSettings, Device)> {
    let mut p = params.clone();
    let device: Device = p
        .remove("device")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "cpu".into())
        .parse()?;
    Ok((RunSettings::from_params(p)?, device))
}

/// A stage's params that `decls` declares: a pipeline may add params it interpolates
/// elsewhere (deps, outs, env), which are not settings.
fn params_map(
    ctx_params: &std::collections::BTreeMap<String, Value>,
    decls: &[ParamDecl],
) -> serde_json::Map<String, Value> {
    ctx_params
        .iter()
        .filter(|(k, _)| decls.iter().any(|d| d.name == k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub struct Incremental;

impl StageKind for Incremental {
    fn meta(&self) -> KindMeta {
        KindMeta {
            name: "incremental",
            version: 25,
            params: PARAMS.as_slice(),
        }
    }
    fn expand(&self, input: &ExpandInput) -> Result<Vec<Expanded>, String> {
        let [data] = input.deps.as_slice() else {
            return Err("an `incremental` stage reads one dep, the CIFAR-10 directory (a download-cifar out)".into());
        };
        let [out] = input.outs.as_slice() else {
            return Err("an `incremental` stage writes one out, the run directory (result.json, metrics.csv)".into());
        };
        let map = params_map(&input.params, &PARAMS);
        let (settings, _) = settings_of(&map).map_err(|e| format!("{e:#}"))?;
        let built = settings.build().map_err(|e| e.to_string())?;
        let k = built.spec.k();
        let method = built.train.method;
        // Params a method never reads are keyed at a neutral value, so changing them
        // (say, the look-ahead epochs) leaves the other methods' stages cached.
        let unused: &[(&str, &str)] = match method {
            Method::Baseline => &[("lookahead_epochs", "0"), ("min_gain_points", "-1.0")],
            Method::Random => &[("lookahead_epochs", "0")],
            Method::Lookahead => &[],
        };
        let mut params = input.params.clone();
        for (name, v) in unused {
            params.insert(name.to_string(), serde_json::from_str(v).unwrap());
        }
        let input = &ExpandInput {
            params,
            ..input.clone()
        };
        let stage = |suffix: String,
                     kind: &'static str,
                     params: std::collections::BTreeMap<String, Value>,
                     prev: Option<&str>,
                     shared: bool| Expanded {
            deps: [data.clone(), "{stage:augment}".to_string()]
                .into_iter()
                .chain(prev.map(|p| format!("{{stage:{p}}}")))
                .collect(),
            outs: vec![format!("{{stage:{suffix}}}")],
            suffix,
            shared_without: if shared { vec!["method"] } else { Vec::new() },
            kind,
            params,
        };
        // The split, normalisation and augmentation policy: one artifact for every run
        // with the same data settings, whatever its method, seed or network.
        let augment_params = input
            .params
            .iter()
            .filter(|(k, _)| AUGMENT_PARAMS.iter().any(|d| d.name == k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut chain = vec![Expanded {
            suffix: "augment".into(),
            shared_without: vec!["method", "seed", "net"],
            kind: "augment",
            params: augment_params,
            deps: vec![data.clone()],
            outs: vec!["{stage:augment}".into()],
        }];
        let mut prev: Option<String> = None;
        match method {
            Method::Baseline => {
                chain.push(stage(
                    "train".into(),
                    "train",
                    input.params.clone(),
                    None,
                    false,
                ));
                prev = Some("train".into());
            }
            _ => {
                for i in 1..=k {
                    if i == 1 {
                        let mut p = input.params.clone();
                        for (name, v) in STAGE1_NEUTRAL {
                            p.insert(name.to_string(), serde_json::from_str(v).unwrap());
                        }
                        chain.push(stage("train-stage-1".into(), "train-stage", p, None, true));
                    } else {
                        if method == Method::Lookahead {
                            let s = format!("look-ahead-{i}");
                            chain.push(stage(
                                s.clone(),
                                "look-ahead",
                                input.params.clone(),
                                prev.as_deref(),
                                false,
                            ));
                            prev = Some(s);
                        }
                        chain.push(stage(
                            format!("train-stage-{i}"),
                            "train-stage",
                            input.params.clone(),
                            prev.as_deref(),
                            false,
                        ));
                    }
                    prev = Some(format!("train-stage-{i}"));
                }
            }
        }
        let mut eval = stage(
            "evaluate".into(),
            "evaluate",
            input.params.clone(),
            prev.as_deref(),
            false,
        );
        eval.outs = vec![out.clone()];
        chain.push(eval);
        Ok(chain)
    }
    fn run(&self, _: &StageContext) -> anyhow::Result<()> {
        bail!("`incremental` expands into a chain at plan time and never runs itself")
    }
}

/// What a chain stage does with the state it receives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Phase 1 (from scratch, S1 or the whole baseline network) or a later
    /// train-stage (grow first for `random`; after a look-ahead just train).
    Train,
    LookAhead,
}

macro_rules! chain_kind {
    ($ty:ident, $name:literal, $step:expr, $version:literal) => {
        pub struct $ty;
        impl StageKind for $ty {
            fn meta(&self) -> KindMeta {
                KindMeta {
                    name: $name,
                    version: $version,
                    params: PARAMS.as_slice(),
                }
            }
            fn run(&self, ctx: &StageContext) -> anyhow::Result<()> {
                run_chain_stage(ctx, $step)
            }
        }
    };
}

chain_kind!(TrainStage, "train-stage", Step::Train, 25);
chain_kind!(LookAhead, "look-ahead", Step::LookAhead, 25);
chain_kind!(TrainBaseline, "train", Step::Train, 25);

/// Inputs common to every chain stage.
struct Loaded {
    settings: RunSettings,
    device: Device,
    built: Built,
    data: Cifar10,
}

/// deps: [CIFAR-10 directory, augment artifact, previous chain stage (if any)].
fn load(ctx: &StageContext) -> anyhow::Result<Loaded> {
    let (settings, device) = settings_of(&params_map(&ctx.params, &PARAMS))?;
    let built = settings.build()?;
    let [data, artifact, ..] = ctx.deps.as_slice() else {
        bail!("a training stage reads the CIFAR-10 directory and the augment artifact")
    };
    let plan = read_plan(Path::new(artifact))?;
    if plan.config != built.data {
        bail!(
            "the augment artifact {artifact} was made for {:?}, this run needs {:?}",
            plan.config,
            built.data
        );
    }
    let dir = data_dir(Path::new(data));
    let (all_train, test) =
        load_cifar10(&dir).with_context(|| format!("loading CIFAR-10 from {}", dir.display()))?;
    let data = Cifar10::from_plan(&all_train, &test, &plan);
    Ok(Loaded {
        settings,
        device,
        built,
        data,
    })
}

/// A download-cifar out holds `cifar-10-batches-bin/`; a plain directory of .bin files works too.
fn data_dir(dep: &Path) -> PathBuf {
    let inner = dep.join("cifar-10-batches-bin");
    if inner.is_dir() {
        inner
    } else {
        dep.to_path_buf()
    }
}

fn run_chain_stage(sc: &StageContext, step: Step) -> anyhow::Result<()> {
    let l = load(sc)?;
    struct Go<'a>(&'a StageContext, &'a Loaded, Step);
    impl WithBackend for Go<'_> {
        type Output = anyhow::Result<()>;
        fn call<B: AutodiffBackend>(self, device: &B::Device, _: &'static str) -> Self::Output {
            chain_stage::<B>(self.0, self.1, self.2, device)
        }
    }
    backend::dispatch(l.device, Go(sc, &l, step))?
}

fn chain_stage<B: AutodiffBackend>(
    sc: &StageContext,
    l: &Loaded,
    step: Step,
    device: &B::Device,
) -> anyhow::Result<()> {
    let ctx = Ctx {
        spec: &l.built.spec,
        data: &l.data,
        cfg: &l.built.train,
    };
    let [out] = sc.outs.as_slice() else {
        bail!("a chain stage writes exactly one out")
    };
    let input = match sc.deps.get(2) {
        Some(prev) => checkpoint::load_state::<B>(Path::new(prev), ctx, device)?.0,
        None => train::initial_state::<B>(ctx, device),
    };
    let has_input = sc.deps.len() > 2;
    let next = train::next_step(ctx, &input.progress, input.net.k());
    let stage = match (step, has_input, next) {
        (_, _, NextStep::Done) if has_input => {
            println!(
                "growth has stopped ({} sub-networks, {} epochs): passing the model through unchanged",
                input.net.k(),
                input.progress.epochs_done
            );
            checkpoint::save_state(Path::new(out), ctx, &input, None)?;
            return Ok(());
        }
        (Step::Train, false, NextStep::Train) => Stage::Train,
        (Step::Train, true, NextStep::Train) => Stage::Train,
        (Step::Train, true, NextStep::GrowTrain) => Stage::GrowTrain,
        (Step::LookAhead, true, NextStep::GrowLookahead) => Stage::GrowLookahead,
        (s, _, n) => {
            bail!("chain out of step: this stage is {s:?} but the run's next step is {n:?}")
        }
    };
    if let Some(dir) = checkpoint::latest(&sc.scratch)? {
        let epochs = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["progress"]["epochs_done"].as_u64());
        println!(
            "resuming from checkpoint {} (run epoch {})",
            dir.display(),
            epochs.map_or("?".into(), |e| e.to_string())
        );
    }
    // Each epoch's line reaches the log as the epoch ends (stdout is line-buffered), so
    // `incrpipe logs` shows a stage that trains for hours while it runs.
    observe::set_observer(Some(std::sync::Arc::new(EpochLines)));
    let state = train::run_stage::<B>(ctx, input, stage, &sc.scratch, device);
    observe::set_observer(None);
    let state = state?;
    checkpoint::save_state(Path::new(out), ctx, &state, None)?;
    Ok(())
}

fn read_plan(artifact: &Path) -> anyhow::Result<SplitPlan> {
    let p = artifact.join("augment.json");
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: Value = serde_json::from_slice(&bytes)?;
    serde_json::from_value(v["split"].clone())
        .with_context(|| format!("{}: bad split", p.display()))
}

/// `augment`: the train/validation split, the normalisation statistics and the
/// augmentation policy, as an artifact (`augment.json`) that training stages read.
pub struct Augment;

impl StageKind for Augment {
    fn meta(&self) -> KindMeta {
        KindMeta {
            name: "augment",
            version: 24,
            params: AUGMENT_PARAMS.as_slice(),
        }
    }
    fn run(&self, sc: &StageContext) -> anyhow::Result<()> {
        let settings = DataSettings::from_params(params_map(&sc.params, &AUGMENT_PARAMS))?;
        let cfg = settings.config();
        let [data] = sc.deps.as_slice() else {
            bail!("augment reads one dep, the CIFAR-10 directory")
        };
        let [out] = sc.outs.as_slice() else {
            bail!("augment writes one out, a directory")
        };
        let dir = data_dir(Path::new(data));
        let (all_train, test) = load_cifar10(&dir)
            .with_context(|| format!("loading CIFAR-10 from {}", dir.display()))?;
        let plan = SplitPlan::new(&all_train, &test, &cfg)?;
        let artifact = serde_json::json!({
            "split": plan,
            "policy": {
                "enabled": settings.augment,
                "max_shift_px": MAX_SHIFT,
                "shift": "integer, uniform in [-max, max], width and height independently; uncovered pixels are 0 after normalisation",
                "horizontal_flip_probability": 0.5,
                "seeded_by": "(training seed, epoch, position in the epoch)",
            },
            "data_checksum": data_checksum(Path::new(data)),
        });
        std::fs::create_dir_all(out)?;
        std::fs::write(
            Path::new(out).join("augment.json"),
            serde_json::to_vec_pretty(&artifact)?,
        )?;
        println!(
            "split: {} train, {} validation, {} test images; normalisation mean {:?} std {:?}",
            plan.train.len(),
            plan.val.len(),
            plan.test.len(),
            plan.norm.mean,
            plan.norm.std
        );
        Ok(())
    }
}

pub struct Evaluate;

impl StageKind for Evaluate {
    fn meta(&self) -> KindMeta {
        KindMeta {
            name: "evaluate",
            version: 25,
            params: PARAMS.as_slice(),
        }
    }
    fn run(&self, sc: &StageContext) -> anyhow::Result<()> {
        let l = load(sc)?;
        struct Go<'a>(&'a StageContext, &'a Loaded);
        impl WithBackend for Go<'_> {
            type Output = anyhow::Result<()>;
            fn call<B: AutodiffBackend>(
                self,
                device: &B::Device,
                name: &'static str,
            ) -> Self::Output {
                evaluate::<B>(self.0, self.1, device, name)
            }
        }
        backend::dispatch(l.device, Go(sc, &l))?
    }
}

fn evaluate<B: AutodiffBackend>(
    sc: &StageContext,
    l: &Loaded,
    device: &B::Device,
    backend_name: &str,
) -> anyhow::Result<()> {
    let ctx = Ctx {
        spec: &l.built.spec,
        data: &l.data,
        cfg: &l.built.train,
    };
    let [out] = sc.outs.as_slice() else {
        bail!("evaluate writes exactly one out, the run directory")
    };
    let prev = sc
        .deps
        .get(2)
        .context("evaluate needs the final training stage's out")?;
    let (state, _) = checkpoint::load_state::<B>(Path::new(prev), ctx, device)?;
    let m = outcome::confusion(
        &state.net.valid(),
        &l.data.test,
        &l.data.norm,
        l.built.train.eval_batch_size,
    );
    let mut o = RunOutcome::new(
        &l.settings,
        &l.built.spec,
        state.net.k(),
        &state.progress,
        m,
    );
    let p = &mut o.provenance;
    p.insert("backend".into(), backend_name.into());
    p.insert("device".into(), l.device.to_string().into());
    p.insert("burn_version".into(), backend::BURN_VERSION.into());
    p.insert("incrpipe_version".into(), env!("CARGO_PKG_VERSION").into());
    let (commit, dirty) = git_state();
    p.insert("git_commit".into(), commit.into());
    p.insert("git_dirty".into(), dirty);
    p.insert("stage_key".into(), sc.key.clone().into());
    p.insert(
        "data_checksum".into(),
        data_checksum(Path::new(&sc.deps[0])).into(),
    );
    p.insert("threads".into(), sc.cpus.into());
    p.insert("hosts".into(), state.progress.hosts.join(" + ").into());
    o.write(Path::new(out), &state.progress)?;
    println!(
        "{}: test accuracy {:.4} ({} images), {} epochs, {:.3e} training FLOPs",
        o.run_id, o.test_accuracy, o.test_images, o.epochs, o.train_flops as f64
    );
    Ok(())
}

/// Prints every finished epoch to the stage's stdout, its log.
struct EpochLines;

impl observe::Observer for EpochLines {
    fn batch(&self, _: &observe::BatchProgress) {}
    fn epoch(&self, r: &train::EpochRecord, p: &observe::PhaseProgress) {
        println!("{} | {}", r.summary_line(), p.describe(r));
    }
}

/// The commit of the workspace and whether the tree differs from it.
fn git_state() -> (String, Value) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(o) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .map(|o| !o.stdout.is_empty());
            (
                String::from_utf8_lossy(&o.stdout).trim().to_string(),
                dirty.map_or(Value::Null, Value::Bool),
            )
        }
        None => ("unknown".into(), Value::Null),
    }
}

/// The data checksum recorded by download-cifar, or computed from the files.
fn data_checksum(dep: &Path) -> String {
    let recorded = std::fs::read(dep.join("download.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["data_checksum"].as_str().map(String::from));
    recorded.unwrap_or_else(|| {
        crate::download::verify_dir(&data_dir(dep))
            .map(|f| crate::download::data_checksum(&f))
            .unwrap_or_else(|e| format!("unverified: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::default_value;

    #[test]
    fn declared_defaults_are_the_engine_defaults() {
        let mut m = serde_json::Map::new();
        for d in PARAMS.iter() {
            if let Some(v) = default_value(d) {
                m.insert(d.name.to_string(), v);
            }
        }
        m.insert("net".into(), "resnet20".into());
        m.insert("method".into(), "lookahead".into());
        let (s, dev) = settings_of(&m).unwrap();
        assert_eq!(s, RunSettings::defaults("resnet20", "lookahead"));
        assert_eq!(dev, Device::Cpu);
    }
}
