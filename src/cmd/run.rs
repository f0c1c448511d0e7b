//! `incrpipe run`: the command line of a run, turned into [`RunOptions`].

use std::path::PathBuf;
use std::process::ExitCode;

use incrpipe::run::{self, RunError, RunOptions};
use incrpipe::slurm::SlurmOptions;
use incrpipe::{progress, resources, status};

use super::{Env, fail};

#[derive(clap::Args)]
pub struct RunArgs {
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
    /// Run these stages and every stage that depends on them (and what those need).
    #[arg(long, num_args = 1.., value_name = "STAGE")]
    downstream: Vec<String>,
    /// Run these stages even when cached.
    #[arg(long, num_args = 1..)]
    force: Vec<String>,
    /// Keep starting independent stages after a failure.
    #[arg(long)]
    keep_going: bool,
    /// Fail instead of waiting when another run holds the cache.
    #[arg(long)]
    no_wait: bool,
    /// Show every line the stages write as it comes, prefixed with the stage (without it,
    /// only their progress lines, such as a training stage's epochs).
    #[arg(short, long)]
    verbose: bool,
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
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

pub fn run(env: &Env, a: RunArgs) -> Result<(), ExitCode> {
    let dag = env.load(&a.file, true)?;
    let cache = env.open_cache()?;
    if a.dry_run {
        print!(
            "{}",
            status::render(&status::status(&dag, &cache, &env.workspace))
        );
        return Ok(());
    }
    let verbose = a.verbose;
    let opts = options(env, a);
    run::install_signal_handlers();
    let mut p = progress::for_terminal(verbose);
    match run::run(&dag, &cache, &opts, p.as_mut()) {
        Ok(_) => Ok(()),
        Err(RunError::Input(m)) => Err(fail(2, &m)),
        Err(RunError::Interrupted(_)) => Err(ExitCode::from(130)),
        Err(e) => Err(fail(1, &e.to_string())),
    }
}

fn options(env: &Env, a: RunArgs) -> RunOptions {
    let cuda_visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    RunOptions {
        workspace: env.workspace.clone(),
        pipeline: a.file.clone(),
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        gpus: resources::detect_gpus(
            a.gpus.as_deref(),
            cuda_visible.as_deref().filter(|s| !s.is_empty()),
        ),
        keep_going: a.keep_going,
        force: a.force,
        targets: a.stages,
        downstream: a.downstream,
        stage_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("incrpipe")),
        wait_for_lock: !a.no_wait,
        slurm: (a.executor == Executor::Slurm).then(|| SlurmOptions {
            partition: a.partition,
            account: a.account,
            extra: a
                .slurm_opt
                .iter()
                .flat_map(|o| o.split_whitespace().map(String::from))
                .collect(),
            max_jobs: a.max_jobs as usize,
        }),
    }
}
