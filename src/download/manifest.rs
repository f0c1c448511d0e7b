//! What a correct CIFAR-10 (binary version) looks like: the six data files with their
//! sizes and checksums, embedded so that verification needs nothing from the network.
//!
//! The MD5s equal the published MD5s of the files inside the official
//! `cifar-10-binary.tar.gz`; the SHA-256s were computed from those files.

use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::digest::{CopyError, Digests, copy_hashed};
use super::error::DownloadError;

/// Name of the directory the official archive unpacks to.
pub const BATCHES_DIR: &str = "cifar-10-batches-bin";

/// The class-names file; copied when present but not verified (no published checksum).
pub const META_FILE: &str = "batches.meta.txt";

/// Size of every data file: 10,000 records of 1 label byte + 3072 pixel bytes.
pub const DATA_FILE_BYTES: u64 = 30_730_000;

/// One expected data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedFile {
    pub name: &'static str,
    pub bytes: u64,
    pub md5: &'static str,
    pub sha256: &'static str,
}

/// The six data files, in the order the archive lists them and the data checksum uses.
pub const EXPECTED_FILES: [ExpectedFile; 6] = [
    ExpectedFile {
        name: "data_batch_1.bin",
        bytes: DATA_FILE_BYTES,
        md5: "5dd7e06a14cb22eb9f671a540d1b7c25",
        sha256: "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    },
    ExpectedFile {
        name: "data_batch_2.bin",
        bytes: DATA_FILE_BYTES,
        md5: "5ea93a67294ea407fff1d09f752e9692",
        sha256: "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    },
    ExpectedFile {
        name: "data_batch_3.bin",
        bytes: DATA_FILE_BYTES,
        md5: "942cd6a4bcdd0dd3c604fbe906cb4421",
        sha256: "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    },
    ExpectedFile {
        name: "data_batch_4.bin",
        bytes: DATA_FILE_BYTES,
        md5: "ae636b3ba5c66a11e91e8cb52e771fcb",
        sha256: "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    },
    ExpectedFile {
        name: "data_batch_5.bin",
        bytes: DATA_FILE_BYTES,
        md5: "53f37980c15c3d472c316c40844f3f0d",
        sha256: "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    },
    ExpectedFile {
        name: "test_batch.bin",
        bytes: DATA_FILE_BYTES,
        md5: "803d5f7f4d78ea53de84dbe85f74fb6d",
        sha256: "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    },
];

/// The most bytes we accept for `batches.meta.txt` (the real one has 60).
pub(crate) const META_FILE_LIMIT: u64 = 64 * 1024;

pub(crate) fn expected(name: &str) -> Option<&'static ExpectedFile> {
    EXPECTED_FILES.iter().find(|f| f.name == name)
}

/// A data file whose size, MD5 and SHA-256 matched the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedFile {
    pub name: String,
    pub bytes: u64,
    pub md5: String,
    pub sha256: String,
}

impl ExpectedFile {
    /// Compare measured digests with this manifest entry.
    pub(crate) fn check(&self, got: &Digests) -> Result<VerifiedFile, DownloadError> {
        if got.bytes != self.bytes {
            return Err(DownloadError::SizeMismatch {
                file: self.name.to_string(),
                expected: self.bytes,
                got: got.bytes,
            });
        }
        for (algorithm, expected, got) in [
            ("SHA-256", self.sha256, &got.sha256),
            ("MD5", self.md5, &got.md5),
        ] {
            if expected != got {
                return Err(DownloadError::ChecksumMismatch {
                    file: self.name.to_string(),
                    algorithm,
                    expected: expected.to_string(),
                    got: got.clone(),
                });
            }
        }
        Ok(VerifiedFile {
            name: self.name.to_string(),
            bytes: got.bytes,
            md5: got.md5.clone(),
            sha256: got.sha256.clone(),
        })
    }
}

/// The provenance checksum of the data: blake3 over `name NUL sha256 LF` for the six
/// files in manifest order. It identifies the data, not how it was obtained, so a
/// download and a local mirror of the same files give the same value.
pub fn data_checksum(files: &[VerifiedFile]) -> String {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.name.as_bytes());
        h.update(b"\0");
        h.update(f.sha256.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// The data checksum that every correct CIFAR-10 gives (computed from the manifest).
pub fn expected_data_checksum() -> String {
    let files: Vec<VerifiedFile> = EXPECTED_FILES
        .iter()
        .map(|f| VerifiedFile {
            name: f.name.to_string(),
            bytes: f.bytes,
            md5: f.md5.to_string(),
            sha256: f.sha256.to_string(),
        })
        .collect();
    data_checksum(&files)
}

/// Verify the six data files in an existing `cifar-10-batches-bin` directory.
///
/// Reads every file once; fails on the first missing or wrong file.
pub fn verify_dir(dir: &Path) -> Result<Vec<VerifiedFile>, DownloadError> {
    EXPECTED_FILES
        .iter()
        .map(|expected| {
            let path = dir.join(expected.name);
            let file = File::open(&path).map_err(|e| missing_or_io(expected, dir, &path, e))?;
            let got = copy_hashed(file, &mut std::io::sink(), expected.bytes + 1).map_err(
                |(CopyError::Read(e) | CopyError::Write(e))| DownloadError::io(&path, e),
            )?;
            expected.check(&got)
        })
        .collect()
}

pub(crate) fn missing_or_io(
    expected: &ExpectedFile,
    dir: &Path,
    path: &Path,
    e: std::io::Error,
) -> DownloadError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DownloadError::MissingFile {
            file: expected.name.to_string(),
            location: dir.display().to_string(),
        }
    } else {
        DownloadError::io(path, e)
    }
}
