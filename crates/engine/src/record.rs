//! What a run carries from epoch to epoch and phase to phase: its network and
//! progress (checkpointed), and the records it reports (observed, returned).

use burn::tensor::backend::AutodiffBackend;

use crate::config::TrainConfig;
use crate::data::Cifar10;
use crate::model::{Net, NetSpec};
use crate::termination::StopReason;

/// What a phase does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseKind {
    /// The whole current network trains.
    Train,
    /// Only the newest sub-network and the classifier train; the others are frozen.
    Lookahead,
}

impl PhaseKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PhaseKind::Train => "train",
            PhaseKind::Lookahead => "lookahead",
        }
    }
}

/// One line of the per-epoch metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub run_id: String,
    /// Global epoch number, 1-based, counting every phase.
    pub epoch: usize,
    /// "train" or "lookahead".
    pub phase: PhaseKind,
    /// Active sub-networks (k of S1..Sk).
    pub active: usize,
    /// Sub-networks that trained this epoch (k, or 1 in look-ahead).
    pub trained: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_acc: f64,
    /// Test accuracy after this epoch, measured in the last phase only (so that the report
    /// can give the test accuracy of the epoch with the best validation accuracy); it
    /// never feeds back into training or any decision.
    pub test_acc: Option<f64>,
    pub flops_per_inference: u64,
    /// Training FLOPs so far (forward + backward of what ran, validation excluded).
    pub cum_train_flops: u64,
    /// Validation FLOPs so far (forward passes).
    pub cum_eval_flops: u64,
    pub params: u64,
    /// Wall time of the epoch (the only field that differs between identical runs).
    pub seconds: f64,
}

impl EpochRecord {
    /// One human-readable line (progress output of `incrpipe train` and training stages).
    pub fn summary_line(&self) -> String {
        format!(
            "epoch {:>3} {:<9} k={} loss {:.4} train {:.4} val {:.4} FLOPs/inf {:.3e} cum {:.3e} {:.1}s",
            self.epoch,
            self.phase.as_str(),
            self.active,
            self.train_loss,
            self.train_acc,
            self.val_acc,
            self.flops_per_inference as f64,
            self.cum_train_flops as f64,
            self.seconds
        )
    }
}

/// A finished phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseSummary {
    pub kind: PhaseKind,
    pub active: usize,
    pub epochs: usize,
    pub stop: StopReason,
    pub final_val_acc: f64,
}

/// The phase under way (set while a phase runs, so a checkpoint can resume it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurrentPhase {
    pub kind: PhaseKind,
    pub active: usize,
    pub epochs: usize,
}

/// Bookkeeping of a run, serialised in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub epochs_done: usize,
    pub cum_train_flops: u64,
    pub cum_eval_flops: u64,
    pub records: Vec<EpochRecord>,
    pub phases: Vec<PhaseSummary>,
    pub current: Option<CurrentPhase>,
    /// Where the epochs ran: host CPU and kernel path of each distinct environment, in the
    /// order they appeared (a resumed run may have moved machines).
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Progress {
    /// Validation accuracies of the current phase.
    pub(crate) fn current_accs(&self) -> Vec<f64> {
        match &self.current {
            Some(c) => self.records[self.records.len() - c.epochs..]
                .iter()
                .map(|r| r.val_acc)
                .collect(),
            None => Vec::new(),
        }
    }

    pub(crate) fn budget_spent(&self, cfg: &TrainConfig) -> bool {
        cfg.epoch_budget.is_some_and(|b| self.epochs_done >= b)
    }
}

/// A network and the progress of its run: what flows from one phase to the next.
#[derive(Debug, Clone)]
pub struct RunState<B: AutodiffBackend> {
    pub net: Net<B>,
    pub progress: Progress,
}

/// The fixed inputs of a run.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub spec: &'a NetSpec,
    pub data: &'a Cifar10,
    pub cfg: &'a TrainConfig,
}

/// Result of [`run`].
#[derive(Debug, Clone)]
pub struct RunResult<B: AutodiffBackend> {
    pub state: RunState<B>,
    pub test_acc: f64,
}
