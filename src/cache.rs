//! The content-addressed cache.
//!
//! Layout (all inside one directory so renames never cross filesystems):
//! ```text
//! entries/ab/<key>/meta.json     what the entry holds: key inputs, out records
//! entries/ab/<key>/out-<i>       the stage's i-th out (file or tree); entries
//!                                written before layout 1 hold `outs/<out path>`
//! entries/ab/<key>/log           the stage's log (logs/<stage>.log links to it)
//! entries/ab/<key>/params.json   the params file the stage was given
//! tmp/                           entries being written; renamed into entries/
//! scratch/<key>/                 checkpoints of a stage, kept across attempts
//! logs/<stage>.log               the latest log of each stage, for `incrpipe logs`
//! state/lock                     held by the running runner
//! state/running.json             process groups of running stages
//! state/last/<stage>.json        the inputs of each stage's last key, for `status`
//! state/traces/<run>.json        the last runs' traces (`incrpipe trace`)
//! stat-cache.json                stat cache of workspace files
//! ```
//! An entry becomes visible only by the final rename of a complete, fsynced
//! directory, so it is never half-written.
//!
//! Creating an inode is the runner's main cost per stage (ext4 scans past
//! recently deleted inodes on every allocation), so an entry is laid out flat
//! (no directory per out path component), and a local stage's log and params
//! file are written straight into the entry's temporary directory.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsutil::{copy_hashed, remove_path, sync_dir, write_replace, write_synced};
use crate::hash::{FileRec, StatCache, tree_hash};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cache entry {key} is corrupt ({what}); it was removed and will be recomputed")]
    Corrupt { key: String, what: String },
    #[error(
        "out `{out}` of stage `{stage}` changed after the stage ended (did another stage write it?); it was not cached"
    )]
    Changed { stage: String, out: String },
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
    pub fn key(&self) -> Key {
        // serde_json writes BTreeMaps in key order: the form is canonical.
        let bytes = serde_json::to_vec(self).expect("manifest serialises");
        Key(blake3::hash(&bytes).to_hex().to_string())
    }
}

/// A stage's cache key: the hash of its [`Manifest`], 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(String);

impl Key {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
    /// Where the outs are stored: 0 `outs/<out path>`, 1 `out-<i>`.
    #[serde(default)]
    pub layout: u32,
}

impl EntryMeta {
    pub fn new(
        key: &str,
        stage: &str,
        manifest: &Manifest,
        outs: Vec<OutRec>,
        seconds: f64,
    ) -> EntryMeta {
        EntryMeta {
            key: key.to_string(),
            stage: stage.to_string(),
            manifest: manifest.clone(),
            outs,
            seconds,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            layout: LAYOUT,
        }
    }
}

/// The layout of entries written now (see [`EntryMeta::layout`]).
pub const LAYOUT: u32 = 1;

/// A stage recorded as running, so a later runner can end it if its runner died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRec {
    pub stage: String,
    pub pgid: i32,
    /// Process start time (from /proc), to tell a reused pid apart.
    pub start_ticks: u64,
}

#[derive(Clone)]
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

    /// Where runs' traces are kept (src/trace).
    pub fn traces_dir(&self) -> PathBuf {
        crate::trace::dir(&self.root)
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

    /// Copies the workspace outs into `tmp` (a [`Cache::temp_dir`], which may
    /// already hold the stage's log and params file), fsyncs it and renames it
    /// into `entries/` as the entry `meta` describes. The outs' records in `meta`
    /// were made from the workspace ([`hash_outs`]): the copies must hash the
    /// same, or the entry is dropped (an out changed after the stage ended).
    /// `tmp` is gone afterwards, whatever the outcome.
    pub fn commit(&self, tmp: &Path, meta: &EntryMeta, workspace: &Path) -> Result<(), CacheError> {
        let result = (|| {
            for (i, o) in meta.outs.iter().enumerate() {
                let src = workspace.join(&o.path);
                let files =
                    copy_hashed(&src, &tmp.join(format!("out-{i}")), true).map_err(io_at(&src))?;
                if tree_hash(&files) != o.hash {
                    return Err(CacheError::Changed {
                        stage: meta.stage.clone(),
                        out: o.path.clone(),
                    });
                }
            }
            self.seal(tmp, meta)
        })();
        let _ = remove_path(tmp);
        result
    }

    /// Writes `meta.json` into `tmp` (which holds the entry's other files,
    /// fsynced), fsyncs the directory and renames it into `entries/`.
    fn seal(&self, tmp: &Path, meta: &EntryMeta) -> Result<(), CacheError> {
        // The directory is private until the rename: no temporary name needed.
        let meta_path = tmp.join("meta.json");
        write_synced(&meta_path, &serde_json::to_vec_pretty(meta).unwrap())
            .map_err(io_at(&meta_path))?;
        // The entry's files are fsynced (copy_hashed, write_synced); now its
        // directory, so the rename publishes a complete entry.
        sync_dir(tmp).map_err(io_at(tmp))?;
        let dst = self.entry_dir(&meta.key);
        let parent = dst.parent().unwrap();
        if let Err(e) = fs::create_dir(parent)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(CacheError::Io {
                path: parent.to_path_buf(),
                source: e,
            });
        }
        match fs::rename(tmp, &dst) {
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
        sync_dir(parent).map_err(io_at(parent))
    }

    /// Where an entry stores its `i`-th out.
    pub fn out_path(&self, meta: &EntryMeta, i: usize) -> PathBuf {
        let entry = self.entry_dir(&meta.key);
        match meta.layout {
            0 => entry.join("outs").join(&meta.outs[i].path),
            _ => entry.join(format!("out-{i}")),
        }
    }

    /// Copies an entry's outs into the workspace, re-hashing everything it reads.
    /// A mismatch removes the entry and reports it as corrupt.
    pub fn restore(
        &self,
        meta: &EntryMeta,
        workspace: &Path,
        only: Option<&[usize]>,
    ) -> Result<(), CacheError> {
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
            let copied = copy_hashed(&self.out_path(meta, i), &staging, false);
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
        for (i, out) in meta.outs.iter().enumerate() {
            let mut sc = crate::hash::StatCache::default();
            match sc.records(&self.out_path(meta, i)) {
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

    /// Remembers the inputs of a stage's current key (for `status`). The file
    /// starts with the key, so the common case (unchanged) reads 67 bytes.
    pub fn record_last(
        &self,
        stage: &str,
        key: &str,
        manifest: &Manifest,
    ) -> Result<(), CacheError> {
        let p = self.last_path(stage);
        // The JSON of `(key, manifest)` starts with `["<key>"` (keys are hex: no escapes), so
        // the unchanged case (every stage of a no-op rerun) needs no serialisation.
        let head = format!("[\"{key}\"");
        let mut buf = vec![0u8; head.len()];
        if File::open(&p)
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut buf))
            .is_ok()
            && buf == head.as_bytes()
        {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&(key, manifest)).unwrap();
        debug_assert!(bytes.starts_with(head.as_bytes()));
        // Losing these to a crash only costs a less precise `status`: no fsync.
        write_replace(&p, &bytes).map_err(io_at(&p))
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
        let data = serde_json::to_vec(recs).unwrap();
        write_in_place(&p, &data).map_err(io_at(&p))
    }
}

/// The records of a stage's outs as they are in the workspace, for an entry
/// that [`Cache::commit`] will store.
pub fn hash_outs(
    outs: &[String],
    workspace: &Path,
    stats: &mut StatCache,
) -> Result<Vec<OutRec>, CacheError> {
    outs.iter()
        .map(|out| {
            let src = workspace.join(out);
            let files = stats.records(&src).map_err(io_at(&src))?;
            Ok(OutRec {
                path: out.clone(),
                hash: tree_hash(&files),
                files,
            })
        })
        .collect()
}

/// Overwrites a small bookkeeping file in place, without creating (and
/// deleting) an inode per write as a temporary file and rename would. The new
/// content is padded with spaces (JSON whitespace) to the file's length and
/// written with one `pwrite` at offset 0; up to one page, that write lands
/// whole or not at all even if the process is killed, so a reader never sees
/// a mix. Larger contents, and an empty list (which also shrinks the file),
/// go through [`write_replace`].
fn write_in_place(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    if data.len() <= PAGE && data != b"[]" {
        match File::options().write(true).open(path) {
            Ok(f) => {
                let len = f.metadata()?.len() as usize;
                if len <= PAGE {
                    let mut buf = data.to_vec();
                    buf.resize(len.max(data.len()), b' ');
                    return f.write_all_at(&buf, 0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    write_replace(path, data)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(outs: &[&str]) -> Manifest {
        Manifest {
            action: "cmd:x".into(),
            params: BTreeMap::new(),
            matrix: BTreeMap::new(),
            deps: BTreeMap::new(),
            outs: outs.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn entries_of_the_old_layout_still_restore_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        fs::create_dir_all(ws.join("a/b")).unwrap();
        fs::write(ws.join("a/b/f"), "data").unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let m = manifest(&["a/b/f"]);
        let key = m.key();
        let outs = hash_outs(&m.outs, &ws, &mut StatCache::default()).unwrap();
        let meta = EntryMeta::new(&key, "s", &m, outs, 0.0);
        cache
            .commit(&cache.temp_dir("s").unwrap(), &meta, &ws)
            .unwrap();
        assert_eq!(meta.layout, LAYOUT);
        assert!(cache.entry_dir(&key).join("out-0").is_file());
        // Turn it into an entry as written before layout 1.
        let e = cache.entry_dir(&key);
        fs::create_dir_all(e.join("outs/a/b")).unwrap();
        fs::rename(e.join("out-0"), e.join("outs/a/b/f")).unwrap();
        let mut old: serde_json::Value =
            serde_json::from_slice(&fs::read(e.join("meta.json")).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("layout");
        fs::write(e.join("meta.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let meta = cache.lookup(&key).unwrap();
        assert_eq!(meta.layout, 0);
        cache.verify_entry(&meta).unwrap();
        fs::remove_file(ws.join("a/b/f")).unwrap();
        cache.restore(&meta, &ws, None).unwrap();
        assert_eq!(fs::read_to_string(ws.join("a/b/f")).unwrap(), "data");
    }

    #[test]
    fn an_entry_is_committed_only_if_its_outs_still_hash_as_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        fs::create_dir_all(ws.join("d")).unwrap();
        fs::write(ws.join("f"), "one").unwrap();
        fs::write(ws.join("d/g"), "two").unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let m = manifest(&["f", "d"]);
        let mut stats = StatCache::default();
        let outs = hash_outs(&m.outs, &ws, &mut stats).unwrap();
        let meta = EntryMeta::new(&m.key(), "s", &m, outs, 1.0);

        // Changed between the hashing and the copy: no entry, no temporary left.
        fs::write(ws.join("d/g"), "TWO").unwrap();
        let tmp = cache.temp_dir("s").unwrap();
        let e = cache.commit(&tmp, &meta, &ws).unwrap_err();
        assert!(
            matches!(&e, CacheError::Changed { out, .. } if out == "d"),
            "{e}"
        );
        assert!(cache.lookup(&meta.key).is_none());
        assert!(!tmp.exists());

        // Unchanged: the entry is the one the records describe, and restores.
        fs::write(ws.join("d/g"), "two").unwrap();
        let tmp = cache.temp_dir("s").unwrap();
        cache.commit(&tmp, &meta, &ws).unwrap();
        let stored = cache.lookup(&meta.key).unwrap();
        assert_eq!(stored.outs, meta.outs);
        cache.verify_entry(&stored).unwrap();
        fs::remove_dir_all(&ws).unwrap();
        fs::create_dir_all(&ws).unwrap();
        cache.restore(&stored, &ws, None).unwrap();
        assert_eq!(fs::read_to_string(ws.join("d/g")).unwrap(), "two");
    }

    #[test]
    fn running_records_are_rewritten_in_place_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let rec = |n: usize| RunningRec {
            stage: "s".repeat(n),
            pgid: 7,
            start_ticks: 9,
        };
        cache.write_running(&[rec(1), rec(30)]).unwrap();
        let p = dir.path().join("state/running.json");
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
        // Shorter content: padded, still one valid document, same file.
        cache.write_running(&[rec(2)]).unwrap();
        assert_eq!(cache.read_running(), vec![rec(2)]);
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()),
            ino
        );
        // Longer than a page: replaced through a temporary file.
        let many: Vec<_> = (0..200).map(|_| rec(40)).collect();
        cache.write_running(&many).unwrap();
        assert_eq!(cache.read_running(), many);
        cache.write_running(&[]).unwrap();
        assert_eq!(cache.read_running(), vec![]);
        assert!(fs::metadata(&p).unwrap().len() <= 2);
    }
}
