//! Following submitted jobs until they end. The status file the job writes is
//! the truth about how the stage ended; squeue tells the states on the way
//! (for the display) and what happened to a job that ended without writing
//! one (time limit, preemption, node failure, scancel by someone else).
//! Plain accounting (sacct) is not used: it needs slurmdbd, and scontrol and
//! squeue forget finished jobs after MinJobAge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::client;
use super::files::{JobFiles, JobStatus};

/// How a job ended, as far as the runner is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// The stage ran to its end with this exit status.
    Exited(i32),
    /// Slurm stopped it (time limit, preemption, node failure): submit again,
    /// the stage resumes from its checkpoint in INCRPIPE_SCRATCH.
    Resubmit(String),
    /// It will not succeed by itself: a failure of the stage.
    Failed(String),
}

/// What `poll` reports for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    State(String),
    End(JobEnd),
}

/// States after which a job never runs again.
pub fn is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "CANCELLED"
            | "FAILED"
            | "TIMEOUT"
            | "PREEMPTED"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "OUT_OF_MEMORY"
            | "SPECIAL_EXIT"
            | "REVOKED"
    )
}

/// Ends after which a resubmission can make progress.
fn resumable(state: &str) -> bool {
    matches!(state, "TIMEOUT" | "PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL")
}

/// How a job ended, given its status file, its Slurm state (`None`: Slurm
/// does not know it) and whether the grace for late evidence is over; `None`
/// while it is too early to say.
pub fn decide(
    job: &str,
    status: Option<&JobStatus>,
    state: Option<&str>,
    waited_out: bool,
) -> Option<JobEnd> {
    if let Some(s) = status
        && !s.terminated
    {
        return Some(JobEnd::Exited(s.exit));
    }
    // Before the grace is over only a terminated job that Slurm says has
    // ended can be judged; otherwise its status file may still arrive.
    let judged_early = status.is_some() && state.is_some_and(is_final);
    if !(waited_out || judged_early) {
        return None;
    }
    Some(match (status, state) {
        (_, Some(st)) if resumable(st) => JobEnd::Resubmit(format!(
            "job {job} ended with {st}; submitting it again to resume from its checkpoint"
        )),
        (_, Some("CANCELLED")) => JobEnd::Failed(format!(
            "job {job} was cancelled outside incrpipe (scancel)"
        )),
        (_, Some("OUT_OF_MEMORY")) => JobEnd::Failed(format!(
            "job {job} ran out of memory; raise the stage's `mem`"
        )),
        // Terminated, and Slurm no longer says why: most likely a time limit
        // or preemption, and resuming from the checkpoint is safe either way.
        (Some(_), None) => JobEnd::Resubmit(format!(
            "job {job} was terminated; submitting it again to resume from its checkpoint"
        )),
        (Some(s), Some(_)) => JobEnd::Exited(s.exit),
        (None, Some(st)) => JobEnd::Failed(format!(
            "job {job} ended ({st}) without writing its status into the cache; \
             is the cache on a filesystem that the compute nodes share?"
        )),
        (None, None) => JobEnd::Failed(format!(
            "Slurm no longer knows job {job} and it left no status in the cache; \
             is the cache on a filesystem that the compute nodes share?"
        )),
    })
}

/// Follows the runner's jobs with few Slurm calls: status files are checked
/// often (a stat each), squeue once every few seconds for all jobs at once.
pub struct Follower {
    files_every: Duration,
    squeue_every: Duration,
    /// How long a job may be gone from Slurm, or be terminated, before its
    /// status file must be there (a shared filesystem may show it late).
    grace: Duration,
    last_files: Option<Instant>,
    last_squeue: Option<Instant>,
    states: BTreeMap<String, String>,
    /// Whether the latest squeue answered; without it nothing is concluded
    /// from a job's absence.
    squeue_ok: bool,
    /// When each job was first seen ended without a (clean) status.
    ended_since: BTreeMap<String, Instant>,
    /// States already reported.
    shown: BTreeMap<String, String>,
}

impl Default for Follower {
    fn default() -> Self {
        Follower {
            files_every: Duration::from_millis(200),
            squeue_every: Duration::from_secs(2),
            grace: Duration::from_secs(10),
            last_files: None,
            last_squeue: None,
            states: BTreeMap::new(),
            squeue_ok: false,
            ended_since: BTreeMap::new(),
            shown: BTreeMap::new(),
        }
    }
}

impl Follower {
    /// Events of `jobs` (job id, stage key) since the last call.
    pub fn poll(&mut self, files: &JobFiles, jobs: &[(String, String)]) -> Vec<(String, Event)> {
        let now = Instant::now();
        if self.last_files.is_some_and(|t| now - t < self.files_every) {
            return Vec::new();
        }
        self.last_files = Some(now);
        if self
            .last_squeue
            .is_none_or(|t| now - t >= self.squeue_every)
        {
            self.last_squeue = Some(now);
            let ids: Vec<String> = jobs.iter().map(|(j, _)| j.clone()).collect();
            match client::states(&ids) {
                Some(m) => {
                    self.states = m;
                    self.squeue_ok = true;
                }
                None => self.squeue_ok = false,
            }
        }
        let mut events = Vec::new();
        for (job, key) in jobs {
            let status = files.read_status(key, job);
            let state = self.states.get(job).map(String::as_str);
            if let Some(st) = state
                && self.shown.get(job).map(String::as_str) != Some(st)
                && !is_final(st)
            {
                self.shown.insert(job.clone(), st.to_string());
                events.push((job.clone(), Event::State(st.to_string())));
            }
            let clean = status.as_ref().is_some_and(|s| !s.terminated);
            // Nothing is concluded from Slurm's silence unless squeue answered.
            let ended = status.is_some() || (self.squeue_ok && state.is_none_or(is_final));
            if !clean && ended {
                self.ended_since.entry(job.clone()).or_insert(now);
            }
            let waited_out = self
                .ended_since
                .get(job)
                .is_some_and(|t| now - *t > self.grace);
            if !self.squeue_ok && status.is_none() {
                continue;
            }
            if let Some(end) = decide(job, status.as_ref(), state, waited_out && ended) {
                self.forget(job);
                events.push((job.clone(), Event::End(end)));
            }
        }
        events
    }

    pub fn forget(&mut self, job: &str) {
        self.ended_since.remove(job);
        self.shown.remove(job);
        self.states.remove(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(exit: i32, terminated: bool) -> JobStatus {
        JobStatus {
            job: "7".into(),
            exit,
            terminated,
        }
    }

    #[test]
    fn the_status_file_is_the_truth() {
        assert_eq!(
            decide("7", Some(&st(3, false)), Some("RUNNING"), false),
            Some(JobEnd::Exited(3))
        );
        assert_eq!(
            decide("7", Some(&st(0, false)), None, false),
            Some(JobEnd::Exited(0))
        );
    }

    #[test]
    fn time_limits_and_preemption_resubmit() {
        for s in ["TIMEOUT", "PREEMPTED", "NODE_FAIL"] {
            assert!(matches!(
                decide("7", None, Some(s), true),
                Some(JobEnd::Resubmit(_))
            ));
            assert!(matches!(
                decide("7", Some(&st(143, true)), Some(s), true),
                Some(JobEnd::Resubmit(_))
            ));
        }
        assert!(matches!(
            decide("7", None, Some("CANCELLED"), true),
            Some(JobEnd::Failed(_))
        ));
    }

    #[test]
    fn waits_for_late_evidence() {
        assert_eq!(decide("7", None, Some("RUNNING"), false), None);
        assert_eq!(decide("7", None, Some("COMPLETED"), false), None);
        assert_eq!(decide("7", None, None, false), None);
        assert!(matches!(
            decide("7", None, None, true),
            Some(JobEnd::Failed(m)) if m.contains("nodes share")
        ));
    }
}
