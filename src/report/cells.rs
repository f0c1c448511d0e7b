//! The text of a report's cells, shared by the Markdown and HTML pages and the
//! figures' panel titles.

use super::ReportOptions;
use super::aggregate::{Row, Stats, networks};
use super::claims::{Verdict, claims_for};
use super::paper::paper_net_title;

/// The text of one accuracy cell: ours, then the paper's and the difference.
pub fn accuracy_cell(r: Option<&Row>) -> String {
    let Some(r) = r else {
        return "—".into();
    };
    let ours = format!("{:.2} ± {:.2}", r.accuracy.mean, r.accuracy.std);
    match (r.paper, r.diff_vs_paper()) {
        (Some(p), Some(d)) => format!("{ours} (paper {p:.2}, Δ {d:+.2})"),
        (Some(p), None) => format!(
            "{ours} (paper's {}: {p:.2}, another network)",
            paper_net_title(&r.paper_net)
        ),
        _ => format!("{ours} (no paper value)"),
    }
}

/// A network's row title: ours, and the paper's network it stands for.
pub fn network_label(net: &str, paper_net: &str) -> String {
    format!("{net} (paper: {})", paper_net_title(paper_net))
}

/// The provenance lines of a report (name, value), shared by the Markdown and HTML pages.
pub fn provenance(rows: &[Row]) -> Vec<(&'static str, String)> {
    let dirty = rows.iter().any(|r| r.provenance.git_dirty);
    let commit = provenance_values(rows, |r| &r.provenance.git_commit);
    vec![
        (
            "Backend",
            provenance_values(rows, |r| &r.provenance.backend),
        ),
        ("Device", provenance_values(rows, |r| &r.provenance.device)),
        (
            "burn",
            provenance_values(rows, |r| &r.provenance.burn_version),
        ),
        (
            "Git commit",
            format!("{commit}{}", if dirty { " (dirty tree)" } else { "" }),
        ),
        (
            "Data checksum",
            provenance_values(rows, |r| &r.provenance.data_checksum),
        ),
        (
            "Host CPU and kernel path",
            provenance_values(rows, |r| &r.provenance.hosts),
        ),
    ]
}

/// Distinct values of a provenance field over all rows.
pub fn provenance_values(rows: &[Row], f: fn(&Row) -> &str) -> String {
    let mut v: Vec<&str> = rows
        .iter()
        .flat_map(|r| f(r).split(';'))
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    if v.is_empty() {
        "unknown".into()
    } else {
        v.join(", ")
    }
}

/// `mean ± sd` of a stats value, `—` when absent.
pub fn mean_sd(s: Option<&Stats>) -> String {
    s.filter(|s| s.n > 0)
        .map_or("—".into(), |s| format!("{:.2} ± {:.2}", s.mean, s.std))
}

/// The verdict counts of a set of claims: (holds, contradicted, not resolved, unresolvable).
pub fn verdict_counts(rows: &[Row], o: &ReportOptions) -> [usize; 4] {
    let mut counts = [0usize; 4];
    for (net, _) in networks(rows) {
        for c in claims_for(rows, &net, &o.claims) {
            counts[match c.verdict {
                Verdict::Holds => 0,
                Verdict::Contradicted => 1,
                Verdict::NotResolved => 2,
                Verdict::Unresolvable => 3,
            }] += 1;
        }
    }
    counts
}
