//! Command handlers of subcommands (train, bench, model, check, replay).

pub mod bench;
pub mod check;
pub mod model;
pub mod replay;
pub mod train;
