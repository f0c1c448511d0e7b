//! The runner benchmark (`incrpipe bench runner`, `just bench-runner`): a
//! synthetic pipeline of `layers x width` trivial cmd stages, each reading two
//! outputs of the layer above. Measures the cold run (and how much of it is not
//! the commands' own time), the no-op rerun and `status`, each as the user
//! sees it: a whole `incrpipe` process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cache::Cache;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunnerBench {
    pub stages: usize,
    pub jobs: u32,
    pub cold_s: f64,
    /// Sum of the stages' own run times as the runner measured them.
    pub commands_s: f64,
    /// (cold wall time x jobs - commands) / stages.
    pub overhead_ms_per_stage: f64,
    /// The same commands run by bash alone, one after another, in a fresh copy
    /// of the workspace: their own time without any runner (the runner's own
    /// measure includes what its threads take from the commands' CPU).
    pub alone_s: f64,
    /// (cold wall time x jobs - alone) / stages.
    pub overhead_vs_alone_ms: f64,
    pub noop_rerun_ms: Vec<f64>,
    pub status_ms: Vec<f64>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// One stage of the synthetic pipeline.
struct Stage {
    name: String,
    cmd: String,
    deps: Vec<String>,
    out: String,
}

/// The synthetic pipeline's stages, layer by layer: an order that respects the deps.
fn stages(width: usize, layers: usize) -> Vec<Stage> {
    let mut v = Vec::with_capacity(width * layers);
    for l in 0..layers {
        for w in 0..width {
            let deps = if l == 0 {
                vec![format!("in/{w}")]
            } else {
                vec![
                    format!("o/{}/{w}", l - 1),
                    format!("o/{}/{}", l - 1, (w + 1) % width),
                ]
            };
            let out = format!("o/{l}/{w}");
            v.push(Stage {
                name: format!("s{l}_{w}"),
                cmd: format!("mkdir -p o/{l} && cat {} > {out}", deps.join(" ")),
                deps,
                out,
            });
        }
    }
    v
}

/// Writes the synthetic pipeline and its inputs into `dir`.
pub fn generate(dir: &Path, width: usize, layers: usize) -> std::io::Result<PathBuf> {
    let mut p = String::from("[pipeline]\nname = \"bench\"\n");
    write_inputs(dir, width)?;
    for s in stages(width, layers) {
        let quoted: Vec<String> = s.deps.iter().map(|d| format!("\"{d}\"")).collect();
        p.push_str(&format!(
            "[stages.{}]\ncmd = \"{}\"\ndeps = [{}]\nouts = [\"{}\"]\n",
            s.name,
            s.cmd,
            quoted.join(", "),
            s.out
        ));
    }
    let file = dir.join("bench.toml");
    std::fs::write(&file, p)?;
    Ok(file)
}

fn write_inputs(dir: &Path, width: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("in"))?;
    for w in 0..width {
        std::fs::write(dir.join(format!("in/{w}")), format!("{w}\n"))?;
    }
    Ok(())
}

/// Runs every stage's command with `bash -c`, in order, in a fresh `dir`; returns seconds.
fn commands_alone(dir: &Path, width: usize, layers: usize) -> anyhow::Result<f64> {
    write_inputs(dir, width)?;
    let t = Instant::now();
    for s in stages(width, layers) {
        let st = Command::new("bash")
            .args(["-c", &s.cmd])
            .current_dir(dir)
            .status()?;
        anyhow::ensure!(st.success(), "`{}` failed", s.cmd);
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Runs the benchmark with the `incrpipe` binary `exe` in a fresh `dir`.
pub fn run(
    exe: &Path,
    dir: &Path,
    width: usize,
    layers: usize,
    jobs: u32,
    repeats: usize,
) -> anyhow::Result<RunnerBench> {
    generate(dir, width, layers)?;
    let alone_s = commands_alone(&dir.join("alone"), width, layers)?;
    let time = |args: &[&str]| -> anyhow::Result<f64> {
        let t = Instant::now();
        let o = Command::new(exe)
            .args(args)
            .current_dir(dir)
            .env_remove("INCRPIPE_CACHE")
            .output()?;
        anyhow::ensure!(
            o.status.success(),
            "incrpipe {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(t.elapsed().as_secs_f64())
    };
    let j = jobs.to_string();
    let cold_s = time(&["run", "bench.toml", "-j", &j])?;
    let cache = Cache::open(&dir.join("cache"))?;
    let commands_s: f64 = cache
        .keys()
        .iter()
        .filter_map(|k| cache.lookup(k))
        .map(|m| m.seconds)
        .sum();
    let stages = width * layers;
    // Files written within 2 s are outside the stat cache (its racy window) and get
    // re-hashed; a user's rerun comes later than that, so the timed reruns do too.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    time(&["run", "bench.toml", "-j", &j])?;
    let mut noop = Vec::new();
    let mut status = Vec::new();
    for _ in 0..repeats {
        noop.push(time(&["run", "bench.toml", "-j", &j])? * 1e3);
        status.push(time(&["status", "bench.toml"])? * 1e3);
    }
    // The run's CPU-time budget (wall x jobs) minus the commands' own time, per stage.
    let overhead_ms = |commands: f64| (cold_s * jobs as f64 - commands) / stages as f64 * 1e3;
    Ok(RunnerBench {
        stages,
        jobs,
        cold_s,
        commands_s,
        overhead_ms_per_stage: overhead_ms(commands_s),
        alone_s,
        overhead_vs_alone_ms: overhead_ms(alone_s),
        noop_rerun_ms: noop,
        status_ms: status,
    })
}
