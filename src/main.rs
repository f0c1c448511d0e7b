//! TEMPORARY minimal binary of the engine worktree (the lead writes the real main.rs).
mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "incrpipe")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    Train(cmd::train::TrainArgs),
    Bench(cmd::bench::BenchArgs),
    Model(cmd::model::ModelArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Train(a) => cmd::train::run(a),
        Cmd::Bench(a) => cmd::bench::run(a),
        Cmd::Model(a) => cmd::model::run(a),
    }
}
