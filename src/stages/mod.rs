//! Built-in stage kinds (registered in [`crate::registry::Registry::builtin`]).

mod download_cifar;
mod report;

use crate::registry::StageKind;

/// Every built-in kind.
pub fn all() -> Vec<Box<dyn StageKind>> {
    vec![
        Box::new(download_cifar::DownloadCifar),
        Box::new(report::Report),
    ]
}
