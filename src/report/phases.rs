//! Phase lengths and why phases ended, per method over seeds: what shows whether the
//! termination rule decided or a cap or the budget did.

use std::collections::BTreeMap;

use super::aggregate::{Row, Stats};

/// The j-th phase of a method's runs.
#[derive(Debug, Clone)]
pub struct PhaseStat {
    /// `S1`, `look-ahead S2`, `S1-S2`, ...: what trained.
    pub label: String,
    pub epochs: Stats,
    /// Stop reason (as [`reason`] names it) -> number of seeds.
    pub stops: BTreeMap<&'static str, usize>,
}

/// The report's name of a stop reason written by the engine.
pub fn reason(stop: &str) -> &'static str {
    match stop {
        "Slowdown" => "rule: slowdown",
        "NoImprovement" => "rule: no improvement",
        "MaxEpochs" => "cap",
        "Budget" => "budget",
        "FixedEpochs" => "fixed length",
        _ => "unknown",
    }
}

fn label(kind: &str, active: usize) -> String {
    match (kind, active) {
        ("lookahead", k) => format!("look-ahead S{k}"),
        (_, 1) => "S1".into(),
        (_, k) => format!("S1-S{k}"),
    }
}

/// The phases of a row's runs, in order (runs with fewer phases count where they have them).
pub fn phases(row: &Row) -> Vec<PhaseStat> {
    let n = row
        .runs
        .iter()
        .map(|r| r.result.phases.len())
        .max()
        .unwrap_or(0);
    (0..n)
        .map(|j| {
            let ps: Vec<_> = row
                .runs
                .iter()
                .filter_map(|r| r.result.phases.get(j))
                .collect();
            let mut stops = BTreeMap::new();
            for p in &ps {
                *stops.entry(reason(&p.stop)).or_insert(0) += 1;
            }
            PhaseStat {
                label: label(&ps[0].kind, ps[0].active as usize),
                epochs: Stats::of(&ps.iter().map(|p| p.epochs).collect::<Vec<_>>()),
                stops,
            }
        })
        .collect()
}

/// `S1 9.3 ± 1.2 (rule: slowdown 2, cap 1); S1-S2 ...` for one row.
pub fn summary(row: &Row) -> String {
    let parts: Vec<String> = phases(row)
        .iter()
        .map(|p| {
            let stops: Vec<String> = p.stops.iter().map(|(r, n)| format!("{r} {n}")).collect();
            format!(
                "{} {:.1} ± {:.1} ({})",
                p.label,
                p.epochs.mean,
                p.epochs.std,
                stops.join(", ")
            )
        })
        .collect();
    if parts.is_empty() {
        "no phases recorded".into()
    } else {
        parts.join("; ")
    }
}

/// Share of the phases that could end by the rule (all but the last train phase and the
/// fixed look-ahead phases) which did.
pub fn ended_by_rule(rows: &[Row]) -> (usize, usize) {
    let mut by_rule = 0;
    let mut could = 0;
    for r in rows {
        for run in &r.runs {
            let last_train = run.result.phases.iter().rposition(|p| p.kind == "train");
            for (j, p) in run.result.phases.iter().enumerate() {
                if p.kind == "train" && Some(j) != last_train {
                    could += 1;
                    by_rule += usize::from(reason(&p.stop).starts_with("rule"));
                }
            }
        }
    }
    (by_rule, could)
}
