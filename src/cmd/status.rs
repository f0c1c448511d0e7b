//! `incrpipe status`: what a run would do, and why.

use std::path::Path;
use std::process::ExitCode;

use incrpipe::status;

use super::Env;

pub fn run(env: &Env, file: &Path) -> Result<(), ExitCode> {
    let dag = env.load(file, true)?;
    let cache = env.open_cache()?;
    print!(
        "{}",
        status::render(&status::status(&dag, &cache, &env.workspace))
    );
    Ok(())
}
