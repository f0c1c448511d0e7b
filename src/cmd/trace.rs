//! `incrpipe trace [RUN]`: a run's trace as text, CSV or JSON, or its timeline as HTML.

use std::path::PathBuf;
use std::process::ExitCode;

use incrpipe::fsutil::write_atomic;
use incrpipe::trace::{self, table, timeline};

use super::{Env, fail};

#[derive(clap::Args)]
pub struct TraceArgs {
    /// The run: its id (or a unique prefix), or N for the Nth latest (default: the latest).
    pub run: Option<String>,
    /// CSV, one row per stage try.
    #[arg(long, conflicts_with_all = ["json", "list"])]
    pub csv: bool,
    /// The trace itself, as JSON.
    #[arg(long, conflicts_with = "list")]
    pub json: bool,
    /// Also write the run's timeline to this HTML file.
    #[arg(long, value_name = "FILE", conflicts_with = "list")]
    pub html: Option<PathBuf>,
    /// List the traced runs, latest first.
    #[arg(long)]
    pub list: bool,
}

pub fn run(env: &Env, a: TraceArgs) -> Result<(), ExitCode> {
    let dir = trace::dir(&env.cache_dir);
    if a.list {
        let all = trace::list(&dir).map_err(|e| fail(1, &format!("{}: {e}", dir.display())))?;
        for (n, p) in all.iter().rev().enumerate() {
            let t = trace::read(p).map_err(|e| fail(1, &e.to_string()))?;
            let ran = t
                .stages
                .iter()
                .filter(|s| s.outcome == trace::Outcome::Ran)
                .count();
            println!(
                "{:>2}  {}  {}  {:.2} s, {} stage rows, {ran} ran",
                n + 1,
                t.id,
                t.pipeline,
                t.end - t.start,
                t.stages.len()
            );
        }
        return Ok(());
    }
    let t = trace::load(&dir, a.run.as_deref()).map_err(|e| fail(2, &e.to_string()))?;
    if let Some(path) = &a.html {
        let path = &env.workspace.join(path);
        write_atomic(path, timeline::html(&t).as_bytes())
            .map_err(|e| fail(1, &format!("cannot write {}: {e}", path.display())))?;
    }
    if a.json {
        let json = serde_json::to_string_pretty(&t).map_err(|e| fail(1, &e.to_string()))?;
        println!("{json}");
    } else if a.csv {
        print!("{}", table::csv(&t));
    } else {
        print!("{}", table::text(&t));
    }
    Ok(())
}
