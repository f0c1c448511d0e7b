//! The Slurm executor: a ready stage becomes one batch job, submitted within
//! the cap on jobs in flight and backing off while the controller is busy.
//! Every job carries its stage key in its comment, so a runner killed between
//! `sbatch` returning and the job record being written still finds the job
//! (see [`Slurm::adoptable`]) instead of running the stage twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::executor::{Ctx, Ended, Executor, Outcome, Ready, Start, outs_present, prepare};
use crate::cache::{Cache, CacheError, Key};
use crate::committer::Source;
use crate::progress::Progress;
use crate::slurm::{
    self as cluster, Event, Follower, JobEnd, JobFiles, JobRecord, SlurmOptions, SubmitError,
    client,
};

/// Tries of sbatch when the controller is busy or unreachable, and the first pause.
const SUBMIT_TRIES: u32 = 5;
const SUBMIT_BACKOFF: Duration = Duration::from_secs(1);
/// How long outs of a finished job may take to appear (a shared filesystem's caches).
const OUTS_GRACE: Duration = Duration::from_secs(10);

pub(super) struct Slurm {
    opts: SlurmOptions,
    files: JobFiles,
    follower: Follower,
    /// Running stages: job id and stage key.
    jobs: BTreeMap<usize, (String, Key)>,
    /// The job of each stage's latest try, kept after it ended for the trace.
    last_job: BTreeMap<usize, String>,
    /// Stages whose submission failed transiently: not before, tries so far.
    backoff: BTreeMap<usize, (Instant, u32)>,
    /// Whether Slurm answered once (checked before the first submission).
    reachable: Option<Result<(), String>>,
    /// This user's jobs of this cache by the stage key in their comment, asked of Slurm once
    /// per run: jobs of earlier runners that may have no record.
    tagged: Option<BTreeMap<String, (String, String)>>,
    /// Names this cache in the jobs' comments: the same pipeline in another checkout has the
    /// same keys, and its jobs are not ours.
    cache_id: String,
}

impl Slurm {
    pub fn new(cache: &Cache, opts: SlurmOptions) -> Result<Slurm, CacheError> {
        let files = JobFiles::new(cache).map_err(|source| CacheError::Io {
            path: cache.root().join("state/jobs"),
            source,
        })?;
        Ok(Slurm {
            opts,
            files,
            follower: Follower::default(),
            jobs: BTreeMap::new(),
            last_job: BTreeMap::new(),
            backoff: BTreeMap::new(),
            reachable: None,
            tagged: None,
            cache_id: client::cache_id(cache.root()),
        })
    }

    /// The job an earlier runner submitted for `key`, if it is still running
    /// (or has ended since and left its status): following it beats running
    /// the stage twice. Found through its record, else its status file, else
    /// the key in its comment (a runner killed before it wrote the record).
    fn adoptable(&mut self, key: &Key, stage: &str) -> Option<String> {
        let Some(rec) = self.files.read_record(key) else {
            return self.unrecorded(key, stage);
        };
        if self.files.read_status(key, &rec.job).is_some() {
            return Some(rec.job);
        }
        match client::states(std::slice::from_ref(&rec.job)) {
            Some(m) => match m.get(&rec.job) {
                Some(st) if !cluster::follow::is_final(st) => Some(rec.job),
                _ => {
                    self.files.forget(key);
                    None
                }
            },
            // Slurm does not answer: follow the job rather than risk a second one.
            None => Some(rec.job),
        }
    }

    /// A job of `key` that has no record: it ended and wrote its status, or Slurm
    /// still knows it by its comment. Adopted jobs get their record.
    fn unrecorded(&mut self, key: &Key, stage: &str) -> Option<String> {
        let job = match self.files.read_any_status(key) {
            // Ended by itself: follow it to its outcome.
            Some(status) if !status.terminated => status.job,
            // Stopped (a cancel, a time limit): submitting afresh resumes from its checkpoint.
            Some(_) => {
                self.files.forget(key);
                return None;
            }
            None => {
                let cache = &self.cache_id;
                let tagged = self
                    .tagged
                    .get_or_insert_with(|| client::tagged_jobs(cache).unwrap_or_default());
                // Taken once: a job adopted here and ended later must not be adopted again.
                match tagged.remove(key.as_str()) {
                    Some((job, state)) if !cluster::follow::is_final(&state) => job,
                    _ => return None,
                }
            }
        };
        let _ = self.files.write_record(&JobRecord {
            job: job.clone(),
            stage: stage.to_string(),
            key: key.to_string(),
        });
        Some(job)
    }

    /// Submits a stage as a Slurm job and records key -> job id in the cache.
    fn submit(&mut self, ctx: Ctx, ready: &Ready) -> Result<String, SubmitError> {
        let reachable = self.reachable.get_or_insert_with(client::reachable);
        if let Err(why) = reachable {
            return Err(SubmitError::Unreachable(why.clone()));
        }
        let node = ctx.node(ready.i);
        let key = &ready.key;
        let prepared = prepare(ctx, ready, None)?;
        let mut env = prepared.env;
        // The job does not inherit the runner's environment reliably: pass what
        // finds programs and libraries, then the stage's own variables.
        for var in ["PATH", "LD_LIBRARY_PATH"] {
            if let Ok(v) = std::env::var(var) {
                env.push((var.to_string(), v));
            }
        }
        env.extend(node.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let status = self.files.status_path(key);
        let _ = std::fs::remove_file(&status);
        let log = ctx.cache.log_path(&node.spec.name);
        // logs/<stage>.log may be a second name of an entry's log (local runs):
        // unlink it so that Slurm writes a new file instead of truncating that one.
        let _ = std::fs::remove_file(&log);
        let script = cluster::script::JobScript {
            stage: &node.spec.name,
            key,
            workspace: &ctx.opts.workspace,
            argv: prepared.argv,
            env,
            cpus: node.spec.cpus.max(1),
            gpus: node.spec.gpus,
            status: &status,
        };
        let script_path = self.files.script(key);
        crate::fsutil::write_atomic(&script_path, script.render().as_bytes())?;
        let res = cluster::JobResources {
            cpus: node.spec.cpus.max(1),
            gpus: node.spec.gpus,
            // A runner `timeout` becomes the job's wall time unless `time` is given.
            time: node
                .spec
                .time
                .clone()
                .or_else(|| node.spec.timeout.map(cluster::minutes)),
            mem: node.spec.mem.clone(),
        };
        let args = client::sbatch_args(
            &self.opts,
            &client::JobLabel {
                stage: &node.spec.name,
                key,
                cache: &self.cache_id,
            },
            &res,
            &log,
            &ctx.opts.workspace,
            &script_path,
        );
        let job = client::submit(&args).map_err(|e| match e {
            SubmitError::Refused(m) if node.spec.gpus > 0 && m.contains("node configuration") => {
                SubmitError::Refused(format!(
                    "{m} (the stage asks for {} GPU(s) with --gres=gpu:{}; does any node of the partition have that many?)",
                    node.spec.gpus, node.spec.gpus
                ))
            }
            e => e,
        })?;
        self.files.write_record(&JobRecord {
            job: job.clone(),
            stage: node.spec.name.clone(),
            key: key.to_string(),
        })?;
        Ok(job)
    }

    /// Stages waiting to be submitted again after a transient sbatch failure.
    pub fn backing_off_stages(&self) -> Vec<usize> {
        self.backoff.keys().copied().collect()
    }

    fn in_backoff(&self, i: usize) -> bool {
        self.backoff.get(&i).is_some_and(|b| Instant::now() < b.0)
    }
}

impl Executor for Slurm {
    fn has_room(&self, _: Ctx, i: usize) -> bool {
        self.jobs.len() < self.opts.max_jobs && !self.in_backoff(i)
    }

    fn start(&mut self, ctx: Ctx, ready: &Ready, progress: &mut dyn Progress) -> Start {
        if !self.has_room(ctx, ready.i) {
            return Start::Later;
        }
        let name = ctx.name(ready.i);
        let started = match self.adoptable(&ready.key, name) {
            Some(job) => {
                progress.note(&format!(
                    "{name}: following Slurm job {job}, submitted by an earlier run"
                ));
                Ok(job)
            }
            None => self.submit(ctx, ready),
        };
        let tries = self.backoff.get(&ready.i).map_or(0, |b| b.1) + 1;
        match started {
            Ok(job) => {
                self.backoff.remove(&ready.i);
                progress.started(name, &[]);
                progress.job_state(name, &job, "SUBMITTED");
                self.jobs.insert(ready.i, (job, ready.key.clone()));
                Start::Started
            }
            Err(SubmitError::Transient(why)) if tries < SUBMIT_TRIES => {
                let pause = SUBMIT_BACKOFF * 2u32.pow(tries - 1);
                progress.note(&format!(
                    "{name}: sbatch failed ({why}); trying again in {pause:?}"
                ));
                self.backoff
                    .insert(ready.i, (Instant::now() + pause, tries));
                Start::Later
            }
            Err(e) => {
                self.backoff.remove(&ready.i);
                Start::Failed(format!("could not be submitted: {e}"))
            }
        }
    }

    fn poll(&mut self, ctx: Ctx, progress: &mut dyn Progress) -> Vec<(usize, Ended)> {
        if self.jobs.is_empty() {
            return Vec::new();
        }
        let pairs: Vec<(String, String)> = self
            .jobs
            .values()
            .map(|(job, key)| (job.clone(), key.to_string()))
            .collect();
        let mut ended = Vec::new();
        for (job, ev) in self.follower.poll(&self.files, &pairs) {
            let Some((&i, _)) = self.jobs.iter().find(|(_, j)| j.0 == job) else {
                continue;
            };
            match ev {
                Event::State(st) => progress.job_state(ctx.name(i), &job, &st),
                Event::End(end) => ended.push((i, Ended::Slurm(end))),
            }
        }
        ended
    }

    fn outcome(&mut self, ctx: Ctx, i: usize, key: &Key, end: Ended) -> Outcome {
        let (job, _) = self
            .jobs
            .remove(&i)
            .expect("a Slurm stage that ended was running");
        let Ended::Slurm(end) = end else {
            unreachable!("a Slurm stage ends as a job")
        };
        self.last_job.insert(i, job.clone());
        self.files.forget(key);
        let node = ctx.node(i);
        let result = match &end {
            // Written on another machine: give the shared filesystem time to show it.
            JobEnd::Exited(0) => outs_present(node, &ctx.opts.workspace, Some(OUTS_GRACE))
                .map(|()| Source::Log(ctx.cache.log_path(&node.spec.name))),
            JobEnd::Exited(c) => Err(format!("exited with status {c} (Slurm job {job})")),
            JobEnd::Resubmit(why) | JobEnd::Failed(why) => Err(why.clone()),
        };
        Outcome {
            result,
            resubmit: matches!(end, JobEnd::Resubmit(_)),
        }
    }

    fn release(&mut self, i: usize, keep: bool) {
        if !keep {
            self.backoff.remove(&i);
        }
    }

    /// Exactly the jobs of this run are cancelled; their records go, so a later
    /// run submits those stages afresh.
    fn stop_all(&mut self) -> Vec<(usize, String)> {
        let jobs: Vec<String> = self.jobs.values().map(|j| j.0.clone()).collect();
        client::cancel(&jobs);
        std::mem::take(&mut self.jobs)
            .into_iter()
            .map(|(i, (job, key))| {
                self.files.forget(&key);
                self.follower.forget(&job);
                (i, format!("was cancelled (Slurm job {job})"))
            })
            .collect()
    }

    fn backing_off(&self) -> bool {
        !self.backoff.is_empty()
    }

    fn placement(&self, ctx: Ctx, i: usize) -> crate::trace::Placement {
        let spec = &ctx.node(i).spec;
        crate::trace::Placement {
            executor: "slurm",
            cpus: spec.cpus,
            // Slurm picks the devices on its node; the trace names how many were asked.
            gpus: (0..spec.gpus).map(|g| format!("gres {}", g + 1)).collect(),
            slurm_job: self.jobs.get(&i).map(|j| j.0.clone()),
        }
    }

    fn usage(&mut self, i: usize) -> crate::trace::UsageOr {
        match self.last_job.get(&i) {
            Some(job) => client::usage(job),
            None => Err("the job never started".into()),
        }
    }
}
