//! The interface both executors implement, and what starting a stage means on
//! either: its outs cleared, its params file and scratch directory written,
//! the command line and the stage protocol's environment ([`prepare`]).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::RunOptions;
use crate::cache::{Cache, CacheError, Key, Manifest};
use crate::committer::Source;
use crate::dag::{Dag, Node};
use crate::fsutil::remove_path;
use crate::progress::Progress;
use crate::protocol;
use crate::slurm::JobEnd;
use crate::spec::Action;

/// What every part of a run reads.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub dag: &'a Dag,
    pub cache: &'a Cache,
    pub opts: &'a RunOptions,
}

impl Ctx<'_> {
    pub fn node(&self, i: usize) -> &Node {
        &self.dag.nodes[i]
    }

    pub fn name(&self, i: usize) -> &str {
        &self.dag.nodes[i].spec.name
    }
}

/// Which try of a stage this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attempt {
    /// 1 for the first run.
    pub n: u32,
    /// Of the tries, how many were resubmissions after Slurm stopped the job.
    pub resubmits: u32,
}

impl Attempt {
    pub const FIRST: Attempt = Attempt { n: 1, resubmits: 0 };

    /// The try after this one; a resubmission does not count against `retries`.
    pub fn next(self, resubmit: bool) -> Attempt {
        Attempt {
            n: self.n + 1,
            resubmits: self.resubmits + u32::from(resubmit),
        }
    }

    /// Tries that counted against the stage's `retries`.
    pub fn failures(self) -> u32 {
        self.n - self.resubmits
    }
}

/// A stage whose key missed the cache: what an executor starts.
pub(super) struct Ready {
    pub i: usize,
    pub key: Key,
    pub manifest: Manifest,
    pub attempt: Attempt,
}

/// What an executor said to a ready stage.
pub(super) enum Start {
    Started,
    /// No room now (slots, GPUs, jobs in flight, a submission backing off): ask again later.
    Later,
    /// It cannot start: a failure of the stage.
    Failed(String),
}

/// How a running stage ended, as its executor saw it.
pub(super) enum Ended {
    Local(io::Result<ExitStatus>),
    Slurm(JobEnd),
}

/// What the scheduler's loop waits on: a local stage's process ended, or a commit did.
pub(super) enum Event {
    Exited {
        i: usize,
        attempt: u32,
        status: io::Result<ExitStatus>,
        /// What the process used (`wait4`), when it was reaped.
        usage: Option<crate::process::Usage>,
    },
    Committed {
        i: usize,
        result: Result<(), CacheError>,
    },
}

/// An ended stage, judged.
pub(super) struct Outcome {
    /// Ok: where its entry's log comes from; Err: why it failed.
    pub result: Result<Source, String>,
    /// Slurm stopped it (time limit, preemption): a resubmission may finish it.
    pub resubmit: bool,
}

pub(super) trait Executor {
    /// Whether stage `i` could start now; checked before its key is computed again.
    fn has_room(&self, ctx: Ctx, i: usize) -> bool;
    /// Starts a ready stage, or says it must wait or cannot start.
    fn start(&mut self, ctx: Ctx, ready: &Ready, progress: &mut dyn Progress) -> Start;
    /// Looks after the running stages (timeouts, job states) and returns those that
    /// ended. Never blocks.
    fn poll(&mut self, ctx: Ctx, progress: &mut dyn Progress) -> Vec<(usize, Ended)>;
    /// Judges how stage `i` ended. Its resources stay held until [`Executor::release`].
    fn outcome(&mut self, ctx: Ctx, i: usize, key: &Key, end: Ended) -> Outcome;
    /// Gives back what stage `i` held; `keep` holds it for the stage's next try.
    fn release(&mut self, i: usize, keep: bool);
    /// Stops every running stage (an interrupt). Returns the stages dropped at once,
    /// with why; the others end through [`Executor::poll`] or their exit events.
    fn stop_all(&mut self) -> Vec<(usize, String)>;
    /// Stages it was asked to start and will try again by itself later.
    fn backing_off(&self) -> bool;
    /// Where running stage `i` runs and what it holds, for the trace.
    fn placement(&self, ctx: Ctx, i: usize) -> crate::trace::Placement;
    /// What stage `i`'s try used, or why that is not known (asked once it ended).
    fn usage(&mut self, i: usize) -> crate::trace::UsageOr;
}

/// A stage ready to start, on either executor.
pub(super) struct Prepared {
    pub argv: Vec<String>,
    /// The stage protocol's variables ([`protocol::Handoff`]).
    pub env: Vec<(String, String)>,
}

/// Clears a stage's outs and writes its params file and scratch directory.
/// The params file goes into `entry_tmp` (a local stage's entry being built)
/// if given, else into state/ (a Slurm job, which may outlive this runner).
pub(super) fn prepare(ctx: Ctx, ready: &Ready, entry_tmp: Option<&Path>) -> io::Result<Prepared> {
    let node = ctx.node(ready.i);
    let workspace = &ctx.opts.workspace;
    // A stage starts from a clean slate: its declared outs are removed first.
    for o in &node.outs {
        remove_path(&o.resolve(workspace))?;
        if let Some(parent) = o.resolve(workspace).parent() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let scratch = ctx.cache.scratch_dir(&ready.key);
    std::fs::create_dir_all(&scratch)?;
    let params_bytes = protocol::params_bytes(&protocol::ParamsFile {
        stage: node.spec.name.clone(),
        params: ready.manifest.params.clone(),
        matrix: ready.manifest.matrix.clone(),
        deps: node
            .deps
            .iter()
            .map(crate::paths::WPath::key_form)
            .collect(),
        outs: ready.manifest.outs.clone(),
    });
    let params_path = match entry_tmp {
        Some(tmp) => {
            // A fresh directory of this attempt: a plain write, no temporary name.
            let p = tmp.join("params.json");
            std::fs::write(&p, &params_bytes)?;
            p
        }
        None => {
            let p: PathBuf = ctx
                .cache
                .root()
                .join("state")
                .join(format!("params-{}.json", ready.key));
            crate::fsutil::write_replace(&p, &params_bytes)?;
            p
        }
    };
    let argv = match &node.spec.action {
        Action::Cmd(text) => vec!["bash".into(), "-c".into(), text.clone()],
        Action::Builtin { kind, .. } => vec![
            ctx.opts.stage_exe.to_string_lossy().into_owned(),
            "__stage".into(),
            kind.clone(),
        ],
    };
    let env = protocol::Handoff {
        stage: node.spec.name.clone(),
        key: ready.key.to_string(),
        params_path,
        scratch,
        attempt: ready.attempt.n,
    }
    .env();
    Ok(Prepared { argv, env })
}

/// Whether a stage that exited 0 left all its outs, waiting up to `grace` for them.
pub(super) fn outs_present(
    node: &Node,
    workspace: &Path,
    grace: Option<Duration>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match node.outs.iter().find(|o| !o.resolve(workspace).exists()) {
            None => return Ok(()),
            Some(o) if grace.is_none_or(|g| start.elapsed() > g) => {
                return Err(format!(
                    "exited 0 but did not produce its out `{}`",
                    o.key_form()
                ));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The last `n` lines of a log.
pub(super) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
