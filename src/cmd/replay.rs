//! `incrpipe replay METRICS.csv`: where the termination rule would have ended each phase of
//! a run, replayed on its recorded validation curve. Run a pilot with long fixed phases
//! (a large min_epochs = max_epochs, no budget), then choose ws / gamma / caps here.

use std::path::PathBuf;

use incrpipe::engine::termination::{self, StopReason, TerminationConfig};
use incrpipe::report::load::{EpochRow, read_metrics};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// A run's metrics.csv (or its directory).
    pub metrics: PathBuf,
    /// Termination windows to try, e.g. `3,4,5`.
    #[arg(long, value_delimiter = ',', default_value = "5")]
    pub ws: Vec<usize>,
    /// Slowdown factors to try, e.g. `0.5,0.7`.
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    pub gamma: Vec<f64>,
    #[arg(long, default_value_t = 0)]
    pub min_epochs: usize,
    /// Cap per phase (default: none within the recorded curve).
    #[arg(long)]
    pub max_epochs: Option<usize>,
}

/// The whole-network phases of a run: (label, validation accuracies), in order.
fn train_phases(epochs: &[EpochRow]) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    let mut prev: Option<(&str, &str)> = None;
    for e in epochs {
        let id = (e.phase.as_str(), e.active.as_str());
        if e.phase == "train" {
            if prev != Some(id) {
                out.push((format!("S1..S{}", e.active), Vec::new()));
            }
            out.last_mut().expect("pushed").1.push(e.val_acc);
        }
        prev = Some(id);
    }
    out
}

pub fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let path = if a.metrics.is_dir() {
        a.metrics.join("metrics.csv")
    } else {
        a.metrics.clone()
    };
    let epochs = read_metrics(&path)?;
    let phases = train_phases(&epochs);
    anyhow::ensure!(
        !phases.is_empty(),
        "{}: no whole-network (train) epochs to replay",
        path.display()
    );
    println!("ws  gamma  phase    ran  stops at  reason          val there  best val");
    for &ws in &a.ws {
        for &gamma in &a.gamma {
            let cfg = TerminationConfig {
                ws,
                gamma,
                min_epochs: a.min_epochs,
                max_epochs: a.max_epochs.unwrap_or(usize::MAX),
            };
            for (label, accs) in &phases {
                let best = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let (at, why, there) = match termination::replay(&cfg, accs) {
                    Some((n, r)) => (n.to_string(), reason(r), accs[n - 1]),
                    None => ("-".into(), "runs on", accs[accs.len() - 1]),
                };
                println!(
                    "{ws:<3} {gamma:<6} {label:<8} {:<4} {at:<9} {why:<15} {:<10.4} {best:.4}",
                    accs.len(),
                    there
                );
            }
        }
    }
    Ok(())
}

fn reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Slowdown => "slowdown",
        StopReason::NoImprovement => "no improvement",
        StopReason::MaxEpochs => "cap",
        StopReason::Budget => "budget",
        StopReason::FixedEpochs => "fixed",
    }
}
