//! The report: reads the runs the `evaluate` stage wrote, aggregates them over
//! seeds into the paper's Table 2 layout, judges the paper's claims at the
//! scale we ran, and writes `table2.csv`, `table2.md`, the figures (PNG and
//! SVG) and `index.html` into one results directory. [`check`] compares a
//! results CSV with committed expected values.

pub mod aggregate;
pub mod cells;
pub mod check;
pub mod claims;
pub mod curves;
pub mod error;
pub mod figures;
pub mod html;
pub mod load;
pub mod markdown;
pub mod paper;
pub mod phases;
pub mod runs_csv;
pub mod stats;
pub mod table_csv;

use std::path::{Path, PathBuf};

pub use error::ReportError;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub title: String,
    /// How the paper's claims are judged (intervals, margins).
    pub claims: claims::ClaimOptions,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            title: "Incremental training: Table 2 reproduction".into(),
            claims: claims::ClaimOptions::default(),
        }
    }
}

/// What was written (for a one-line summary).
#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub runs: usize,
    pub rows: usize,
    pub files: Vec<PathBuf>,
}

/// Writes the whole report for the runs found under `inputs` into `out`.
pub fn write_report(
    inputs: &[PathBuf],
    out: &Path,
    opts: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    let runs = load::discover(inputs)?;
    let n = runs.len();
    let rows = aggregate::aggregate(runs)?;
    std::fs::create_dir_all(out).map_err(ReportError::io(out))?;
    let mut files = Vec::new();
    let csv = out.join("table2.csv");
    table_csv::write(&rows, &csv)?;
    files.push(csv);
    let per_seed = out.join("runs.csv");
    runs_csv::write(&rows, &per_seed)?;
    files.push(per_seed);
    for (name, text) in [
        ("table2.md", markdown::render(&rows, opts)),
        ("index.html", html::render(&rows, opts)),
    ] {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(ReportError::io(&p))?;
        files.push(p);
    }
    figures::write_all(&rows, out)?;
    for (stem, _) in figures::FIGURES {
        files.push(out.join(format!("{stem}.png")));
        files.push(out.join(format!("{stem}.svg")));
    }
    Ok(ReportSummary {
        runs: n,
        rows: rows.len(),
        files,
    })
}
