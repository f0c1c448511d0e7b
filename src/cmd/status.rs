//! `incrpipe status`: what a run would do, and why; and, while a local runner works on the
//! pipeline, which of its stages are running, for how long, and their latest log line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::ExitCode;

use incrpipe::cache::Cache;
use incrpipe::dag::Dag;
use incrpipe::{process, status};

use super::Env;

pub fn run(env: &Env, file: &Path) -> Result<(), ExitCode> {
    let dag = env.load(file, true)?;
    let cache = env.open_cache()?;
    print!("{}", running(&dag, &cache));
    print!(
        "{}",
        status::render(&status::status(&dag, &cache, &env.workspace))
    );
    Ok(())
}

/// `running  STAGE for 12m05s: LAST LOG LINE` for each stage of `dag` whose process, as
/// the runner recorded it, is still alive.
fn running(dag: &Dag, cache: &Cache) -> String {
    let mut t = String::new();
    for r in cache.read_running() {
        if process::start_ticks(r.pgid) != Some(r.start_ticks)
            || !dag.nodes.iter().any(|n| n.spec.name == r.stage)
        {
            continue;
        }
        let age = process::age(r.pgid).map_or(0, |d| d.as_secs());
        let log = cache
            .root()
            .join("logs")
            .join(format!("{}.log", incrpipe::cache::sanitize(&r.stage)));
        let last = last_line(&log);
        t.push_str(&format!(
            "running  {} for {}m{:02}s: {}\n",
            r.stage,
            age / 60,
            age % 60,
            last.as_deref().unwrap_or("(nothing logged yet)")
        ));
    }
    t
}

/// The last non-empty line of a log, reading only its end (a stage's log may be large).
fn last_line(path: &Path) -> Option<String> {
    const TAIL: u64 = 8192;
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(String::from)
}
