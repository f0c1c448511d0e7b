//! Command handlers of the engine's subcommands (train, bench, model).

pub mod bench;
pub mod model;
pub mod train;
