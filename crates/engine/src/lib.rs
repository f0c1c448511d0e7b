//! The training engine: data, augmentation, networks, partitions, FLOP accounting, the
//! paper's termination rule, incremental training, checkpoints and benchmarks.
//!
//! This crate knows nothing about the pipeline runner or the command line (`incrpipe`, which
//! re-exports it as `incrpipe::engine`); the runner calls
//! the phase functions in [`train`] and persists states with [`checkpoint`].

pub mod augment;
pub mod backend;
pub mod bench;
pub mod checkpoint;
mod config;
pub mod data;
mod error;
pub mod flops;
pub mod host;
pub mod kernels;
pub mod model;
pub mod observe;
pub mod outcome;
pub mod params;
pub mod partition;
mod record;
pub mod rmsprop;
mod rng;
pub mod settings;
pub mod termination;
pub mod train;

pub use error::EngineError;
