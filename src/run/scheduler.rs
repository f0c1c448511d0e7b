//! The scheduler owns a run's state: each stage's state, the summary, what
//! runs where and what is tried again. It walks the DAG in topological order:
//! a stage whose upstream is done is looked up in the cache (and its outs
//! restored) or handed to its executor; a stage that ended well is committed,
//! and counts as done for its dependants once its entry is in the cache.
//! Every failure goes through [`Scheduler::fail`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::RunError;
use super::executor::{Attempt, Ctx, Ended, Event, Executor, Ready, Start, log_tail};
use super::local::Local;
use super::plan::Plan;
use super::slurm::Slurm;
use super::{RunOptions, RunSummary, interrupted};
use crate::cache::{Cache, CacheError, EntryMeta, Key, Manifest, hash_outs};
use crate::committer::{Committer, Job, Source};
use crate::dag::Dag;
use crate::fsutil::remove_path;
use crate::hash::StatCache;
use crate::keys;
use crate::progress::Progress;
use crate::slurm::JobEnd;
use crate::trace::{self, Recorder};

/// Resubmissions after a time limit, preemption or node failure, at most.
const MAX_RESUBMITS: u32 = 10;
/// The longest the loop sleeps when nothing happens (Slurm is polled, not told).
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
enum State {
    Waiting,
    Running,
    /// Ran well; its entry is being committed (its dependants wait for that).
    Committing {
        meta: Box<EntryMeta>,
        secs: f64,
    },
    Done(Box<EntryMeta>),
    Failed,
    Skipped,
}

struct Running {
    key: Key,
    manifest: Manifest,
    attempt: Attempt,
    started: Instant,
    /// For the trace: when (Unix seconds) and where it started.
    at: f64,
    place: trace::Placement,
}

/// The two executors; a stage's own `executor` picks one ([`Plan::on_slurm`]).
struct Executors {
    local: Local,
    slurm: Option<Slurm>,
}

impl Executors {
    fn of(&mut self, on_slurm: bool) -> &mut dyn Executor {
        match (on_slurm, self.slurm.as_mut()) {
            (true, Some(s)) => s,
            (true, None) => unreachable!("the Slurm executor exists when a stage runs on Slurm"),
            (false, _) => &mut self.local,
        }
    }
}

pub(super) struct Scheduler<'a> {
    ctx: Ctx<'a>,
    plan: Plan,
    progress: &'a mut dyn Progress,
    exec: Executors,
    committer: Committer,
    events: Receiver<Event>,
    stats: StatCache,
    state: Vec<State>,
    summary: RunSummary,
    running: BTreeMap<usize, Running>,
    /// Stages to be tried again, and their next attempt.
    again: BTreeMap<usize, Attempt>,
    /// Ready stages whose key missed the cache and that wait for room: their key
    /// is computed again (just before they start) only once there is room.
    missed: BTreeSet<usize>,
    /// No stage starts any more (a failure without --keep-going, an interrupt).
    stop_new: bool,
    /// The interrupt was acted on (running stages told to stop), even after a failure.
    interrupt_handled: bool,
    trace: Recorder,
}

impl<'a> Scheduler<'a> {
    pub fn new(
        dag: &'a Dag,
        cache: &'a Cache,
        opts: &'a RunOptions,
        plan: Plan,
        progress: &'a mut dyn Progress,
    ) -> Result<Scheduler<'a>, RunError> {
        let (tx, events) = mpsc::channel();
        let slurm = if plan.wanted.iter().any(|&i| plan.on_slurm[i]) {
            Some(Slurm::new(cache, opts.slurm.clone().unwrap_or_default())?)
        } else {
            None
        };
        let local = Local::new(opts.jobs, opts.gpus.clone(), tx.clone());
        let committer =
            Committer::start(cache.clone(), opts.workspace.clone(), move |i, result| {
                let _ = tx.send(Event::Committed { i, result });
            });
        Ok(Scheduler {
            ctx: Ctx { dag, cache, opts },
            summary: RunSummary {
                total: plan.wanted.len(),
                ..Default::default()
            },
            state: vec![State::Waiting; dag.nodes.len()],
            plan,
            progress,
            exec: Executors { local, slurm },
            committer,
            events,
            stats: StatCache::load(&cache.stat_cache_path()),
            running: BTreeMap::new(),
            again: BTreeMap::new(),
            missed: BTreeSet::new(),
            stop_new: false,
            interrupt_handled: false,
            trace: Recorder::new(&opts.pipeline, opts.jobs, &opts.gpus),
        })
    }

    pub fn run(mut self) -> Result<RunSummary, RunError> {
        self.progress.start(self.plan.wanted.len());
        loop {
            if interrupted() && !self.interrupt_handled {
                self.interrupt();
            }
            if !self.stop_new {
                self.start_ready()?;
            }
            if self.over() {
                break;
            }
            self.wait();
        }
        Ok(self.wind_down())
    }

    /// Nothing runs or commits, and nothing will start again.
    fn over(&self) -> bool {
        let committing = self
            .state
            .iter()
            .any(|s| matches!(s, State::Committing { .. }));
        let backing_off = self.exec.slurm.as_ref().is_some_and(|s| s.backing_off());
        self.running.is_empty()
            && !committing
            && (self.stop_new || (self.again.is_empty() && !backing_off))
    }

    /// Starts or resolves every ready stage, in topological order.
    fn start_ready(&mut self) -> Result<(), RunError> {
        let ctx = self.ctx;
        for &i in &ctx.dag.order {
            if self.stop_new {
                break;
            }
            if !self.plan.wanted.contains(&i) || !matches!(self.state[i], State::Waiting) {
                continue;
            }
            let up = &ctx.node(i).upstream;
            if up
                .iter()
                .any(|u| matches!(self.state[*u], State::Failed | State::Skipped))
            {
                self.state[i] = State::Skipped;
                self.summary.skipped.push(ctx.name(i).to_string());
                self.progress.skipped(ctx.name(i));
                self.trace.skipped(ctx.name(i));
                continue;
            }
            if !up.iter().all(|u| matches!(self.state[*u], State::Done(_))) {
                continue;
            }
            let on_slurm = self.plan.on_slurm[i];
            if self.missed.contains(&i) && !self.exec.of(on_slurm).has_room(ctx, i) {
                continue;
            }
            self.resolve(i)?;
        }
        Ok(())
    }

    /// A stage whose upstream is done: from the cache, or started.
    fn resolve(&mut self, i: usize) -> Result<(), RunError> {
        let ctx = self.ctx;
        let state = &self.state;
        let lookup = |u: usize| match &state[u] {
            State::Done(m) => Some((**m).clone()),
            _ => None,
        };
        let manifest =
            match keys::manifest(ctx.node(i), &lookup, &ctx.opts.workspace, &mut self.stats) {
                Ok(m) => m,
                Err(e) => {
                    self.fail(i, &e, "");
                    return Ok(());
                }
            };
        let key = manifest.key();
        let attempt = self.again.get(&i).copied();
        if attempt.is_none()
            && !self.plan.forced.contains(&i)
            && self.take_cached(i, &key, &manifest)?
        {
            return Ok(());
        }
        let ready = Ready {
            i,
            key,
            manifest,
            attempt: attempt.unwrap_or(Attempt::FIRST),
        };
        match self
            .exec
            .of(self.plan.on_slurm[i])
            .start(ctx, &ready, &mut *self.progress)
        {
            Start::Started => {
                self.missed.remove(&i);
                self.again.remove(&i);
                let place = self.exec.of(self.plan.on_slurm[i]).placement(ctx, i);
                self.running.insert(
                    i,
                    Running {
                        key: ready.key,
                        manifest: ready.manifest,
                        attempt: ready.attempt,
                        started: Instant::now(),
                        at: trace::now(),
                        place,
                    },
                );
                self.state[i] = State::Running;
            }
            Start::Later => {
                self.missed.insert(i);
            }
            Start::Failed(why) => {
                self.missed.remove(&i);
                self.again.remove(&i);
                self.fail(i, &why, "");
            }
        }
        Ok(())
    }

    /// Takes a stage from the cache if its entry is there (restoring stale outs).
    fn take_cached(&mut self, i: usize, key: &Key, manifest: &Manifest) -> Result<bool, RunError> {
        let ctx = self.ctx;
        let name = ctx.name(i);
        let Some(meta) = ctx.cache.lookup(key) else {
            return Ok(false);
        };
        let stale = keys::stale_outs(&meta, &ctx.opts.workspace, &mut self.stats);
        match ctx.cache.restore(&meta, &ctx.opts.workspace, Some(&stale)) {
            Ok(()) => {
                ctx.cache.record_last(name, key, manifest)?;
                self.trace.cached(name, &key.to_string(), !stale.is_empty());
                if stale.is_empty() {
                    self.summary.cached.push(name.to_string());
                    self.progress.cached(name);
                } else {
                    self.summary.restored.push(name.to_string());
                    self.progress.restored(name);
                }
                self.state[i] = State::Done(Box::new(meta));
                Ok(true)
            }
            Err(e @ CacheError::Corrupt { .. }) => {
                self.progress.note(&format!("{name}: {e}"));
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits (at most a tick) for stages to end or commits to finish, and handles them.
    fn wait(&mut self) {
        let ctx = self.ctx;
        let mut ended = self.exec.local.poll(ctx, &mut *self.progress);
        if let Some(s) = self.exec.slurm.as_mut() {
            ended.extend(s.poll(ctx, &mut *self.progress));
        }
        let first = if ended.is_empty() {
            self.events.recv_timeout(TICK).ok()
        } else {
            None
        };
        let events: Vec<Event> = first.into_iter().chain(self.events.try_iter()).collect();
        for ev in events {
            match ev {
                Event::Exited {
                    i,
                    attempt,
                    status,
                    usage,
                } => {
                    if self.running.contains_key(&i) && self.exec.local.is_current(i, attempt) {
                        self.exec.local.used(i, usage);
                        ended.push((i, Ended::Local(status)));
                    }
                }
                Event::Committed { i, result } => self.committed(i, result),
            }
        }
        for (i, end) in ended {
            // The rest of an ended local stage's output, before its end is reported.
            if !self.plan.on_slurm[i] {
                self.exec
                    .local
                    .read_logs(ctx, Some(i), true, &mut *self.progress);
            }
            self.ended(i, end);
        }
        // A committer that died (a panic) would leave its stages committing forever.
        if !self.committer.is_alive() {
            let stuck: Vec<usize> = (0..self.state.len())
                .filter(|&i| matches!(self.state[i], State::Committing { .. }))
                .collect();
            for i in stuck {
                self.fail(
                    i,
                    "ran, but its commit never finished: the committer stopped",
                    "",
                );
            }
        }
    }

    /// A running stage ended: committed, tried again, or failed.
    fn ended(&mut self, i: usize, end: Ended) {
        let Some(r) = self.running.remove(&i) else {
            return;
        };
        let ctx = self.ctx;
        let node = ctx.node(i);
        let name = ctx.name(i);
        let secs = r.started.elapsed().as_secs_f64();
        let exit = exit_text(&end);
        let exec = self.exec.of(self.plan.on_slurm[i]);
        let out = exec.outcome(ctx, i, &r.key, end);
        let usage = exec.usage(i);
        self.trace.ended(
            name,
            &r.key.to_string(),
            r.attempt.n,
            r.at,
            &r.place,
            exit,
            usage,
            out.result.is_ok(),
        );
        // Keyed by hashes taken here; copied, fsynced and published in the background.
        let result = out.result.and_then(|source| {
            match hash_outs(&r.manifest.outs, &ctx.opts.workspace, &mut self.stats) {
                Ok(outs) => Ok((source, outs)),
                Err(e) => {
                    if let Source::Entry(tmp) = &source {
                        let _ = remove_path(tmp);
                    }
                    Err(format!("could not be hashed: {e}"))
                }
            }
        });
        let resubmit = out.resubmit && r.attempt.resubmits < MAX_RESUBMITS && !self.stop_new;
        let retry = result.is_err()
            && !self.stop_new
            && (resubmit || r.attempt.failures() <= node.spec.retries);
        exec.release(i, retry);
        match result {
            Ok((from, outs)) => {
                let meta = EntryMeta::new(&r.key, name, &r.manifest, outs, secs);
                self.committer.submit(Job {
                    stage: i,
                    meta: meta.clone(),
                    from,
                });
                self.state[i] = State::Committing {
                    meta: Box::new(meta),
                    secs,
                };
            }
            Err(why) if retry => {
                if resubmit {
                    self.progress.note(&format!("{name}: {why}"));
                } else {
                    self.progress.note(&format!(
                        "{name} {why}; retrying (attempt {} of {})",
                        r.attempt.failures() + 1,
                        node.spec.retries + 1
                    ));
                }
                // Back to the ready stages: started again on the next pass.
                self.again.insert(i, r.attempt.next(resubmit));
                self.state[i] = State::Waiting;
            }
            Err(why) => {
                // A failed stage's outputs never enter the cache.
                let tail = log_tail(&ctx.cache.log_path(name), 20);
                self.fail(i, &why, &tail);
            }
        }
    }

    /// A commit finished: the stage is done, or failed with the cache's error.
    fn committed(&mut self, i: usize, result: Result<(), CacheError>) {
        let State::Committing { meta, secs } = std::mem::replace(&mut self.state[i], State::Failed)
        else {
            unreachable!("only committing stages are committed")
        };
        let name = self.ctx.name(i);
        match result {
            Ok(()) => {
                self.summary.ran.push(name.to_string());
                self.progress.finished(name, secs);
                self.state[i] = State::Done(meta);
            }
            Err(e) => {
                let why = commit_failure(self.ctx.cache, &e);
                self.fail(i, &why, "");
            }
        }
    }

    /// The one failure path: the stage counts as failed and, without
    /// --keep-going, nothing new starts.
    fn fail(&mut self, i: usize, why: &str, log_tail: &str) {
        // Nothing of it may linger: a retry, a wait for room, held slots, a backoff.
        self.again.remove(&i);
        self.missed.remove(&i);
        self.exec.of(self.plan.on_slurm[i]).release(i, false);
        let name = self.ctx.name(i);
        self.progress.failed(name, why, log_tail);
        self.trace.failed(name);
        self.state[i] = State::Failed;
        self.summary.failed.push(name.to_string());
        self.stop_new |= !self.ctx.opts.keep_going;
    }

    fn interrupt(&mut self) {
        self.stop_new = true;
        self.interrupt_handled = true;
        self.progress.note("interrupt: stopping running stages");
        let mut dropped = self.exec.local.stop_all();
        if let Some(s) = self.exec.slurm.as_mut() {
            dropped.extend(s.stop_all());
        }
        for (i, why) in dropped {
            self.running.remove(&i);
            self.fail(i, &why, "");
        }
    }

    fn wind_down(mut self) -> RunSummary {
        self.committer.finish();
        let late: Vec<Event> = self.events.try_iter().collect();
        for ev in late {
            if let Event::Committed { i, result } = ev {
                self.committed(i, result);
            }
        }
        // Stages that failed a try and were to be tried again, or whose submission was
        // backing off, when the run stopped: each gets its line and its count.
        let mut pending: Vec<(usize, &str)> = self
            .again
            .keys()
            .map(|&i| (i, "was not tried again: the run stopped"))
            .collect();
        if let Some(s) = self.exec.slurm.as_ref() {
            pending.extend(s.backing_off_stages().into_iter().map(|i| {
                (
                    i,
                    "was not submitted: the run stopped while sbatch backed off",
                )
            }));
        }
        for (i, why) in pending {
            if matches!(self.state[i], State::Waiting) {
                self.fail(i, why, "");
            }
        }
        self.exec.local.clear_record(self.ctx.cache);
        let _ = self.stats.save(&self.ctx.cache.stat_cache_path());
        if let Err(e) = self.trace.finish(&self.ctx.cache.traces_dir()) {
            self.progress
                .note(&format!("the run's trace could not be written: {e}"));
        }
        self.progress.finish(&self.summary);
        self.summary
    }
}

/// How a try ended, for the trace: `exit N`, `signal N`, or Slurm's reason.
fn exit_text(end: &Ended) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    Some(match end {
        Ended::Local(Ok(st)) => match (st.code(), st.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => return None,
        },
        Ended::Local(Err(e)) => format!("not reaped: {e}"),
        Ended::Slurm(JobEnd::Exited(c)) => format!("exit {c}"),
        Ended::Slurm(JobEnd::Resubmit(why) | JobEnd::Failed(why)) => why.clone(),
    })
}

/// What a failed commit means for the user: where, and what to do.
fn commit_failure(cache: &Cache, e: &CacheError) -> String {
    let full =
        matches!(e, CacheError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC));
    let what = if full {
        "the cache's filesystem is full"
    } else {
        "the cache could not take its entry"
    };
    format!(
        "ran, but could not be committed to the cache at {}: {what} ({e}). Its outs are still in \
         the workspace and nothing that needs them ran; free space there or choose another cache \
         (--cache-dir, $INCRPIPE_CACHE), then run again",
        cache.root().display()
    )
}
