//! `incrpipe status`: what a run would do, and why; and, while a local runner works on the
//! pipeline, which of its stages are running, for how long, and their latest log line.

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
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        t.push_str(&format!(
            "running  {} for {}m{:02}s: {}\n",
            r.stage,
            age / 60,
            age % 60,
            last.unwrap_or("(nothing logged yet)")
        ));
    }
    t
}
