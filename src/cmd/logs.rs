//! `incrpipe logs [-f] STAGE`: a stage's latest log; with `-f`, followed while the stage
//! runs: under a local runner (which records its process groups in the cache) or as a Slurm
//! job (recorded in `state/jobs/`; its log is written on the shared cache by `--output`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::time::Duration;

use incrpipe::cache::Cache;
use incrpipe::process;
use incrpipe::slurm::follow::is_final;
use incrpipe::slurm::{JobFiles, client};

use super::{Env, fail};

/// How often a followed log is read again.
const POLL: Duration = Duration::from_millis(200);
/// Polls (1 s) that a stage's record may lag behind its first output.
const START_GRACE_POLLS: usize = 5;
/// Slurm is asked about a followed job every this many polls (2 s).
const SLURM_EVERY: usize = 10;

pub fn run(env: &Env, stage: &str, follow: bool) -> Result<(), ExitCode> {
    let path = env
        .cache_dir
        .join("logs")
        .join(format!("{}.log", incrpipe::cache::sanitize(stage)));
    let no_log = || {
        fail(
            2,
            &format!(
                "no log for stage `{stage}` in {} (has it run with this cache?)",
                env.cache_dir.display()
            ),
        )
    };
    let mut file = File::open(&path).map_err(|_| no_log())?;
    let mut out = std::io::stdout().lock();
    copy_new(&mut file, &mut out);
    if !follow {
        return Ok(());
    }
    let cache = env.open_cache()?;
    let mut ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
    // The runner records a stage just after starting it: give a stage that has only
    // begun a moment to appear before concluding that it has ended.
    let mut running = Running::new(cache, stage);
    for _ in 0..START_GRACE_POLLS {
        if running.check() {
            break;
        }
        std::thread::sleep(POLL);
    }
    loop {
        // Checked before the last read, so that lines written just before the stage
        // ended are still printed.
        let running = running.check();
        copy_new(&mut file, &mut out);
        // A new attempt (a retry, a rerun) writes a new log under the same name.
        if let Ok(m) = std::fs::metadata(&path)
            && m.ino() != ino
            && let Ok(f) = File::open(&path)
        {
            ino = m.ino();
            file = f;
            let _ = writeln!(out, "--- {stage}: a new attempt's log ---");
            continue;
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Copies what was appended to `file` since the last call; stops quietly when the
/// reader of stdout has gone.
fn copy_new(file: &mut File, out: &mut impl Write) {
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
}

/// Whether the followed stage still runs, asked at every poll.
struct Running<'a> {
    cache: Cache,
    stage: &'a str,
    polls: usize,
    /// Slurm's last answer: the stage's job had not ended.
    job_alive: bool,
}

impl<'a> Running<'a> {
    fn new(cache: Cache, stage: &'a str) -> Self {
        Running {
            cache,
            stage,
            polls: 0,
            job_alive: false,
        }
    }

    fn check(&mut self) -> bool {
        self.polls += 1;
        if self.local() {
            return true;
        }
        // squeue is asked less often than the log is read; between its answers, a status
        // file written by the job says it ended.
        self.job_alive = if self.polls % SLURM_EVERY == 1 || !self.job_alive {
            self.slurm_job()
        } else {
            self.job_without_status().is_some()
        };
        self.job_alive
    }

    /// A local runner's record lists the stage with its process still the one it started.
    fn local(&self) -> bool {
        self.cache
            .read_running()
            .iter()
            .any(|r| r.stage == self.stage && process::start_ticks(r.pgid) == Some(r.start_ticks))
    }

    /// The stage's recorded job that has not written its exit status.
    fn job_without_status(&self) -> Option<String> {
        let files = JobFiles::new(&self.cache).ok()?;
        files
            .records()
            .into_iter()
            .find(|r| r.stage == self.stage && files.read_status(&r.key, &r.job).is_none())
            .map(|r| r.job)
    }

    /// That job, and Slurm does not call it ended (a job killed by a time limit writes
    /// no status; a forgotten job has ended too).
    fn slurm_job(&self) -> bool {
        let Some(job) = self.job_without_status() else {
            return false;
        };
        client::states(std::slice::from_ref(&job))
            .and_then(|m| m.get(&job).cloned())
            .is_some_and(|state| !is_final(&state))
    }
}
