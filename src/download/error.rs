//! The one error type of the download component.
//!
//! Every message says what happened and what to do next, because these errors
//! end up in front of a user whose pipeline stopped at the data stage.

use std::io;
use std::path::PathBuf;

/// Why fetching, verifying or unpacking CIFAR-10 failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered, but not with the archive.
    #[error(
        "HTTP {status} from {url}: the server did not return the archive; check the URL, \
         or point the `mirror` parameter or INCRPIPE_CIFAR10 at a local copy"
    )]
    HttpStatus { url: String, status: u16 },

    /// No answer at all (DNS, connect, TLS, timeout).
    #[error(
        "could not fetch {url}: {source}; if this machine has no internet access, point the \
         `mirror` parameter or INCRPIPE_CIFAR10 at a local directory or .tar.gz"
    )]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },

    /// The connection broke while the body was streaming.
    #[error(
        "reading the body of {url} failed after {received} bytes: {source}; retry the download"
    )]
    HttpRead {
        url: String,
        received: u64,
        #[source]
        source: io::Error,
    },

    /// The server promised more bytes (Content-Length) than it sent.
    #[error(
        "download of {url} was truncated: received {received} of {expected} bytes \
         (Content-Length); retry the download"
    )]
    Truncated {
        url: String,
        expected: u64,
        received: u64,
    },

    /// A file (or the archive) has the wrong content.
    #[error(
        "{algorithm} mismatch for {file}: expected {expected}, got {got}; the file is corrupt \
         or is not the official CIFAR-10 binary data; delete it and fetch again"
    )]
    ChecksumMismatch {
        file: String,
        algorithm: &'static str,
        expected: String,
        got: String,
    },

    /// A data file has the wrong length (checked before hashing: cheaper and clearer).
    #[error(
        "{file} has {got} bytes, expected {expected}; the file is truncated or is not the \
         official CIFAR-10 binary data"
    )]
    SizeMismatch {
        file: String,
        expected: u64,
        got: u64,
    },

    /// One of the six data files is not in the source.
    #[error(
        "{file} is missing from {location}; a CIFAR-10 source must hold data_batch_1..5.bin \
         and test_batch.bin (directly or in cifar-10-batches-bin/)"
    )]
    MissingFile { file: String, location: String },

    /// A tar entry would land outside the destination; the archive is hostile or broken.
    #[error("refusing to unpack {archive}: entry `{entry}` escapes the destination ({why})")]
    EscapingEntry {
        archive: PathBuf,
        entry: String,
        why: &'static str,
    },

    /// An expected data file is a link, directory or device in the archive.
    #[error("refusing to unpack {archive}: `{entry}` is a {kind}, expected a regular file")]
    UnexpectedEntryType {
        archive: PathBuf,
        entry: String,
        kind: String,
    },

    /// An expected data file appears twice in the archive (which one would win is ambiguous).
    #[error("refusing to unpack {archive}: `{entry}` appears more than once")]
    DuplicateEntry { archive: PathBuf, entry: String },

    /// gzip or tar decoding failed (truncated file, not a .tar.gz, bit rot).
    #[error(
        "{archive} is not a readable .tar.gz (truncated or corrupt?): {source}; \
         fetch the archive again"
    )]
    CorruptArchive {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The local mirror (parameter or INCRPIPE_CIFAR10) cannot be used.
    #[error(
        "local CIFAR-10 mirror {path} cannot be read: {source}; it must be a directory \
         holding the .bin files (or a cifar-10-batches-bin/ subdirectory) or a .tar.gz archive"
    )]
    UnreadableMirror {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The output already exists; we never overwrite verified data in place.
    #[error(
        "{path} already exists; remove it first, or use it as it is (verify it with `verify_dir`)"
    )]
    DestinationExists { path: PathBuf },

    /// A checksum given by the user is not well-formed hex of the right length.
    #[error(
        "invalid archive checksum `{value}`: expected `md5:<32 hex digits>` or \
         `sha256:<64 hex digits>`"
    )]
    InvalidChecksum { value: String },

    /// Any other file-system failure, with the path it happened at.
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DownloadError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        DownloadError::Io {
            path: path.into(),
            source,
        }
    }
}
