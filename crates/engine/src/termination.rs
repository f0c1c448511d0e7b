//! The paper's phase termination criterion (Section 3, Fig. 2).
//!
//! Validation accuracies of a phase are cut into non-overlapping windows of `ws` epochs. For
//! window i a least-squares line is fitted (x = epoch number, y = accuracy in [0, 1]) and
//! alpha_i = atan(slope) is its angle with the x axis. The phase stops at the end of window i
//! when alpha_i <= gamma * alpha_{i-1} (improvement slowed down by the factor gamma) or when
//! alpha_i <= 0 (no improvement at all; this also covers the first window, which has no
//! predecessor). A phase also stops after `max_epochs` (tested after the rule, so a cap at a
//! window's end never pre-empts it), never before `min_epochs`. With a total epoch budget the
//! last phase runs until the budget is spent and ignores the rule (see train.rs).
//!
//! Defaults (the paper gives neither ws nor gamma): ws = 5 and gamma = 0.5. With 5,000
//! validation images one accuracy has a standard error of about 0.5 points; the slope of a
//! 3-point fit then has a standard error of ~0.35 points/epoch, the size of the late-phase
//! progress itself, so a 3-epoch window would stop phases on noise. A 5-epoch window cuts it to
//! ~0.16 points/epoch. gamma = 0.5 stops a phase once progress halves from one window to the
//! next, the usual "diminishing returns" point; Fig. 3 of the paper (ResNet-56: three phases in
//! ~140 epochs) is consistent with windows of a few epochs.

use crate::params;

/// Parameters of the criterion.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TerminationConfig {
    /// Window size in epochs.
    pub ws: usize,
    /// Stop when alpha_i <= gamma * alpha_{i-1}.
    pub gamma: f64,
    /// A phase runs at least this many epochs.
    pub min_epochs: usize,
    /// A phase runs at most this many epochs.
    pub max_epochs: usize,
}

impl Default for TerminationConfig {
    fn default() -> Self {
        TerminationConfig {
            ws: params::default("ws"),
            gamma: params::default("gamma"),
            min_epochs: params::default("min_epochs"),
            max_epochs: params::default("max_epochs"),
        }
    }
}

/// Why a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopReason {
    /// alpha_i <= gamma * alpha_{i-1}.
    Slowdown,
    /// alpha_i <= 0.
    NoImprovement,
    /// The phase reached its maximum number of epochs.
    MaxEpochs,
    /// The whole training reached its epoch budget.
    Budget,
    /// A look-ahead phase ran its fixed number of epochs.
    FixedEpochs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Stop(StopReason),
}

/// Least-squares slope of `ys` against x = 0, 1, 2, ...
pub fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let xm = (n - 1.0) / 2.0;
    let ym = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, &y) in ys.iter().enumerate() {
        let dx = i as f64 - xm;
        sxy += dx * (y - ym);
        sxx += dx * dx;
    }
    sxy / sxx
}

/// Angles alpha_1, alpha_2, ... of the complete windows of `accs`.
pub fn window_angles(accs: &[f64], ws: usize) -> Vec<f64> {
    accs.chunks_exact(ws).map(|w| slope(w).atan()).collect()
}

/// Decision after the epochs whose validation accuracies (in [0, 1]) are `accs`.
/// The rule is tested before the cap: with the cap at a window's end (say 2 x ws), a phase
/// whose progress halved there ends by the rule, not by the cap.
pub fn decide(cfg: &TerminationConfig, accs: &[f64]) -> Decision {
    let n = accs.len();
    if let Some(stop) = rule(cfg, accs) {
        return Decision::Stop(stop);
    }
    if n >= cfg.max_epochs {
        return Decision::Stop(StopReason::MaxEpochs);
    }
    Decision::Continue
}

/// The paper's rule alone (no cap), at a window's end past `min_epochs`.
fn rule(cfg: &TerminationConfig, accs: &[f64]) -> Option<StopReason> {
    let n = accs.len();
    if n < cfg.min_epochs || cfg.ws < 2 || n == 0 || !n.is_multiple_of(cfg.ws) {
        return None;
    }
    let a = window_angles(accs, cfg.ws);
    let i = a.len() - 1;
    if a[i] <= 0.0 {
        return Some(StopReason::NoImprovement);
    }
    if i >= 1 && a[i] <= cfg.gamma * a[i - 1] {
        return Some(StopReason::Slowdown);
    }
    None
}

/// Where the rule (and the cap) would have ended a phase whose validation accuracies over a
/// long fixed run were `accs`: (epochs, reason), or None if neither fires within `accs`.
/// Replays the decision made before each epoch, as [`crate::train`] does.
pub fn replay(cfg: &TerminationConfig, accs: &[f64]) -> Option<(usize, StopReason)> {
    (1..=accs.len()).find_map(|n| match decide(cfg, &accs[..n]) {
        Decision::Stop(r) => Some((n, r)),
        Decision::Continue => None,
    })
}

/// Optional user rule to stop growing: after the phase that trained S1..Sk (k >= 2), stop
/// adding sub-networks when its final validation accuracy exceeds the previous phase's by
/// less than `min_gain_points` accuracy points.
pub fn stop_growing(min_gain_points: Option<f64>, prev_acc: f64, acc: f64) -> bool {
    match min_gain_points {
        Some(g) => (acc - prev_acc) * 100.0 < g,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ws: usize, gamma: f64) -> TerminationConfig {
        TerminationConfig {
            ws,
            gamma,
            min_epochs: 0,
            max_epochs: 1000,
        }
    }

    /// First epoch at which the rule stops on curve `f`.
    fn stop_epoch(c: &TerminationConfig, f: impl Fn(usize) -> f64) -> (usize, StopReason) {
        let mut accs = Vec::new();
        loop {
            accs.push(f(accs.len()));
            if let Decision::Stop(r) = decide(c, &accs) {
                return (accs.len(), r);
            }
        }
    }

    #[test]
    fn slope_of_line_is_exact() {
        let ys: Vec<f64> = (0..5).map(|x| 0.3 + 0.02 * x as f64).collect();
        assert!((slope(&ys) - 0.02).abs() < 1e-12);
    }

    #[test]
    fn linear_growth_never_stops_before_max() {
        let mut c = cfg(3, 0.5);
        c.max_epochs = 30;
        // Constant slope: alpha_i == alpha_{i-1} > gamma * alpha_{i-1}.
        assert_eq!(
            stop_epoch(&c, |e| 0.1 + 0.01 * e as f64),
            (30, StopReason::MaxEpochs)
        );
    }

    #[test]
    fn fast_saturation_stops_at_second_window() {
        // Slope ratio between consecutive 3-epoch windows: exp(-3/2) = 0.22 < 0.5.
        let c = cfg(3, 0.5);
        assert_eq!(
            stop_epoch(&c, |e| 0.9 - 0.5 * (-(e as f64) / 2.0).exp()),
            (6, StopReason::Slowdown)
        );
    }

    #[test]
    fn flat_or_falling_curve_stops_at_first_window() {
        let c = cfg(4, 0.5);
        assert_eq!(stop_epoch(&c, |_| 0.5), (4, StopReason::NoImprovement));
        assert_eq!(
            stop_epoch(&c, |e| 0.5 - 0.01 * e as f64),
            (4, StopReason::NoImprovement)
        );
    }

    #[test]
    fn min_epochs_delays_the_stop() {
        let mut c = cfg(4, 0.5);
        c.min_epochs = 10;
        assert_eq!(stop_epoch(&c, |_| 0.5), (12, StopReason::NoImprovement));
    }

    #[test]
    fn gamma_controls_stopping() {
        // Window slopes ratio exp(-3/6) = 0.61: gamma 0.7 stops at window 2, gamma 0.5 later.
        let f = |e: usize| 0.9 - 0.5 * (-(e as f64) / 6.0).exp();
        assert_eq!(stop_epoch(&cfg(3, 0.7), f), (6, StopReason::Slowdown));
        assert!(stop_epoch(&cfg(3, 0.5), f).0 > 6);
    }

    #[test]
    fn the_rule_fires_at_the_cap() {
        // Progress halves at window 2, which is also the cap (2 x ws): the rule decides.
        let mut c = cfg(4, 0.5);
        c.max_epochs = 8;
        assert_eq!(
            stop_epoch(&c, |e| 0.9 - 0.5 * (-(e as f64) / 2.0).exp()),
            (8, StopReason::Slowdown)
        );
        let accs: Vec<f64> = (0..20)
            .map(|e| 0.9 - 0.5 * (-(e as f64) / 2.0).exp())
            .collect();
        assert_eq!(replay(&c, &accs), Some((8, StopReason::Slowdown)));
        c.max_epochs = 100;
        let line: Vec<f64> = (0..20).map(|e| 0.1 + 0.01 * e as f64).collect();
        assert_eq!(replay(&c, &line), None);
    }

    #[test]
    fn growth_rule() {
        assert!(stop_growing(Some(1.0), 0.80, 0.805));
        assert!(!stop_growing(Some(1.0), 0.80, 0.82));
        assert!(!stop_growing(None, 0.80, 0.70));
    }
}
