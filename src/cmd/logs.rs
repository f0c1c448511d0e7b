//! `incrpipe logs`: a stage's latest log.

use std::io::Write;
use std::process::ExitCode;

use super::{Env, fail};

pub fn run(env: &Env, stage: &str) -> Result<(), ExitCode> {
    let path = env
        .cache_dir
        .join("logs")
        .join(format!("{}.log", incrpipe::cache::sanitize(stage)));
    let bytes = std::fs::read(&path).map_err(|_| {
        fail(
            2,
            &format!(
                "no log for stage `{stage}` in {} (has it run with this cache?)",
                env.cache_dir.display()
            ),
        )
    })?;
    let _ = std::io::stdout().write_all(&bytes);
    Ok(())
}
