//! The `incrpipe` command: parses the command line and dispatches to the
//! handlers in [`cmd`], which sit on the library.

use std::path::PathBuf;
use std::process::ExitCode;

mod cmd;

/// mimalloc keeps freed memory for reuse. With glibc's allocator, a training step's
/// multi-megabyte activations and gradients went back to the kernel when freed and came back
/// as fresh pages (a page fault and a zeroed page each) on the next allocation. Figures, and
/// the commands that gave them (faster training, 60-130 MB more peak memory):
/// docs/performance.md, step M.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same in mimalloc v2 and v3; the
/// Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the kernel: a training step's buffers would come back as
/// page faults on every step; kept, they are reused at no cost to peak memory (measurements:
/// docs/performance.md, step O; tests/bench_cli.rs checks that extra steps fault no pages).
fn keep_freed_memory() {
    // SAFETY: called first in `main`, before any other thread exists (the option setter is
    // not thread-safe); it only stores a number that the allocator reads when it purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

use clap::{Parser, Subcommand};

use cmd::{Env, exit, fail, report};

#[derive(Parser)]
#[command(
    name = "incrpipe",
    version,
    about = "Declarative experiment pipelines with a content-addressed cache"
)]
struct Cli {
    /// Cache directory (default: ./cache, or $INCRPIPE_CACHE). On a cluster it
    /// must be on a filesystem that every node shares.
    #[arg(long, global = true, env = "INCRPIPE_CACHE")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline (only what changed).
    Run(cmd::run::RunArgs),
    /// What a run would do, and why (which param, dep or code version changed).
    Status { file: PathBuf },
    /// Print the stage graph (text, or Graphviz with --dot).
    Dag {
        file: PathBuf,
        #[arg(long)]
        dot: bool,
    },
    /// Print the latest log of a stage (with -f, follow it while the stage runs).
    Logs {
        stage: String,
        /// Keep printing what the stage writes until it ends (stages of a local runner).
        #[arg(short, long)]
        follow: bool,
    },
    /// A run's trace: each stage's times, CPU seconds, peak RSS, exit and where it ran.
    Trace(cmd::trace::TraceArgs),
    /// Remove cache entries that no pipeline still reaches (given files, or pipelines/*.toml).
    Gc { files: Vec<PathBuf> },
    /// Re-hash every cache entry; remove and report corrupt ones.
    Verify,
    /// Train one network with one method, from the command line.
    Train(cmd::train::TrainArgs),
    /// Print a network's partition: each sub-network with its layers, parameters and FLOPs.
    Model(cmd::model::ModelArgs),
    /// Compare a results CSV with expected values, within per-column tolerances.
    Check(cmd::check::CheckArgs),
    /// Table 2, the claims and the figures from run results alone (no cache).
    Report(cmd::report::ReportArgs),
    /// Replay the termination rule over a run's recorded validation curve.
    Replay(cmd::replay::ReplayArgs),
    /// Print a shell completion script: `source <(incrpipe completions bash)`.
    Completions { shell: clap_complete::Shell },
    /// Benchmarks (figures in the README).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
    /// Runs a built-in stage kind (the runner's child process).
    #[command(name = "__stage", hide = true)]
    Stage { kind: String },
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Cmd::Status { .. }
            | Cmd::Dag { .. }
            | Cmd::Logs { .. }
            | Cmd::Trace(_)
            | Cmd::Model { .. }
            | Cmd::Replay(_)
            | Cmd::Bench(_)
            | Cmd::Completions { .. }
    ) {
        // Commands that only read and print end quietly when their reader goes away
        // (`incrpipe dag p.toml | head`), as Unix tools do, instead of panicking on
        // EPIPE. Commands that write (run, gc, verify, train, check, a stage) keep Rust's
        // default (SIGPIPE ignored): they must not die half-way because a pager quit.
        // SAFETY: called before any thread exists; resets one signal to its default.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // A bad INCRPIPE_KERNELS stops every command here, before a stage inherits it.
    if let Err(e) = incrpipe::engine::kernels::select::from_env() {
        return fail(2, &e.to_string());
    }
    let workspace = match std::env::current_dir().and_then(|p| p.canonicalize()) {
        Ok(p) => p,
        Err(e) => return fail(2, &format!("cannot resolve the current directory: {e}")),
    };
    let env = Env {
        cache_dir: cli.cache_dir.unwrap_or_else(|| workspace.join("cache")),
        workspace,
        registry: incrpipe::stages::registry(),
    };
    match cli.command {
        Cmd::Run(a) => exit(cmd::run::run(&env, a)),
        Cmd::Status { file } => exit(cmd::status::run(&env, &file)),
        Cmd::Dag { file, dot } => exit(cmd::dag::run(&env, &file, dot)),
        Cmd::Logs { stage, follow } => exit(cmd::logs::run(&env, &stage, follow)),
        Cmd::Trace(a) => exit(cmd::trace::run(&env, a)),
        Cmd::Gc { files } => exit(cmd::gc::gc(&env, files)),
        Cmd::Verify => exit(cmd::gc::verify(&env)),
        Cmd::Stage { kind } => exit(cmd::stage::run(&env, &kind)),
        Cmd::Train(a) => report(cmd::train::run(a)),
        Cmd::Model(a) => report(cmd::model::run(a)),
        Cmd::Check(a) => cmd::check::run(a),
        Cmd::Replay(a) => report(cmd::replay::run(a)),
        Cmd::Report(a) => report(cmd::report::run(&env, a)),
        Cmd::Bench(b) => cmd::bench::dispatch(b),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "incrpipe",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}
