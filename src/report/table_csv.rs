//! `table2.csv`: one row per (network, method), machine-readable, the file
//! `incrpipe check` compares against committed expected values.

use std::path::Path;

use super::aggregate::{Row, seed_label};
use super::error::ReportError;

/// The columns, in order. Key columns first, then numbers, then provenance.
pub const COLUMNS: [&str; 24] = [
    "network",
    "paper_network",
    "method",
    "n_seeds",
    "seeds",
    "test_accuracy",
    "test_accuracy_std",
    "test_accuracy_best_val",
    "test_accuracy_best_val_std",
    "paper_test_accuracy",
    "diff_vs_paper",
    "epochs",
    "epochs_std",
    "train_flops",
    "train_flops_std",
    "parameters",
    "flops_per_inference",
    "backend",
    "device",
    "burn_version",
    "git_commit",
    "git_dirty",
    "data_checksum",
    "stage_keys",
];

/// Rounds for display without losing what a check could care about: four
/// decimals of a percent are far below any seed spread.
pub(super) fn num(x: f64, decimals: i32) -> String {
    let m = 10f64.powi(decimals);
    let r = (x * m).round() / m;
    format!("{r}")
}

pub(super) fn opt(x: Option<f64>) -> String {
    x.map(|v| num(v, 4)).unwrap_or_default()
}

pub fn record(r: &Row) -> Vec<String> {
    let p = &r.provenance;
    vec![
        r.net.clone(),
        r.paper_net.clone(),
        r.method.clone(),
        r.seeds.len().to_string(),
        r.seeds
            .iter()
            .map(|s| seed_label(*s))
            .collect::<Vec<_>>()
            .join(";"),
        num(r.accuracy.mean, 4),
        num(r.accuracy.std, 4),
        opt(r.accuracy_best_val.map(|a| a.mean)),
        opt(r.accuracy_best_val.map(|a| a.std)),
        opt(r.paper),
        opt(r.diff_vs_paper()),
        num(r.epochs.mean, 4),
        num(r.epochs.std, 4),
        num(r.train_flops.mean, 0),
        num(r.train_flops.std, 0),
        num(r.params, 0),
        num(r.flops_per_inference, 0),
        p.backend.clone(),
        p.device.clone(),
        p.burn_version.clone(),
        p.git_commit.clone(),
        p.git_dirty.to_string(),
        p.data_checksum.clone(),
        p.stage_keys.clone(),
    ]
}

pub fn write(rows: &[Row], path: &Path) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_path(path).map_err(ReportError::csv(path))?;
    w.write_record(COLUMNS).map_err(ReportError::csv(path))?;
    for r in rows {
        w.write_record(record(r)).map_err(ReportError::csv(path))?;
    }
    w.flush().map_err(ReportError::io(path))
}
