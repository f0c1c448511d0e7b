//! `incrpipe __stage KIND`: the child-process side of a built-in stage.

use std::process::ExitCode;

use super::{Env, fail};

pub fn run(env: &Env, kind: &str) -> Result<(), ExitCode> {
    let Some(k) = env.registry.get(kind) else {
        return Err(fail(2, &format!("unknown stage kind `{kind}`")));
    };
    let ctx = incrpipe::protocol::read_context(|n| std::env::var(n).ok())
        .map_err(|e| fail(2, &format!("{kind}: {e}")))?;
    k.run(&ctx).map_err(|e| fail(1, &format!("{kind}: {e:#}")))
}
