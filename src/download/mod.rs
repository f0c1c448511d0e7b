//! Fetch, verify and unpack CIFAR-10 (binary version): the library behind the built-in
//! `download-cifar` stage.
//!
//! A source is either the official archive by URL or a local mirror (a directory with the
//! `.bin` files, or a `.tar.gz`); the mirror comes from [`FetchOptions::mirror`] or, when
//! none is given, from the `INCRPIPE_CIFAR10` environment variable (see
//! [`fetch_cifar10_with_env`]). This is how the stage runs on machines without internet.
//!
//! Whatever the source, the six data files are checked against the sizes, MD5s and
//! SHA-256s embedded in [`EXPECTED_FILES`]; that is the main guarantee. The archive's own
//! checksum is an extra check, optional because a locally rebuilt archive cannot carry
//! the official archive's MD5.
//!
//! Output: `<dest>/cifar-10-batches-bin/` with the six files (+ `batches.meta.txt` when the
//! source has it), published by one rename after everything was verified; on any error
//! nothing is left behind.
//!
//! Modules: `digest` (hash while copying), `manifest` (the expected files), `http`
//! (streaming download), `unpack` (safe tar extraction), `local` (directory mirror),
//! `staging` (all-or-nothing output), `error`.

mod digest;
mod error;
mod http;
mod local;
mod manifest;
mod staging;
mod unpack;

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use digest::Digests;
pub use error::DownloadError;
pub use manifest::{
    BATCHES_DIR, DATA_FILE_BYTES, EXPECTED_FILES, ExpectedFile, META_FILE, VerifiedFile,
    data_checksum, expected_data_checksum, verify_dir,
};

use digest::HashingReader;
use staging::Staging;

/// Where the official archive lives.
pub const OFFICIAL_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

/// MD5 of the official `cifar-10-binary.tar.gz` (as published by the dataset's authors).
pub const OFFICIAL_ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Environment variable naming a local mirror (directory or archive).
pub const MIRROR_ENV: &str = "INCRPIPE_CIFAR10";

/// An expected checksum of the archive file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", content = "hex", rename_all = "lowercase")]
pub enum ArchiveChecksum {
    Md5(String),
    Sha256(String),
}

impl ArchiveChecksum {
    /// An MD5 given as 32 hex digits (any case).
    pub fn md5(hex: &str) -> Result<Self, DownloadError> {
        Ok(ArchiveChecksum::Md5(normalise_hex(hex, 32)?))
    }

    /// A SHA-256 given as 64 hex digits (any case).
    pub fn sha256(hex: &str) -> Result<Self, DownloadError> {
        Ok(ArchiveChecksum::Sha256(normalise_hex(hex, 64)?))
    }

    fn verify(&self, name: &str, got: &Digests) -> Result<(), DownloadError> {
        let (algorithm, expected, got) = match self {
            ArchiveChecksum::Md5(e) => ("MD5", e, &got.md5),
            ArchiveChecksum::Sha256(e) => ("SHA-256", e, &got.sha256),
        };
        if expected == got {
            Ok(())
        } else {
            Err(DownloadError::ChecksumMismatch {
                file: name.to_string(),
                algorithm,
                expected: expected.clone(),
                got: got.clone(),
            })
        }
    }
}

/// Parses `md5:<hex>` or `sha256:<hex>` (the form a pipeline parameter takes).
impl FromStr for ArchiveChecksum {
    type Err = DownloadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || DownloadError::InvalidChecksum {
            value: s.to_string(),
        };
        match s.split_once(':') {
            Some(("md5", hex)) => Self::md5(hex).map_err(|_| invalid()),
            Some(("sha256", hex)) => Self::sha256(hex).map_err(|_| invalid()),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for ArchiveChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveChecksum::Md5(h) => write!(f, "md5:{h}"),
            ArchiveChecksum::Sha256(h) => write!(f, "sha256:{h}"),
        }
    }
}

fn normalise_hex(hex: &str, len: usize) -> Result<String, DownloadError> {
    if hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(DownloadError::InvalidChecksum {
            value: hex.to_string(),
        })
    }
}

/// Whether and how to check the archive file's own checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ArchiveCheck {
    /// The official MD5 when the URL is [`OFFICIAL_URL`]; nothing otherwise (another URL
    /// or a local archive may well be a rebuilt archive with identical data files).
    #[default]
    Auto,
    /// Do not check the archive; the data files are still checked.
    Skip,
    /// Check this checksum, for any archive source (ignored for a directory mirror).
    Expect(ArchiveChecksum),
}

/// Where to get CIFAR-10 from, and what to check.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Archive URL, used when no mirror is given.
    pub url: String,
    /// Check of the archive file itself.
    pub archive_check: ArchiveCheck,
    /// A local mirror (directory or archive); wins over `env_mirror` and `url`.
    pub mirror: Option<PathBuf>,
    /// The value of `INCRPIPE_CIFAR10`, passed in explicitly so that the library never
    /// reads the (process-global) environment itself; [`fetch_cifar10_with_env`] fills it.
    pub env_mirror: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            url: OFFICIAL_URL.to_string(),
            archive_check: ArchiveCheck::Auto,
            mirror: None,
            env_mirror: None,
        }
    }
}

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Url { url: String },
    LocalDir { path: PathBuf },
    LocalArchive { path: PathBuf },
}

impl FetchOptions {
    /// The source these options select: `mirror`, else `env_mirror`, else `url`.
    pub fn source(&self) -> Result<Source, DownloadError> {
        let Some(path) = self.mirror.as_ref().or(self.env_mirror.as_ref()) else {
            return Ok(Source::Url {
                url: self.url.clone(),
            });
        };
        let meta = fs::metadata(path).map_err(|source| DownloadError::UnreadableMirror {
            path: path.clone(),
            source,
        })?;
        Ok(if meta.is_dir() {
            Source::LocalDir { path: path.clone() }
        } else {
            Source::LocalArchive { path: path.clone() }
        })
    }

    fn expected_archive_checksum(&self, source: &Source) -> Option<ArchiveChecksum> {
        match (&self.archive_check, source) {
            (ArchiveCheck::Skip, _) | (_, Source::LocalDir { .. }) => None,
            (ArchiveCheck::Expect(c), _) => Some(c.clone()),
            (ArchiveCheck::Auto, Source::Url { url }) if url == OFFICIAL_URL => {
                Some(ArchiveChecksum::Md5(OFFICIAL_ARCHIVE_MD5.to_string()))
            }
            (ArchiveCheck::Auto, _) => None,
        }
    }
}

/// Size and checksums of the archive that was unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveReport {
    pub bytes: u64,
    pub md5: String,
    pub sha256: String,
    /// The expected checksum that was checked, if any.
    pub verified_against: Option<ArchiveChecksum>,
}

/// What was fetched and verified; the pipeline records it as provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cifar10Report {
    pub source: Source,
    /// `<dest>/cifar-10-batches-bin`.
    pub dir: PathBuf,
    /// The archive, when the source was one.
    pub archive: Option<ArchiveReport>,
    /// The six data files, in manifest order, all verified.
    pub files: Vec<VerifiedFile>,
    /// [`data_checksum`] of `files`: identifies the data whatever the source.
    pub data_checksum: String,
}

/// Fetch CIFAR-10 into `<dest>/cifar-10-batches-bin`, verifying every data file.
///
/// `dest` may exist (its `cifar-10-batches-bin` must not) or not (it is created, with
/// its parent directories). Staging happens in a directory next to `dest`; on error it is
/// removed and `dest` is untouched.
pub fn fetch_cifar10(dest: &Path, options: &FetchOptions) -> Result<Cifar10Report, DownloadError> {
    let source = options.source()?;
    let target = dest.join(BATCHES_DIR);
    // Checked up front as well as at commit, so a 170 MB download is not wasted.
    if target.exists() {
        return Err(DownloadError::DestinationExists { path: target });
    }
    let expected_archive = options.expected_archive_checksum(&source);
    let staging = Staging::new(dest)?;
    let out = staging.batches_dir();

    let (files, archive) = match &source {
        Source::Url { url } => {
            let part = staging.root().join("archive.part");
            let got = http::download_to_file(url, &part)?;
            // Before unpacking: a wrong archive is reported as such, not as a bad file.
            if let Some(expected) = &expected_archive {
                expected.verify(url, &got)?;
            }
            let file = File::open(&part).map_err(|e| DownloadError::io(&part, e))?;
            let files = unpack::unpack(file, Path::new(url), &out)?;
            fs::remove_file(&part).map_err(|e| DownloadError::io(&part, e))?;
            (files, Some(archive_report(got, expected_archive)))
        }
        Source::LocalArchive { path } => {
            let unreadable = |source| DownloadError::UnreadableMirror {
                path: path.clone(),
                source,
            };
            // One pass: the archive is hashed while it is decompressed.
            let mut reader = HashingReader::new(File::open(path).map_err(unreadable)?);
            let files = unpack::unpack(&mut reader, path, &out)?;
            let got = reader.finish().map_err(unreadable)?;
            if let Some(expected) = &expected_archive {
                expected.verify(&path.display().to_string(), &got)?;
            }
            (files, Some(archive_report(got, expected_archive)))
        }
        Source::LocalDir { path } => (local::copy_dir(path, &out)?, None),
    };

    let dir = staging.commit(dest)?;
    Ok(Cifar10Report {
        source,
        dir,
        archive,
        data_checksum: data_checksum(&files),
        files,
    })
}

/// [`fetch_cifar10`], with `env_mirror` taken from `INCRPIPE_CIFAR10` when the options
/// leave it unset (an empty value counts as unset). The only place that reads the
/// environment.
pub fn fetch_cifar10_with_env(
    dest: &Path,
    options: &FetchOptions,
) -> Result<Cifar10Report, DownloadError> {
    let mut options = options.clone();
    if options.env_mirror.is_none() {
        options.env_mirror = std::env::var_os(MIRROR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
    }
    fetch_cifar10(dest, &options)
}

fn archive_report(got: Digests, verified_against: Option<ArchiveChecksum>) -> ArchiveReport {
    ArchiveReport {
        bytes: got.bytes,
        md5: got.md5,
        sha256: got.sha256,
        verified_against,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_parsing() {
        let c: ArchiveChecksum = "md5:C32A1D4AB5D03F1284B67883E8D87530".parse().unwrap();
        assert_eq!(c, ArchiveChecksum::Md5(OFFICIAL_ARCHIVE_MD5.to_string()));
        assert_eq!(c.to_string(), format!("md5:{OFFICIAL_ARCHIVE_MD5}"));
        assert!("md5:abc".parse::<ArchiveChecksum>().is_err());
        assert!(
            "sha1:c32a1d4ab5d03f1284b67883e8d87530"
                .parse::<ArchiveChecksum>()
                .is_err()
        );
        assert!(ArchiveChecksum::sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn auto_checks_only_the_official_url() {
        let opts = FetchOptions::default();
        let official = Source::Url {
            url: OFFICIAL_URL.to_string(),
        };
        let other = Source::Url {
            url: "http://127.0.0.1/x.tar.gz".to_string(),
        };
        assert_eq!(
            opts.expected_archive_checksum(&official),
            Some(ArchiveChecksum::Md5(OFFICIAL_ARCHIVE_MD5.to_string()))
        );
        assert_eq!(opts.expected_archive_checksum(&other), None);
    }

    #[test]
    fn manifest_data_checksum_is_stable() {
        // Pinned: changing the data checksum's definition changes every cache key.
        assert_eq!(
            expected_data_checksum(),
            "b4ef173c26dcc6f086dd1d02d6238951c69a465944beec14c8c2e8679c062e82"
        );
    }
}
