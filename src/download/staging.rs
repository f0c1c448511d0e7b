//! All-or-nothing output: everything is written into a staging directory next to the
//! destination and moved into place with one `rename` after it has been verified.
//!
//! Next to the destination (not in /tmp) so that the rename stays on one file system
//! and is atomic. The staging directory is removed on drop unless committed, so any
//! error (or panic) leaves nothing behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::DownloadError;
use super::manifest::BATCHES_DIR;

pub(crate) struct Staging {
    root: PathBuf,
    committed: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staging {
    /// Create a fresh, uniquely named staging directory next to `dest`.
    pub(crate) fn new(dest: &Path) -> Result<Self, DownloadError> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| DownloadError::io(&parent, e))?;
        let stem = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cifar10".to_string());
        loop {
            // pid + counter: unique across concurrent processes and threads.
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let root = parent.join(format!(".{stem}.incrpipe-part-{}-{n}", std::process::id()));
            match fs::create_dir(&root) {
                Ok(()) => {
                    return Ok(Staging {
                        root,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(DownloadError::io(&root, e)),
            }
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where the data files are written while staging.
    pub(crate) fn batches_dir(&self) -> PathBuf {
        self.root.join(BATCHES_DIR)
    }

    /// Move `<staging>/cifar-10-batches-bin` to `<dest>/cifar-10-batches-bin`.
    ///
    /// If `dest` does not exist the whole staging directory becomes `dest` (one rename);
    /// if it exists (e.g. a stage's output directory made by the runner) only the batches
    /// directory is moved into it. An existing `cifar-10-batches-bin` is never replaced.
    pub(crate) fn commit(mut self, dest: &Path) -> Result<PathBuf, DownloadError> {
        let target = dest.join(BATCHES_DIR);
        if target.exists() {
            return Err(DownloadError::DestinationExists { path: target });
        }
        if dest.exists() {
            rename(&self.batches_dir(), &target)?;
            // Only the empty staging root is left; Drop removes it.
        } else {
            // Anything besides the batches directory (the downloaded archive) must be gone
            // before the staging root becomes the destination.
            rename(&self.root, dest)?;
            self.committed = true;
        }
        Ok(target)
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), DownloadError> {
    fs::rename(from, to).map_err(|e| match e.kind() {
        // Another process finished first.
        io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty => {
            DownloadError::DestinationExists {
                path: to.to_path_buf(),
            }
        }
        _ => DownloadError::io(to, e),
    })
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a failure here must not hide the error that got us here.
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
