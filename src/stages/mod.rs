//! Built-in stage kinds, and the registry that holds them ([`registry`]).

mod download_cifar;
mod report;
mod training;

use crate::registry::{Registry, StageKind};

pub use report::options as report_options;

/// A registry of every kind shipped with incrpipe.
pub fn registry() -> Registry {
    let mut r = Registry::empty();
    for k in all() {
        r.register(k);
    }
    r
}

/// Every built-in kind.
pub fn all() -> Vec<Box<dyn StageKind>> {
    vec![
        Box::new(download_cifar::DownloadCifar),
        Box::new(training::Incremental),
        Box::new(training::TrainStage),
        Box::new(training::LookAhead),
        Box::new(training::TrainBaseline),
        Box::new(training::Evaluate),
        Box::new(training::Augment),
        Box::new(report::Report),
    ]
}
