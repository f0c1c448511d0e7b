//! Slurm's side of the Slurm executor ([`crate::run`]): each stage that must
//! run becomes one batch job. The runner submits a stage when it becomes ready (no Slurm dependencies, so
//! early cut-off and commit-after-success work as locally), follows the job
//! through the status file it writes into the cache, and commits outputs
//! itself. The cache, the workspace and the incrpipe binary must therefore be
//! on a filesystem that the compute nodes share.
//!
//! - [`script`]: the job script (environment contract, exit status file).
//! - [`files`]: the executor's records in the cache (key -> job id, status).
//! - [`client`]: sbatch, squeue, scancel.
//! - [`follow`]: job states to outcomes.

pub mod client;
pub mod files;
pub mod follow;
pub mod script;

pub use client::{JobResources, SubmitError};
pub use files::{JobFiles, JobRecord, JobStatus};
pub use follow::{Event, Follower, JobEnd};

/// Options of `incrpipe run --executor slurm`.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// More sbatch options, passed as they are (e.g. `--qos=long`).
    pub extra: Vec<String>,
    /// Jobs submitted and not yet ended, at most.
    pub max_jobs: usize,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            partition: None,
            account: None,
            extra: Vec::new(),
            max_jobs: 100,
        }
    }
}

/// Slurm's --time from a runner `timeout`: whole minutes, rounded up.
pub fn minutes(d: std::time::Duration) -> String {
    d.as_secs().div_ceil(60).max(1).to_string()
}
