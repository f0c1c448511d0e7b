//! One run's settings as plain data: what a pipeline stage receives as params and
//! what `incrpipe train` builds from its flags. Both paths go through [`RunSettings::build`],
//! so a pipeline chain and a single-process run with the same settings train identically.

use serde::{Deserialize, Serialize};

use super::data::DataConfig;
use super::model::NetSpec;
use super::partition::parse_starts;
use super::train::{Method, OptimConfig, TrainConfig};
use super::{EngineError, termination::TerminationConfig};

/// Every knob of a run. Zero means "not set" for the optional counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    pub net: String,
    pub method: String,
    pub seed: u64,
    /// Unit indices where S1..SK start (`0,4,7`); empty = the paper's rule.
    pub partition: String,
    pub train_per_class: usize,
    pub val_per_class: usize,
    pub test_per_class: usize,
    pub val_fraction: f64,
    pub split_seed: u64,
    /// 0 = the paper's batch size for the network (128 ResNets, 32 VGG).
    pub batch: usize,
    pub lr: f64,
    pub rho: f32,
    pub momentum: f32,
    pub epsilon: f32,
    pub weight_decay: f64,
    pub ws: usize,
    pub gamma: f64,
    pub min_epochs: usize,
    pub max_epochs: usize,
    /// 0 = no total budget.
    pub epoch_budget: usize,
    pub lookahead_epochs: usize,
    /// Stop growing when a sub-network gains less than this many points; negative = never.
    pub min_gain_points: f64,
    pub augment: bool,
    pub eval_batch: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        let t = TerminationConfig::default();
        let o = OptimConfig::default();
        let d = DataConfig::default();
        RunSettings {
            net: "resnet20".into(),
            method: "lookahead".into(),
            seed: 1,
            partition: String::new(),
            train_per_class: 0,
            val_per_class: 0,
            test_per_class: 0,
            val_fraction: d.val_fraction,
            split_seed: d.split_seed,
            batch: 0,
            lr: o.lr,
            rho: o.rho,
            momentum: o.momentum,
            epsilon: o.epsilon,
            weight_decay: o.weight_decay,
            ws: t.ws,
            gamma: t.gamma,
            min_epochs: t.min_epochs,
            max_epochs: t.max_epochs,
            epoch_budget: 0,
            lookahead_epochs: 3,
            min_gain_points: -1.0,
            augment: true,
            eval_batch: 250,
        }
    }
}

/// The pieces a run is made of.
pub struct Built {
    pub spec: NetSpec,
    pub data: DataConfig,
    pub train: TrainConfig,
}

impl RunSettings {
    /// `net-method-sSEED`, the run id used in metrics.
    pub fn run_id(&self) -> String {
        format!("{}-{}-s{}", self.net, self.method, self.seed)
    }

    pub fn build(&self) -> Result<Built, EngineError> {
        let mut spec = NetSpec::parse(&self.net)?;
        if !self.partition.trim().is_empty() {
            spec = spec.with_partition_starts(&parse_starts(&self.partition)?)?;
        }
        let method: Method = self.method.parse()?;
        let mut cfg = TrainConfig::new(&self.run_id(), &spec, method, self.seed);
        if self.batch > 0 {
            cfg.batch_size = self.batch;
        }
        cfg.optim = OptimConfig {
            lr: self.lr,
            rho: self.rho,
            momentum: self.momentum,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        };
        cfg.termination = TerminationConfig {
            ws: self.ws,
            gamma: self.gamma,
            min_epochs: self.min_epochs,
            max_epochs: self.max_epochs,
        };
        cfg.lookahead_epochs = self.lookahead_epochs;
        cfg.epoch_budget = (self.epoch_budget > 0).then_some(self.epoch_budget);
        cfg.min_gain_points = (self.min_gain_points >= 0.0).then_some(self.min_gain_points);
        cfg.augment = self.augment;
        cfg.eval_batch_size = self.eval_batch;
        check_budget(&spec, &cfg)?;
        let nonzero = |n: usize| (n > 0).then_some(n);
        let data = DataConfig {
            val_fraction: self.val_fraction,
            split_seed: self.split_seed,
            train_per_class: nonzero(self.train_per_class),
            val_per_class: nonzero(self.val_per_class),
            test_per_class: nonzero(self.test_per_class),
        };
        Ok(Built {
            spec,
            data,
            train: cfg,
        })
    }
}

/// With an epoch budget E every method trains E epochs in all: phases 1..K-1 end by the rule
/// or at `max_epochs`, look-ahead epochs count toward E, and the last phase runs to E. The
/// caps must leave the last phase at least `min_epochs` (and one) epochs, whatever the rule does.
fn check_budget(spec: &NetSpec, cfg: &TrainConfig) -> Result<(), EngineError> {
    let Some(budget) = cfg.epoch_budget else {
        return Ok(());
    };
    if cfg.min_gain_points.is_some() {
        return Err(EngineError::BadConfig(
            "min_gain_points stops growing after a phase has ended, which would leave part of \
             epoch_budget unused and break equal budgets: set one of them, not both"
                .into(),
        ));
    }
    let grown = match cfg.method {
        Method::Baseline => 0,
        _ => spec.k() - 1,
    };
    let per_phase = cfg.termination.max_epochs
        + match cfg.method {
            Method::Lookahead => cfg.lookahead_epochs,
            _ => 0,
        };
    let last = cfg.termination.min_epochs.max(1);
    let needed = grown * per_phase + last;
    if needed > budget {
        return Err(EngineError::BadConfig(format!(
            "epoch_budget = {budget} cannot hold {grown} phases of up to max_epochs = {} \
             (plus lookahead_epochs = {} each for look-ahead) and at least {last} epochs of the \
             last phase ({needed} in all): raise epoch_budget or lower max_epochs",
            cfg.termination.max_epochs, cfg.lookahead_epochs
        )));
    }
    Ok(())
}
