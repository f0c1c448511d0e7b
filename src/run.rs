//! Running a pipeline: the scheduler loop. Ready stages are looked up in the
//! cache (and their outs restored) or started as child processes within the
//! CPU slots and the GPU pool; finished ones are committed to the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, CacheError, EntryMeta, Manifest, RunningRec};
use crate::dag::{Dag, select};
use crate::fsutil::remove_path;
use crate::hash::StatCache;
use crate::keys;
use crate::process;
use crate::progress::Progress;
use crate::resources::Pool;
use crate::spec::Action;

/// How long stages get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

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
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub total: usize,
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    pub restored: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
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

struct Running {
    pgid: i32,
    started: Instant,
    attempt: u32,
    devices: Vec<String>,
    cpus: u32,
    key: String,
    manifest: Manifest,
    term_sent: Option<Instant>,
    timed_out: bool,
}

pub fn run(
    dag: &Dag,
    cache: &Cache,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<RunSummary, RunError> {
    let mut pool = Pool::new(opts.jobs.max(1), opts.gpus.clone());
    for n in &dag.nodes {
        if n.spec.gpus as usize > pool.gpu_count() {
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

    let mut stats = StatCache::load(&cache.stat_cache_path());
    let mut state: Vec<State> = vec![State::Waiting; dag.nodes.len()];
    let mut summary = RunSummary {
        total: wanted.len(),
        ..Default::default()
    };
    let mut running: BTreeMap<usize, Running> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<(usize, u32, std::io::Result<ExitStatus>)>();
    let mut stop_new = false;
    progress.start(wanted.len());

    loop {
        if INTERRUPTED.load(Ordering::SeqCst) && !stop_new {
            stop_new = true;
            progress.note("interrupt: stopping running stages");
            for r in running.values_mut() {
                process::signal_group(r.pgid, libc::SIGTERM);
                r.term_sent = Some(Instant::now());
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
                let Some(devices) = pool.take(node.spec.cpus, node.spec.gpus) else {
                    continue;
                };
                let cpus = pool.clamp_cpus(node.spec.cpus);
                match launch(dag, i, &key, &manifest, &devices, cpus, cache, opts, &tx, 1) {
                    Ok(pgid) => {
                        progress.started(name, &devices);
                        running.insert(
                            i,
                            Running {
                                pgid,
                                started: Instant::now(),
                                attempt: 1,
                                devices,
                                cpus,
                                key,
                                manifest,
                                term_sent: None,
                                timed_out: false,
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
        if running.is_empty() {
            break;
        }
        // Timeouts, and SIGKILL for stages that ignored SIGTERM.
        for (&i, r) in running.iter_mut() {
            if let Some(t) = dag.nodes[i].spec.timeout
                && r.term_sent.is_none()
                && r.started.elapsed() > t
            {
                process::signal_group(r.pgid, libc::SIGTERM);
                r.term_sent = Some(Instant::now());
                r.timed_out = true;
            }
            if r.term_sent.is_some_and(|t| t.elapsed() > GRACE) {
                process::signal_group(r.pgid, libc::SIGKILL);
            }
        }
        let Ok((i, attempt, status)) = rx.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        let Some(r) = running.remove(&i) else {
            continue;
        };
        debug_assert_eq!(attempt, r.attempt);
        // Whatever the stage left behind in its group goes with it.
        process::signal_group(r.pgid, libc::SIGKILL);
        save_running(cache, dag, &running)?;
        let node = &dag.nodes[i];
        let name = &node.spec.name;
        let log = cache.log_path(name);
        let secs = r.started.elapsed().as_secs_f64();
        let outcome = match status {
            Ok(s) if s.success() && !r.timed_out => match node
                .outs
                .iter()
                .find(|o| !o.resolve(&opts.workspace).exists())
            {
                Some(o) => Err(format!(
                    "exited 0 but did not produce its out `{}`",
                    o.key_form()
                )),
                None => Ok(()),
            },
            Ok(_) if r.timed_out => Err(format!(
                "timed out after {:?}",
                node.spec.timeout.unwrap_or_default()
            )),
            Ok(s) => Err(describe_status(s)),
            Err(e) => Err(format!("could not be waited for: {e}")),
        };
        let outcome = outcome.and_then(|()| {
            cache
                .commit(&r.key, name, &r.manifest, &opts.workspace, Some(&log), secs)
                .map_err(|e| format!("could not be committed to the cache: {e}"))
        });
        let retry = outcome.is_err() && r.attempt <= node.spec.retries && !stop_new;
        if !retry {
            pool.give(r.cpus, &r.devices);
        }
        match outcome {
            Ok(meta) => {
                cache.record_last(name, &r.key, &r.manifest)?;
                summary.ran.push(name.clone());
                progress.finished(name, secs);
                state[i] = State::Done(Box::new(meta));
            }
            Err(why) if retry => {
                // The stage keeps its CPU slots and devices for the next attempt.
                progress.note(&format!(
                    "{name} {why}; retrying (attempt {} of {})",
                    r.attempt + 1,
                    node.spec.retries + 1
                ));
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
                    Ok(pgid) => {
                        running.insert(
                            i,
                            Running {
                                pgid,
                                started: Instant::now(),
                                attempt: r.attempt + 1,
                                term_sent: None,
                                timed_out: false,
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
) -> std::io::Result<i32> {
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
    let params_path = cache
        .root()
        .join("state")
        .join(format!("params-{key}.json"));
    let params = serde_json::json!({ "stage": node.spec.name, "params": manifest.params, "matrix": manifest.matrix, "deps": node.deps.iter().map(crate::paths::WPath::key_form).collect::<Vec<_>>(), "outs": manifest.outs });
    crate::fsutil::write_atomic(&params_path, &serde_json::to_vec_pretty(&params).unwrap())?;
    let mut cmd = match &node.spec.action {
        Action::Cmd(text) => {
            let mut c = Command::new("bash");
            c.arg("-c").arg(text);
            c
        }
        Action::Builtin { kind, .. } => {
            let mut c = Command::new(&opts.stage_exe);
            c.arg("__stage").arg(kind);
            c
        }
    };
    let cuda = devices.join(",");
    cmd.current_dir(&opts.workspace)
        .env("INCRPIPE_STAGE", &node.spec.name)
        .env("INCRPIPE_KEY", key)
        .env("INCRPIPE_PARAMS", &params_path)
        .env("INCRPIPE_SCRATCH", &scratch)
        .env("INCRPIPE_ATTEMPT", attempt.to_string())
        .env("INCRPIPE_CPUS", cpus.to_string())
        .env("RAYON_NUM_THREADS", cpus.to_string())
        .env("OMP_NUM_THREADS", cpus.to_string())
        .env("CUDA_VISIBLE_DEVICES", &cuda)
        .env("INCRPIPE_GPUS", &cuda)
        .envs(&node.spec.env);
    let log = cache.log_path(&node.spec.name);
    let mut child = process::spawn(cmd, &log)?;
    let pgid = child.id() as i32;
    let tx = tx.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send((i, attempt, status));
    });
    Ok(pgid)
}

fn save_running(
    cache: &Cache,
    dag: &Dag,
    running: &BTreeMap<usize, Running>,
) -> Result<(), CacheError> {
    let recs: Vec<RunningRec> = running
        .iter()
        .map(|(i, r)| RunningRec {
            stage: dag.nodes[*i].spec.name.clone(),
            pgid: r.pgid,
            start_ticks: process::start_ticks(r.pgid).unwrap_or(0),
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
