//! Built-in stage kinds (registered in [`crate::registry::Registry::builtin`]).

mod download_cifar;
mod report;
mod training;

use crate::registry::StageKind;

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
