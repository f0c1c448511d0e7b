//! Reading what the `evaluate` stage wrote: one directory per run holding
//! `result.json` (final numbers and provenance) and `metrics.csv` (one row per
//! epoch). Numbers are read as f64 whatever their JSON spelling (integer or
//! float), because the writer may use either.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ReportError;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Provenance {
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub burn_version: String,
    #[serde(default)]
    pub git_commit: String,
    /// `null` in result.json when the run was not in a git checkout (then
    /// `git_commit` is "unknown"): read as not dirty, since no commit is claimed.
    #[serde(default, deserialize_with = "null_as_false")]
    pub git_dirty: bool,
    #[serde(default)]
    pub stage_key: String,
    #[serde(default)]
    pub data_checksum: String,
    /// Host CPU and kernel path of the training epochs (`;`-joined when several).
    #[serde(default)]
    pub hosts: String,
}

/// `result.json` of one run.
#[derive(Debug, Clone, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    pub net: String,
    pub paper_net: String,
    pub method: String,
    pub seed: f64,
    /// A fraction in [0, 1].
    pub test_accuracy: f64,
    #[serde(default)]
    pub per_class_accuracy: Vec<f64>,
    #[serde(default)]
    pub confusion: Vec<Vec<f64>>,
    pub epochs: f64,
    pub train_flops: f64,
    #[serde(default)]
    pub eval_flops: f64,
    pub params: f64,
    #[serde(default)]
    pub flops_per_inference: f64,
    /// Test accuracy of the last phase's epoch with the best validation accuracy.
    #[serde(default)]
    pub test_accuracy_best_val: Option<f64>,
    #[serde(default)]
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub provenance: Provenance,
}

/// One phase of a run as `result.json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Phase {
    /// `train` or `lookahead`.
    pub kind: String,
    pub active: f64,
    pub epochs: f64,
    /// `Slowdown`, `NoImprovement`, `MaxEpochs`, `Budget` or `FixedEpochs`.
    pub stop: String,
    pub final_val_acc: f64,
}

/// The settings the report needs (the rest of `result.json`'s `settings` is ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    /// The termination window: the report smooths validation curves over it.
    #[serde(default)]
    pub ws: f64,
    #[serde(default)]
    pub epoch_budget: f64,
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, Deserialize)]
pub struct EpochRow {
    pub run_id: String,
    pub epoch: f64,
    pub phase: String,
    pub active: String,
    pub trained: String,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_acc: f64,
    /// Measured in the last phase only (empty elsewhere).
    #[serde(default)]
    pub test_acc: Option<f64>,
    pub flops_per_inference: f64,
    pub cum_train_flops: f64,
    pub cum_eval_flops: f64,
    pub params: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub result: RunResult,
    pub epochs: Vec<EpochRow>,
}

/// The epochs of a `metrics.csv`.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochRow>, ReportError> {
    let mut rd = csv::Reader::from_path(path).map_err(ReportError::csv(path))?;
    rd.deserialize()
        .collect::<Result<Vec<EpochRow>, _>>()
        .map_err(ReportError::csv(path))
}

/// Loads one run directory.
pub fn load_run(dir: &Path) -> Result<Run, ReportError> {
    let rpath = dir.join("result.json");
    let bytes = std::fs::read(&rpath).map_err(ReportError::io(&rpath))?;
    let result: RunResult =
        serde_json::from_slice(&bytes).map_err(|source| ReportError::ResultJson {
            path: rpath.clone(),
            source,
        })?;
    if !(0.0..=1.0).contains(&result.test_accuracy) {
        // The writer's contract is a fraction; a percent here would silently
        // inflate every number of the table by 100.
        return Err(ReportError::Invalid {
            path: rpath,
            what: format!(
                "test_accuracy {} is not a fraction in [0, 1]",
                result.test_accuracy
            ),
        });
    }
    let epochs = read_metrics(&dir.join("metrics.csv"))?;
    Ok(Run {
        dir: dir.to_path_buf(),
        result,
        epochs,
    })
}

/// Every run under the given paths: a path holding `result.json` is a run;
/// any other directory is searched (recursively) for run directories. Sorted
/// by path so that the report does not depend on directory listing order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Run>, ReportError> {
    let mut dirs = Vec::new();
    for p in paths {
        if p.join("result.json").is_file() {
            dirs.push(p.clone());
            continue;
        }
        if !p.is_dir() {
            return Err(ReportError::Invalid {
                path: p.clone(),
                what: "neither a run directory (with result.json) nor a directory of runs".into(),
            });
        }
        let before = dirs.len();
        for e in walkdir::WalkDir::new(p).sort_by_file_name() {
            let e = e.map_err(|e| ReportError::Invalid {
                path: p.clone(),
                what: e.to_string(),
            })?;
            if e.file_type().is_file() && e.file_name() == "result.json" {
                dirs.push(e.path().parent().unwrap_or(p).to_path_buf());
            }
        }
        if dirs.len() == before {
            return Err(ReportError::NoRuns(p.display().to_string()));
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs.iter().map(|d| load_run(d)).collect()
}

fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(<Option<bool> as serde::Deserialize>::deserialize(d)?.unwrap_or(false))
}
