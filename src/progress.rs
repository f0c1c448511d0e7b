//! What a run shows: a live display on a terminal (indicatif), plain lines
//! otherwise (CI logs), or nothing (tests).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::protocol;

/// What a run did, stage by stage (`incrpipe run`'s last line and its exit code).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub total: usize,
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    pub restored: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
}

pub trait Progress {
    fn start(&mut self, total: usize);
    fn cached(&mut self, stage: &str);
    fn restored(&mut self, stage: &str);
    fn started(&mut self, stage: &str, devices: &[String]);
    fn finished(&mut self, stage: &str, seconds: f64);
    fn failed(&mut self, stage: &str, why: &str, log_tail: &str);
    fn skipped(&mut self, stage: &str);
    fn note(&mut self, text: &str);
    fn finish(&mut self, summary: &RunSummary);
    /// A line a running local stage wrote to its log.
    fn output(&mut self, stage: &str, line: &str) {
        let _ = (stage, line);
    }
    /// A stage's Slurm job changed state (SUBMITTED, PENDING, RUNNING...).
    fn job_state(&mut self, stage: &str, job: &str, state: &str) {
        let _ = (stage, job, state);
    }
}

/// Chooses the live display when stderr is a terminal, plain lines otherwise. With
/// `verbose`, every line the stages write is shown, prefixed with the stage; without it,
/// only their progress lines ([`protocol::is_progress_line`]).
pub fn for_terminal(verbose: bool) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Live::new(verbose))
    } else {
        Box::new(Lines {
            verbose,
            ..Lines::default()
        })
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    done: usize,
    cached: usize,
    running: Vec<String>,
    /// Slurm job states of running stages.
    jobs: std::collections::BTreeMap<String, String>,
    /// The latest progress line of running stages.
    latest: std::collections::BTreeMap<String, String>,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "{} of {} stages, {} cached, {} running",
            self.done,
            self.total,
            self.cached,
            self.running.len()
        )
    }
}

/// Line-oriented output.
#[derive(Default)]
pub struct Lines {
    c: Counts,
    verbose: bool,
}

impl Lines {
    fn say(&self, s: &str) {
        // One write per line (stderr is unbuffered): lines of parallel runs stay whole.
        let line = format!("[{}/{}] {s}\n", self.c.done, self.c.total);
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

impl Progress for Lines {
    fn start(&mut self, total: usize) {
        self.c.total = total;
    }
    fn cached(&mut self, stage: &str) {
        self.c.done += 1;
        self.c.cached += 1;
        let _ = stage;
    }
    fn restored(&mut self, stage: &str) {
        self.c.done += 1;
        self.c.cached += 1;
        self.say(&format!("restored {stage} from the cache"));
    }
    fn started(&mut self, stage: &str, devices: &[String]) {
        self.c.running.push(stage.to_string());
        if devices.is_empty() {
            self.say(&format!("start {stage}"))
        } else {
            self.say(&format!("start {stage} on GPU {}", devices.join(",")))
        }
    }
    fn finished(&mut self, stage: &str, seconds: f64) {
        self.c.running.retain(|s| s != stage);
        self.c.done += 1;
        self.say(&format!("done  {stage} ({seconds:.1}s)"));
    }
    fn failed(&mut self, stage: &str, why: &str, log_tail: &str) {
        self.c.running.retain(|s| s != stage);
        self.c.done += 1;
        eprintln!("{}", failure_text(stage, why, log_tail));
    }
    fn skipped(&mut self, stage: &str) {
        self.c.done += 1;
        self.say(&format!("skip  {stage} (an upstream stage failed)"));
    }
    fn note(&mut self, text: &str) {
        eprintln!("note: {text}");
    }
    fn finish(&mut self, s: &RunSummary) {
        eprintln!("{}", summary_text(s));
    }
    fn job_state(&mut self, stage: &str, job: &str, state: &str) {
        self.say(&format!("job   {stage}: Slurm job {job} {state}"));
    }
    fn output(&mut self, stage: &str, line: &str) {
        if self.verbose || protocol::is_progress_line(line) {
            self.say(&format!("{stage}: {line}"));
        }
    }
}

/// The live display.
pub struct Live {
    bar: ProgressBar,
    c: Counts,
    verbose: bool,
}

impl Live {
    fn new(verbose: bool) -> Live {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}").unwrap(),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Live {
            bar,
            c: Counts::default(),
            verbose,
        }
    }
    fn refresh(&self) {
        let mut msg = self.c.line();
        if !self.c.running.is_empty() {
            msg.push_str(": ");
            let shown: Vec<String> = self
                .c
                .running
                .iter()
                .map(|s| match (self.c.jobs.get(s), self.c.latest.get(s)) {
                    (Some(st), _) => format!("{s} ({st})"),
                    (None, Some(line)) => format!("{s} ({})", shorten(line, 60)),
                    (None, None) => s.clone(),
                })
                .collect();
            msg.push_str(&shown.join(", "));
        }
        self.bar.set_length(self.c.total as u64);
        self.bar.set_position(self.c.done as u64);
        self.bar.set_message(msg);
    }
}

impl Progress for Live {
    fn start(&mut self, total: usize) {
        self.c.total = total;
        self.refresh();
    }
    fn cached(&mut self, _: &str) {
        self.c.done += 1;
        self.c.cached += 1;
        self.refresh();
    }
    fn restored(&mut self, stage: &str) {
        self.c.done += 1;
        self.c.cached += 1;
        self.bar.println(format!("restored {stage} from the cache"));
        self.refresh();
    }
    fn started(&mut self, stage: &str, _: &[String]) {
        self.c.running.push(stage.to_string());
        self.refresh();
    }
    fn finished(&mut self, stage: &str, seconds: f64) {
        self.c.running.retain(|s| s != stage);
        self.c.jobs.remove(stage);
        self.c.latest.remove(stage);
        self.c.done += 1;
        self.bar.println(format!("done  {stage} ({seconds:.1}s)"));
        self.refresh();
    }
    fn failed(&mut self, stage: &str, why: &str, log_tail: &str) {
        self.c.running.retain(|s| s != stage);
        self.c.jobs.remove(stage);
        self.c.latest.remove(stage);
        self.c.done += 1;
        self.bar.println(failure_text(stage, why, log_tail));
        self.refresh();
    }
    fn skipped(&mut self, _: &str) {
        self.c.done += 1;
        self.refresh();
    }
    fn note(&mut self, text: &str) {
        self.bar.println(format!("note: {text}"));
    }
    fn finish(&mut self, s: &RunSummary) {
        self.bar.finish_and_clear();
        eprintln!("{}", summary_text(s));
    }
    fn job_state(&mut self, stage: &str, job: &str, state: &str) {
        self.c
            .jobs
            .insert(stage.to_string(), format!("job {job} {state}"));
        self.refresh();
    }
    fn output(&mut self, stage: &str, line: &str) {
        if self.verbose {
            self.bar.println(format!("{stage}: {line}"));
        }
        if protocol::is_progress_line(line) {
            self.c.latest.insert(stage.to_string(), line.to_string());
            self.refresh();
        }
    }
}

/// `s` cut to `n` characters (an ellipsis marks the cut).
fn shorten(s: &str, n: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}

/// No output (library use, tests).
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: usize) {}
    fn cached(&mut self, _: &str) {}
    fn restored(&mut self, _: &str) {}
    fn started(&mut self, _: &str, _: &[String]) {}
    fn finished(&mut self, _: &str, _: f64) {}
    fn failed(&mut self, _: &str, _: &str, _: &str) {}
    fn skipped(&mut self, _: &str) {}
    fn note(&mut self, _: &str) {}
    fn finish(&mut self, _: &RunSummary) {}
}

fn failure_text(stage: &str, why: &str, log_tail: &str) -> String {
    let mut t = format!("error: stage `{stage}` {why}");
    if !log_tail.trim().is_empty() {
        t.push_str("\n  last lines of its log:\n");
        for l in log_tail.lines() {
            t.push_str("  | ");
            t.push_str(l);
            t.push('\n');
        }
        t.push_str(&format!("  full log: incrpipe logs {stage}"));
    }
    t
}

fn summary_text(s: &RunSummary) -> String {
    let mut t = format!(
        "{} stages: {} ran, {} cached, {} restored",
        s.total,
        s.ran.len(),
        s.cached.len(),
        s.restored.len()
    );
    if !s.failed.is_empty() {
        t.push_str(&format!(", {} failed", s.failed.len()));
    }
    if !s.skipped.is_empty() {
        t.push_str(&format!(", {} not run", s.skipped.len()));
    }
    t
}
