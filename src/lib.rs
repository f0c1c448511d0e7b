//! incrpipe: a declarative experiment-pipeline runner.
//!
//! Dependency direction: the binary's CLI -> the runner ([`spec`], [`dag`],
//! [`cache`], [`run`]) -> the [`registry`] of stage kinds; the built-in
//! [`stages`] -> the training engine and the report. Nothing here knows the CLI.

// Errors here are rare, located diagnostics, never on a hot path: their size does not matter.
#![allow(clippy::result_large_err)]

pub mod bench_runner;
pub mod cache;
pub mod committer;
pub mod dag;
pub mod diag;
pub mod download;
/// The training engine, its own crate (`crates/engine`): it depends on nothing here.
pub use incrpipe_engine as engine;
pub mod fsutil;
pub mod gc;
pub mod hash;
pub mod keys;
pub mod paths;
pub mod process;
pub mod progress;
pub mod protocol;
pub mod registry;
pub mod report;
pub mod resources;
pub mod run;
pub mod slurm;
pub mod spec;
pub mod stages;
pub mod status;
pub mod trace;
