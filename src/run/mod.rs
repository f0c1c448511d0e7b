//! Running a pipeline. [`plan`] checks what the run is asked for before
//! anything starts; the [`scheduler`] owns the run's state and walks the DAG:
//! ready stages are looked up in the cache (and their outs restored) or handed
//! to an executor ([`local`] child processes within the CPU slots and GPU pool,
//! or [`slurm`] jobs within the cap on jobs in flight); finished ones are
//! committed to the cache before their dependants start.

mod executor;
mod local;
mod output;
mod plan;
mod scheduler;
mod slurm;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{Cache, CacheError};
use crate::dag::Dag;
use crate::progress::Progress;
pub use crate::progress::RunSummary;
use crate::slurm::SlurmOptions;

pub struct RunOptions {
    pub workspace: PathBuf,
    /// The pipeline file, as the trace names it.
    pub pipeline: PathBuf,
    pub jobs: u32,
    pub gpus: Vec<String>,
    pub keep_going: bool,
    /// Selectors of stages to run regardless of the cache.
    pub force: Vec<String>,
    /// Selectors of stages to run (with what they need); empty = all.
    pub targets: Vec<String>,
    /// Stages to run with everything that depends on them (`--downstream`).
    pub downstream: Vec<String>,
    /// The binary that runs built-in kinds (`EXE __stage KIND`).
    pub stage_exe: PathBuf,
    /// Wait for a cache held by another runner instead of failing.
    pub wait_for_lock: bool,
    /// `Some`: stages run as Slurm jobs unless their `executor` is "local".
    pub slurm: Option<SlurmOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad input found before anything ran.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{} stage(s) failed: {}", .0.failed.len(), .0.failed.join(", "))]
    Failed(RunSummary),
    #[error("interrupted; running stages were stopped")]
    Interrupted(RunSummary),
}

/// Runs what `dag` needs that the cache does not hold.
pub fn run(
    dag: &Dag,
    cache: &Cache,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<RunSummary, RunError> {
    let plan = plan::Plan::new(dag, opts)?;
    let _lock = cache.lock(opts.wait_for_lock, || {
        progress.note("waiting for another incrpipe run that holds the cache lock...")
    })?;
    local::end_orphans(cache, progress);
    cache.clean_tmp();
    let summary = scheduler::Scheduler::new(dag, cache, opts, plan, progress)?.run()?;
    if INTERRUPTED.swap(false, Ordering::SeqCst) {
        return Err(RunError::Interrupted(summary));
    }
    if !summary.failed.is_empty() {
        return Err(RunError::Failed(summary));
    }
    Ok(summary)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Ctrl-C and SIGTERM stop the run cleanly instead of killing the runner.
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
