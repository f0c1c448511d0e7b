//! The paper's qualitative claims, judged at the scale we ran. A claim is
//! asserted only where the mean gap exceeds `k` times the seed spread (the
//! larger of the two standard deviations; `k` = 2 by default): with a handful
//! of seeds, smaller gaps are indistinguishable from seed noise, and saying so
//! is the honest report.

use super::aggregate::{Row, Stats, find};
use super::load::Run;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The gap is larger than k x spread in the claimed direction.
    Holds,
    /// The gap is larger than k x spread in the opposite direction.
    Contradicted,
    /// Claim (a), "about equal": no difference larger than k x spread. This
    /// does not prove equality; it says the seeds cannot tell the two apart.
    Consistent,
    /// The gap is within k x spread, or there is too little data to judge.
    NotVisible,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Holds => "holds at this scale",
            Verdict::Contradicted => "contradicted at this scale",
            Verdict::Consistent => "consistent at this scale (no difference visible)",
            Verdict::NotVisible => "not visible at this scale",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Claim {
    /// `a` to `d`.
    pub id: char,
    pub statement: &'static str,
    pub verdict: Verdict,
    /// The numbers behind the verdict.
    pub detail: String,
}

/// Claims for one network (the rows of its three methods).
pub fn claims_for(rows: &[Row], net: &str, k: f64) -> Vec<Claim> {
    let base = find(rows, net, "baseline");
    let look = find(rows, net, "lookahead");
    let rand = find(rows, net, "random");
    let acc = |r: Option<&Row>| r.map(|r| r.accuracy);
    vec![
        about_equal(acc(look), acc(base), k),
        greater(
            'b',
            "look-ahead initialisation beats random initialisation",
            acc(look),
            acc(rand),
            k,
            "look-ahead",
            "random",
        ),
        greater(
            'c',
            "the baseline beats random initialisation",
            acc(base),
            acc(rand),
            k,
            "baseline",
            "random",
        ),
        fewer_flops(base, look, k),
    ]
}

const MISSING: &str = "a method was not run";

fn one_seed(x: &Stats, y: &Stats) -> bool {
    x.n < 2 || y.n < 2
}

fn greater(
    id: char,
    statement: &'static str,
    x: Option<Stats>,
    y: Option<Stats>,
    k: f64,
    xn: &str,
    yn: &str,
) -> Claim {
    let (verdict, detail) = match (x, y) {
        (Some(x), Some(y)) if one_seed(&x, &y) => (
            Verdict::NotVisible,
            "one seed: no spread to judge a gap by".to_string(),
        ),
        (Some(x), Some(y)) => {
            let gap = x.mean - y.mean;
            let s = x.std.max(y.std);
            let verdict = if gap > k * s {
                Verdict::Holds
            } else if -gap > k * s {
                Verdict::Contradicted
            } else {
                Verdict::NotVisible
            };
            (
                verdict,
                format!(
                    "{xn} - {yn} = {gap:+.2} pp; {k} x seed spread = {:.2} pp",
                    k * s
                ),
            )
        }
        _ => (Verdict::NotVisible, MISSING.to_string()),
    };
    Claim {
        id,
        statement,
        verdict,
        detail,
    }
}

fn about_equal(look: Option<Stats>, base: Option<Stats>, k: f64) -> Claim {
    let statement = "look-ahead initialisation reaches about the baseline's accuracy";
    let (verdict, detail) = match (look, base) {
        (Some(x), Some(y)) if one_seed(&x, &y) => (
            Verdict::NotVisible,
            "one seed: no spread to judge a gap by".to_string(),
        ),
        (Some(x), Some(y)) => {
            let gap = x.mean - y.mean;
            let s = x.std.max(y.std);
            let verdict = if gap.abs() > k * s {
                Verdict::Contradicted
            } else {
                Verdict::Consistent
            };
            (
                verdict,
                format!(
                    "look-ahead - baseline = {gap:+.2} pp; {k} x seed spread = {:.2} pp \
                     (gaps below it cannot be resolved with these seeds)",
                    k * s
                ),
            )
        }
        _ => (Verdict::NotVisible, MISSING.to_string()),
    };
    Claim {
        id: 'a',
        statement,
        verdict,
        detail,
    }
}

/// Cumulative training FLOPs at the first epoch whose validation accuracy
/// reaches `target`, or None if the run never does.
pub fn flops_to_reach(run: &Run, target: f64) -> Option<f64> {
    run.epochs
        .iter()
        .find(|e| e.val_acc >= target)
        .map(|e| e.cum_train_flops)
}

/// The best validation accuracy of a run (its epochs' maximum).
fn best_val(run: &Run) -> f64 {
    run.epochs
        .iter()
        .map(|e| e.val_acc)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Claim (d). The target is the baseline's accuracy: the best validation
/// accuracy that every baseline seed reaches (their minimum best), so each
/// baseline run has a defined cost to reach it. Each run's cost is its
/// cumulative training FLOPs at the first epoch at or above the target.
fn fewer_flops(base: Option<&Row>, look: Option<&Row>, k: f64) -> Claim {
    let statement = "look-ahead reaches the baseline's accuracy with fewer training FLOPs";
    let claim = |verdict, detail| Claim {
        id: 'd',
        statement,
        verdict,
        detail,
    };
    let (Some(base), Some(look)) = (base, look) else {
        return claim(Verdict::NotVisible, MISSING.to_string());
    };
    if base
        .runs
        .iter()
        .chain(&look.runs)
        .any(|r| r.epochs.is_empty())
    {
        return claim(Verdict::NotVisible, "a run has no per-epoch metrics".into());
    }
    let target = base.runs.iter().map(best_val).fold(f64::INFINITY, f64::min);
    let base_cost: Vec<f64> = base
        .runs
        .iter()
        .filter_map(|r| flops_to_reach(r, target))
        .collect();
    let look_cost: Vec<f64> = look
        .runs
        .iter()
        .filter_map(|r| flops_to_reach(r, target))
        .collect();
    let missed = look.runs.len() - look_cost.len();
    let t = format!("{:.2}%", target * 100.0);
    if look_cost.is_empty() {
        return claim(
            Verdict::Contradicted,
            format!("no look-ahead seed reaches the baseline's validation accuracy {t} at all"),
        );
    }
    if missed > 0 {
        return claim(
            Verdict::NotVisible,
            format!(
                "{missed} of {} look-ahead seeds never reach the baseline's validation accuracy {t}",
                look.runs.len()
            ),
        );
    }
    let (b, l) = (Stats::of(&base_cost), Stats::of(&look_cost));
    if one_seed(&b, &l) {
        return claim(
            Verdict::NotVisible,
            format!(
                "one seed: no spread to judge by (to reach {t}: look-ahead {:.3e}, baseline {:.3e} FLOPs)",
                l.mean, b.mean
            ),
        );
    }
    let gap = b.mean - l.mean;
    let s = b.std.max(l.std);
    let verdict = if gap > k * s {
        Verdict::Holds
    } else if -gap > k * s {
        Verdict::Contradicted
    } else {
        Verdict::NotVisible
    };
    claim(
        verdict,
        format!(
            "training FLOPs to reach validation accuracy {t}: look-ahead {:.3e} ± {:.1e}, \
             baseline {:.3e} ± {:.1e}; baseline - look-ahead = {gap:+.3e} vs {k} x seed spread {:.3e}",
            l.mean,
            l.std,
            b.mean,
            b.std,
            k * s
        ),
    )
}
