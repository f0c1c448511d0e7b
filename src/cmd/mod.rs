//! Command handlers of subcommands (train, bench, model, check).

pub mod bench;
pub mod check;
pub mod model;
pub mod train;
