//! `table2.md`: the table laid out like the paper's Table 2 (networks as
//! rows, methods as columns), the cost of each run, the claims judged at
//! this scale, and where the numbers came from.

use std::fmt::Write;

use super::ReportOptions;
use super::aggregate::{Row, Stats, find, networks};
use super::cells::{accuracy_cell, mean_sd, network_label, provenance, verdict_counts};
use super::claims::{at_equal_flops, claims_for, flops_to_target};
use super::figures::FIGURES;
use super::paper::{METHODS, method_title};
use super::phases;

pub fn render(rows: &[Row], o: &ReportOptions) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", o.title);
    let _ = writeln!(
        s,
        "Test accuracy on CIFAR-10 in percent of each run's last network: mean ± sample \
         standard deviation over seeds, then the paper's Table 2 value (Istrate et al. 2017). \
         The difference to the paper (Δ, percentage points) is given only for the paper's own \
         networks; a smaller stand-in shows the value of the network it stands for, which it \
         is not expected to match.\n"
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
    let _ = writeln!(
        s,
        "\nTest accuracy of the last phase's epoch with the best validation accuracy (the \
         checkpoint one would keep; chosen on validation, never on test):\n"
    );
    let _ = writeln!(s, "| Network | {} |", METHODS.map(method_title).join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(METHODS.len()));
    for (net, paper_net) in networks(rows) {
        let cells: Vec<String> = METHODS
            .iter()
            .map(|m| mean_sd(find(rows, &net, m).and_then(|r| r.accuracy_best_val.as_ref())))
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

    let (by_rule, could) = phases::ended_by_rule(rows);
    let _ = writeln!(s, "\n## Phases\n");
    let _ = writeln!(
        s,
        "Epochs per phase (mean ± sd over seeds) and why each ended (seed counts): the \
         termination rule (slowdown, or no improvement over a window), the per-phase cap, \
         the epoch budget (the last phase runs to it), or a look-ahead's fixed length. \
         {by_rule} of the {could} phases that could end by the rule did.\n"
    );
    let _ = writeln!(s, "| Network | Method | Phases |");
    let _ = writeln!(s, "|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            r.net,
            method_title(&r.method),
            phases::summary(r)
        );
    }

    let _ = writeln!(s, "\n## Validation accuracy at equal training FLOPs\n");
    let _ = writeln!(
        s,
        "Per seed, each method's validation accuracy (smoothed over ws epochs) at the largest \
         training FLOP count that all three methods reached (the smallest of their totals).\n"
    );
    let _ = writeln!(
        s,
        "| Network | Method | Validation accuracy % | At training FLOPs |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for (net, _) in networks(rows) {
        for (m, accs, at) in at_equal_flops(rows, &net) {
            let _ = writeln!(
                s,
                "| {net} | {} | {} | {:.3e} |",
                method_title(&m),
                mean_sd(Some(&Stats::of(&accs))),
                Stats::of(&at).mean
            );
        }
    }

    let _ = writeln!(s, "\n## Claims at this scale\n");
    let _ = writeln!(
        s,
        "The paper claims, for every network: (a) look-ahead reaches about the baseline's \
         accuracy, (b) look-ahead beats random initialisation, (c) the baseline beats random \
         initialisation, (d) incremental training with look-ahead reaches the baseline's \
         accuracy with fewer training FLOPs. The methods share their seeds, so every claim \
         is judged on per-seed paired differences with a Student-t interval (n - 1 degrees of \
         freedom). (b)-(d) hold when the {c}% interval excludes 0 in the claimed direction, \
         are contradicted when it excludes 0 the other way, and are otherwise not resolved. \
         (a) is an equivalence claim: two one-sided tests at alpha = {a:.2} (the {e}% \
         interval) against a margin of ±{m} pp; it holds only when that interval lies inside \
         the margin, and cannot be resolved when the interval is wider than the margin \
         whatever the mean. Each claim names its test.\n",
        c = (o.claims.level * 100.0).round(),
        a = 1.0 - o.claims.level,
        e = ((2.0 * o.claims.level - 1.0) * 100.0).round(),
        m = o.claims.margin_pp
    );
    for (net, paper_net) in networks(rows) {
        let _ = writeln!(s, "### {}\n", network_label(&net, &paper_net));
        for c in claims_for(rows, &net, &o.claims) {
            let _ = writeln!(
                s,
                "- ({}) {}: **{}**. {}. Test: {}.",
                c.id,
                c.statement,
                c.verdict.label(),
                c.detail,
                c.test
            );
        }
        if let (Some(b), Some(l)) = (find(rows, &net, "baseline"), find(rows, &net, "lookahead")) {
            let _ = writeln!(
                s,
                "\nClaim (d) per seed: training FLOPs to reach the seed's own baseline plateau \
                 minus {} pp (validation, smoothed over ws).\n",
                o.claims.target_below_pp
            );
            let _ = writeln!(s, "| Seed | Target % | Baseline | Look-ahead |");
            let _ = writeln!(s, "|---|---|---|---|");
            let f = |x: Option<f64>| x.map_or("never".into(), |v| format!("{v:.3e}"));
            for p in flops_to_target(b, l, o.claims.target_below_pp) {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} | {} | {} |",
                    super::aggregate::seed_label(p.seed),
                    p.target * 100.0,
                    f(p.baseline),
                    f(p.lookahead)
                );
            }
        }
        let _ = writeln!(s);
    }
    let [h, c, n, u] = verdict_counts(rows, o);
    let _ = writeln!(
        s,
        "In all: {h} claims hold, {c} are contradicted, {n} are not resolved and {u} cannot be \
         resolved with these seeds.\n"
    );

    let _ = writeln!(s, "## Provenance\n");
    for (name, value) in provenance(rows) {
        let _ = writeln!(s, "- {name}: {value}");
    }
    let _ = writeln!(
        s,
        "- Stage keys of every run: column `stage_keys` of table2.csv; per-seed numbers: runs.csv\n"
    );

    let _ = writeln!(s, "## Figures\n");
    for (stem, caption) in FIGURES {
        let _ = writeln!(s, "![{caption}]({stem}.png)\n");
    }
    s
}
