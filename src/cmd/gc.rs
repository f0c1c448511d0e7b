//! `incrpipe gc` and `incrpipe verify`: the cache's upkeep, under its lock.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use incrpipe::{gc, status};

use super::{Env, fail};

/// Removes the entries that none of `files` (default: pipelines/*.toml) reaches.
pub fn gc(env: &Env, mut files: Vec<PathBuf>) -> Result<(), ExitCode> {
    if files.is_empty() {
        files = std::fs::read_dir(env.workspace.join("pipelines"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
    }
    if files.is_empty() {
        return Err(fail(
            2,
            "gc needs pipeline files (none given, none under pipelines/): it keeps what they reach",
        ));
    }
    let (cache, _lock) = env.open_locked()?;
    let mut reachable = BTreeSet::new();
    for f in &files {
        let dag = env.load(f, false)?;
        reachable.extend(
            status::status(&dag, &cache, &env.workspace)
                .into_iter()
                .filter_map(|s| s.key),
        );
    }
    let r = gc::gc(&cache, &reachable);
    println!(
        "kept {} entries, removed {}, freed {:.1} MiB",
        r.kept,
        r.removed.len(),
        r.bytes_freed as f64 / (1 << 20) as f64
    );
    // Traces are bounded too: the last ones are kept, as a run's end keeps them.
    match incrpipe::trace::prune(&cache.traces_dir(), incrpipe::trace::KEEP) {
        Ok(0) => {}
        Ok(n) => println!(
            "removed {n} run traces older than the last {}",
            incrpipe::trace::KEEP
        ),
        Err(e) => return Err(fail(1, &format!("{}: {e}", cache.traces_dir().display()))),
    }
    Ok(())
}

/// Re-hashes every entry; corrupt ones are removed and reported (exit 1).
pub fn verify(env: &Env) -> Result<(), ExitCode> {
    let (cache, _lock) = env.open_locked()?;
    let (n, bad) = gc::verify(&cache);
    for (k, why) in &bad {
        println!("corrupt {k}: {why} (removed; the next run recomputes it)");
    }
    println!("{n} entries checked, {} corrupt", bad.len());
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ExitCode::from(1))
    }
}
