//! A local directory mirror: copy (and verify) the data files from a directory that
//! holds them directly or in a `cifar-10-batches-bin/` subdirectory.
//!
//! Copied rather than linked: the output must not change if the mirror changes later.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::digest::{CopyError, copy_hashed};
use super::error::DownloadError;
use super::manifest::{BATCHES_DIR, EXPECTED_FILES, META_FILE, META_FILE_LIMIT, VerifiedFile};

pub(crate) fn copy_dir(mirror: &Path, out_dir: &Path) -> Result<Vec<VerifiedFile>, DownloadError> {
    let nested = mirror.join(BATCHES_DIR);
    let dir = if nested.is_dir() {
        nested
    } else {
        mirror.to_path_buf()
    };
    let unreadable = |source| DownloadError::UnreadableMirror {
        path: dir.clone(),
        source,
    };
    // Listing it first turns "permission denied" into one clear error about the mirror.
    fs::read_dir(&dir).map_err(unreadable)?;
    fs::create_dir_all(out_dir).map_err(|e| DownloadError::io(out_dir, e))?;

    let files = EXPECTED_FILES
        .iter()
        .map(|expected| {
            let from = dir.join(expected.name);
            let file = File::open(&from).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => DownloadError::MissingFile {
                    file: expected.name.to_string(),
                    location: dir.display().to_string(),
                },
                _ => unreadable(e),
            })?;
            // Size first: a wrong file is rejected without reading 30 MB.
            let len = file.metadata().map_err(unreadable)?.len();
            if len != expected.bytes {
                return Err(DownloadError::SizeMismatch {
                    file: expected.name.to_string(),
                    expected: expected.bytes,
                    got: len,
                });
            }
            let got = copy_to(file, &out_dir.join(expected.name), expected.bytes + 1, &dir)?;
            expected.check(&got)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let meta = dir.join(META_FILE);
    if let Ok(file) = File::open(&meta)
        && file
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= META_FILE_LIMIT)
    {
        copy_to(file, &out_dir.join(META_FILE), META_FILE_LIMIT, &dir)?;
    }
    Ok(files)
}

fn copy_to(
    from: File,
    to: &Path,
    limit: u64,
    mirror: &Path,
) -> Result<super::digest::Digests, DownloadError> {
    let mut out = File::create(to).map_err(|e| DownloadError::io(to, e))?;
    let got = copy_hashed(from, &mut out, limit).map_err(|e| match e {
        CopyError::Read(source) => DownloadError::UnreadableMirror {
            path: mirror.to_path_buf(),
            source,
        },
        CopyError::Write(e) => DownloadError::io(to, e),
    })?;
    // On disk before the rename that publishes it (see staging).
    out.sync_all().map_err(|e| DownloadError::io(to, e))?;
    Ok(got)
}
