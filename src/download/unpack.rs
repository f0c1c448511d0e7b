//! Safe extraction of the CIFAR-10 tarball.
//!
//! Only the six data files and `batches.meta.txt` are extracted, each to a path we build
//! from our own constant file names; no path from the archive is ever joined onto the
//! output directory, so an entry cannot be written outside it by construction. Entries
//! that *try* to escape (absolute paths, `..`, links pointing outside) still fail the
//! whole unpack: such an archive is hostile or broken and none of it should be trusted.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use super::digest::{CopyError, copy_hashed};
use super::error::DownloadError;
use super::manifest::{
    BATCHES_DIR, EXPECTED_FILES, META_FILE, META_FILE_LIMIT, VerifiedFile, expected,
};

/// Unpack a `.tar.gz` (or plain `.tar`) stream into `out_dir`, verifying each data file
/// as it is written. `archive` only names the source in error messages.
///
/// Returns the six verified files in manifest order. `out_dir` is created; on error it
/// may hold partial files, which the caller's staging directory discards.
pub(crate) fn unpack(
    raw: impl Read,
    archive: &Path,
    out_dir: &Path,
) -> Result<Vec<VerifiedFile>, DownloadError> {
    let corrupt = |source| DownloadError::CorruptArchive {
        archive: archive.to_path_buf(),
        source,
    };
    fs::create_dir_all(out_dir).map_err(|e| DownloadError::io(out_dir, e))?;

    // Sniff the gzip magic so that a local mirror may also be an uncompressed tar.
    let mut raw = BufReader::with_capacity(1 << 20, raw);
    let is_gzip = raw.fill_buf().map_err(corrupt)?.starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read + '_> = if is_gzip {
        Box::new(GzDecoder::new(raw))
    } else {
        Box::new(raw)
    };

    let mut tar = tar::Archive::new(stream);
    let mut found: Vec<Option<VerifiedFile>> = vec![None; EXPECTED_FILES.len()];
    let mut meta_seen = false;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let escaping = |why| DownloadError::EscapingEntry {
            archive: archive.to_path_buf(),
            entry: shown.clone(),
            why,
        };
        let path: PathBuf = entry.path().map_err(corrupt)?.into_owned();
        let depth = depth_inside(&path, 0).ok_or_else(|| escaping("absolute path or `..`"))?;

        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            // A symlink target is relative to the link's directory, a hard-link target to
            // the archive root.
            let base = if kind.is_symlink() {
                depth.saturating_sub(1)
            } else {
                0
            };
            if let Some(target) = entry.link_name().map_err(corrupt)?
                && depth_inside(&target, base).is_none()
            {
                return Err(escaping("link pointing outside"));
            }
        }

        let Some(name) = wanted_name(&path) else {
            continue; // readme.html, directories, anything else: not ours to extract.
        };
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(DownloadError::UnexpectedEntryType {
                archive: archive.to_path_buf(),
                entry: shown,
                kind: format!("{kind:?}"),
            });
        }
        let duplicate = || DownloadError::DuplicateEntry {
            archive: archive.to_path_buf(),
            entry: shown.clone(),
        };

        let (limit, slot) = if name == META_FILE {
            if std::mem::replace(&mut meta_seen, true) {
                return Err(duplicate());
            }
            (META_FILE_LIMIT, None)
        } else {
            let index = EXPECTED_FILES.iter().position(|f| f.name == name);
            let exp = &EXPECTED_FILES[index.expect("wanted_name returns only known names")];
            if index.is_some_and(|i| found[i].is_some()) {
                return Err(duplicate());
            }
            // The header says how big the entry is: reject a wrong size before writing it.
            let declared = entry.size();
            if declared != exp.bytes {
                return Err(DownloadError::SizeMismatch {
                    file: exp.name.to_string(),
                    expected: exp.bytes,
                    got: declared,
                });
            }
            (exp.bytes + 1, index)
        };

        // Our constant name, never the archive's path: nothing can land outside `out_dir`.
        let out_path = out_dir.join(name);
        let mut file = File::create(&out_path).map_err(|e| DownloadError::io(&out_path, e))?;
        let got = copy_hashed(&mut entry, &mut file, limit).map_err(|e| match e {
            CopyError::Read(e) => corrupt(e),
            CopyError::Write(e) => DownloadError::io(&out_path, e),
        })?;
        // Data must be on disk before the staging directory is renamed into place, or a
        // crash could leave a "verified" cache entry with empty files.
        file.sync_all()
            .map_err(|e| DownloadError::io(&out_path, e))?;
        if let Some(i) = slot {
            found[i] = Some(EXPECTED_FILES[i].check(&got)?);
        }
    }

    found
        .into_iter()
        .zip(EXPECTED_FILES.iter())
        .map(|(f, exp)| {
            f.ok_or_else(|| DownloadError::MissingFile {
                file: exp.name.to_string(),
                location: archive.display().to_string(),
            })
        })
        .collect()
}

/// Depth of `path` below a directory `base` levels under the root, or `None` if the path
/// is absolute or climbs above the root at any point.
fn depth_inside(path: &Path, base: usize) -> Option<usize> {
    let mut depth = base;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth = depth.checked_sub(1)?,
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(depth)
}

/// The file name if this entry is one we extract: `<name>` or `cifar-10-batches-bin/<name>`.
///
/// Paths with `..` never get here (they are rejected before), so matching on normal
/// components is exact. Returns our own `'static` name, used to build the output path.
fn wanted_name(path: &Path) -> Option<&'static str> {
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let name = match parts.as_slice() {
        [name] => *name,
        [dir, name] if *dir == BATCHES_DIR => *name,
        _ => return None,
    };
    if name == META_FILE {
        Some(META_FILE)
    } else {
        expected(name).map(|e| e.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_rules() {
        assert_eq!(depth_inside(Path::new("a/b"), 0), Some(2));
        assert_eq!(depth_inside(Path::new("./a/../b"), 0), Some(1));
        assert_eq!(depth_inside(Path::new("../evil"), 0), None);
        assert_eq!(depth_inside(Path::new("a/../../evil"), 0), None);
        assert_eq!(depth_inside(Path::new("/etc/passwd"), 0), None);
        assert_eq!(depth_inside(Path::new("../x"), 1), Some(1));
    }

    #[test]
    fn wanted_names() {
        let w = |p: &str| wanted_name(Path::new(p));
        assert_eq!(
            w("cifar-10-batches-bin/data_batch_1.bin"),
            Some("data_batch_1.bin")
        );
        assert_eq!(w("./test_batch.bin"), Some("test_batch.bin"));
        assert_eq!(
            w("cifar-10-batches-bin/batches.meta.txt"),
            Some("batches.meta.txt")
        );
        assert_eq!(w("cifar-10-batches-bin/readme.html"), None);
        assert_eq!(w("other/data_batch_1.bin"), None);
        assert_eq!(w("a/cifar-10-batches-bin/data_batch_1.bin"), None);
    }
}
