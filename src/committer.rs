//! Committing finished stages to the cache on a background thread.
//!
//! An entry is published only once its files and directory are fsynced. The
//! committer copies the outs into the entry, checks that the copies hash the
//! same, fsyncs and renames ([`Cache::commit`]) while the scheduler goes on with
//! other stages; it reports each commit's result, and a stage's dependants start
//! only once its entry is in the cache (a full disk must not leave them running
//! on outs the cache never got).
//!
//! A runner killed before a commit loses only that entry, never trusts a wrong
//! one: the stage reruns next time, and early cut-off keeps its dependants cached.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::cache::{Cache, CacheError, EntryMeta};

/// One entry to commit, described by `meta`. `stage` is the caller's index of the stage.
pub struct Job {
    pub stage: usize,
    pub meta: EntryMeta,
    pub from: Source,
}

/// Where the entry's log comes from.
pub enum Source {
    /// A local stage's temporary entry, already holding its log and params file.
    Entry(PathBuf),
    /// A Slurm job's log (written by Slurm on the shared filesystem), copied in.
    Log(PathBuf),
}

pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// `done` is called on the committer's thread with each job's stage and result, in order.
    pub fn start(
        cache: Cache,
        workspace: PathBuf,
        mut done: impl FnMut(usize, Result<(), CacheError>) + Send + 'static,
    ) -> Committer {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            for job in inbox {
                // The stage's `state/last` record (read by `status`) follows its entry (and is off the
                // scheduler's path too: it is a new file on a cold run).
                let m = &job.meta;
                let tmp = match job.from {
                    Source::Entry(tmp) => Ok(tmp),
                    Source::Log(log) => cache.temp_dir(&m.key).inspect(|tmp| {
                        let _ = std::fs::copy(log, tmp.join("log"));
                    }),
                };
                let result = tmp
                    .and_then(|tmp| cache.commit(&tmp, m, &workspace))
                    .and_then(|()| cache.record_last(&m.stage, &m.key, &m.manifest));
                done(job.stage, result);
            }
        });
        Committer {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    pub fn submit(&self, job: Job) {
        self.jobs
            .as_ref()
            .expect("open until finish")
            .send(job)
            .expect("the committer thread lives until finish");
    }

    /// Whether the committer's thread still runs (it ends only at [`Committer::finish`],
    /// or by a panic).
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits until every submitted entry is committed.
    pub fn finish(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("the committer thread does not panic");
        }
    }
}

impl Drop for Committer {
    /// Pending entries are still committed when the scheduler returns early.
    fn drop(&mut self) {
        self.finish();
    }
}
