//! incrpipe: a declarative experiment-pipeline runner.
pub mod engine;
