//! Built-in stage kinds (registered in [`crate::registry::Registry::builtin`]).

use crate::registry::StageKind;

/// Every built-in kind.
pub fn all() -> Vec<Box<dyn StageKind>> {
    Vec::new()
}
