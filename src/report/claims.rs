//! The paper's qualitative claims, judged from per-seed paired differences.
//!
//! Methods of one network share their seeds (the same seed gives the same data order and,
//! for the incremental methods, the same S1), so each claim compares methods seed by seed:
//! the differences d_s get a Student-t interval with n - 1 degrees of freedom. A directional
//! claim (b, c, d) holds when its interval excludes 0 in the claimed direction, is
//! contradicted when it excludes 0 the other way, and is otherwise not resolved. Claim (a)
//! says two methods are about equal: an equivalence claim, judged by two one-sided tests
//! (TOST) against a stated margin, which holds only when the 90% interval lies inside it.

use super::aggregate::{Row, find};
use super::curves;
use super::load::Run;
use super::stats::{self, Direction, Equivalence, PairedSummary};

/// How claims are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaimOptions {
    /// Confidence of the two-sided intervals of (b), (c), (d), e.g. 0.95. (a)'s TOST runs
    /// at alpha = 1 - level, i.e. on the (1 - 2 alpha) interval.
    pub level: f64,
    /// Claim (a)'s equivalence margin in percentage points of test accuracy.
    pub margin_pp: f64,
    /// Claim (d)'s target: this many points below the baseline's plateau.
    pub target_below_pp: f64,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        ClaimOptions {
            level: 0.95,
            margin_pp: 1.0,
            target_below_pp: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The interval excludes 0 in the claimed direction ((a): lies inside the margin).
    Holds,
    /// The interval excludes 0 the other way ((a): lies wholly outside the margin).
    Contradicted,
    /// The interval straddles the decision point.
    NotResolved,
    /// No outcome of these seeds could decide: one seed, or (a) with an interval that is
    /// wider than the margin whatever the mean.
    Unresolvable,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Contradicted => "contradicted",
            Verdict::NotResolved => "not resolved",
            Verdict::Unresolvable => "cannot be resolved with these seeds",
        }
    }

    /// A CSS class for the HTML page.
    pub fn class(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Contradicted => "contradicted",
            _ => "muted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Claim {
    /// `a` to `d`.
    pub id: char,
    pub statement: &'static str,
    /// The test that judged it, named for the report.
    pub test: String,
    pub verdict: Verdict,
    /// The numbers behind the verdict.
    pub detail: String,
    /// The interval the verdict reads (None when it could not be formed).
    pub summary: Option<PairedSummary>,
}

const MISSING: &str = "a method was not run";

/// Claims for one network (the rows of its three methods).
pub fn claims_for(rows: &[Row], net: &str, o: &ClaimOptions) -> Vec<Claim> {
    let base = find(rows, net, "baseline");
    let look = find(rows, net, "lookahead");
    let rand = find(rows, net, "random");
    vec![
        about_equal(look, base, o),
        greater(
            'b',
            "look-ahead initialisation beats random initialisation",
            look.zip(rand),
            ("look-ahead", "random"),
            o,
        ),
        greater(
            'c',
            "the baseline beats random initialisation",
            base.zip(rand),
            ("baseline", "random"),
            o,
        ),
        fewer_flops(base, look, o),
    ]
}

/// Per-seed values `f` of two rows, paired by seed: (x, y, seeds present in both).
pub fn paired_values(
    x: &Row,
    y: &Row,
    f: impl Fn(&Run) -> Option<f64>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys, mut seeds) = (Vec::new(), Vec::new(), Vec::new());
    for rx in &x.runs {
        let Some(ry) = y.runs.iter().find(|r| r.result.seed == rx.result.seed) else {
            continue;
        };
        if let (Some(a), Some(b)) = (f(rx), f(ry)) {
            xs.push(a);
            ys.push(b);
            seeds.push(rx.result.seed);
        }
    }
    (xs, ys, seeds)
}

fn test_pp(r: &Run) -> Option<f64> {
    Some(r.result.test_accuracy * 100.0)
}

fn pct(level: f64) -> String {
    format!("{}%", (level * 100.0).round())
}

/// "mean +1.23 pp, 95% interval [-0.5, +3.0] (n = 3)".
fn interval_text(s: &PairedSummary, unit: &str) -> String {
    format!(
        "mean {:+.2}{unit}, {} interval [{:+.2}, {:+.2}]{unit} (n = {})",
        s.mean,
        pct(s.level),
        s.lo,
        s.hi,
        s.n
    )
}

fn one_seed(n: usize) -> String {
    format!("{n} paired seed(s): an interval needs at least 2")
}

fn t_test_name(o: &ClaimOptions) -> String {
    format!("paired Student-t {} interval over seeds", pct(o.level))
}

fn greater(
    id: char,
    statement: &'static str,
    rows: Option<(&Row, &Row)>,
    (xn, yn): (&str, &str),
    o: &ClaimOptions,
) -> Claim {
    let mut c = Claim {
        id,
        statement,
        test: t_test_name(o),
        verdict: Verdict::Unresolvable,
        detail: MISSING.into(),
        summary: None,
    };
    let Some((x, y)) = rows else {
        return c;
    };
    let (xs, ys, _) = paired_values(x, y, test_pp);
    let Some(s) = stats::paired(&xs, &ys, o.level) else {
        c.detail = one_seed(xs.len());
        return c;
    };
    c.verdict = match stats::direction(&s) {
        Direction::Holds => Verdict::Holds,
        Direction::Contradicted => Verdict::Contradicted,
        Direction::NotResolved => Verdict::NotResolved,
    };
    c.detail = format!("{xn} - {yn} test accuracy: {}", interval_text(&s, " pp"));
    if c.verdict == Verdict::NotResolved {
        c.detail += &match stats::min_n_for_direction(s.mean, s.sd, o.level) {
            Some(n) => format!(
                "; a difference of this mean and spread would be resolved from n = {n} seeds"
            ),
            None => "; no number of seeds would resolve a zero mean difference".into(),
        };
    }
    c.summary = Some(s);
    c
}

fn about_equal(look: Option<&Row>, base: Option<&Row>, o: &ClaimOptions) -> Claim {
    let alpha = 1.0 - o.level;
    let mut c = Claim {
        id: 'a',
        statement: "look-ahead initialisation reaches about the baseline's accuracy",
        test: format!(
            "equivalence by two one-sided paired t-tests (TOST, alpha = {alpha:.2}: the {} interval) against a margin of ±{} pp",
            pct(1.0 - 2.0 * alpha),
            o.margin_pp
        ),
        verdict: Verdict::Unresolvable,
        detail: MISSING.into(),
        summary: None,
    };
    let (Some(look), Some(base)) = (look, base) else {
        return c;
    };
    let (xs, ys, _) = paired_values(look, base, test_pp);
    let d: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| a - b).collect();
    let Some(t) = stats::tost(&d, o.margin_pp, alpha) else {
        c.detail = one_seed(d.len());
        return c;
    };
    c.verdict = match t.verdict {
        Equivalence::Equivalent => Verdict::Holds,
        Equivalence::Different => Verdict::Contradicted,
        Equivalence::NotResolved => Verdict::NotResolved,
        Equivalence::NeverResolvable => Verdict::Unresolvable,
    };
    c.detail = format!(
        "look-ahead - baseline test accuracy: {}",
        interval_text(&t.summary, " pp")
    );
    if matches!(
        t.verdict,
        Equivalence::NotResolved | Equivalence::NeverResolvable
    ) {
        if t.verdict == Equivalence::NeverResolvable {
            c.detail += &format!(
                "; the interval's half-width alone ({:.2} pp) reaches the margin, so no mean of these seeds could show equivalence",
                (t.summary.hi - t.summary.lo) / 2.0
            );
        }
        c.detail += &match stats::min_n_for_equivalence(t.summary.sd, o.margin_pp, alpha) {
            Some(n) => format!(
                "; at this spread equivalence within ±{} pp needs n >= {n} seeds (if the true difference is 0)",
                o.margin_pp
            ),
            None => format!(
                "; at this spread no feasible number of seeds shows equivalence within ±{} pp",
                o.margin_pp
            ),
        };
    }
    c.summary = Some(t.summary);
    c
}

/// One seed's claim (d) cost: FLOPs of each method to reach that seed's baseline plateau
/// minus `below` points (smoothed over ws); None where a run never reaches it.
pub struct FlopsToTarget {
    pub seed: f64,
    pub target: f64,
    pub baseline: Option<f64>,
    pub lookahead: Option<f64>,
}

pub fn flops_to_target(base: &Row, look: &Row, below_pp: f64) -> Vec<FlopsToTarget> {
    base.runs
        .iter()
        .filter_map(|b| {
            let l = look.runs.iter().find(|l| l.result.seed == b.result.seed)?;
            let target = curves::plateau(b)? - below_pp / 100.0;
            Some(FlopsToTarget {
                seed: b.result.seed,
                target,
                baseline: curves::flops_to_reach(b, target),
                lookahead: curves::flops_to_reach(l, target),
            })
        })
        .collect()
}

fn fewer_flops(base: Option<&Row>, look: Option<&Row>, o: &ClaimOptions) -> Claim {
    let mut c = Claim {
        id: 'd',
        statement: "look-ahead reaches the baseline's accuracy with fewer training FLOPs",
        test: format!(
            "{} of ln(look-ahead FLOPs / baseline FLOPs) to reach each seed's baseline plateau (mean of its last ws validation accuracies) minus {} pp, on validation curves smoothed over ws",
            t_test_name(o),
            o.target_below_pp
        ),
        verdict: Verdict::Unresolvable,
        detail: MISSING.into(),
        summary: None,
    };
    let (Some(base), Some(look)) = (base, look) else {
        return c;
    };
    let per_seed = flops_to_target(base, look, o.target_below_pp);
    let missed = per_seed.iter().filter(|p| p.lookahead.is_none()).count();
    let d: Vec<f64> = per_seed
        .iter()
        .filter_map(|p| Some((p.lookahead? / p.baseline?).ln()))
        .collect();
    let never = if missed > 0 {
        format!(
            "; {missed} of {} look-ahead seeds never reach their baseline's target",
            per_seed.len()
        )
    } else {
        String::new()
    };
    if !per_seed.is_empty() && missed == per_seed.len() {
        c.verdict = Verdict::Contradicted;
        c.detail = format!("no look-ahead seed reaches its baseline's target{never}");
        return c;
    }
    let Some(s) = stats::interval(&d, o.level) else {
        c.detail = format!("{}{never}", one_seed(d.len()));
        return c;
    };
    c.verdict = match stats::direction(&s) {
        // Look-ahead cheaper: the log ratio lies below 0.
        Direction::Contradicted if missed == 0 => Verdict::Holds,
        Direction::Contradicted => Verdict::NotResolved,
        Direction::Holds => Verdict::Contradicted,
        Direction::NotResolved => Verdict::NotResolved,
    };
    c.detail = format!(
        "look-ahead / baseline training FLOPs to the target: geometric mean {:.2}, {} interval [{:.2}, {:.2}] (n = {}){never}",
        s.mean.exp(),
        pct(s.level),
        s.lo.exp(),
        s.hi.exp(),
        s.n
    );
    c.summary = Some(s);
    c
}

/// Each method's validation accuracy at equal training FLOPs: per seed, the smallest total
/// among the three methods; (method, per-seed accuracies in percent, per-seed FLOP points).
pub fn at_equal_flops(rows: &[Row], net: &str) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    let methods: Vec<&Row> = ["baseline", "lookahead", "random"]
        .iter()
        .filter_map(|m| find(rows, net, m))
        .collect();
    let Some(first) = methods.first() else {
        return Vec::new();
    };
    let seeds: Vec<f64> = first
        .runs
        .iter()
        .map(|r| r.result.seed)
        .filter(|s| {
            methods
                .iter()
                .all(|m| m.runs.iter().any(|r| r.result.seed == *s))
        })
        .collect();
    let run = |m: &Row, s: f64| m.runs.iter().find(|r| r.result.seed == s).cloned();
    let points: Vec<Option<f64>> = seeds
        .iter()
        .map(|&s| {
            methods
                .iter()
                .map(|m| run(m, s).and_then(|r| curves::total_flops(&r)))
                .try_fold(f64::INFINITY, |a, f| f.map(|f| a.min(f)))
        })
        .collect();
    methods
        .iter()
        .map(|m| {
            let (mut accs, mut at) = (Vec::new(), Vec::new());
            for (&s, p) in seeds.iter().zip(&points) {
                if let (Some(p), Some(r)) = (p, run(m, s))
                    && let Some(a) = curves::accuracy_at_flops(&r, *p)
                {
                    accs.push(a * 100.0);
                    at.push(*p);
                }
            }
            (m.method.clone(), accs, at)
        })
        .collect()
}
