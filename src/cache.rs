//! The content-addressed cache.
//!
//! Layout (all inside one directory so renames never cross filesystems):
//! ```text
//! entries/ab/<key>/meta.json     what the entry holds: key inputs, out records
//! entries/ab/<key>/outs/<out>    the stage's outputs
//! entries/ab/<key>/log           the stage's log
//! tmp/                           entries being written; renamed into entries/
//! scratch/<key>/                 checkpoints of a stage, kept across attempts
//! logs/<stage>.log               the latest log of each stage, for `incrpipe logs`
//! state/lock                     held by the running runner
//! state/running.json             process groups of running stages
//! state/last/<stage>.json        the inputs of each stage's last key, for `status`
//! stat-cache.json                stat cache of workspace files
//! ```
//! An entry becomes visible only by the final rename of a complete, fsynced
//! directory, so it is never half-written.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsutil::{copy_hashed, remove_path, sync_dir, write_atomic, write_replace};
use crate::hash::{FileRec, tree_hash};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cache entry {key} is corrupt ({what}); it was removed and will be recomputed")]
    Corrupt { key: String, what: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The inputs that make a stage's key; stored so `status` can say what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `cmd:<text>` or `kind:<name>@<version>`.
    pub action: String,
    pub params: BTreeMap<String, Value>,
    pub matrix: BTreeMap<String, Value>,
    /// Dep path -> content hash.
    pub deps: BTreeMap<String, String>,
    pub outs: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Manifest {
    pub fn key(&self) -> String {
        // serde_json writes BTreeMaps in key order: the form is canonical.
        let bytes = serde_json::to_vec(self).expect("manifest serialises");
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// One out of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutRec {
    pub path: String,
    pub hash: String,
    pub files: Vec<FileRec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryMeta {
    pub key: String,
    pub stage: String,
    pub manifest: Manifest,
    pub outs: Vec<OutRec>,
    pub seconds: f64,
    pub created_unix: u64,
}

/// A stage recorded as running, so a later runner can end it if its runner died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRec {
    pub stage: String,
    pub pgid: i32,
    /// Process start time (from /proc), to tell a reused pid apart.
    pub start_ticks: u64,
}

pub struct Cache {
    root: PathBuf,
}

/// Held while a runner uses the cache; dropping it releases the lock.
pub struct CacheLock {
    _file: File,
}

impl Cache {
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for sub in ["entries", "tmp", "scratch", "logs", "state/last"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let root = root.canonicalize().map_err(io_at(root))?;
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the cache lock; when another runner holds it, calls `waiting` once
    /// and then waits (or fails with `WouldBlock` when `wait` is false).
    pub fn lock(&self, wait: bool, waiting: impl FnOnce()) -> Result<CacheLock, CacheError> {
        let path = self.root.join("state/lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait => {
                waiting();
                file.lock().map_err(io_at(&path))?;
            }
            Err(TryLockError::WouldBlock) => {
                return Err(CacheError::Io {
                    path,
                    source: io::Error::from(io::ErrorKind::WouldBlock),
                });
            }
            Err(TryLockError::Error(e)) => return Err(CacheError::Io { path, source: e }),
        }
        Ok(CacheLock { _file: file })
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(&key[..2]).join(key)
    }

    pub fn scratch_dir(&self, key: &str) -> PathBuf {
        self.root.join("scratch").join(key)
    }

    pub fn log_path(&self, stage: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{}.log", sanitize(stage)))
    }

    pub fn stat_cache_path(&self) -> PathBuf {
        self.root.join("stat-cache.json")
    }

    /// A fresh directory under tmp/ for an entry being built.
    pub fn temp_dir(&self, label: &str) -> Result<PathBuf, CacheError> {
        let nonce: u64 = rand::random();
        let p = self.root.join("tmp").join(format!(
            "{}-{}-{nonce:016x}",
            sanitize(label),
            std::process::id()
        ));
        fs::create_dir_all(&p).map_err(io_at(&p))?;
        Ok(p)
    }

    /// Removes leftovers of runners that died while writing (the lock is held).
    pub fn clean_tmp(&self) {
        if let Ok(rd) = fs::read_dir(self.root.join("tmp")) {
            for e in rd.flatten() {
                let _ = remove_path(&e.path());
            }
        }
    }

    /// The entry's metadata, if the entry exists and its metadata is readable.
    pub fn lookup(&self, key: &str) -> Option<EntryMeta> {
        let bytes = fs::read(self.entry_dir(key).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes)
            .ok()
            .filter(|m: &EntryMeta| m.key == key)
    }

    /// Copies the workspace outs into a new entry and publishes it atomically.
    pub fn commit(
        &self,
        key: &str,
        stage: &str,
        manifest: &Manifest,
        workspace: &Path,
        log: Option<&Path>,
        seconds: f64,
    ) -> Result<EntryMeta, CacheError> {
        let tmp = self.temp_dir(key)?;
        let result = (|| {
            let outs_dir = tmp.join("outs");
            let mut outs = Vec::new();
            for out in &manifest.outs {
                let dst = outs_dir.join(out);
                let parent = dst.parent().unwrap();
                fs::create_dir_all(parent).map_err(io_at(parent))?;
                let files = copy_hashed(&workspace.join(out), &dst, true)
                    .map_err(io_at(&workspace.join(out)))?;
                outs.push(OutRec {
                    path: out.clone(),
                    hash: tree_hash(&files),
                    files,
                });
            }
            if let Some(log) = log {
                let _ = fs::copy(log, tmp.join("log"));
            }
            let meta = EntryMeta {
                key: key.to_string(),
                stage: stage.to_string(),
                manifest: manifest.clone(),
                outs,
                seconds,
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            };
            let meta_path = tmp.join("meta.json");
            write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta).unwrap())
                .map_err(io_at(&meta_path))?;
            sync_dir(&tmp).map_err(io_at(&tmp))?;
            let dst = self.entry_dir(key);
            let parent = dst.parent().unwrap();
            fs::create_dir_all(parent).map_err(io_at(parent))?;
            match fs::rename(&tmp, &dst) {
                Ok(()) => {}
                // Another runner committed the same key first; its entry is as good as ours.
                Err(e) if dst.join("meta.json").exists() => drop(e),
                Err(e) => {
                    return Err(CacheError::Io {
                        path: dst,
                        source: e,
                    });
                }
            }
            sync_dir(parent).map_err(io_at(parent))?;
            Ok(meta)
        })();
        let _ = remove_path(&tmp);
        result
    }

    /// Copies an entry's outs into the workspace, re-hashing everything it reads.
    /// A mismatch removes the entry and reports it as corrupt.
    pub fn restore(
        &self,
        meta: &EntryMeta,
        workspace: &Path,
        only: Option<&[usize]>,
    ) -> Result<(), CacheError> {
        let entry = self.entry_dir(&meta.key);
        for (i, out) in meta.outs.iter().enumerate() {
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            let dst = workspace.join(&out.path);
            let parent = dst.parent().unwrap();
            fs::create_dir_all(parent).map_err(io_at(parent))?;
            // Restore beside the target, then rename: the workspace never shows a partial out.
            let staging = parent.join(format!(
                ".{}.incrpipe-restore",
                dst.file_name().unwrap().to_string_lossy()
            ));
            let _ = remove_path(&staging);
            let copied = copy_hashed(&entry.join("outs").join(&out.path), &staging, false);
            let ok = matches!(&copied, Ok(files) if *files == out.files);
            if !ok {
                let _ = remove_path(&staging);
                let what = match copied {
                    Ok(_) => format!("content of `{}` does not match its recorded hash", out.path),
                    Err(e) => format!("`{}` unreadable: {e}", out.path),
                };
                self.remove_entry(&meta.key);
                return Err(CacheError::Corrupt {
                    key: meta.key.clone(),
                    what,
                });
            }
            remove_path(&dst).map_err(io_at(&dst))?;
            fs::rename(&staging, &dst).map_err(io_at(&dst))?;
        }
        Ok(())
    }

    /// Re-hashes an entry completely; `Err` describes the first problem.
    pub fn verify_entry(&self, meta: &EntryMeta) -> Result<(), String> {
        let entry = self.entry_dir(&meta.key);
        for out in &meta.outs {
            let mut sc = crate::hash::StatCache::default();
            match sc.records(&entry.join("outs").join(&out.path)) {
                Ok(files) if files == out.files => {}
                Ok(_) => {
                    return Err(format!(
                        "content of `{}` does not match its recorded hash",
                        out.path
                    ));
                }
                Err(e) => return Err(format!("`{}` unreadable: {e}", out.path)),
            }
        }
        Ok(())
    }

    pub fn remove_entry(&self, key: &str) {
        // Rename away first so a reader never sees a half-deleted entry.
        let dir = self.entry_dir(key);
        if let Ok(tmp) = self.temp_dir(&format!("del-{key}"))
            && fs::rename(&dir, tmp.join("e")).is_ok()
        {
            let _ = remove_path(&tmp);
            return;
        }
        let _ = remove_path(&dir);
    }

    /// Every entry key in the cache.
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for shard in fs::read_dir(self.root.join("entries"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for e in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    pub fn last_manifest(&self, stage: &str) -> Option<(String, Manifest)> {
        let bytes = fs::read(self.last_path(stage)).ok()?;
        serde_json::from_slice::<(String, Manifest)>(&bytes).ok()
    }

    /// Remembers the inputs of a stage's current key (for `status`). The key
    /// alone is kept beside them, so the common case (unchanged) reads 64 bytes.
    pub fn record_last(
        &self,
        stage: &str,
        key: &str,
        manifest: &Manifest,
    ) -> Result<(), CacheError> {
        let p = self.last_path(stage);
        let key_path = p.with_extension("key");
        if fs::read(&key_path).is_ok_and(|k| k == key.as_bytes()) {
            return Ok(());
        }
        // Losing these to a crash only costs a less precise `status`: no fsync.
        write_replace(&p, &serde_json::to_vec(&(key, manifest)).unwrap()).map_err(io_at(&p))?;
        write_replace(&key_path, key.as_bytes()).map_err(io_at(&key_path))
    }

    fn last_path(&self, stage: &str) -> PathBuf {
        self.root.join("state/last").join(format!(
            "{}.json",
            &blake3::hash(stage.as_bytes()).to_hex()[..32]
        ))
    }

    pub fn read_running(&self) -> Vec<RunningRec> {
        fs::read(self.root.join("state/running.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn write_running(&self, recs: &[RunningRec]) -> Result<(), CacheError> {
        // Not fsynced: after a power loss the stages it lists are gone anyway.
        let p = self.root.join("state/running.json");
        write_replace(&p, &serde_json::to_vec(recs).unwrap()).map_err(io_at(&p))
    }
}

/// A stage name as a file name.
/// Names that needed replacing get a hash suffix, so `a/b` and `a_b` stay apart.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=,@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s == name {
        s
    } else {
        format!("{s}-{}", &blake3::hash(name.as_bytes()).to_hex()[..8])
    }
}
