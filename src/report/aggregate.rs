//! Runs grouped by (network, method) and summarised over their seeds: the
//! rows of the report's Table 2.

use std::collections::{BTreeMap, BTreeSet};

use super::error::ReportError;
use super::load::Run;
use super::paper;

/// Mean and sample standard deviation (n - 1 in the denominator; 0 for a
/// single value, where no spread can be measured).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(xs: &[f64]) -> Stats {
        let n = xs.len();
        if n == 0 {
            return Stats {
                mean: f64::NAN,
                std: f64::NAN,
                n,
            };
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        let std = if n < 2 {
            0.0
        } else {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Stats { mean, std, n }
    }
}

/// Where the numbers of a row came from. Fields that differ between seeds
/// list every distinct value, joined with `;`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvenanceSummary {
    pub backend: String,
    pub device: String,
    pub burn_version: String,
    pub git_commit: String,
    /// True when any run was built from a dirty tree.
    pub git_dirty: bool,
    pub data_checksum: String,
    /// Host CPU and kernel path of the training epochs.
    pub hosts: String,
    /// One per run, in seed order.
    pub stage_keys: String,
}

/// One (network, method) cell of Table 2, over its seeds.
#[derive(Debug, Clone)]
pub struct Row {
    pub net: String,
    pub paper_net: String,
    pub method: String,
    pub seeds: Vec<f64>,
    /// Test accuracy in percent (the last epoch's network).
    pub accuracy: Stats,
    /// Test accuracy in percent of the last phase's best-validation epoch, where every run
    /// recorded it.
    pub accuracy_best_val: Option<Stats>,
    pub epochs: Stats,
    pub train_flops: Stats,
    pub params: f64,
    pub flops_per_inference: f64,
    /// The paper's test accuracy in percent for (paper_net, method).
    pub paper: Option<f64>,
    pub provenance: ProvenanceSummary,
    /// The runs, sorted by seed (figures and the FLOPs claim use their epochs).
    pub runs: Vec<Run>,
}

impl Row {
    /// Ours minus the paper's, in percentage points: only for the paper's own network (a
    /// difference to a network of another size says nothing about the implementation).
    pub fn diff_vs_paper(&self) -> Option<f64> {
        self.paper
            .filter(|_| self.is_paper_network())
            .map(|p| self.accuracy.mean - p)
    }

    pub fn is_paper_network(&self) -> bool {
        self.net == self.paper_net
    }
}

fn distinct<'a>(xs: impl Iterator<Item = &'a str>) -> String {
    xs.filter(|s| !s.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(";")
}

/// Formats a seed as an integer when it is one (JSON may spell it `1.0`).
pub fn seed_label(s: f64) -> String {
    if s.fract() == 0.0 && s.abs() < 1e15 {
        format!("{}", s as i64)
    } else {
        format!("{s}")
    }
}

/// Groups runs into rows ordered like the paper (network rows, then methods
/// baseline, look-ahead, random).
pub fn aggregate(runs: Vec<Run>) -> Result<Vec<Row>, ReportError> {
    let mut groups: BTreeMap<(String, String), Vec<Run>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((r.result.net.clone(), r.result.method.clone()))
            .or_default()
            .push(r);
    }
    let mut rows = Vec::new();
    for ((net, method), mut runs) in groups {
        runs.sort_by(|a, b| a.result.seed.total_cmp(&b.result.seed));
        if let Some(w) = runs
            .windows(2)
            .find(|w| w[0].result.seed == w[1].result.seed)
        {
            // Two results for one seed would count that seed twice in the mean.
            return Err(ReportError::Invalid {
                path: w[1].dir.clone(),
                what: format!(
                    "seed {} of {net}/{method} also appears in {}",
                    seed_label(w[1].result.seed),
                    w[0].dir.display()
                ),
            });
        }
        let paper_nets = distinct(runs.iter().map(|r| r.result.paper_net.as_str()));
        if paper_nets.contains(';') {
            return Err(ReportError::Invalid {
                path: runs[0].dir.clone(),
                what: format!("runs of {net}/{method} name different paper networks: {paper_nets}"),
            });
        }
        let f = |g: fn(&Run) -> f64| runs.iter().map(g).collect::<Vec<_>>();
        let p = |g: fn(&Run) -> &str| distinct(runs.iter().map(g));
        let provenance = ProvenanceSummary {
            backend: p(|r| &r.result.provenance.backend),
            device: p(|r| &r.result.provenance.device),
            burn_version: p(|r| &r.result.provenance.burn_version),
            git_commit: p(|r| &r.result.provenance.git_commit),
            git_dirty: runs.iter().any(|r| r.result.provenance.git_dirty),
            data_checksum: p(|r| &r.result.provenance.data_checksum),
            hosts: p(|r| &r.result.provenance.hosts),
            stage_keys: runs
                .iter()
                .map(|r| r.result.provenance.stage_key.as_str())
                .collect::<Vec<_>>()
                .join(";"),
        };
        rows.push(Row {
            paper: paper::paper_accuracy(&paper_nets, &method),
            paper_net: paper_nets,
            seeds: f(|r| r.result.seed),
            accuracy: Stats::of(&f(|r| r.result.test_accuracy * 100.0)),
            accuracy_best_val: runs
                .iter()
                .map(|r| r.result.test_accuracy_best_val.map(|a| a * 100.0))
                .collect::<Option<Vec<f64>>>()
                .map(|v| Stats::of(&v)),
            epochs: Stats::of(&f(|r| r.result.epochs)),
            train_flops: Stats::of(&f(|r| r.result.train_flops)),
            params: Stats::of(&f(|r| r.result.params)).mean,
            flops_per_inference: Stats::of(&f(|r| r.result.flops_per_inference)).mean,
            provenance,
            net,
            method,
            runs,
        });
    }
    rows.sort_by(|a, b| {
        (
            paper::paper_rank(&a.paper_net),
            &a.net,
            paper::method_rank(&a.method),
        )
            .cmp(&(
                paper::paper_rank(&b.paper_net),
                &b.net,
                paper::method_rank(&b.method),
            ))
    });
    Ok(rows)
}

/// The networks of the rows, in row order, each with its paper network.
pub fn networks(rows: &[Row]) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for r in rows {
        let k = (r.net.clone(), r.paper_net.clone());
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    seen
}

/// The row of a network and method, if any.
pub fn find<'a>(rows: &'a [Row], net: &str, method: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.net == net && r.method == method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_std() {
        let s = Stats::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        assert!((s.std - 1.290_994_448_735_805_6).abs() < 1e-12);
        assert_eq!(Stats::of(&[7.0]).std, 0.0);
        assert_eq!(seed_label(3.0), "3");
    }
}
