//! What a run is asked to do, checked before anything starts: the stages it
//! wants (targets and what they need), the ones `--force`d, where each runs,
//! and whether the GPUs a local stage asks for exist.

use std::collections::BTreeSet;

use super::{RunError, RunOptions};
use crate::dag::{Dag, select};

pub(super) struct Plan {
    /// Stages to run or take from the cache: the targets and their upstream closure.
    pub wanted: BTreeSet<usize>,
    /// Stages to run even when cached.
    pub forced: BTreeSet<usize>,
    /// Per stage: whether it runs as a Slurm job (its own `executor` wins over the run's).
    pub on_slurm: Vec<bool>,
}

impl Plan {
    pub fn new(dag: &Dag, opts: &RunOptions) -> Result<Plan, RunError> {
        let on_slurm: Vec<bool> = dag
            .nodes
            .iter()
            .map(|n| match n.spec.executor.as_deref() {
                Some("local") => false,
                Some("slurm") => true,
                _ => opts.slurm.is_some(),
            })
            .collect();
        check_gpus(dag, opts, &on_slurm)?;
        let specs: Vec<_> = dag.nodes.iter().map(|n| n.spec.clone()).collect();
        let matching = |t: &str, what: &str| {
            let m = select(&specs, t);
            if m.is_empty() {
                Err(RunError::Input(format!(
                    "{what}`{t}` matches no stage; see `incrpipe dag FILE` for the stage names"
                )))
            } else {
                Ok(m)
            }
        };
        let wanted = if opts.targets.is_empty() && opts.downstream.is_empty() {
            (0..dag.nodes.len()).collect()
        } else {
            let mut roots = Vec::new();
            for t in &opts.targets {
                roots.extend(matching(t, "")?);
            }
            let mut below = Vec::new();
            for t in &opts.downstream {
                below.extend(matching(t, "--downstream ")?);
            }
            roots.extend(dag.descendants(&below));
            dag.closure(&roots)
        };
        let mut forced = BTreeSet::new();
        for f in &opts.force {
            let m = select(&specs, f);
            if m.is_empty() {
                return Err(RunError::Input(format!("--force `{f}` matches no stage")));
            }
            forced.extend(m);
        }
        Ok(Plan {
            wanted,
            forced,
            on_slurm,
        })
    }
}

/// Every local stage's GPUs must exist here (Slurm allocates its jobs' own).
fn check_gpus(dag: &Dag, opts: &RunOptions, on_slurm: &[bool]) -> Result<(), RunError> {
    let have = opts.gpus.len();
    let Some(n) = dag
        .nodes
        .iter()
        .zip(on_slurm)
        .find(|(n, slurm)| !**slurm && n.spec.gpus as usize > have)
        .map(|(n, _)| n)
    else {
        return Ok(());
    };
    Err(RunError::Input(format!(
        "stage `{}` needs {} GPU(s) but only {} {} available ({}); pass --gpus or lower resources.gpus",
        n.spec.name,
        n.spec.gpus,
        have,
        if have == 1 { "is" } else { "are" },
        if opts.gpus.is_empty() {
            "none detected".to_string()
        } else {
            opts.gpus.join(",")
        }
    )))
}
