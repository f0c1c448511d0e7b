//! The local executor: each stage is a child process in its own process group,
//! within the run's CPU slots and GPU pool. Its groups are recorded in
//! `running.json`, so that a later runner ends what a killed one left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::executor::{Ctx, Ended, Event, Executor, Outcome, Ready, Start, outs_present, prepare};
use super::output::LogTail;
use crate::cache::{Cache, CacheError, Key, RunningRec};
use crate::committer::Source;
use crate::fsutil::remove_path;
use crate::process;
use crate::progress::Progress;
use crate::protocol;
use crate::resources::Pool;

/// How long stages get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// How often the running stages' logs are read for the progress display.
const LOG_READ_EVERY: Duration = Duration::from_millis(250);

/// One running stage's process group.
struct Proc {
    pgid: i32,
    attempt: u32,
    started: Instant,
    term_sent: Option<Instant>,
    timed_out: bool,
    /// The entry being built (its log and params file are in it).
    entry_tmp: PathBuf,
    /// What the runner has read of its log.
    log: LogTail,
}

/// CPU slots and devices a stage holds, from its start until its last try ends.
struct Held {
    cpus: u32,
    devices: Vec<String>,
}

pub(super) struct Local {
    pool: Pool,
    held: BTreeMap<usize, Held>,
    /// What each ended try used, from its exit event, until the trace asks.
    usage: BTreeMap<usize, process::Usage>,
    procs: BTreeMap<usize, Proc>,
    events: Sender<Event>,
    /// When the running stages' logs were last read.
    logs_read: Instant,
}

impl Local {
    pub fn new(jobs: u32, gpus: Vec<String>, events: Sender<Event>) -> Local {
        Local {
            pool: Pool::new(jobs.max(1), gpus),
            held: BTreeMap::new(),
            usage: BTreeMap::new(),
            procs: BTreeMap::new(),
            events,
            logs_read: Instant::now(),
        }
    }

    /// Hands the lines stage `i` (or, with `None`, every running stage) appended to its
    /// log to `progress`; `flush` also hands an unfinished last line (the stage ended).
    pub fn read_logs(
        &mut self,
        ctx: Ctx,
        only: Option<usize>,
        flush: bool,
        progress: &mut dyn Progress,
    ) {
        for (&i, p) in self.procs.iter_mut() {
            if only.is_none_or(|o| o == i) {
                for line in p.log.lines(flush) {
                    progress.output(ctx.name(i), &line);
                }
            }
        }
    }

    /// Keeps what an ended try used, for [`Executor::usage`].
    pub fn used(&mut self, i: usize, usage: Option<process::Usage>) {
        match usage {
            Some(u) => self.usage.insert(i, u),
            None => self.usage.remove(&i),
        };
    }

    /// Whether `attempt` is the try of stage `i` that is running (an exit event
    /// of an earlier try may still arrive).
    pub fn is_current(&self, i: usize, attempt: u32) -> bool {
        self.procs.get(&i).is_some_and(|p| p.attempt == attempt)
    }

    /// Forgets every recorded group once nothing runs any more, so that none is
    /// taken for an orphan later.
    pub fn clear_record(&self, cache: &Cache) {
        if self.procs.is_empty() {
            let _ = cache.write_running(&[]);
        }
    }

    fn launch(
        &mut self,
        ctx: Ctx,
        ready: &Ready,
        cpus: u32,
        devices: &[String],
    ) -> std::io::Result<()> {
        // The entry's temporary directory is made now, and the stage's log and
        // params file go straight into it: fewer inodes to create per stage.
        let tmp = ctx
            .cache
            .temp_dir(&ready.key)
            .map_err(std::io::Error::other)?;
        match self.spawn(ctx, ready, cpus, devices, &tmp) {
            Ok(pgid) => {
                self.procs.insert(
                    ready.i,
                    Proc {
                        pgid,
                        attempt: ready.attempt.n,
                        started: Instant::now(),
                        term_sent: None,
                        timed_out: false,
                        log: LogTail::new(tmp.join("log")),
                        entry_tmp: tmp,
                    },
                );
                Ok(())
            }
            Err(e) => {
                let _ = remove_path(&tmp);
                Err(e)
            }
        }
    }

    fn spawn(
        &self,
        ctx: Ctx,
        ready: &Ready,
        cpus: u32,
        devices: &[String],
        tmp: &Path,
    ) -> std::io::Result<i32> {
        let node = ctx.node(ready.i);
        let prepared = prepare(ctx, ready, Some(tmp))?;
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
        link_replace(&log_path, &ctx.cache.log_path(&node.spec.name))?;
        let pgid = process::spawn(process::Spawn {
            argv: &prepared.argv,
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            cwd: &ctx.opts.workspace,
            log,
        })?;
        let (tx, i, attempt) = (self.events.clone(), ready.i, ready.attempt.n);
        std::thread::spawn(move || {
            let (status, usage) = match process::wait_usage(pgid) {
                Ok((s, u)) => (Ok(s), Some(u)),
                Err(e) => (Err(e), None),
            };
            let _ = tx.send(Event::Exited {
                i,
                attempt,
                status,
                usage,
            });
        });
        Ok(pgid)
    }

    /// Records the running groups (Slurm jobs are recorded in state/jobs/ and
    /// outlive the runner on purpose).
    fn save(&self, ctx: Ctx) -> Result<(), CacheError> {
        let recs: Vec<RunningRec> = self
            .procs
            .iter()
            .map(|(i, p)| RunningRec {
                stage: ctx.name(*i).to_string(),
                pgid: p.pgid,
                start_ticks: process::start_ticks(p.pgid).unwrap_or(0),
            })
            .collect();
        ctx.cache.write_running(&recs)
    }
}

impl Executor for Local {
    fn has_room(&self, ctx: Ctx, i: usize) -> bool {
        let spec = &ctx.node(i).spec;
        self.held.contains_key(&i) || self.pool.fits(spec.cpus, spec.gpus)
    }

    fn start(&mut self, ctx: Ctx, ready: &Ready, progress: &mut dyn Progress) -> Start {
        let spec = &ctx.node(ready.i).spec;
        // A stage tried again keeps the slots and devices of its first try.
        let (cpus, devices) = match self.held.get(&ready.i) {
            Some(h) => (h.cpus, h.devices.clone()),
            None => {
                let Some(devices) = self.pool.take(spec.cpus, spec.gpus) else {
                    return Start::Later;
                };
                let cpus = self.pool.clamp_cpus(spec.cpus);
                self.held.insert(
                    ready.i,
                    Held {
                        cpus,
                        devices: devices.clone(),
                    },
                );
                (cpus, devices)
            }
        };
        match self.launch(ctx, ready, cpus, &devices) {
            Ok(()) => {
                if let Err(e) = self.save(ctx) {
                    progress.note(&format!(
                        "{e}: a runner killed now would leave its stages running"
                    ));
                }
                if ready.attempt.n == 1 {
                    progress.started(&spec.name, &devices);
                }
                Start::Started
            }
            Err(e) => {
                self.release(ready.i, false);
                let again = if ready.attempt.n == 1 {
                    "start"
                } else {
                    "restart"
                };
                Start::Failed(format!("could not {again}: {e}"))
            }
        }
    }

    fn poll(&mut self, ctx: Ctx, progress: &mut dyn Progress) -> Vec<(usize, Ended)> {
        if self.logs_read.elapsed() >= LOG_READ_EVERY {
            self.logs_read = Instant::now();
            self.read_logs(ctx, None, false, progress);
        }
        // Timeouts, and SIGKILL for stages that ignored SIGTERM.
        for (&i, p) in self.procs.iter_mut() {
            if let Some(t) = ctx.node(i).spec.timeout
                && p.term_sent.is_none()
                && p.started.elapsed() > t
            {
                process::signal_group(p.pgid, libc::SIGTERM);
                p.term_sent = Some(Instant::now());
                p.timed_out = true;
            }
            if p.term_sent.is_some_and(|t| t.elapsed() > GRACE) {
                process::signal_group(p.pgid, libc::SIGKILL);
            }
        }
        // Exits arrive as events on the scheduler's channel.
        Vec::new()
    }

    fn outcome(&mut self, ctx: Ctx, i: usize, _: &Key, end: Ended) -> Outcome {
        let p = self
            .procs
            .remove(&i)
            .expect("a local stage that ended was running");
        let Ended::Local(status) = end else {
            unreachable!("a local stage ends as a process")
        };
        // Whatever the stage left behind in its group goes with it. running.json is
        // rewritten when the next stage starts; until then it may still list this one,
        // which is harmless: a later runner only ends a recorded group whose leader
        // has the recorded start time.
        process::signal_group(p.pgid, libc::SIGKILL);
        let node = ctx.node(i);
        let result = match status {
            Ok(s) if s.success() && !p.timed_out => outs_present(node, &ctx.opts.workspace, None),
            Ok(_) if p.timed_out => Err(format!(
                "timed out after {:?}",
                node.spec.timeout.unwrap_or_default()
            )),
            Ok(s) => Err(describe_status(s)),
            Err(e) => Err(format!("could not be waited for: {e}")),
        };
        let result = match result {
            Ok(()) => Ok(Source::Entry(p.entry_tmp)),
            Err(e) => {
                // A failed attempt's entry never appears; its log stays in logs/.
                let _ = remove_path(&p.entry_tmp);
                Err(e)
            }
        };
        Outcome {
            result,
            resubmit: false,
        }
    }

    fn release(&mut self, i: usize, keep: bool) {
        if !keep && let Some(h) = self.held.remove(&i) {
            self.pool.give(h.cpus, &h.devices);
        }
    }

    fn stop_all(&mut self) -> Vec<(usize, String)> {
        for p in self.procs.values_mut() {
            process::signal_group(p.pgid, libc::SIGTERM);
            p.term_sent = Some(Instant::now());
        }
        Vec::new()
    }

    fn backing_off(&self) -> bool {
        false
    }

    fn placement(&self, _: Ctx, i: usize) -> crate::trace::Placement {
        let (cpus, gpus) = self
            .held
            .get(&i)
            .map_or((0, Vec::new()), |h| (h.cpus, h.devices.clone()));
        crate::trace::Placement {
            executor: "local",
            cpus,
            gpus,
            slurm_job: None,
        }
    }

    fn usage(&mut self, i: usize) -> crate::trace::UsageOr {
        self.usage
            .remove(&i)
            .ok_or_else(|| "the process was not reaped by this runner".into())
    }
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

fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".to_string(),
    }
}

/// Ends stages that a killed runner left running (we hold the lock, so their runner is gone).
pub(super) fn end_orphans(cache: &Cache, progress: &mut dyn Progress) {
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
