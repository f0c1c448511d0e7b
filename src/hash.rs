//! Content hashing of files and directory trees (blake3), and the stat cache
//! that spares re-reading unchanged workspace files on every run.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::fsutil::FileRec;

/// Files at least this big are hashed memory-mapped and in parallel.
const PARALLEL_HASH_BYTES: u64 = 4 << 20;

/// Hash of a whole file or tree, from its file records (sorted by `rel`).
/// A single file has one record with an empty `rel`.
pub fn tree_hash(files: &[FileRec]) -> String {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.rel.as_bytes());
        h.update(&[0, u8::from(f.exec)]);
        h.update(f.hash.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex().to_string()
}

/// Content hash of one file.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let len = fs::metadata(path)?.len();
    let mut h = blake3::Hasher::new();
    if len >= PARALLEL_HASH_BYTES {
        h.update_mmap_rayon(path)?;
    } else {
        let mut f = File::open(path)?;
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf)?;
        h.update(&buf);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// The stat cache: path -> (size, mtime, ctime, inode) -> content hash.
/// Only consulted for workspace files and deps; cache entries are always re-hashed
/// when restored.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatCache {
    entries: HashMap<PathBuf, StatRec>,
    #[serde(skip)]
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StatRec {
    size: u64,
    mtime: i128,
    ctime: i128,
    ino: u64,
    hash: String,
}

/// A file changed within this window of its hashing may change again within the
/// same timestamp tick without its stat changing, so it is not trusted from stat alone.
const RACY_NANOS: i128 = 2_000_000_000;

fn stat_key(m: &fs::Metadata) -> (u64, i128, i128, u64) {
    let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    let ctime = m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128;
    (m.len(), mtime, ctime, m.ino())
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl StatCache {
    pub fn load(path: &Path) -> StatCache {
        // A missing or unreadable stat cache only costs re-hashing.
        fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        crate::fsutil::write_atomic(path, &serde_json::to_vec(self)?)
    }

    /// Hash of a file, from the stat cache when its stat is unchanged.
    pub fn file_hash(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<String> {
        let (size, mtime, ctime, ino) = stat_key(meta);
        if let Some(r) = self.entries.get(path)
            && (r.size, r.mtime, r.ctime, r.ino) == (size, mtime, ctime, ino)
        {
            return Ok(r.hash.clone());
        }
        let hash = hash_file(path)?;
        if now_nanos() - mtime.max(ctime) > RACY_NANOS {
            self.entries.insert(
                path.to_path_buf(),
                StatRec {
                    size,
                    mtime,
                    ctime,
                    ino,
                    hash: hash.clone(),
                },
            );
            self.dirty = true;
        }
        Ok(hash)
    }

    /// Records of a file or of every file below a directory (sorted).
    pub fn records(&mut self, path: &Path) -> io::Result<Vec<FileRec>> {
        let meta = fs::symlink_metadata(path)?;
        if meta.is_file() {
            return Ok(vec![FileRec {
                rel: String::new(),
                size: meta.len(),
                hash: self.file_hash(path, &meta)?,
                exec: is_exec(&meta),
            }]);
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path)?;
            return Ok(vec![link_rec(String::new(), &target)]);
        }
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(path)
            .follow_links(false)
            .sort_by_file_name()
        {
            let e = e.map_err(io::Error::other)?;
            let rel = e
                .path()
                .strip_prefix(path)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let m = e.metadata().map_err(io::Error::other)?;
            if m.is_file() {
                out.push(FileRec {
                    rel,
                    size: m.len(),
                    hash: self.file_hash(e.path(), &m)?,
                    exec: is_exec(&m),
                });
            } else if e.path_is_symlink() {
                out.push(link_rec(rel, &fs::read_link(e.path())?));
            }
        }
        Ok(out)
    }

    /// Content hash of a file or directory tree.
    pub fn path_hash(&mut self, path: &Path) -> io::Result<String> {
        Ok(tree_hash(&self.records(path)?))
    }
}

fn is_exec(m: &fs::Metadata) -> bool {
    m.permissions().mode() & 0o111 != 0
}

fn link_rec(rel: String, target: &Path) -> FileRec {
    FileRec {
        rel,
        size: 0,
        hash: format!("link:{}", target.display()),
        exec: false,
    }
}

/// Records below `prefix` (a path inside a tree), re-rooted at `prefix`.
pub fn subtree(files: &[FileRec], prefix: &str) -> Vec<FileRec> {
    files
        .iter()
        .filter_map(|f| {
            if f.rel == prefix {
                Some(FileRec {
                    rel: String::new(),
                    ..f.clone()
                })
            } else {
                f.rel
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(|r| FileRec {
                        rel: r.to_string(),
                        ..f.clone()
                    })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_sees_content_names_and_modes() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("t")).unwrap();
        fs::write(d.path().join("t/a"), "1").unwrap();
        let mut sc = StatCache::default();
        let h1 = sc.path_hash(&d.path().join("t")).unwrap();
        fs::write(d.path().join("t/a"), "2").unwrap();
        let h2 = sc.path_hash(&d.path().join("t")).unwrap();
        assert_ne!(
            h1, h2,
            "content change must change the hash even within the racy window"
        );
        fs::rename(d.path().join("t/a"), d.path().join("t/b")).unwrap();
        let h3 = sc.path_hash(&d.path().join("t")).unwrap();
        assert_ne!(h2, h3);
        fs::set_permissions(d.path().join("t/b"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(h3, sc.path_hash(&d.path().join("t")).unwrap());
    }

    #[test]
    fn subtree_matches_direct_hash() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("t/s")).unwrap();
        fs::write(d.path().join("t/s/x"), "x").unwrap();
        fs::write(d.path().join("t/y"), "y").unwrap();
        let mut sc = StatCache::default();
        let all = sc.records(&d.path().join("t")).unwrap();
        assert_eq!(
            tree_hash(&subtree(&all, "s")),
            sc.path_hash(&d.path().join("t/s")).unwrap()
        );
        assert_eq!(
            tree_hash(&subtree(&all, "y")),
            sc.path_hash(&d.path().join("t/y")).unwrap()
        );
    }
}
