//! File operations with the durability the cache needs: atomic writes, fsync,
//! and copies that hash what they copy.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One file of a tree: path relative to the tree's root, size, content hash, executable bit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRec {
    pub rel: String,
    pub size: u64,
    pub hash: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

/// Writes `data` to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Writes a new file `path` (which must not exist) and fsyncs it; the
/// directory entry is the caller's to sync.
pub fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Replaces `path` atomically (temporary file + rename) without fsync: for
/// bookkeeping that a crash may lose but must never leave half-written.
pub fn write_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file, symlink or directory tree; missing is fine.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies a file or tree from `src` to `dst` (which must not exist), hashing
/// every byte read, fsyncing what it writes. Returns the records of the copy.
/// The copy is a real copy, never a hardlink, so editing one side cannot alter the other.
pub fn copy_hashed(src: &Path, dst: &Path, sync: bool) -> io::Result<Vec<FileRec>> {
    let meta = fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(src)?;
        std::os::unix::fs::symlink(&target, dst)?;
        return Ok(vec![FileRec {
            rel: String::new(),
            size: 0,
            hash: format!("link:{}", target.display()),
            exec: false,
        }]);
    }
    if meta.is_file() {
        let (size, hash) = copy_file_hashed(src, dst, meta.permissions().mode(), sync)?;
        return Ok(vec![FileRec {
            rel: String::new(),
            size,
            hash,
            exec: meta.permissions().mode() & 0o111 != 0,
        }]);
    }
    let mut recs = Vec::new();
    for e in walkdir::WalkDir::new(src)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.map_err(io::Error::other)?;
        let rel = e.path().strip_prefix(src).unwrap();
        let to = dst.join(rel);
        let m = e.path().symlink_metadata()?;
        let rel_s = rel.to_string_lossy().into_owned();
        if m.is_dir() {
            fs::create_dir_all(&to)?;
        } else if m.file_type().is_symlink() {
            let target = fs::read_link(e.path())?;
            std::os::unix::fs::symlink(&target, &to)?;
            recs.push(FileRec {
                rel: rel_s,
                size: 0,
                hash: format!("link:{}", target.display()),
                exec: false,
            });
        } else if m.is_file() {
            let (size, hash) = copy_file_hashed(e.path(), &to, m.permissions().mode(), sync)?;
            recs.push(FileRec {
                rel: rel_s,
                size,
                hash,
                exec: m.permissions().mode() & 0o111 != 0,
            });
        }
    }
    if sync {
        for e in walkdir::WalkDir::new(dst)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_dir())
        {
            sync_dir(e.path())?;
        }
    }
    Ok(recs)
}

fn copy_file_hashed(src: &Path, dst: &Path, mode: u32, sync: bool) -> io::Result<(u64, String)> {
    let mut input = File::open(src)?;
    let mut out = OpenOptions::new().write(true).create_new(true).open(dst)?;
    let mut h = blake3::Hasher::new();
    // Sized to the file (up to 1 MiB): most outs are small, and a fresh zeroed
    // megabyte per file showed up in profiles.
    let len = input.metadata().map_or(0, |m| m.len());
    let mut buf = vec![0u8; (len as usize).clamp(1, 1 << 20) + 1];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    out.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    if sync {
        out.sync_all()?;
    }
    Ok((size, h.finalize().to_hex().to_string()))
}
