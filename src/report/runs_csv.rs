//! `runs.csv`: one row per run (network, method, seed), the per-seed numbers that the
//! claims pair and that `incrpipe check` regresses: on one CPU kernel path the pipeline is
//! deterministic, so per-seed values catch a lost effect that the seed spread would hide.

use std::path::Path;

use super::aggregate::{Row, seed_label};
use super::error::ReportError;
use super::table_csv::{num, opt};

pub const COLUMNS: [&str; 11] = [
    "network",
    "method",
    "seed",
    "test_accuracy",
    "test_accuracy_best_val",
    "epochs",
    "train_flops",
    "phase_epochs",
    "phase_stops",
    "hosts",
    "stage_key",
];

pub fn write(rows: &[Row], path: &Path) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_path(path).map_err(ReportError::csv(path))?;
    w.write_record(COLUMNS).map_err(ReportError::csv(path))?;
    for r in rows {
        for run in &r.runs {
            let res = &run.result;
            let phases = |f: fn(&super::load::Phase) -> String| {
                res.phases.iter().map(f).collect::<Vec<_>>().join(";")
            };
            w.write_record([
                r.net.clone(),
                r.method.clone(),
                seed_label(res.seed),
                num(res.test_accuracy * 100.0, 4),
                opt(res.test_accuracy_best_val.map(|a| a * 100.0)),
                num(res.epochs, 0),
                num(res.train_flops, 0),
                phases(|p| num(p.epochs, 0)),
                phases(|p| p.stop.clone()),
                res.provenance.hosts.clone(),
                res.provenance.stage_key.clone(),
            ])
            .map_err(ReportError::csv(path))?;
        }
    }
    w.flush().map_err(ReportError::io(path))
}
