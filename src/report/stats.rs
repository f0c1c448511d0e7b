//! Statistics for judging the paper's claims from per-seed paired differences: Student-t
//! intervals, directional verdicts, equivalence by two one-sided tests (TOST), and the
//! number of seeds a claim would need. Standard library only.

/// Arithmetic mean (NaN for no values).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n - 1 in the denominator; 0 for fewer than two values).
pub fn sample_sd(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Regularized incomplete beta I_x(a, b).
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The fraction converges fast only below the mean; use the symmetry above it.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// P(T <= t) for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The t with P(T <= t) = p (bisection on [`t_cdf`], to 1e-12).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0, "t_quantile: p = {p} is not in (0, 1)");
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    while hi - lo > 1e-12 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Mean of differences with its two-sided Student-t interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedSummary {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub se: f64,
    pub df: f64,
    pub lo: f64,
    pub hi: f64,
    /// Confidence of [lo, hi], e.g. 0.95.
    pub level: f64,
}

/// The interval of the mean of differences `d` at confidence `level`; None for n < 2.
pub fn interval(d: &[f64], level: f64) -> Option<PairedSummary> {
    let n = d.len();
    if n < 2 {
        return None;
    }
    let (m, sd) = (mean(d), sample_sd(d));
    let se = sd / (n as f64).sqrt();
    let df = (n - 1) as f64;
    let h = t_quantile(0.5 + level / 2.0, df) * se;
    Some(PairedSummary {
        n,
        mean: m,
        sd,
        se,
        df,
        lo: m - h,
        hi: m + h,
        level,
    })
}

/// The interval of x_i - y_i (the same seed at the same index in both).
pub fn paired(x: &[f64], y: &[f64], level: f64) -> Option<PairedSummary> {
    assert_eq!(x.len(), y.len(), "paired values need one y per x");
    let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
    interval(&d, level)
}

/// A directional claim "x > y" read off the interval of x - y.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The interval lies above 0.
    Holds,
    /// The interval lies below 0.
    Contradicted,
    NotResolved,
}

pub fn direction(s: &PairedSummary) -> Direction {
    if s.lo > 0.0 {
        Direction::Holds
    } else if s.hi < 0.0 {
        Direction::Contradicted
    } else {
        Direction::NotResolved
    }
}

/// What two one-sided tests say of "|mean difference| < margin".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equivalence {
    /// The (1 - 2 alpha) interval lies inside (-margin, margin).
    Equivalent,
    /// That interval lies wholly at or beyond +margin, or at or below -margin.
    Different,
    NotResolved,
    /// Its half-width alone reaches the margin: no mean could give an interval inside it.
    NeverResolvable,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tost {
    /// The (1 - 2 alpha) interval, e.g. 90% for alpha = 0.05.
    pub summary: PairedSummary,
    pub margin: f64,
    pub alpha: f64,
    pub verdict: Equivalence,
}

/// TOST on the differences `d` against `margin` at significance `alpha`; None for n < 2.
pub fn tost(d: &[f64], margin: f64, alpha: f64) -> Option<Tost> {
    let s = interval(d, 1.0 - 2.0 * alpha)?;
    let verdict = if s.lo > -margin && s.hi < margin {
        Equivalence::Equivalent
    } else if s.lo >= margin || s.hi <= -margin {
        Equivalence::Different
    } else if (s.hi - s.lo) / 2.0 >= margin {
        Equivalence::NeverResolvable
    } else {
        Equivalence::NotResolved
    };
    Some(Tost {
        summary: s,
        margin,
        alpha,
        verdict,
    })
}

const MAX_N: usize = 10_000;

/// The smallest n at which a mean difference of 0 with this sd would show equivalence
/// within `margin` (t_{1-alpha, n-1} sd / sqrt(n) < margin); None up to 10,000.
pub fn min_n_for_equivalence(sd: f64, margin: f64, alpha: f64) -> Option<usize> {
    if sd.is_nan() {
        return None;
    }
    (2..=MAX_N).find(|&n| t_quantile(1.0 - alpha, (n - 1) as f64) * sd / (n as f64).sqrt() < margin)
}

/// The smallest n at which a mean difference of this size and sd would give a
/// `level` interval that excludes 0; None for a zero mean or none up to 10,000.
pub fn min_n_for_direction(mean: f64, sd: f64, level: f64) -> Option<usize> {
    if mean == 0.0 || mean.is_nan() || sd.is_nan() {
        return None;
    }
    (2..=MAX_N).find(|&n| {
        t_quantile(0.5 + level / 2.0, (n - 1) as f64) * sd / (n as f64).sqrt() < mean.abs()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} != {b}");
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        for (df, q) in [
            (1.0, 12.706204736),
            (2.0, 4.302652730),
            (3.0, 3.182446305),
            (4.0, 2.776445105),
            (9.0, 2.262157163),
            (29.0, 2.045229642),
            (1000.0, 1.962339),
        ] {
            close(t_quantile(0.975, df), q, 1e-6);
        }
        close(t_quantile(0.95, 2.0), 2.919985580, 1e-6);
        close(t_quantile(0.95, 4.0), 2.131846786, 1e-6);
        close(t_quantile(0.025, 4.0), -2.776445105, 1e-6);
        close(t_cdf(0.0, 3.0), 0.5, 1e-12);
        close(t_cdf(2.0, 5.0), 0.9490302605, 1e-8);
        close(t_cdf(t_quantile(0.9, 7.0), 7.0), 0.9, 1e-10);
    }

    #[test]
    fn paired_interval_of_a_known_case() {
        let s = interval(&[1.0, 2.0, 3.0], 0.95).unwrap();
        close(s.mean, 2.0, 1e-12);
        close(s.sd, 1.0, 1e-12);
        close(s.hi - s.mean, 4.302652730 / 3f64.sqrt(), 1e-6);
        close(s.lo, -0.484137707, 1e-6);
        assert_eq!(direction(&s), Direction::NotResolved);
        let up = interval(&[2.0, 2.2, 1.8, 2.1, 1.9], 0.95).unwrap();
        assert_eq!(direction(&up), Direction::Holds);
        let down = interval(&[-2.0, -2.2, -1.8], 0.95).unwrap();
        assert_eq!(direction(&down), Direction::Contradicted);
        let c = paired(&[5.0, 6.0, 7.0], &[4.0, 5.0, 6.0], 0.95).unwrap();
        assert_eq!((c.mean, c.sd, c.lo, c.hi), (1.0, 0.0, 1.0, 1.0));
        assert!(interval(&[1.0], 0.95).is_none());
    }

    #[test]
    fn tost_verdicts() {
        let near = [0.1, 0.2, 0.0, 0.15, 0.05, 0.1, 0.12, 0.08, 0.1, 0.1];
        assert_eq!(
            tost(&near, 1.0, 0.05).unwrap().verdict,
            Equivalence::Equivalent
        );
        // sd 2 over 3 seeds: 90% half-width 2.92 x 2 / 1.73 = 3.4 pp > 1 pp.
        let wide = tost(&[-2.0, 0.0, 2.0], 1.0, 0.05).unwrap();
        assert_eq!(wide.verdict, Equivalence::NeverResolvable);
        close(wide.summary.level, 0.9, 1e-12);
        // Half-width 2.92 x 0.5 / 1.73 = 0.84 < 1, but the interval [0.06, 1.74] crosses 1.
        assert_eq!(
            tost(&[0.4, 0.9, 1.4], 1.0, 0.05).unwrap().verdict,
            Equivalence::NotResolved
        );
        assert_eq!(
            tost(&[3.0, 3.5, 4.0], 1.0, 0.05).unwrap().verdict,
            Equivalence::Different
        );
    }

    #[test]
    fn seeds_needed() {
        // sd 1, margin 1: n = 5 gives 2.1318 / 2.236 = 0.953 < 1; n = 4: 2.353 / 2 = 1.18.
        assert_eq!(min_n_for_equivalence(1.0, 1.0, 0.05), Some(5));
        // mean 1, sd 1: n = 7 gives 2.4469 / 2.6458 = 0.925 < 1; n = 6: 2.5706 / 2.449 = 1.05.
        assert_eq!(min_n_for_direction(1.0, 1.0, 0.95), Some(7));
        assert_eq!(min_n_for_direction(0.0, 1.0, 0.95), None);
        assert_eq!(min_n_for_equivalence(f64::NAN, 1.0, 0.05), None);
    }
}
