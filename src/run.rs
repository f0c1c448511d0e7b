//! Running a pipeline: the scheduler loop. Ready stages are looked up in the
//! cache (and their outs restored) or started: as child processes within the
//! CPU slots and the GPU pool, or as Slurm jobs (see [`crate::slurm`]) within
//! the cap on jobs in flight. Finished ones are committed to the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, CacheError, EntryMeta, Manifest, RunningRec, hash_outs};
use crate::committer::{Committer, Job, Source};
use crate::dag::{Dag, select};
use crate::fsutil::remove_path;
use crate::hash::StatCache;
use crate::keys;
use crate::process;
use crate::progress::Progress;
pub use crate::progress::RunSummary;
use crate::protocol;
use crate::resources::Pool;
use crate::slurm::{self, Event, Follower, JobEnd, JobFiles, JobRecord, SlurmOptions, SubmitError};
use crate::spec::Action;

/// How long stages get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// Tries of sbatch when the controller is busy or unreachable, and the first pause.
const SUBMIT_TRIES: u32 = 5;
const SUBMIT_BACKOFF: Duration = Duration::from_secs(1);
/// Resubmissions after a time limit, preemption or node failure, at most.
const MAX_RESUBMITS: u32 = 10;
/// How long outs of a finished job may take to appear (a shared filesystem's caches).
const OUTS_GRACE: Duration = Duration::from_secs(10);

pub struct RunOptions {
    pub workspace: PathBuf,
    pub jobs: u32,
    pub gpus: Vec<String>,
    pub keep_going: bool,
    /// Selectors of stages to run regardless of the cache.
    pub force: Vec<String>,
    /// Selectors of stages to run (with what they need); empty = all.
    pub targets: Vec<String>,
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

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM stop the run cleanly instead of killing the runner.
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

#[derive(Debug, Clone)]
enum State {
    Waiting,
    Running,
    Done(Box<EntryMeta>),
    Failed,
    Skipped,
}

/// What runs a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Handle {
    /// A child process, in its own process group.
    Local { pgid: i32 },
    /// A Slurm job.
    Slurm { job: String },
}

/// How a running stage ended.
enum Ended {
    Local(std::io::Result<ExitStatus>),
    Slurm(JobEnd),
}

/// The Slurm side of a run.
struct SlurmRun {
    opts: SlurmOptions,
    files: JobFiles,
    follower: Follower,
    /// Stages whose submission failed transiently: not before, tries so far.
    backoff: BTreeMap<usize, (Instant, u32)>,
    /// Attempts and resubmissions of stages sent back to be submitted again.
    again: BTreeMap<usize, (u32, u32)>,
    /// Whether Slurm answered once (checked before the first submission).
    reachable: Option<Result<(), String>>,
}

struct Running {
    handle: Handle,
    started: Instant,
    attempt: u32,
    /// Of the attempts, how many were resubmissions after Slurm stopped the job.
    resubmits: u32,
    devices: Vec<String>,
    cpus: u32,
    key: String,
    manifest: Manifest,
    term_sent: Option<Instant>,
    timed_out: bool,
    /// A local stage's entry being built (its log and params file are in it).
    entry_tmp: Option<PathBuf>,
}

pub fn run(
    dag: &Dag,
    cache: &Cache,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<RunSummary, RunError> {
    let mut pool = Pool::new(opts.jobs.max(1), opts.gpus.clone());
    // A stage's own `executor` wins over the run's.
    let on_slurm = |i: usize| match dag.nodes[i].spec.executor.as_deref() {
        Some("local") => false,
        Some("slurm") => true,
        _ => opts.slurm.is_some(),
    };
    for (i, n) in dag.nodes.iter().enumerate() {
        // Slurm allocates the GPUs of its jobs; the local pool is irrelevant there.
        if !on_slurm(i) && n.spec.gpus as usize > pool.gpu_count() {
            return Err(RunError::Input(format!(
                "stage `{}` needs {} GPU(s) but only {} {} available ({}); pass --gpus or lower resources.gpus",
                n.spec.name,
                n.spec.gpus,
                pool.gpu_count(),
                if pool.gpu_count() == 1 { "is" } else { "are" },
                if opts.gpus.is_empty() {
                    "none detected".to_string()
                } else {
                    opts.gpus.join(",")
                }
            )));
        }
    }
    let wanted: BTreeSet<usize> = if opts.targets.is_empty() {
        (0..dag.nodes.len()).collect()
    } else {
        let mut roots = Vec::new();
        for t in &opts.targets {
            let m = select(
                &dag.nodes.iter().map(|n| n.spec.clone()).collect::<Vec<_>>(),
                t,
            );
            if m.is_empty() {
                return Err(RunError::Input(format!(
                    "no stage matches `{t}`; see `incrpipe dag FILE` for the stage names"
                )));
            }
            roots.extend(m);
        }
        dag.closure(&roots)
    };
    let mut forced = BTreeSet::new();
    let specs: Vec<_> = dag.nodes.iter().map(|n| n.spec.clone()).collect();
    for f in &opts.force {
        let m = select(&specs, f);
        if m.is_empty() {
            return Err(RunError::Input(format!("--force `{f}` matches no stage")));
        }
        forced.extend(m);
    }

    let _lock = cache.lock(opts.wait_for_lock, || {
        progress.note("waiting for another incrpipe run that holds the cache lock...")
    })?;
    end_orphans(cache, progress);
    cache.clean_tmp();
    let mut committer = Committer::start(cache.clone(), opts.workspace.clone());
    let mut slurm = if wanted.iter().any(|&i| on_slurm(i)) {
        let files = JobFiles::new(cache).map_err(|source| CacheError::Io {
            path: cache.root().join("state/jobs"),
            source,
        })?;
        Some(SlurmRun {
            opts: opts.slurm.clone().unwrap_or_default(),
            files,
            follower: Follower::default(),
            backoff: BTreeMap::new(),
            again: BTreeMap::new(),
            reachable: None,
        })
    } else {
        None
    };

    let mut stats = StatCache::load(&cache.stat_cache_path());
    let mut state: Vec<State> = vec![State::Waiting; dag.nodes.len()];
    let mut summary = RunSummary {
        total: wanted.len(),
        ..Default::default()
    };
    let mut running: BTreeMap<usize, Running> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<(usize, u32, std::io::Result<ExitStatus>)>();
    let mut stop_new = false;
    // Ready local stages whose key missed the cache and that wait for a slot:
    // their key is computed again (just before they start) only once one is free.
    let mut missed: BTreeSet<usize> = BTreeSet::new();
    progress.start(wanted.len());

    loop {
        if INTERRUPTED.load(Ordering::SeqCst) && !stop_new {
            stop_new = true;
            progress.note("interrupt: stopping running stages");
            for r in running.values_mut() {
                if let Handle::Local { pgid } = r.handle {
                    process::signal_group(pgid, libc::SIGTERM);
                    r.term_sent = Some(Instant::now());
                }
            }
            // Exactly the jobs of this run are cancelled; their records go, so
            // a later run submits those stages afresh.
            let jobs: Vec<(usize, String)> = running
                .iter()
                .filter_map(|(i, r)| match &r.handle {
                    Handle::Slurm { job } => Some((*i, job.clone())),
                    Handle::Local { .. } => None,
                })
                .collect();
            if let Some(sl) = slurm.as_mut()
                && !jobs.is_empty()
            {
                slurm::client::cancel(&jobs.iter().map(|j| j.1.clone()).collect::<Vec<_>>());
                for (i, job) in jobs {
                    let r = running.remove(&i).expect("listed above");
                    sl.files.forget(&r.key);
                    sl.follower.forget(&job);
                    let name = &dag.nodes[i].spec.name;
                    progress.failed(name, &format!("was cancelled (Slurm job {job})"), "");
                    state[i] = State::Failed;
                    summary.failed.push(name.clone());
                }
            }
        }
        // Start or resolve every ready stage, in topological order.
        if !stop_new {
            for &i in &dag.order {
                if !wanted.contains(&i) || !matches!(state[i], State::Waiting) {
                    continue;
                }
                let up = &dag.nodes[i].upstream;
                if up
                    .iter()
                    .any(|u| matches!(state[*u], State::Failed | State::Skipped))
                {
                    state[i] = State::Skipped;
                    summary.skipped.push(dag.nodes[i].spec.name.clone());
                    progress.skipped(&dag.nodes[i].spec.name);
                    continue;
                }
                if !up.iter().all(|u| matches!(state[*u], State::Done(_))) {
                    continue;
                }
                let node = &dag.nodes[i];
                let name = &node.spec.name;
                if missed.contains(&i) && !on_slurm(i) && !pool.fits(node.spec.cpus, node.spec.gpus)
                {
                    continue;
                }
                let lookup = |u: usize| match &state[u] {
                    State::Done(m) => Some((**m).clone()),
                    _ => None,
                };
                let manifest = match keys::manifest(node, &lookup, &opts.workspace, &mut stats) {
                    Ok(m) => m,
                    Err(e) => {
                        progress.failed(name, &e, "");
                        state[i] = State::Failed;
                        summary.failed.push(name.clone());
                        stop_new |= !opts.keep_going;
                        continue;
                    }
                };
                let key = manifest.key();
                if !forced.contains(&i)
                    && let Some(meta) = cache.lookup(&key)
                {
                    let stale = keys::stale_outs(&meta, &opts.workspace, &mut stats);
                    match cache.restore(&meta, &opts.workspace, Some(&stale)) {
                        Ok(()) => {
                            cache.record_last(name, &key, &manifest)?;
                            if stale.is_empty() {
                                summary.cached.push(name.clone());
                                progress.cached(name);
                            } else {
                                summary.restored.push(name.clone());
                                progress.restored(name);
                            }
                            state[i] = State::Done(Box::new(meta));
                            continue;
                        }
                        Err(e @ CacheError::Corrupt { .. }) => {
                            progress.note(&format!("{name}: {e}"))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if on_slurm(i) {
                    let sl = slurm.as_mut().expect("created when a stage runs on Slurm");
                    let in_flight = running
                        .values()
                        .filter(|r| matches!(r.handle, Handle::Slurm { .. }))
                        .count();
                    if in_flight >= sl.opts.max_jobs
                        || sl.backoff.get(&i).is_some_and(|b| Instant::now() < b.0)
                    {
                        continue;
                    }
                    let (attempt, resubmits) = sl.again.get(&i).copied().unwrap_or((1, 0));
                    let started = match sl.adoptable(&key) {
                        Some(job) => {
                            progress.note(&format!(
                                "{name}: following Slurm job {job}, submitted by an earlier run"
                            ));
                            Ok(job)
                        }
                        None => submit(dag, i, &key, &manifest, cache, opts, sl, attempt),
                    };
                    match started {
                        Ok(job) => {
                            sl.backoff.remove(&i);
                            sl.again.remove(&i);
                            progress.started(name, &[]);
                            progress.job_state(name, &job, "SUBMITTED");
                            running.insert(
                                i,
                                Running {
                                    handle: Handle::Slurm { job },
                                    started: Instant::now(),
                                    attempt,
                                    resubmits,
                                    devices: Vec::new(),
                                    cpus: 0,
                                    key,
                                    manifest,
                                    term_sent: None,
                                    timed_out: false,
                                    entry_tmp: None,
                                },
                            );
                            state[i] = State::Running;
                        }
                        Err(SubmitError::Transient(why))
                            if sl.backoff.get(&i).map_or(0, |b| b.1) + 1 < SUBMIT_TRIES =>
                        {
                            let tries = sl.backoff.get(&i).map_or(0, |b| b.1) + 1;
                            let pause = SUBMIT_BACKOFF * 2u32.pow(tries - 1);
                            progress.note(&format!(
                                "{name}: sbatch failed ({why}); trying again in {pause:?}"
                            ));
                            sl.backoff.insert(i, (Instant::now() + pause, tries));
                        }
                        Err(e) => {
                            sl.backoff.remove(&i);
                            progress.failed(name, &format!("could not be submitted: {e}"), "");
                            state[i] = State::Failed;
                            summary.failed.push(name.clone());
                            stop_new |= !opts.keep_going;
                        }
                    }
                    continue;
                }
                let Some(devices) = pool.take(node.spec.cpus, node.spec.gpus) else {
                    missed.insert(i);
                    continue;
                };
                missed.remove(&i);
                let cpus = pool.clamp_cpus(node.spec.cpus);
                match launch(dag, i, &key, &manifest, &devices, cpus, cache, opts, &tx, 1) {
                    Ok((pgid, entry_tmp)) => {
                        progress.started(name, &devices);
                        running.insert(
                            i,
                            Running {
                                handle: Handle::Local { pgid },
                                started: Instant::now(),
                                attempt: 1,
                                resubmits: 0,
                                devices,
                                cpus,
                                key,
                                manifest,
                                term_sent: None,
                                timed_out: false,
                                entry_tmp: Some(entry_tmp),
                            },
                        );
                        state[i] = State::Running;
                        save_running(cache, dag, &running)?;
                    }
                    Err(e) => {
                        pool.give(cpus, &devices);
                        progress.failed(name, &format!("could not start: {e}"), "");
                        state[i] = State::Failed;
                        summary.failed.push(name.clone());
                        stop_new |= !opts.keep_going;
                    }
                }
            }
        }
        let backing_off = slurm.as_ref().is_some_and(|sl| !sl.backoff.is_empty());
        let backing_off = backing_off || slurm.as_ref().is_some_and(|sl| !sl.again.is_empty());
        if running.is_empty() && (stop_new || !backing_off) {
            break;
        }
        // Timeouts, and SIGKILL for stages that ignored SIGTERM. (Slurm jobs
        // get the timeout as their --time; Slurm enforces it.)
        for (&i, r) in running.iter_mut() {
            let Handle::Local { pgid } = r.handle else {
                continue;
            };
            if let Some(t) = dag.nodes[i].spec.timeout
                && r.term_sent.is_none()
                && r.started.elapsed() > t
            {
                process::signal_group(pgid, libc::SIGTERM);
                r.term_sent = Some(Instant::now());
                r.timed_out = true;
            }
            if r.term_sent.is_some_and(|t| t.elapsed() > GRACE) {
                process::signal_group(pgid, libc::SIGKILL);
            }
        }
        let mut ended: Vec<(usize, Ended)> = Vec::new();
        if let Some(sl) = slurm.as_mut() {
            let jobs: Vec<(usize, String, String)> = running
                .iter()
                .filter_map(|(i, r)| match &r.handle {
                    Handle::Slurm { job } => Some((*i, job.clone(), r.key.clone())),
                    Handle::Local { .. } => None,
                })
                .collect();
            if !jobs.is_empty() {
                let pairs: Vec<(String, String)> =
                    jobs.iter().map(|j| (j.1.clone(), j.2.clone())).collect();
                for (job, ev) in sl.follower.poll(&sl.files, &pairs) {
                    let Some((i, _, _)) = jobs.iter().find(|j| j.1 == job) else {
                        continue;
                    };
                    match ev {
                        Event::State(st) => progress.job_state(&dag.nodes[*i].spec.name, &job, &st),
                        Event::End(end) => ended.push((*i, Ended::Slurm(end))),
                    }
                }
            }
        }
        if ended.is_empty()
            && let Ok((i, attempt, status)) = rx.recv_timeout(Duration::from_millis(50))
            && running.get(&i).is_some_and(|r| r.attempt == attempt)
        {
            ended.push((i, Ended::Local(status)));
        }
        for (i, e) in committer.failures() {
            uncommitted(dag, i, &e, &mut state, &mut summary, progress);
            stop_new |= !opts.keep_going;
        }
        for (i, end) in ended {
            let Some(r) = running.remove(&i) else {
                continue;
            };
            let node = &dag.nodes[i];
            let name = &node.spec.name;
            let log = cache.log_path(name);
            let secs = r.started.elapsed().as_secs_f64();
            let outcome = match (&end, &r.handle) {
                (Ended::Local(status), Handle::Local { pgid }) => {
                    // Whatever the stage left behind in its group goes with it.
                    process::signal_group(*pgid, libc::SIGKILL);
                    // running.json is rewritten when the next stage starts; until then it
                    // may still list this one, which is harmless: a later runner only ends
                    // a recorded group whose leader has the recorded start time.
                    match status {
                        Ok(s) if s.success() && !r.timed_out => outs_present(node, opts, None),
                        Ok(_) if r.timed_out => Err(format!(
                            "timed out after {:?}",
                            node.spec.timeout.unwrap_or_default()
                        )),
                        Ok(s) => Err(describe_status(*s)),
                        Err(e) => Err(format!("could not be waited for: {e}")),
                    }
                }
                (Ended::Slurm(e), Handle::Slurm { job }) => {
                    if let Some(sl) = slurm.as_ref() {
                        sl.files.forget(&r.key);
                    }
                    match e {
                        // Written on another machine: give the shared filesystem time to show it.
                        JobEnd::Exited(0) => outs_present(node, opts, Some(OUTS_GRACE)),
                        JobEnd::Exited(c) => {
                            Err(format!("exited with status {c} (Slurm job {job})"))
                        }
                        JobEnd::Resubmit(why) | JobEnd::Failed(why) => Err(why.clone()),
                    }
                }
                _ => unreachable!("a stage ends the way it was started"),
            };
            // Keyed by hashes taken here; copied, fsynced and published in the background.
            let outcome = outcome.and_then(|()| {
                hash_outs(&r.manifest.outs, &opts.workspace, &mut stats)
                    .map_err(|e| format!("could not be hashed: {e}"))
            });
            let outcome = match outcome {
                Ok(outs) => {
                    let meta = EntryMeta::new(&r.key, name, &r.manifest, outs, secs);
                    let from = match &r.entry_tmp {
                        Some(tmp) => Source::Entry(tmp.clone()),
                        None => Source::Log(log.clone()),
                    };
                    committer.submit(Job {
                        stage: i,
                        meta: meta.clone(),
                        from,
                    });
                    Ok(meta)
                }
                Err(e) => {
                    // A failed attempt's entry never appears; its log stays in logs/.
                    if let Some(tmp) = &r.entry_tmp {
                        let _ = remove_path(tmp);
                    }
                    Err(e)
                }
            };
            let resubmit = matches!(end, Ended::Slurm(JobEnd::Resubmit(_)))
                && r.resubmits < MAX_RESUBMITS
                && !stop_new;
            let retry = outcome.is_err()
                && !stop_new
                && (resubmit || r.attempt - r.resubmits <= node.spec.retries);
            if !retry {
                pool.give(r.cpus, &r.devices);
            }
            match outcome {
                Ok(meta) => {
                    // The stage's `state/last` record is written by the committer, after its entry.
                    summary.ran.push(name.clone());
                    progress.finished(name, secs);
                    state[i] = State::Done(Box::new(meta));
                }
                Err(why) if retry => {
                    if resubmit {
                        progress.note(&format!("{name}: {why}"));
                    } else {
                        progress.note(&format!(
                            "{name} {why}; retrying (attempt {} of {})",
                            r.attempt - r.resubmits + 1,
                            node.spec.retries + 1
                        ));
                    }
                    if let Handle::Slurm { .. } = r.handle {
                        // Back to the ready stages: submitted again on the next pass.
                        let sl = slurm.as_mut().expect("a Slurm job implies the Slurm side");
                        sl.again
                            .insert(i, (r.attempt + 1, r.resubmits + u32::from(resubmit)));
                        state[i] = State::Waiting;
                        continue;
                    }
                    // The stage keeps its CPU slots and devices for the next attempt.
                    match launch(
                        dag,
                        i,
                        &r.key,
                        &r.manifest,
                        &r.devices,
                        r.cpus,
                        cache,
                        opts,
                        &tx,
                        r.attempt + 1,
                    ) {
                        Ok((pgid, entry_tmp)) => {
                            running.insert(
                                i,
                                Running {
                                    handle: Handle::Local { pgid },
                                    started: Instant::now(),
                                    attempt: r.attempt + 1,
                                    term_sent: None,
                                    timed_out: false,
                                    entry_tmp: Some(entry_tmp),
                                    ..r
                                },
                            );
                            save_running(cache, dag, &running)?;
                        }
                        Err(e) => {
                            pool.give(r.cpus, &r.devices);
                            progress.failed(name, &format!("could not restart: {e}"), "");
                            state[i] = State::Failed;
                            summary.failed.push(name.clone());
                            stop_new |= !opts.keep_going;
                        }
                    }
                }
                Err(why) => {
                    // A failed stage's outputs never enter the cache.
                    let tail = log_tail(&log, 20);
                    progress.failed(name, &why, &tail);
                    state[i] = State::Failed;
                    summary.failed.push(name.clone());
                    stop_new |= !opts.keep_going;
                }
            }
        }
    }
    for (i, e) in committer.finish() {
        uncommitted(dag, i, &e, &mut state, &mut summary, progress);
    }
    // Nothing runs any more: no recorded group may be taken for an orphan later.
    if running.is_empty() {
        let _ = cache.write_running(&[]);
    }
    let _ = stats.save(&cache.stat_cache_path());
    progress.finish(&summary);
    if INTERRUPTED.swap(false, Ordering::SeqCst) {
        return Err(RunError::Interrupted(summary));
    }
    if !summary.failed.is_empty() {
        return Err(RunError::Failed(summary));
    }
    Ok(summary)
}

/// A stage whose entry could not be committed (after it ran and its dependants
/// may have started): it counts as failed, and what still waits on it is skipped.
fn uncommitted(
    dag: &Dag,
    i: usize,
    e: &CacheError,
    state: &mut [State],
    summary: &mut RunSummary,
    progress: &mut dyn Progress,
) {
    let name = &dag.nodes[i].spec.name;
    progress.failed(
        name,
        &format!("could not be committed to the cache: {e}"),
        "",
    );
    summary.ran.retain(|n| n != name);
    summary.failed.push(name.clone());
    state[i] = State::Failed;
}

#[allow(clippy::too_many_arguments)]
fn launch(
    dag: &Dag,
    i: usize,
    key: &str,
    manifest: &Manifest,
    devices: &[String],
    cpus: u32,
    cache: &Cache,
    opts: &RunOptions,
    tx: &mpsc::Sender<(usize, u32, std::io::Result<ExitStatus>)>,
    attempt: u32,
) -> std::io::Result<(i32, PathBuf)> {
    // The entry's temporary directory is made now, and the stage's log and
    // params file go straight into it: fewer inodes to create per stage.
    let tmp = cache.temp_dir(key).map_err(std::io::Error::other)?;
    match start_local(
        dag, i, key, manifest, devices, cpus, cache, opts, tx, attempt, &tmp,
    ) {
        Ok(pgid) => Ok((pgid, tmp)),
        Err(e) => {
            let _ = remove_path(&tmp);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start_local(
    dag: &Dag,
    i: usize,
    key: &str,
    manifest: &Manifest,
    devices: &[String],
    cpus: u32,
    cache: &Cache,
    opts: &RunOptions,
    tx: &mpsc::Sender<(usize, u32, std::io::Result<ExitStatus>)>,
    attempt: u32,
    tmp: &Path,
) -> std::io::Result<i32> {
    let node = &dag.nodes[i];
    let prepared = prepare(dag, i, key, manifest, cache, opts, attempt, Some(tmp))?;
    let cuda = devices.join(",");
    let cpus = cpus.to_string();
    let mut env: Vec<(String, String)> = prepared.env;
    env.extend(
        [
            (protocol::CPUS, &cpus),
            ("RAYON_NUM_THREADS", &cpus),
            ("OMP_NUM_THREADS", &cpus),
            ("CUDA_VISIBLE_DEVICES", &cuda),
            ("INCRPIPE_GPUS", &cuda),
        ]
        .map(|(k, v)| (k.to_string(), v.clone())),
    );
    env.extend(node.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let log_path = tmp.join("log");
    let log = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&log_path)?;
    // logs/<stage>.log is a second name of the entry's log (a link inside the
    // cache, never one into the workspace), readable while the stage runs.
    link_replace(&log_path, &cache.log_path(&node.spec.name))?;
    let pgid = process::spawn(process::Spawn {
        argv: &prepared.argv,
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        cwd: &opts.workspace,
        log,
    })?;
    let tx = tx.clone();
    std::thread::spawn(move || {
        let status = process::wait(pgid);
        let _ = tx.send((i, attempt, status));
    });
    Ok(pgid)
}

/// A stage ready to start, on either executor.
struct Prepared {
    argv: Vec<String>,
    /// The stage protocol's variables ([`protocol::Handoff`]).
    env: Vec<(String, String)>,
}

/// Makes `link` a second name of `target` (both in the cache), replacing
/// whatever `link` was, atomically.
fn link_replace(target: &Path, link: &Path) -> std::io::Result<()> {
    let tmp = link.with_file_name(format!(
        ".{}.link{}",
        link.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// Clears a stage's outs and writes its params file and scratch directory.
/// The params file goes into `entry_tmp` (a local stage's entry being built)
/// if given, else into state/ (a Slurm job, which may outlive this runner).
#[allow(clippy::too_many_arguments)]
fn prepare(
    dag: &Dag,
    i: usize,
    key: &str,
    manifest: &Manifest,
    cache: &Cache,
    opts: &RunOptions,
    attempt: u32,
    entry_tmp: Option<&Path>,
) -> std::io::Result<Prepared> {
    let node = &dag.nodes[i];
    // A stage starts from a clean slate: its declared outs are removed first.
    for o in &node.outs {
        remove_path(&o.resolve(&opts.workspace))?;
        if let Some(parent) = o.resolve(&opts.workspace).parent() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let scratch = cache.scratch_dir(key);
    std::fs::create_dir_all(&scratch)?;
    let params_bytes = protocol::params_bytes(&protocol::ParamsFile {
        stage: node.spec.name.clone(),
        params: manifest.params.clone(),
        matrix: manifest.matrix.clone(),
        deps: node
            .deps
            .iter()
            .map(crate::paths::WPath::key_form)
            .collect(),
        outs: manifest.outs.clone(),
    });
    let params_path = match entry_tmp {
        Some(tmp) => {
            // A fresh directory of this attempt: a plain write, no temporary name.
            let p = tmp.join("params.json");
            std::fs::write(&p, &params_bytes)?;
            p
        }
        None => {
            let p = cache
                .root()
                .join("state")
                .join(format!("params-{key}.json"));
            crate::fsutil::write_replace(&p, &params_bytes)?;
            p
        }
    };
    let argv = match &node.spec.action {
        Action::Cmd(text) => vec!["bash".into(), "-c".into(), text.clone()],
        Action::Builtin { kind, .. } => vec![
            opts.stage_exe.to_string_lossy().into_owned(),
            "__stage".into(),
            kind.clone(),
        ],
    };
    let env = protocol::Handoff {
        stage: node.spec.name.clone(),
        key: key.to_string(),
        params_path,
        scratch,
        attempt,
    }
    .env();
    Ok(Prepared { argv, env })
}

/// Submits a stage as a Slurm job and records key -> job id in the cache.
#[allow(clippy::too_many_arguments)]
fn submit(
    dag: &Dag,
    i: usize,
    key: &str,
    manifest: &Manifest,
    cache: &Cache,
    opts: &RunOptions,
    sl: &mut SlurmRun,
    attempt: u32,
) -> Result<String, SubmitError> {
    if sl.reachable.is_none() {
        sl.reachable = Some(slurm::client::reachable());
    }
    if let Some(Err(why)) = &sl.reachable {
        return Err(SubmitError::Unreachable(why.clone()));
    }
    let node = &dag.nodes[i];
    let prepared = prepare(dag, i, key, manifest, cache, opts, attempt, None)?;
    let mut env = prepared.env;
    // The job does not inherit the runner's environment reliably: pass what
    // finds programs and libraries, then the stage's own variables.
    for var in ["PATH", "LD_LIBRARY_PATH"] {
        if let Ok(v) = std::env::var(var) {
            env.push((var.to_string(), v));
        }
    }
    env.extend(node.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let status = sl.files.status_path(key);
    let _ = std::fs::remove_file(&status);
    // logs/<stage>.log may be a second name of an entry's log (local runs):
    // unlink it so that Slurm writes a new file instead of truncating that one.
    let _ = std::fs::remove_file(cache.log_path(&node.spec.name));
    let script = slurm::script::JobScript {
        stage: &node.spec.name,
        key,
        workspace: &opts.workspace,
        argv: prepared.argv,
        env,
        cpus: node.spec.cpus.max(1),
        gpus: node.spec.gpus,
        status: &status,
    };
    let script_path = sl.files.script(key);
    crate::fsutil::write_atomic(&script_path, script.render().as_bytes())?;
    let res = slurm::JobResources {
        cpus: node.spec.cpus.max(1),
        gpus: node.spec.gpus,
        // A runner `timeout` becomes the job's wall time unless `time` is given.
        time: node
            .spec
            .time
            .clone()
            .or_else(|| node.spec.timeout.map(slurm::minutes)),
        mem: node.spec.mem.clone(),
    };
    let args = slurm::client::sbatch_args(
        &sl.opts,
        &node.spec.name,
        &res,
        &cache.log_path(&node.spec.name),
        &opts.workspace,
        &script_path,
    );
    let job = slurm::client::submit(&args).map_err(|e| match e {
        SubmitError::Refused(m) if node.spec.gpus > 0 && m.contains("node configuration") => {
            SubmitError::Refused(format!(
                "{m} (the stage asks for {} GPU(s) with --gres=gpu:{}; does any node of the partition have that many?)",
                node.spec.gpus, node.spec.gpus
            ))
        }
        e => e,
    })?;
    sl.files.write_record(&JobRecord {
        job: job.clone(),
        stage: node.spec.name.clone(),
        key: key.to_string(),
    })?;
    Ok(job)
}

impl SlurmRun {
    /// The job an earlier runner submitted for `key`, if it is still running
    /// (or has ended since and left its status): following it beats running
    /// the stage twice.
    fn adoptable(&mut self, key: &str) -> Option<String> {
        let rec = self.files.read_record(key)?;
        if self.files.read_status(key, &rec.job).is_some() {
            return Some(rec.job);
        }
        match slurm::client::states(std::slice::from_ref(&rec.job)) {
            Some(m) => match m.get(&rec.job) {
                Some(st) if !slurm::follow::is_final(st) => Some(rec.job),
                _ => {
                    self.files.forget(key);
                    None
                }
            },
            // Slurm does not answer: follow the job rather than risk a second one.
            None => Some(rec.job),
        }
    }
}

/// Whether a stage that exited 0 left all its outs, waiting up to `grace` for them.
fn outs_present(
    node: &crate::dag::Node,
    opts: &RunOptions,
    grace: Option<Duration>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match node
            .outs
            .iter()
            .find(|o| !o.resolve(&opts.workspace).exists())
        {
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

fn save_running(
    cache: &Cache,
    dag: &Dag,
    running: &BTreeMap<usize, Running>,
) -> Result<(), CacheError> {
    // Only local process groups: Slurm jobs are recorded in state/jobs/ and
    // outlive the runner on purpose.
    let recs: Vec<RunningRec> = running
        .iter()
        .filter_map(|(i, r)| match r.handle {
            Handle::Local { pgid } => Some(RunningRec {
                stage: dag.nodes[*i].spec.name.clone(),
                pgid,
                start_ticks: process::start_ticks(pgid).unwrap_or(0),
            }),
            Handle::Slurm { .. } => None,
        })
        .collect();
    cache.write_running(&recs)
}

/// Ends stages that a killed runner left running (we hold the lock, so their runner is gone).
fn end_orphans(cache: &Cache, progress: &mut dyn Progress) {
    let recs = cache.read_running();
    for r in &recs {
        if process::end_orphan(r.pgid, r.start_ticks) {
            progress.note(&format!(
                "ended stage `{}` (process group {}) left running by a previous runner",
                r.stage, r.pgid
            ));
        }
    }
    if !recs.is_empty() {
        let _ = cache.write_running(&[]);
    }
}

fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".to_string(),
    }
}

/// The last `n` lines of a log.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
