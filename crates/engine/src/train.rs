//! Incremental training (Istrate et al. 2017) with RMSProp as in Table 1.
//!
//! A run is a deterministic sequence of phases:
//! - `baseline`: one `train` phase of the whole network;
//! - `random`: train S1, then repeatedly grow (S_{k+1} He-initialised, fresh classifier) and
//!   train the whole grown network;
//! - `lookahead`: train S1, then repeatedly grow, run a `lookahead` phase (only S_{k+1} and the
//!   new classifier train, S1..Sk frozen) and train the whole grown network.
//!
//! Every phase is a separately callable step ([`train_phase`], [`lookahead_phase`], [`grow`]),
//! so the pipeline can run each as its own cached stage; [`run`] chains them. All randomness
//! is keyed by (seed, global epoch) or (seed, sub-network), so the chain of separate calls and
//! a run resumed from a checkpoint reproduce an uninterrupted run bit for bit on CPU.
//!
//! Weight decay: Table 1's 1e-4 is applied as an explicit L2 loss term
//! `wd * sum(w^2)` over conv and dense kernels only (what Keras' `kernel_regularizer=l2(wd)`
//! does), not to BatchNorm parameters and not to biases; burn's optimiser-level weight decay
//! would touch every parameter. The reported train loss is the cross-entropy alone.

pub use crate::config::{Method, Optim, OptimConfig, TrainConfig};
pub use crate::record::{
    Ctx, CurrentPhase, EpochRecord, PhaseKind, PhaseSummary, Progress, RunResult, RunState,
};

use crate::augment;
use crate::checkpoint;
use crate::data::{ImageSet, Normalization, to_tensor_data};
use crate::error::{EngineError, Result};
use crate::flops;
use crate::model::{Act, Net, NetSpec, SubNet};
use crate::observe;
use crate::rng;
use crate::termination::{self, Decision, StopReason};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use std::path::Path;
use std::time::Instant;

/// Whether a phase is the run's last: the whole network trains. With an epoch budget it
/// runs until the budget is spent (equal budgets: every method trains E epochs in all).
fn is_last_phase(spec: &NetSpec, kind: PhaseKind, active: usize) -> bool {
    kind == PhaseKind::Train && active == spec.k()
}

/// The starting state: S1 + classifier (incremental methods) or the whole network (baseline).
pub fn initial_state<B: AutodiffBackend>(ctx: Ctx, device: &B::Device) -> RunState<B> {
    let k = match ctx.cfg.method {
        Method::Baseline => ctx.spec.k(),
        _ => 1,
    };
    RunState {
        net: Net::init(ctx.spec, k, ctx.cfg.seed, device),
        progress: Progress::default(),
    }
}

/// Inserts S_{k+1} (He init from the stream (seed, k+1)) and a fresh classifier.
pub fn grow<B: AutodiffBackend>(ctx: Ctx, state: RunState<B>, device: &B::Device) -> RunState<B> {
    RunState {
        net: state.net.grow(ctx.spec, ctx.cfg.seed, device),
        progress: state.progress,
    }
}

/// Trains the whole current network until the termination rule stops it.
/// With `ckpt` a checkpoint is written at every epoch end.
pub fn train_phase<B: AutodiffBackend>(
    ctx: Ctx,
    state: RunState<B>,
    ckpt: Option<&Path>,
    device: &B::Device,
) -> Result<RunState<B>> {
    run_phase(ctx, state, PhaseKind::Train, None, ckpt, device)
}

/// Trains the newest sub-network S_k and the classifier for `lookahead_epochs` epochs with
/// S1..S_{k-1} frozen (call [`grow`] first). The frozen part runs on the inner backend, so no
/// backward pass runs through it and its BatchNorm statistics do not move.
pub fn lookahead_phase<B: AutodiffBackend>(
    ctx: Ctx,
    state: RunState<B>,
    ckpt: Option<&Path>,
    device: &B::Device,
) -> Result<RunState<B>> {
    run_phase(ctx, state, PhaseKind::Lookahead, None, ckpt, device)
}

/// Continues the phase recorded as under way in a checkpointed state, with its optimiser.
pub fn resume_phase<B: AutodiffBackend>(
    ctx: Ctx,
    state: RunState<B>,
    optim: Optim<B>,
    ckpt: Option<&Path>,
    device: &B::Device,
) -> Result<RunState<B>> {
    let kind = state
        .progress
        .current
        .as_ref()
        .map(|c| c.kind)
        .ok_or_else(|| EngineError::BadConfig("no phase under way to resume".into()))?;
    run_phase(ctx, state, kind, Some(optim), ckpt, device)
}

/// One pipeline stage: a phase run from the state handed over by the previous stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Train the network as it is (S1 at the start, or after a look-ahead).
    Train,
    /// Grow S_{k+1} and train the whole network (method `random`).
    GrowTrain,
    /// Grow S_{k+1} and look ahead with S1..Sk frozen (method `lookahead`).
    GrowLookahead,
}

/// Runs one stage with checkpoints in `ckpt`, resuming when that directory already holds a
/// checkpoint of this stage (a killed stage restarted with the same input ends bit-identical).
/// `input` is the state the previous stage produced (or [`initial_state`]).
pub fn run_stage<B: AutodiffBackend>(
    ctx: Ctx,
    input: RunState<B>,
    stage: Stage,
    ckpt: &Path,
    device: &B::Device,
) -> Result<RunState<B>> {
    let before = input.progress.phases.len();
    if let Some((s, optim)) = checkpoint::load::<B>(ckpt, ctx, device)? {
        let done = s.progress.phases.len();
        if done > before {
            // The stage had finished; its final checkpoint is the result.
            return Ok(s);
        }
        if done == before && s.progress.current.is_some() {
            let optim = optim.unwrap_or_else(|| ctx.cfg.optim.build());
            return resume_phase(ctx, s, optim, Some(ckpt), device);
        }
    }
    match stage {
        Stage::Train => train_phase(ctx, input, Some(ckpt), device),
        Stage::GrowTrain => train_phase(ctx, grow(ctx, input, device), Some(ckpt), device),
        Stage::GrowLookahead => lookahead_phase(ctx, grow(ctx, input, device), Some(ckpt), device),
    }
}

/// How far a phase can go after `phase_epochs` of its epochs and `run_epochs` of the run's:
/// look-ahead runs its fixed epochs, a last phase with a budget runs to it, any other phase
/// to its cap unless the rule ends it first; the budget bounds each.
fn phase_progress(
    cfg: &TrainConfig,
    kind: PhaseKind,
    last: bool,
    images: usize,
    phase_epochs: usize,
    run_epochs: usize,
) -> observe::PhaseProgress {
    let budget_left = cfg
        .epoch_budget
        .map(|b| phase_epochs + b.saturating_sub(run_epochs));
    let (own, exact) = match kind {
        PhaseKind::Lookahead => (cfg.lookahead_epochs, true),
        PhaseKind::Train if last && budget_left.is_some() => (usize::MAX, true),
        PhaseKind::Train => (cfg.termination.max_epochs, false),
    };
    let limit = budget_left.map_or(own, |b| b.min(own));
    observe::PhaseProgress {
        images,
        epochs: phase_epochs,
        limit,
        exact: exact || budget_left.is_some_and(|b| b <= own),
    }
}

/// Final test accuracy of a state's network.
pub fn test_accuracy<B: AutodiffBackend>(ctx: Ctx, state: &RunState<B>) -> f64 {
    evaluate(
        &state.net.valid(),
        &ctx.data.test,
        &ctx.data.norm,
        ctx.cfg.eval_batch_size,
    )
}

/// What [`run`] does next, derived from the progress alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Resume the phase under way (needs the checkpoint's optimiser).
    Resume,
    Train,
    /// Grow, then train the whole network (random).
    GrowTrain,
    /// Grow, then look ahead (lookahead).
    GrowLookahead,
    Done,
}

pub fn next_step(ctx: Ctx, progress: &Progress, active: usize) -> NextStep {
    if progress.current.is_some() {
        return NextStep::Resume;
    }
    let Some(last) = progress.phases.last() else {
        return NextStep::Train;
    };
    if last.kind == PhaseKind::Lookahead {
        return if progress.budget_spent(ctx.cfg) {
            NextStep::Done
        } else {
            NextStep::Train
        };
    }
    if ctx.cfg.method == Method::Baseline
        || active >= ctx.spec.k()
        || progress.budget_spent(ctx.cfg)
    {
        return NextStep::Done;
    }
    // Growth rule: compare the last two whole-network phases.
    let trains: Vec<&PhaseSummary> = progress
        .phases
        .iter()
        .filter(|p| p.kind == PhaseKind::Train)
        .collect();
    if trains.len() >= 2
        && termination::stop_growing(
            ctx.cfg.min_gain_points,
            trains[trains.len() - 2].final_val_acc,
            trains[trains.len() - 1].final_val_acc,
        )
    {
        return NextStep::Done;
    }
    match ctx.cfg.method {
        Method::Lookahead => NextStep::GrowLookahead,
        _ => NextStep::GrowTrain,
    }
}

/// The whole run: all phases of the method, then the test accuracy of the final network.
/// With `ckpt`, resumes from the latest checkpoint there (if any) and checkpoints every epoch.
pub fn run<B: AutodiffBackend>(
    ctx: Ctx,
    ckpt: Option<&Path>,
    device: &B::Device,
) -> Result<RunResult<B>> {
    let mut pending_optim = None;
    let mut state = match ckpt
        .map(|d| checkpoint::load::<B>(d, ctx, device))
        .transpose()?
    {
        Some(Some((s, o))) => {
            pending_optim = o;
            s
        }
        _ => initial_state(ctx, device),
    };
    loop {
        state = match next_step(ctx, &state.progress, state.net.k()) {
            NextStep::Resume => {
                let optim = pending_optim
                    .take()
                    .unwrap_or_else(|| ctx.cfg.optim.build());
                resume_phase(ctx, state, optim, ckpt, device)?
            }
            NextStep::Train => train_phase(ctx, state, ckpt, device)?,
            NextStep::GrowTrain => train_phase(ctx, grow(ctx, state, device), ckpt, device)?,
            NextStep::GrowLookahead => {
                lookahead_phase(ctx, grow(ctx, state, device), ckpt, device)?
            }
            NextStep::Done => break,
        };
    }
    let test_acc = evaluate(
        &state.net.valid(),
        &ctx.data.test,
        &ctx.data.norm,
        ctx.cfg.eval_batch_size,
    );
    Ok(RunResult { state, test_acc })
}

/// Accuracy of `net` (inference mode: BatchNorm uses running statistics) on `set`.
pub fn evaluate<B: Backend>(
    net: &Net<B>,
    set: &ImageSet,
    norm: &Normalization,
    batch: usize,
) -> f64 {
    if set.is_empty() {
        return 0.0;
    }
    let device = net.classifier.fc.weight.val().device();
    let mut correct = 0usize;
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(to_tensor_data(set, chunk, norm), [chunk.len(), 3, 32, 32]),
            &device,
        );
        let logits = net.forward(x);
        correct += count_correct(logits, chunk.iter().map(|&i| set.labels[i] as i32));
    }
    correct as f64 / set.len() as f64
}

fn count_correct<B: Backend>(logits: Tensor<B, 2>, labels: impl Iterator<Item = i32>) -> usize {
    let [_, c] = logits.dims();
    let v = logits
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 logits");
    labels
        .enumerate()
        .filter(|&(i, l)| {
            let row = &v[i * c..(i + 1) * c];
            let mut best = 0;
            for j in 1..c {
                if row[j] > row[best] {
                    best = j;
                }
            }
            best as i32 == l
        })
        .count()
}

/// The pieces of a network during one phase: a frozen head (inference backend) and the
/// trained part, itself a [`Net`] (its sub-networks + the classifier).
pub struct Split<B: AutodiffBackend> {
    /// The frozen sub-networks as they are in the autodiff network (never updated).
    pub head: Vec<SubNet<B>>,
    /// The same sub-networks on the inner backend: what the forward pass runs.
    pub head_inner: Vec<SubNet<B::InnerBackend>>,
    /// What the optimiser updates.
    pub trained: Net<B>,
}

impl<B: AutodiffBackend> Split<B> {
    /// Splits `net` for a phase of `kind` (look-ahead freezes all but the newest sub-network).
    pub fn new(net: Net<B>, kind: PhaseKind) -> Split<B> {
        let frozen = match kind {
            PhaseKind::Train => 0,
            PhaseKind::Lookahead => net.k() - 1,
        };
        let Net {
            mut subnets,
            classifier,
        } = net;
        let tail = subnets.split_off(frozen);
        let head_inner = subnets.iter().map(|s| s.valid()).collect();
        Split {
            head: subnets,
            head_inner,
            trained: Net {
                subnets: tail,
                classifier,
            },
        }
    }

    pub fn frozen(&self) -> usize {
        self.head.len()
    }

    /// The whole network again.
    pub fn assemble(&self) -> Net<B> {
        let mut subnets = self.head.clone();
        subnets.extend(self.trained.subnets.iter().cloned());
        Net {
            subnets,
            classifier: self.trained.classifier.clone(),
        }
    }

    /// Logits; the frozen head runs on the inner backend and its output enters the graph as
    /// a leaf, so the backward pass stops there.
    pub fn forward(&self, x: TensorData, device: &B::Device) -> Tensor<B, 2> {
        if self.head_inner.is_empty() {
            return self.trained.forward(Tensor::from_data(x, device));
        }
        let xi = Tensor::<B::InnerBackend, 4>::from_data(x, device);
        let a = self
            .head_inner
            .iter()
            .fold(Act::Map(xi), |a, s| s.forward(a));
        self.trained.forward_act(Act::from_inner(a))
    }
}

fn run_phase<B: AutodiffBackend>(
    ctx: Ctx,
    state: RunState<B>,
    kind: PhaseKind,
    optim: Option<Optim<B>>,
    ckpt: Option<&Path>,
    device: &B::Device,
) -> Result<RunState<B>> {
    let RunState { net, mut progress } = state;
    let active = net.k();
    if kind == PhaseKind::Lookahead && active < 2 {
        return Err(EngineError::BadConfig(
            "a look-ahead phase needs at least two sub-networks (grow first)".into(),
        ));
    }
    match &progress.current {
        Some(c) if c.kind != kind || c.active != active => {
            return Err(EngineError::BadConfig(format!(
                "state has a {:?} phase with {} sub-networks under way, asked for {:?} with {}",
                c.kind, c.active, kind, active
            )));
        }
        Some(_) => {}
        None => {
            progress.current = Some(CurrentPhase {
                kind,
                active,
                epochs: 0,
            })
        }
    }
    let mut optim = optim.unwrap_or_else(|| ctx.cfg.optim.build());
    let mut split = Split::new(net, kind);
    let (spec, cfg, data) = (ctx.spec, ctx.cfg, ctx.data);
    let fpi = flops::flops_per_inference(spec, active);
    let train_fpi = flops::train_flops_per_image(spec, active, split.frozen());
    let params = flops::net_params(spec, active);
    let loss_fn = CrossEntropyLoss::new(None, device);
    let last = is_last_phase(spec, kind, active);
    let host = crate::host::describe();
    if !progress.hosts.contains(&host) {
        progress.hosts.push(host);
    }

    loop {
        // Termination is checked before each epoch so that a resumed state decides the same.
        let accs = progress.current_accs();
        let decision = if progress.budget_spent(cfg) {
            Decision::Stop(StopReason::Budget)
        } else {
            match kind {
                PhaseKind::Lookahead if accs.len() >= cfg.lookahead_epochs => {
                    Decision::Stop(StopReason::FixedEpochs)
                }
                PhaseKind::Lookahead => Decision::Continue,
                PhaseKind::Train if accs.is_empty() => Decision::Continue,
                PhaseKind::Train if last && cfg.epoch_budget.is_some() => Decision::Continue,
                PhaseKind::Train => termination::decide(&cfg.termination, &accs),
            }
        };
        if let Decision::Stop(stop) = decision {
            let cur = progress.current.take().expect("phase under way");
            progress.phases.push(PhaseSummary {
                kind,
                active,
                epochs: cur.epochs,
                stop,
                final_val_acc: accs.last().copied().unwrap_or(0.0),
            });
            let state = RunState {
                net: split.assemble(),
                progress,
            };
            if let Some(dir) = ckpt {
                checkpoint::save(dir, ctx, &state, None)?;
            }
            return Ok(state);
        }

        // One epoch.
        let t0 = Instant::now();
        let epoch = progress.epochs_done as u64;
        let n = data.train.len();
        let mut order: Vec<usize> = (0..n).collect();
        rng::shuffle(
            &mut rng::stream(cfg.seed, &[rng::TAG_SHUFFLE, epoch]),
            &mut order,
        );
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for (b, idx) in order.chunks(cfg.batch_size).enumerate() {
            let pos = (b * cfg.batch_size) as u64;
            let (x, y) = if cfg.augment {
                augment::augment_batch(&data.train, idx, &data.norm, cfg.seed, epoch, pos)
            } else {
                (
                    to_tensor_data(&data.train, idx, &data.norm),
                    idx.iter().map(|&i| data.train.labels[i] as i32).collect(),
                )
            };
            let x = TensorData::new(x, [idx.len(), 3, 32, 32]);
            let targets =
                Tensor::<B, 1, Int>::from_data(TensorData::new(y.clone(), [idx.len()]), device);
            let logits = split.forward(x, device);
            let ce = loss_fn.forward(logits.clone(), targets);
            let loss = if cfg.optim.weight_decay > 0.0 {
                ce.clone()
                    + split
                        .trained
                        .kernel_sq_sum()
                        .mul_scalar(cfg.optim.weight_decay)
            } else {
                ce.clone()
            };
            let grads = GradientsParams::from_grads(loss.backward(), &split.trained);
            split.trained = optim.step(cfg.optim.lr, split.trained, grads);
            let ce_v = ce
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("loss")[0];
            loss_sum += ce_v as f64 * idx.len() as f64;
            correct += count_correct(logits, y.into_iter());
            let done = pos as usize + idx.len();
            observe::batch(&observe::BatchProgress {
                epoch: progress.epochs_done + 1,
                phase: kind,
                active,
                images_done: done,
                images_total: n,
                loss: loss_sum / done as f64,
                acc: correct as f64 / done as f64,
                images_per_sec: done as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            });
        }
        let net = split.assemble();
        let val_acc = evaluate(&net.valid(), &data.val, &data.norm, cfg.eval_batch_size);
        let test_acc =
            last.then(|| evaluate(&net.valid(), &data.test, &data.norm, cfg.eval_batch_size));
        progress.epochs_done += 1;
        progress.cum_train_flops += train_fpi * n as u64;
        progress.cum_eval_flops += fpi * data.val.len() as u64;
        progress.records.push(EpochRecord {
            run_id: cfg.run_id.clone(),
            epoch: progress.epochs_done,
            phase: kind,
            active,
            trained: active - split.frozen(),
            train_loss: loss_sum / n.max(1) as f64,
            train_acc: correct as f64 / n.max(1) as f64,
            val_acc,
            test_acc,
            flops_per_inference: fpi,
            cum_train_flops: progress.cum_train_flops,
            cum_eval_flops: progress.cum_eval_flops,
            params,
            seconds: t0.elapsed().as_secs_f64(),
        });
        progress.current.as_mut().expect("phase under way").epochs += 1;
        let phase_epochs = progress.current.as_ref().map_or(0, |c| c.epochs);
        observe::epoch(
            progress.records.last().expect("just pushed"),
            &phase_progress(cfg, kind, last, n, phase_epochs, progress.epochs_done),
        );
        if let Some(dir) = ckpt {
            let state = RunState {
                net,
                progress: progress.clone(),
            };
            checkpoint::save(dir, ctx, &state, Some(&optim))?;
        }
        if cfg.interrupt_after_epoch == Some(progress.epochs_done) {
            return Err(EngineError::Interrupted(progress.epochs_done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit a progress line counts down to: the cap (rule may stop sooner), look-ahead's
    /// fixed epochs, a last phase's budget, and the budget bounding the others.
    #[test]
    fn phase_progress_knows_how_far_a_phase_can_go() {
        let spec = NetSpec::parse("resnet8-w4").unwrap();
        let mut cfg = TrainConfig::new("t", &spec, Method::Lookahead, 1);
        cfg.termination.max_epochs = 24;
        cfg.lookahead_epochs = 3;
        let p = |cfg: &TrainConfig, kind, last, phase, run| {
            let p = phase_progress(cfg, kind, last, 100, phase, run);
            (p.limit, p.exact)
        };
        assert_eq!(p(&cfg, PhaseKind::Train, false, 5, 5), (24, false));
        assert_eq!(p(&cfg, PhaseKind::Lookahead, false, 1, 20), (3, true));
        cfg.epoch_budget = Some(56);
        // 10 epochs into the last phase at run epoch 40: 16 more to the budget.
        assert_eq!(p(&cfg, PhaseKind::Train, true, 10, 40), (26, true));
        assert_eq!(p(&cfg, PhaseKind::Train, false, 5, 5), (24, false));
        // Near the end of the budget the budget decides, exactly.
        assert_eq!(p(&cfg, PhaseKind::Train, false, 5, 50), (11, true));
        let r = EpochRecord {
            run_id: "t".into(),
            epoch: 5,
            phase: PhaseKind::Train,
            active: 1,
            trained: 1,
            train_loss: 1.0,
            train_acc: 0.5,
            val_acc: 0.5,
            test_acc: None,
            flops_per_inference: 1,
            cum_train_flops: 1,
            cum_eval_flops: 1,
            params: 1,
            seconds: 2.0,
        };
        let line = phase_progress(&cfg, PhaseKind::Train, false, 100, 5, 5).describe(&r);
        assert_eq!(line, "50 img/s, phase epoch 5 of <= 24, ETA <= 0m38s");
        let line = phase_progress(&cfg, PhaseKind::Lookahead, false, 100, 1, 20).describe(&r);
        assert_eq!(line, "50 img/s, phase epoch 1 of 3, ETA 0m04s");
    }
}
