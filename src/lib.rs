//! incrpipe: a declarative experiment-pipeline runner.
