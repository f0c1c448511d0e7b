//! `table2.md`: the table laid out like the paper's Table 2 (networks as
//! rows, methods as columns), the cost of each run, the claims judged at
//! this scale, and where the numbers came from.

use std::fmt::Write;

use super::aggregate::{Row, find, networks};
use super::claims::{Verdict, claims_for};
use super::figures::FIGURES;
use super::paper::{METHODS, method_title, paper_net_title};

/// The text of one accuracy cell: ours, then the paper's and the difference.
pub fn accuracy_cell(r: Option<&Row>) -> String {
    let Some(r) = r else {
        return "—".into();
    };
    let ours = format!("{:.2} ± {:.2}", r.accuracy.mean, r.accuracy.std);
    match (r.paper, r.diff_vs_paper()) {
        (Some(p), Some(d)) => format!("{ours} (paper {p:.2}, Δ {d:+.2})"),
        _ => format!("{ours} (no paper value)"),
    }
}

pub fn network_label(net: &str, paper_net: &str) -> String {
    format!("{net} (paper: {})", paper_net_title(paper_net))
}

/// Distinct values of a provenance field over all rows.
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
    ]
}

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

pub fn render(rows: &[Row], title: &str, k: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "Test accuracy on CIFAR-10 in percent: mean ± sample standard deviation over seeds, \
         then the paper's Table 2 value (Istrate et al. 2017) and our difference to it (Δ, \
         percentage points). Our networks and data are smaller than the paper's where the \
         network name says so; the paper network is the row each one is compared with.\n"
    );
    let _ = writeln!(s, "| Network | {} |", METHODS.map(method_title).join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(METHODS.len()));
    for (net, paper_net) in networks(rows) {
        let cells: Vec<String> = METHODS
            .iter()
            .map(|m| accuracy_cell(find(rows, &net, m)))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} |",
            network_label(&net, &paper_net),
            cells.join(" | ")
        );
    }

    let _ = writeln!(s, "\n## Cost\n");
    let _ = writeln!(
        s,
        "| Network | Method | Seeds | Epochs | Training FLOPs | Parameters | FLOPs per inference |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} ± {:.1} | {:.3e} | {} | {:.3e} |",
            r.net,
            method_title(&r.method),
            r.seeds.len(),
            r.epochs.mean,
            r.epochs.std,
            r.train_flops.mean,
            r.params.round(),
            r.flops_per_inference
        );
    }

    let _ = writeln!(s, "\n## Claims at this scale\n");
    let _ = writeln!(
        s,
        "The paper claims, for every network: (a) look-ahead reaches about the baseline's \
         accuracy, (b) look-ahead beats random initialisation, (c) the baseline beats random \
         initialisation, (d) incremental training with look-ahead reaches the baseline's \
         accuracy with fewer training FLOPs. A claim is asserted here only where the mean gap \
         exceeds {k} x the seed spread (the larger of the two methods' standard deviations); \
         otherwise it is reported as not visible at this scale. For (a) no visible difference \
         is reported as consistent, which is not a proof of equality: gaps below {k} x the \
         spread cannot be resolved with these seeds. For (d) the baseline's accuracy is the \
         best validation accuracy every baseline seed reaches, and a run's cost is its \
         cumulative training FLOPs at the first epoch at or above it.\n"
    );
    let mut counts = [0usize; 4];
    for (net, paper_net) in networks(rows) {
        let _ = writeln!(s, "### {}\n", network_label(&net, &paper_net));
        for c in claims_for(rows, &net, k) {
            counts[match c.verdict {
                Verdict::Holds => 0,
                Verdict::Consistent => 1,
                Verdict::NotVisible => 2,
                Verdict::Contradicted => 3,
            }] += 1;
            let _ = writeln!(
                s,
                "- ({}) {}: **{}**. {}.",
                c.id,
                c.statement,
                c.verdict.label(),
                c.detail
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "In all: {} claims hold, {} are consistent, {} are not visible and {} are contradicted \
         at this scale.\n",
        counts[0], counts[1], counts[2], counts[3]
    );

    let _ = writeln!(s, "## Provenance\n");
    for (name, value) in provenance(rows) {
        let _ = writeln!(s, "- {name}: {value}");
    }
    let _ = writeln!(
        s,
        "- Stage keys of every run: column `stage_keys` of table2.csv\n"
    );

    let _ = writeln!(s, "## Figures\n");
    for (stem, caption) in FIGURES {
        let _ = writeln!(s, "![{caption}]({stem}.png)\n");
    }
    s
}
