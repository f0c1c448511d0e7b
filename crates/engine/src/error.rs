//! Typed errors of the engine. The binary turns them into `anyhow` errors.

use std::path::PathBuf;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "CIFAR-10 file {path} has {len} bytes, which is not a whole number of 3073-byte records \
         (record {record} is truncated)"
    )]
    TruncatedFile {
        path: PathBuf,
        len: u64,
        record: usize,
    },
    #[error("CIFAR-10 file {path} holds {records} records, expected {expected}")]
    WrongRecordCount {
        path: PathBuf,
        records: usize,
        expected: usize,
    },
    #[error("CIFAR-10 file {path}: record {record} has label {label}, expected 0..=9")]
    BadLabel {
        path: PathBuf,
        record: usize,
        label: u8,
    },
    #[error(
        "invalid network name {0:?} (expected resnet8|resnet20|resnet32|resnet44|resnet56|resnet<6n+2>[-w<base>] or vgg16[-w<base>])"
    )]
    BadNetName(String),
    #[error("invalid partition: {0}")]
    BadPartition(String),
    #[error("invalid device {0:?} (expected `cpu` or `cuda:N`)")]
    BadDevice(String),
    #[error("invalid configuration: {0}")]
    BadConfig(String),
    #[error("checkpoint error in {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("training interrupted after epoch {0} (test hook)")]
    Interrupted(usize),
    #[error("subset asks for {asked} images of class {class} but only {available} are available")]
    SubsetTooLarge {
        class: usize,
        asked: usize,
        available: usize,
    },
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
