//! `incrpipe gc`: drop cache entries that no given pipeline still reaches, and
//! `incrpipe verify`: re-hash every entry.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cache::Cache;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub kept: usize,
    pub removed: Vec<String>,
    pub bytes_freed: u64,
}

/// Removes every entry (and scratch dir) whose key is not in `reachable`.
pub fn gc(cache: &Cache, reachable: &BTreeSet<String>) -> GcReport {
    let mut r = GcReport::default();
    for key in cache.keys() {
        if reachable.contains(&key) {
            r.kept += 1;
            continue;
        }
        r.bytes_freed += dir_size(&cache.entry_dir(&key));
        cache.remove_entry(&key);
        r.removed.push(key);
    }
    for e in std::fs::read_dir(cache.root().join("scratch"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let key = e.file_name().to_string_lossy().into_owned();
        if !reachable.contains(&key) {
            r.bytes_freed += dir_size(&e.path());
            let _ = crate::fsutil::remove_path(&e.path());
        }
    }
    r
}

/// Re-hashes every entry; corrupt ones are removed and returned with the reason.
pub fn verify(cache: &Cache) -> (usize, Vec<(String, String)>) {
    let mut bad = Vec::new();
    let keys = cache.keys();
    for key in &keys {
        let problem = match cache.lookup(key) {
            None => Some("metadata missing or unreadable".to_string()),
            Some(meta) => cache.verify_entry(&meta).err(),
        };
        if let Some(p) = problem {
            cache.remove_entry(key);
            bad.push((key.clone(), p));
        }
    }
    (keys.len(), bad)
}

pub fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
