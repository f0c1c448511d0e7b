//! `incrpipe logs [-f] STAGE`: a stage's latest log; with `-f`, followed while the stage
//! runs under a local runner (the runner records its process groups in the cache).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::time::Duration;

use incrpipe::cache::Cache;
use incrpipe::process;

use super::{Env, fail};

/// How often a followed log is read again.
const POLL: Duration = Duration::from_millis(200);
/// Polls (1 s) that a stage's record may lag behind its first output.
const START_GRACE_POLLS: usize = 5;

pub fn run(env: &Env, stage: &str, follow: bool) -> Result<(), ExitCode> {
    let path = env
        .cache_dir
        .join("logs")
        .join(format!("{}.log", incrpipe::cache::sanitize(stage)));
    let no_log = || {
        fail(
            2,
            &format!(
                "no log for stage `{stage}` in {} (has it run with this cache?)",
                env.cache_dir.display()
            ),
        )
    };
    let mut file = File::open(&path).map_err(|_| no_log())?;
    let mut out = std::io::stdout().lock();
    copy_new(&mut file, &mut out);
    if !follow {
        return Ok(());
    }
    let cache = env.open_cache()?;
    let mut ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
    // The runner records a stage just after starting it: give a stage that has only
    // begun a moment to appear before concluding that it has ended.
    for _ in 0..START_GRACE_POLLS {
        if is_running(&cache, stage) {
            break;
        }
        std::thread::sleep(POLL);
    }
    loop {
        // Checked before the last read, so that lines written just before the stage
        // ended are still printed.
        let running = is_running(&cache, stage);
        copy_new(&mut file, &mut out);
        // A new attempt (a retry, a rerun) writes a new log under the same name.
        if let Ok(m) = std::fs::metadata(&path)
            && m.ino() != ino
            && let Ok(f) = File::open(&path)
        {
            ino = m.ino();
            file = f;
            let _ = writeln!(out, "--- {stage}: a new attempt's log ---");
            continue;
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Copies what was appended to `file` since the last call; stops quietly when the
/// reader of stdout has gone.
fn copy_new(file: &mut File, out: &mut impl Write) {
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
}

/// Whether a local runner's record lists `stage` with its process still the one it started.
fn is_running(cache: &Cache, stage: &str) -> bool {
    cache
        .read_running()
        .iter()
        .any(|r| r.stage == stage && process::start_ticks(r.pgid) == Some(r.start_ticks))
}
