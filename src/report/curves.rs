//! End points read off a run's validation curve, robust to its epoch-to-epoch noise: the
//! curve smoothed over the termination window `ws`, its plateau, the training FLOPs at which
//! it first reaches a target, and its accuracy at a given FLOP count.

use super::load::Run;

/// The run's termination window (at least 1), the smoothing width of its curve.
pub fn window(run: &Run) -> usize {
    (run.result.settings.ws as usize).max(1)
}

/// (cumulative training FLOPs, validation accuracy averaged over the last `ws` epochs up to
/// and including this one) per epoch; the first epochs average over what there is.
pub fn smoothed(run: &Run) -> Vec<(f64, f64)> {
    let ws = window(run);
    let accs: Vec<f64> = run.epochs.iter().map(|e| e.val_acc).collect();
    run.epochs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let w = &accs[(i + 1).saturating_sub(ws)..=i];
            (e.cum_train_flops, w.iter().sum::<f64>() / w.len() as f64)
        })
        .collect()
}

/// Mean validation accuracy of the last `ws` epochs: where the run ended up.
pub fn plateau(run: &Run) -> Option<f64> {
    smoothed(run).last().map(|&(_, a)| a)
}

/// Training FLOPs at the first epoch whose smoothed validation accuracy reaches `target`.
pub fn flops_to_reach(run: &Run, target: f64) -> Option<f64> {
    smoothed(run)
        .into_iter()
        .find(|&(_, a)| a >= target)
        .map(|(f, _)| f)
}

/// Smoothed validation accuracy at the last epoch that ended within `flops` training FLOPs.
pub fn accuracy_at_flops(run: &Run, flops: f64) -> Option<f64> {
    smoothed(run)
        .into_iter()
        .take_while(|&(f, _)| f <= flops)
        .last()
        .map(|(_, a)| a)
}

/// The run's total training FLOPs (its last epoch's cumulative count).
pub fn total_flops(run: &Run) -> Option<f64> {
    run.epochs.last().map(|e| e.cum_train_flops)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::load::{EpochRow, RunResult, Settings};

    /// A run whose epochs have these validation accuracies and 10 FLOPs each.
    pub(crate) fn run_with(accs: &[f64], ws: usize) -> Run {
        let epochs = accs
            .iter()
            .enumerate()
            .map(|(i, &a)| EpochRow {
                run_id: "r".into(),
                epoch: (i + 1) as f64,
                phase: "train".into(),
                active: "1".into(),
                trained: "1".into(),
                train_loss: 0.0,
                train_acc: 0.0,
                val_acc: a,
                test_acc: None,
                flops_per_inference: 1.0,
                cum_train_flops: 10.0 * (i + 1) as f64,
                cum_eval_flops: 0.0,
                params: 1.0,
                seconds: 0.0,
            })
            .collect();
        let result: RunResult = serde_json::from_value(serde_json::json!({
            "run_id": "r", "net": "n", "paper_net": "resnet20", "method": "baseline",
            "seed": 1, "test_accuracy": 0.5, "epochs": accs.len(), "train_flops": 0,
            "params": 1,
        }))
        .unwrap();
        Run {
            dir: "r".into(),
            result: RunResult {
                settings: Settings {
                    ws: ws as f64,
                    epoch_budget: accs.len() as f64,
                },
                ..result
            },
            epochs,
        }
    }

    #[test]
    fn smoothing_plateau_and_crossings() {
        let r = run_with(&[0.1, 0.3, 0.5, 0.6, 0.6, 0.9], 3);
        let s: Vec<f64> = smoothed(&r).iter().map(|p| p.1).collect();
        let want = [0.1, 0.2, 0.3, 1.4 / 3.0, 1.7 / 3.0, 0.7];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{s:?}");
        }
        assert!((plateau(&r).unwrap() - 0.7).abs() < 1e-12);
        // One noisy epoch at 0.9 does not count as reaching 0.65; the smoothed curve does
        // only at the last epoch.
        assert_eq!(flops_to_reach(&r, 0.65), Some(60.0));
        assert_eq!(flops_to_reach(&r, 0.95), None);
        assert!((accuracy_at_flops(&r, 35.0).unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(accuracy_at_flops(&r, 5.0), None);
        assert_eq!(total_flops(&r), Some(60.0));
    }
}
