//! The report's typed errors: each names the file (and, where known, the row)
//! it is about, so a user can find the bad input without a backtrace.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid result.json: {source}")]
    ResultJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("no run found under {0} (a run directory holds result.json)")]
    NoRuns(String),
    #[error("figure {path}: {what}")]
    Plot { path: PathBuf, what: String },
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ReportError {
        let path = path.into();
        move |source| ReportError::Io { path, source }
    }
    pub(crate) fn csv(path: impl Into<PathBuf>) -> impl FnOnce(csv::Error) -> ReportError {
        let path = path.into();
        move |source| ReportError::Csv { path, source }
    }
}
