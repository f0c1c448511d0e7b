//! The subcommands' handlers, one module each; what they share is here: where
//! the command runs ([`Env`]), loading a pipeline, and turning errors into exit codes.

pub mod bench;
pub mod check;
pub mod dag;
pub mod gc;
pub mod logs;
pub mod model;
pub mod replay;
pub mod report;
pub mod run;
pub mod stage;
pub mod status;
pub mod trace;
pub mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use incrpipe::cache::{Cache, CacheLock};
use incrpipe::dag::Dag;
use incrpipe::registry::Registry;
use incrpipe::spec;

/// Where a command runs: the workspace (the current directory), the cache, the stage kinds.
pub struct Env {
    pub workspace: PathBuf,
    pub cache_dir: PathBuf,
    pub registry: Registry,
}

impl Env {
    /// A pipeline file as a DAG; `check_deps` also requires deps that no stage makes to exist.
    pub fn load(&self, file: &Path, check_deps: bool) -> Result<Dag, ExitCode> {
        let p = spec::load(file, &self.registry).map_err(|d| fail(2, &d.to_string()))?;
        Dag::build(&p, &self.workspace, check_deps).map_err(|d| fail(2, &d.to_string()))
    }

    pub fn open_cache(&self) -> Result<Cache, ExitCode> {
        Cache::open(&self.cache_dir).map_err(|e| fail(2, &e.to_string()))
    }

    /// Opens the cache and takes its lock (waiting for a running runner), for maintenance commands.
    pub fn open_locked(&self) -> Result<(Cache, CacheLock), ExitCode> {
        let cache = self.open_cache()?;
        let lock = cache
            .lock(true, || {
                eprintln!("waiting for the running incrpipe to release the cache...")
            })
            .map_err(|e| fail(1, &e.to_string()))?;
        Ok((cache, lock))
    }
}

/// Prints `msg` as an error and returns `code`.
pub fn fail(code: u8, msg: &str) -> ExitCode {
    let msg = msg.trim_end();
    if msg.starts_with("error:") {
        eprintln!("{msg}")
    } else {
        eprintln!("error: {msg}")
    }
    ExitCode::from(code)
}

/// Exit 0, or 1 with the error and its causes.
pub fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

/// The handler's result as the process's exit code.
pub fn exit(r: Result<(), ExitCode>) -> ExitCode {
    r.err().unwrap_or(ExitCode::SUCCESS)
}
