//! The Slurm executor's files in the cache, under `state/jobs/`:
//! ```text
//! <key>.job.json   which job runs the stage of this key (written by the runner)
//! <key>.sh         the job script of the latest submission
//! <key>.status     the job's exit status (written by the job when it ends)
//! ```
//! Keyed by the stage key, like scratch/: a runner that was killed finds the
//! job it submitted and follows it instead of submitting the stage again.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::fsutil::write_atomic;

/// Stage key -> the job that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: String,
    pub stage: String,
    pub key: String,
}

/// What the job script writes when the stage ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    pub exit: i32,
    /// The job got SIGTERM (time limit, preemption, scancel) before the stage ended.
    pub terminated: bool,
}

pub struct JobFiles {
    dir: PathBuf,
}

impl JobFiles {
    pub fn new(cache: &Cache) -> io::Result<JobFiles> {
        let dir = cache.root().join("state").join("jobs");
        std::fs::create_dir_all(&dir)?;
        Ok(JobFiles { dir })
    }

    pub fn script(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.sh"))
    }

    pub fn status_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.status"))
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.job.json"))
    }

    pub fn read_record(&self, key: &str) -> Option<JobRecord> {
        let bytes = std::fs::read(self.record_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write_record(&self, rec: &JobRecord) -> io::Result<()> {
        write_atomic(
            &self.record_path(&rec.key),
            &serde_json::to_vec(rec).expect("record serialises"),
        )
    }

    /// The status of `job`; a status left by an earlier job of the same key is ignored.
    pub fn read_status(&self, key: &str, job: &str) -> Option<JobStatus> {
        let bytes = std::fs::read(self.status_path(key)).ok()?;
        serde_json::from_slice::<JobStatus>(&bytes)
            .ok()
            .filter(|s| s.job == job)
    }

    /// The status of whichever job of `key` ended last and wrote one.
    pub fn read_any_status(&self, key: &str) -> Option<JobStatus> {
        let bytes = std::fs::read(self.status_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every job record (jobs submitted and not yet forgotten).
    pub fn records(&self) -> Vec<JobRecord> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                self.read_record(name.strip_suffix(".job.json")?)
            })
            .collect()
    }

    /// Forgets the job of `key` (it ended, or was cancelled): record, status, script.
    pub fn forget(&self, key: &str) {
        let _ = std::fs::remove_file(self.record_path(key));
        let _ = std::fs::remove_file(self.status_path(key));
        let _ = std::fs::remove_file(self.script(key));
    }
}
