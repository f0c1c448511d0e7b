//! One run's settings as plain data: what a pipeline stage receives as params and
//! what `incrpipe train` builds from its flags. Both paths go through [`RunSettings::build`],
//! so a pipeline chain and a single-process run with the same settings train identically.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::data::DataConfig;
use super::model::NetSpec;
use super::params;
use super::partition::parse_starts;
use super::train::{Method, OptimConfig, TrainConfig};
use super::{EngineError, termination::TerminationConfig};

/// Every knob of a run, one field per declared setting ([`params::DECLS`], same order). Zero
/// means "not set" for the optional counts. No field has a serde default: whoever makes one
/// (a stage's params file, the flags of `incrpipe train`) gives every setting, so a missing one
/// is an error, never a silent default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// The data settings alone: the `augment` kind's params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    pub train_per_class: usize,
    pub val_per_class: usize,
    pub test_per_class: usize,
    pub val_fraction: f64,
    pub split_seed: u64,
    pub augment: bool,
}

impl DataSettings {
    pub fn from_params(params: serde_json::Map<String, Value>) -> Result<Self, EngineError> {
        strict(params, "data settings")
    }

    pub fn config(&self) -> DataConfig {
        data_config(
            self.val_fraction,
            self.split_seed,
            [
                self.train_per_class,
                self.val_per_class,
                self.test_per_class,
            ],
        )
    }
}

fn data_config(val_fraction: f64, split_seed: u64, per_class: [usize; 3]) -> DataConfig {
    let nonzero = |n: usize| (n > 0).then_some(n);
    DataConfig {
        val_fraction,
        split_seed,
        train_per_class: nonzero(per_class[0]),
        val_per_class: nonzero(per_class[1]),
        test_per_class: nonzero(per_class[2]),
    }
}

/// `params` as a `T` with every field given: a missing, unknown or mistyped one is an error
/// that names it.
fn strict<T: serde::de::DeserializeOwned>(
    params: serde_json::Map<String, Value>,
    what: &str,
) -> Result<T, EngineError> {
    serde_json::from_value(Value::Object(params))
        .map_err(|e| EngineError::BadConfig(format!("{what}: {e}")))
}

/// The pieces a run is made of.
pub struct Built {
    pub spec: NetSpec,
    pub data: DataConfig,
    pub train: TrainConfig,
}

impl RunSettings {
    /// Settings from params naming every declared setting (a stage's params file).
    pub fn from_params(params: serde_json::Map<String, Value>) -> Result<Self, EngineError> {
        strict(params, "run settings")
    }

    /// The declared defaults, with the two settings that have none.
    pub fn defaults(net: &str, method: &str) -> RunSettings {
        let mut m = serde_json::Map::new();
        for d in params::DECLS {
            if let Some(v) = params::default_json(d.name) {
                m.insert(d.name.to_string(), v);
            }
        }
        m.insert("net".into(), net.into());
        m.insert("method".into(), method.into());
        RunSettings::from_params(m).expect("the declared defaults make settings")
    }

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
        let data = data_config(
            self.val_fraction,
            self.split_seed,
            [
                self.train_per_class,
                self.val_per_class,
                self.test_per_class,
            ],
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_the_declared_settings_in_order() {
        // The text keeps the fields' order (a JSON map would sort them).
        let text = serde_json::to_string(&RunSettings::defaults("resnet20", "random")).unwrap();
        let at: Vec<usize> = params::DECLS
            .iter()
            .map(|d| {
                text.find(&format!("\"{}\":", d.name))
                    .unwrap_or_else(|| panic!("{} is no field", d.name))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "order differs: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_object().unwrap().len(), params::DECLS.len());
        let data: Vec<&str> = params::DECLS
            .iter()
            .filter(|d| d.data)
            .map(|d| d.name)
            .collect();
        let m = v.as_object().unwrap();
        let d: serde_json::Map<String, Value> = data
            .iter()
            .map(|k| (k.to_string(), m[*k].clone()))
            .collect();
        let ds = DataSettings::from_params(d).unwrap();
        assert_eq!(
            ds.config(),
            RunSettings::defaults("resnet20", "random")
                .build()
                .unwrap()
                .data
        );
    }

    #[test]
    fn a_missing_setting_is_an_error_that_names_it() {
        let v = serde_json::to_value(RunSettings::defaults("resnet20", "random")).unwrap();
        let mut m = v.as_object().unwrap().clone();
        m.remove("lr");
        let e = RunSettings::from_params(m).unwrap_err().to_string();
        assert!(e.contains("missing field `lr`"), "{e}");
    }

    #[test]
    fn engine_defaults_are_the_declared_ones() {
        let s = RunSettings::defaults("resnet20", "random");
        let b = s.build().unwrap();
        assert_eq!(b.train.optim, OptimConfig::default());
        assert_eq!(b.train.termination, TerminationConfig::default());
        assert_eq!(b.data, DataConfig::default());
        let t = TrainConfig::new(&s.run_id(), &b.spec, Method::Random, 1);
        assert_eq!(b.train, t);
    }
}
