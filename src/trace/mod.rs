//! A run's trace: for each stage of a run, when it started and ended, what it used (wall
//! and CPU seconds, peak RSS), how it ended, which try it was, whether it ran or came from
//! the cache, and where it ran (CPUs and GPUs held, executor, Slurm job). The scheduler
//! records it ([`Recorder`]); it is kept in `state/traces/` (the last [`KEEP`] runs) and
//! printed by `incrpipe trace` ([`table`]) or drawn as a timeline ([`timeline`]).

pub mod table;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_replace;

/// Runs whose traces are kept; older ones go when a run ends and in `gc`.
pub const KEEP: usize = 20;

/// Where a cache keeps its runs' traces.
pub fn dir(cache_root: &Path) -> PathBuf {
    cache_root.join("state/traces")
}

/// How a stage's row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Ran and was committed.
    Ran,
    /// Its entry was in the cache and its outs were in place.
    Cached,
    /// Its entry was in the cache and its outs were restored from it.
    Restored,
    /// This try failed (a later row may be its retry).
    Failed,
    /// Not run: something upstream failed.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Cached => "cached",
            Outcome::Restored => "restored",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One stage's try (or its cache hit) in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTrace {
    pub stage: String,
    /// The first 12 hex digits of its key (none for a skipped stage).
    pub key: Option<String>,
    pub outcome: Outcome,
    /// 1 for the first try.
    pub attempt: u32,
    /// Unix seconds; for a cache hit both are the moment it was taken.
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub wall_s: Option<f64>,
    /// User + system seconds of the stage's process and what it waited for.
    pub cpu_s: Option<f64>,
    pub peak_rss_kb: Option<u64>,
    /// Why `cpu_s` and `peak_rss_kb` are absent where the stage ran.
    pub usage_unavailable: Option<String>,
    /// `exit 0`, `exit 3`, `signal 9`, or Slurm's reason.
    pub exit: Option<String>,
    /// `local` or `slurm` (none for a cache hit or a skipped stage).
    pub executor: Option<String>,
    pub cpus: u32,
    pub gpus: Vec<String>,
    pub slurm_job: Option<String>,
}

/// One run of `incrpipe run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTrace {
    /// `<unix ms>-<pid>`: sorts by start.
    pub id: String,
    pub pipeline: String,
    pub start: f64,
    pub end: f64,
    /// `-j`.
    pub jobs: u32,
    /// The GPUs the run could hand out.
    pub gpus: Vec<String>,
    pub stages: Vec<StageTrace>,
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Where a stage ran and what it held, from its executor.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub executor: &'static str,
    pub cpus: u32,
    pub gpus: Vec<String>,
    pub slurm_job: Option<String>,
}

/// What an ended try used, or why that is not known.
pub type UsageOr = Result<crate::process::Usage, String>;

/// Builds a run's trace as the scheduler goes.
pub struct Recorder {
    run: RunTrace,
}

impl Recorder {
    pub fn new(pipeline: &Path, jobs: u32, gpus: &[String]) -> Recorder {
        let start = now();
        Recorder {
            run: RunTrace {
                id: format!("{:013}-{}", (start * 1e3) as u64, std::process::id()),
                pipeline: pipeline.display().to_string(),
                start,
                end: start,
                jobs,
                gpus: gpus.to_vec(),
                stages: Vec::new(),
            },
        }
    }

    pub fn cached(&mut self, stage: &str, key: &str, restored: bool) {
        let t = now();
        self.run.stages.push(StageTrace {
            start: Some(t),
            end: Some(t),
            wall_s: Some(0.0),
            outcome: if restored {
                Outcome::Restored
            } else {
                Outcome::Cached
            },
            ..row(stage, Some(key), 1)
        });
    }

    pub fn skipped(&mut self, stage: &str) {
        self.run.stages.push(StageTrace {
            outcome: Outcome::Skipped,
            ..row(stage, None, 1)
        });
    }

    /// A try that ended: `ran` (it will be committed) or failed, with its exit and usage.
    #[allow(clippy::too_many_arguments)]
    pub fn ended(
        &mut self,
        stage: &str,
        key: &str,
        attempt: u32,
        start: f64,
        place: &Placement,
        exit: Option<String>,
        usage: UsageOr,
        ok: bool,
    ) {
        let end = now();
        let (cpu_s, peak_rss_kb, usage_unavailable) = match usage {
            Ok(u) => (Some(u.cpu_s), Some(u.max_rss_kb), None),
            Err(why) => (None, None, Some(why)),
        };
        self.run.stages.push(StageTrace {
            outcome: if ok { Outcome::Ran } else { Outcome::Failed },
            start: Some(start),
            end: Some(end),
            wall_s: Some(end - start),
            cpu_s,
            peak_rss_kb,
            usage_unavailable,
            exit,
            executor: Some(place.executor.to_string()),
            cpus: place.cpus,
            gpus: place.gpus.clone(),
            slurm_job: place.slurm_job.clone(),
            ..row(stage, Some(key), attempt)
        });
    }

    /// A try recorded as ran whose commit failed, or a stage that failed before it ran.
    pub fn failed(&mut self, stage: &str) {
        match self.run.stages.iter_mut().rev().find(|r| r.stage == stage) {
            Some(r) if r.outcome == Outcome::Ran => r.outcome = Outcome::Failed,
            Some(r) if r.outcome == Outcome::Failed => {}
            _ => self.run.stages.push(StageTrace {
                outcome: Outcome::Failed,
                ..row(stage, None, 1)
            }),
        }
    }

    /// Writes the trace into `dir` and drops all but the last [`KEEP`] there.
    pub fn finish(&mut self, dir: &Path) -> std::io::Result<PathBuf> {
        self.run.end = now();
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.run.id));
        // Bookkeeping: a crash may lose it but never half-write it, so no fsync.
        let body = serde_json::to_vec(&self.run).map_err(std::io::Error::other)?;
        write_replace(&path, &body)?;
        prune(dir, KEEP)?;
        Ok(path)
    }
}

fn row(stage: &str, key: Option<&str>, attempt: u32) -> StageTrace {
    StageTrace {
        stage: stage.to_string(),
        key: key.map(|k| k.chars().take(12).collect()),
        outcome: Outcome::Ran,
        attempt,
        start: None,
        end: None,
        wall_s: None,
        cpu_s: None,
        peak_rss_kb: None,
        usage_unavailable: None,
        exit: None,
        executor: None,
        cpus: 0,
        gpus: Vec::new(),
        slurm_job: None,
    }
}

/// The trace files in `dir`, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    v.sort();
    Ok(v)
}

/// Removes all but the newest `keep` traces in `dir`; returns how many went.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<usize> {
    let all = list(dir)?;
    let old = all.len().saturating_sub(keep);
    for p in &all[..old] {
        std::fs::remove_file(p)?;
    }
    Ok(old)
}

/// Why a trace cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("no run has been traced in {0} yet: traces are written when `incrpipe run` ends")]
    None(PathBuf),
    #[error(
        "no traced run {0:?} in {1}: give a run's id or its number counted back from the \
         latest (1 = latest; `incrpipe trace --list` lists them)"
    )]
    NoSuchRun(String, PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: not a trace ({1}); remove the file")]
    Bad(PathBuf, serde_json::Error),
}

/// Loads the run `which` names (an id, a unique id prefix, or N = the Nth latest; none:
/// the latest) from `dir`.
pub fn load(dir: &Path, which: Option<&str>) -> Result<RunTrace, TraceError> {
    let all = list(dir).map_err(|e| TraceError::Io(dir.to_path_buf(), e))?;
    if all.is_empty() {
        return Err(TraceError::None(dir.to_path_buf()));
    }
    let stem = |p: &PathBuf| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let path = match which {
        None => all.last().cloned(),
        Some(w) => match w.parse::<usize>() {
            Ok(n) if n >= 1 && n <= all.len() && w.len() < 6 => Some(all[all.len() - n].clone()),
            _ => {
                let hits: Vec<&PathBuf> = all.iter().filter(|p| stem(p).starts_with(w)).collect();
                (hits.len() == 1).then(|| hits[0].clone())
            }
        },
    };
    let path = path.ok_or_else(|| {
        TraceError::NoSuchRun(which.unwrap_or_default().to_string(), dir.to_path_buf())
    })?;
    read(&path)
}

/// One trace file.
pub fn read(path: &Path) -> Result<RunTrace, TraceError> {
    let bytes = std::fs::read(path).map_err(|e| TraceError::Io(path.to_path_buf(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| TraceError::Bad(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_runs_and_finds_them_by_number_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for n in 0..(KEEP + 3) {
            let mut r = Recorder::new(Path::new("p.toml"), 1, &[]);
            r.run.id = format!("{:013}-1", 1000 + n);
            r.cached("a", "0123456789abcdef", false);
            ids.push(r.run.id.clone());
            r.finish(dir.path()).unwrap();
        }
        let all = list(dir.path()).unwrap();
        assert_eq!(all.len(), KEEP);
        assert_eq!(load(dir.path(), None).unwrap().id, ids[KEEP + 2]);
        assert_eq!(load(dir.path(), Some("2")).unwrap().id, ids[KEEP + 1]);
        assert_eq!(load(dir.path(), Some(&ids[5])).unwrap().id, ids[5]);
        let t = load(dir.path(), None).unwrap();
        assert_eq!(t.stages[0].key.as_deref(), Some("0123456789ab"));
        assert_eq!(t.stages[0].outcome, Outcome::Cached);
        let e = load(dir.path(), Some(&ids[0])).unwrap_err().to_string();
        assert!(e.contains("trace --list"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(load(empty.path(), None), Err(TraceError::None(_))));
    }
}
