//! The `incrpipe` command: a thin layer of argument parsing over the library.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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
use incrpipe::cache::Cache;
use incrpipe::dag::Dag;
use incrpipe::registry::Registry;
use incrpipe::run::{RunError, RunOptions};
use incrpipe::slurm::SlurmOptions;
use incrpipe::{gc, progress, resources, run, spec, status};

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
    Run {
        file: PathBuf,
        /// Run only these stages (and what they need): a stage name, an
        /// instance such as `train@net=resnet20`, or a chain's name.
        stages: Vec<String>,
        /// CPU slots (default: the number of cores).
        #[arg(short, long)]
        jobs: Option<u32>,
        /// GPU devices to use, e.g. `0,1` (default: CUDA_VISIBLE_DEVICES if set, else nvidia-smi).
        #[arg(long)]
        gpus: Option<String>,
        /// Show what would run, and why, without running anything.
        #[arg(long)]
        dry_run: bool,
        /// Run these stages even when cached.
        #[arg(long, num_args = 1..)]
        force: Vec<String>,
        /// Keep starting independent stages after a failure.
        #[arg(long)]
        keep_going: bool,
        /// Fail instead of waiting when another run holds the cache.
        #[arg(long)]
        no_wait: bool,
        /// Where stages run: `local` child processes, or one `slurm` job per
        /// stage (a stage with `executor = "local"` still runs here).
        #[arg(long, value_enum, default_value_t = Executor::Local)]
        executor: Executor,
        /// Slurm partition (sbatch --partition).
        #[arg(long)]
        partition: Option<String>,
        /// Slurm account (sbatch --account).
        #[arg(long)]
        account: Option<String>,
        /// More sbatch options, split at whitespace, e.g. `--slurm-opt "--qos=long --constraint=a100"`; repeatable.
        #[arg(long, allow_hyphen_values = true)]
        slurm_opt: Vec<String>,
        /// Slurm jobs submitted and not yet ended, at most.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        max_jobs: u32,
    },
    /// What a run would do, and why (which param, dep or code version changed).
    Status { file: PathBuf },
    /// Print the stage graph (text, or Graphviz with --dot).
    Dag {
        file: PathBuf,
        #[arg(long)]
        dot: bool,
    },
    /// Print the latest log of a stage.
    Logs { stage: String },
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
    /// Replay the termination rule over a run's recorded validation curve.
    Replay(cmd::replay::ReplayArgs),
    /// Benchmarks (figures in the README).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Runs a built-in stage kind (the runner's child process).
    #[command(name = "__stage", hide = true)]
    Stage { kind: String },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The runner on a synthetic pipeline of LAYERS x WIDTH trivial stages.
    Runner {
        #[arg(long, default_value_t = 50)]
        width: usize,
        #[arg(long, default_value_t = 20)]
        layers: usize,
        #[arg(short, long, default_value_t = 1)]
        jobs: u32,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Training steps (forward, backward, RMSProp): images/s.
    Train(cmd::bench::BenchArgs),
    /// Inference: images/s.
    Infer(cmd::bench::BenchArgs),
    /// Data augmentation on one core: images/s.
    Augment(cmd::bench::BenchArgs),
    /// The CPU kernels against burn's ops on a network's layer shapes: ms per call.
    Kernels {
        /// The network whose distinct layer shapes are timed.
        #[arg(long, default_value = "resnet20")]
        net: String,
        /// Batch size (default: the network's Table 1 batch, 128 for ResNets, 32 for VGG).
        #[arg(long)]
        batch: Option<usize>,
        /// Timed calls per op (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Time the kernels only, not burn's ops (its convolution backward takes seconds).
        #[arg(long)]
        without_burn: bool,
    },
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Cmd::Status { .. }
            | Cmd::Dag { .. }
            | Cmd::Logs { .. }
            | Cmd::Model { .. }
            | Cmd::Replay(_)
            | Cmd::Bench(_)
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
    let cache_dir = cli
        .cache_dir
        .clone()
        .unwrap_or_else(|| workspace.join("cache"));
    let registry = incrpipe::stages::registry();
    match cli.command {
        Cmd::Run {
            file,
            stages,
            jobs,
            gpus,
            dry_run,
            force,
            keep_going,
            no_wait,
            executor,
            partition,
            account,
            slurm_opt,
            max_jobs,
        } => {
            let dag = match load(&file, &registry, &workspace, true) {
                Ok(d) => d,
                Err(c) => return c,
            };
            let cache = match Cache::open(&cache_dir) {
                Ok(c) => c,
                Err(e) => return fail(2, &e.to_string()),
            };
            if dry_run {
                print!(
                    "{}",
                    status::render(&status::status(&dag, &cache, &workspace))
                );
                return ExitCode::SUCCESS;
            }
            let opts = RunOptions {
                workspace: workspace.clone(),
                jobs: jobs.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
                }),
                gpus: resources::detect_gpus(
                    gpus.as_deref(),
                    std::env::var("CUDA_VISIBLE_DEVICES")
                        .ok()
                        .as_deref()
                        .filter(|s| !s.is_empty()),
                ),
                keep_going,
                force,
                targets: stages,
                stage_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("incrpipe")),
                wait_for_lock: !no_wait,
                slurm: (executor == Executor::Slurm).then(|| SlurmOptions {
                    partition,
                    account,
                    extra: slurm_opt
                        .iter()
                        .flat_map(|o| o.split_whitespace().map(String::from))
                        .collect(),
                    max_jobs: max_jobs as usize,
                }),
            };
            run::install_signal_handlers();
            let mut p = progress::for_terminal();
            match run::run(&dag, &cache, &opts, p.as_mut()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(RunError::Input(m)) => fail(2, &m),
                Err(RunError::Interrupted(_)) => ExitCode::from(130),
                Err(e @ RunError::Failed(_)) => fail(1, &e.to_string()),
                Err(e) => fail(1, &e.to_string()),
            }
        }
        Cmd::Status { file } => {
            let dag = match load(&file, &registry, &workspace, true) {
                Ok(d) => d,
                Err(c) => return c,
            };
            match Cache::open(&cache_dir) {
                Ok(cache) => {
                    print!(
                        "{}",
                        status::render(&status::status(&dag, &cache, &workspace))
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(2, &e.to_string()),
            }
        }
        Cmd::Dag { file, dot } => {
            let dag = match load(&file, &registry, &workspace, false) {
                Ok(d) => d,
                Err(c) => return c,
            };
            print!(
                "{}",
                if dot {
                    render_dot(&dag)
                } else {
                    render_dag(&dag)
                }
            );
            ExitCode::SUCCESS
        }
        Cmd::Logs { stage } => {
            let path = cache_dir
                .join("logs")
                .join(format!("{}.log", incrpipe::cache::sanitize(&stage)));
            match std::fs::read(&path) {
                Ok(b) => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&b);
                    ExitCode::SUCCESS
                }
                Err(_) => fail(
                    2,
                    &format!(
                        "no log for stage `{stage}` in {} (has it run with this cache?)",
                        cache_dir.display()
                    ),
                ),
            }
        }
        Cmd::Gc { files } => cmd_gc(files, &registry, &workspace, &cache_dir),
        Cmd::Verify => {
            let (cache, _lock) = match open_locked(&cache_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let (n, bad) = gc::verify(&cache);
            for (k, why) in &bad {
                println!("corrupt {k}: {why} (removed; the next run recomputes it)");
            }
            println!("{n} entries checked, {} corrupt", bad.len());
            if bad.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Stage { kind } => run_stage(&registry, &kind),
        Cmd::Train(a) => report(cmd::train::run(a)),
        Cmd::Model(a) => report(cmd::model::run(a)),
        Cmd::Check(a) => cmd::check::run(a),
        Cmd::Replay(a) => report(cmd::replay::run(a)),
        Cmd::Bench(BenchCmd::Train(a)) => report(cmd::bench::run("train", a)),
        Cmd::Bench(BenchCmd::Infer(a)) => report(cmd::bench::run("infer", a)),
        Cmd::Bench(BenchCmd::Augment(a)) => report(cmd::bench::run("augment", a)),
        Cmd::Bench(BenchCmd::Kernels {
            net,
            batch,
            repeats,
            without_burn,
        }) => report(cmd::bench::kernels(&net, batch, repeats, without_burn)),
        Cmd::Bench(BenchCmd::Runner {
            width,
            layers,
            jobs,
            repeats,
        }) => {
            let dir = match tempfile_dir() {
                Ok(d) => d,
                Err(e) => return fail(1, &e.to_string()),
            };
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("incrpipe"));
            let r = incrpipe::bench_runner::run(&exe, &dir, width, layers, jobs, repeats);
            let _ = std::fs::remove_dir_all(&dir);
            match r {
                Ok(b) => {
                    use incrpipe::bench_runner::median;
                    println!(
                        "runner benchmark: {} stages ({layers} layers x {width}), -j {jobs}",
                        b.stages
                    );
                    println!(
                        "  cold run            {:8.2} s  (commands themselves {:.2} s)",
                        b.cold_s, b.commands_s
                    );
                    println!(
                        "  overhead per stage  {:8.2} ms (cold wall x jobs - commands) / stages",
                        b.overhead_ms_per_stage
                    );
                    println!(
                        "  commands alone      {:8.2} s  (bash -c each, in order, no runner)",
                        b.alone_s
                    );
                    println!(
                        "  overhead per stage  {:8.2} ms (cold wall x jobs - commands alone) / stages",
                        b.overhead_vs_alone_ms
                    );
                    println!(
                        "  no-op rerun         {:8.1} ms median of {repeats} (min {:.1})",
                        median(&b.noop_rerun_ms),
                        b.noop_rerun_ms.iter().cloned().fold(f64::MAX, f64::min)
                    );
                    println!(
                        "  status              {:8.1} ms median of {repeats} (min {:.1})",
                        median(&b.status_ms),
                        b.status_ms.iter().cloned().fold(f64::MAX, f64::min)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &format!("{e:#}")),
            }
        }
    }
}

fn load(
    file: &Path,
    registry: &Registry,
    workspace: &Path,
    check_deps: bool,
) -> Result<Dag, ExitCode> {
    let p = spec::load(file, registry).map_err(|d| fail(2, &d.to_string()))?;
    Dag::build(&p, workspace, check_deps).map_err(|d| fail(2, &d.to_string()))
}

fn fail(code: u8, msg: &str) -> ExitCode {
    let msg = msg.trim_end();
    if msg.starts_with("error:") {
        eprintln!("{msg}")
    } else {
        eprintln!("error: {msg}")
    }
    ExitCode::from(code)
}

/// Opens the cache and takes its lock (waiting for a running runner), for maintenance commands.
fn open_locked(dir: &Path) -> Result<(Cache, incrpipe::cache::CacheLock), ExitCode> {
    let cache = Cache::open(dir).map_err(|e| fail(2, &e.to_string()))?;
    let lock = cache
        .lock(true, || {
            eprintln!("waiting for the running incrpipe to release the cache...")
        })
        .map_err(|e| fail(1, &e.to_string()))?;
    Ok((cache, lock))
}

fn render_dag(dag: &Dag) -> String {
    let mut t = String::new();
    for &i in &dag.order {
        let n = &dag.nodes[i];
        let what = match &n.spec.action {
            spec::Action::Cmd(c) => format!("cmd: {}", c.lines().next().unwrap_or("")),
            spec::Action::Builtin { kind, version } => format!("kind: {kind} v{version}"),
        };
        t.push_str(&format!("{}  [{what}]", n.spec.name));
        if n.spec.gpus > 0 {
            t.push_str(&format!(" gpus={}", n.spec.gpus));
        }
        t.push('\n');
        for u in &n.upstream {
            t.push_str(&format!("    <- {}\n", dag.nodes[*u].spec.name));
        }
    }
    t
}

fn render_dot(dag: &Dag) -> String {
    let mut t = String::from("digraph pipeline {\n  rankdir=LR;\n");
    for &i in &dag.order {
        t.push_str(&format!("  \"{}\";\n", dag.nodes[i].spec.name));
        for u in &dag.nodes[i].upstream {
            t.push_str(&format!(
                "  \"{}\" -> \"{}\";\n",
                dag.nodes[*u].spec.name, dag.nodes[i].spec.name
            ));
        }
    }
    t.push_str("}\n");
    t
}

fn cmd_gc(
    mut files: Vec<PathBuf>,
    registry: &Registry,
    workspace: &Path,
    cache_dir: &Path,
) -> ExitCode {
    if files.is_empty() {
        files = std::fs::read_dir(workspace.join("pipelines"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
    }
    if files.is_empty() {
        return fail(
            2,
            "gc needs pipeline files (none given, none under pipelines/): it keeps what they reach",
        );
    }
    let (cache, _lock) = match open_locked(cache_dir) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut reachable = BTreeSet::new();
    for f in &files {
        let dag = match load(f, registry, workspace, false) {
            Ok(d) => d,
            Err(c) => return c,
        };
        reachable.extend(
            status::status(&dag, &cache, workspace)
                .into_iter()
                .filter_map(|s| s.key),
        );
    }
    let r = gc::gc(&cache, &reachable);
    println!(
        "kept {} entries, removed {}, freed {:.1} MiB",
        r.kept,
        r.removed.len(),
        r.bytes_freed as f64 / (1 << 20) as f64
    );
    ExitCode::SUCCESS
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("incrpipe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The child-process side of a built-in stage.
fn run_stage(registry: &Registry, kind: &str) -> ExitCode {
    let Some(k) = registry.get(kind) else {
        return fail(2, &format!("unknown stage kind `{kind}`"));
    };
    let ctx = match incrpipe::protocol::read_context(|n| std::env::var(n).ok()) {
        Ok(ctx) => ctx,
        Err(e) => return fail(2, &format!("{kind}: {e}")),
    };
    match k.run(&ctx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("{kind}: {e:#}")),
    }
}
