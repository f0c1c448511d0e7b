//! What defines a training run besides the data and the network: the method,
//! the optimiser and the termination rule.

use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{EngineError, Result};
use crate::model::{Net, NetSpec};
use crate::params;
use crate::rmsprop::RmsProp;
use crate::termination::TerminationConfig;

/// Training method of Table 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Baseline,
    Random,
    Lookahead,
}

impl std::str::FromStr for Method {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "baseline" => Ok(Method::Baseline),
            "random" => Ok(Method::Random),
            "lookahead" | "look-ahead" => Ok(Method::Lookahead),
            _ => Err(EngineError::BadConfig(format!(
                "unknown method {s:?} (baseline|random|lookahead)"
            ))),
        }
    }
}

/// RMSProp settings (Table 1). The paper's "momentum 0.9" is read as RMSProp's decay rate
/// rho (Keras' RMSprop, which the authors used, has no momentum term); see docs/deviations.md.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    pub lr: f64,
    pub rho: f32,
    pub momentum: f32,
    pub epsilon: f32,
    /// L2 coefficient on conv and dense kernels.
    pub weight_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: params::default("lr"),
            rho: params::default("rho"),
            momentum: params::default("momentum"),
            epsilon: params::default("epsilon"),
            weight_decay: params::default("weight_decay"),
        }
    }
}

impl OptimConfig {
    /// A fresh RMSProp optimiser (every phase starts with a fresh one).
    pub fn build<B: AutodiffBackend>(&self) -> Optim<B> {
        OptimizerAdaptor::from(RmsProp {
            alpha: self.rho,
            momentum: self.momentum,
            epsilon: self.epsilon,
        })
    }
}

/// The optimiser type: RMSProp over a [`Net`] (the whole net, or the trained tail in look-ahead).
pub type Optim<B> = OptimizerAdaptor<RmsProp, Net<B>, B>;

/// Everything that defines a run besides the data and the network.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub run_id: String,
    pub seed: u64,
    pub method: Method,
    pub batch_size: usize,
    pub optim: OptimConfig,
    pub termination: TerminationConfig,
    /// Epochs of each look-ahead phase (the paper: "a few epochs").
    pub lookahead_epochs: usize,
    /// Total epoch budget of the run over all phases (look-ahead included).
    pub epoch_budget: Option<usize>,
    /// Stop growing when the last sub-network gained less than this many accuracy points.
    pub min_gain_points: Option<f64>,
    /// Random shifts and flips (Table 1); off only for tests and benchmarks.
    pub augment: bool,
    pub eval_batch_size: usize,
    /// Testing aid: fail with [`EngineError::Interrupted`] right after the checkpoint of this
    /// global epoch, as if the process had been killed. Not serialised.
    #[serde(skip)]
    pub interrupt_after_epoch: Option<usize>,
}

impl TrainConfig {
    pub fn optim_build<B: AutodiffBackend>(&self) -> Optim<B> {
        self.optim.build()
    }

    pub fn new(run_id: &str, spec: &NetSpec, method: Method, seed: u64) -> TrainConfig {
        TrainConfig {
            run_id: run_id.to_string(),
            seed,
            method,
            batch_size: spec.paper_batch_size(),
            optim: OptimConfig::default(),
            termination: TerminationConfig::default(),
            lookahead_epochs: params::default("lookahead_epochs"),
            epoch_budget: None,
            min_gain_points: None,
            augment: params::default("augment"),
            eval_batch_size: params::default("eval_batch"),
            interrupt_after_epoch: None,
        }
    }
}
