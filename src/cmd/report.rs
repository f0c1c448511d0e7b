//! `incrpipe report RUNS... --out DIR`: Table 2, the judged claims and the figures from run
//! results alone (each run's `result.json` and `metrics.csv`), with no cache and no pipeline
//! run. The same code and params as the `report` kind, so that a report committed beside its
//! runs can be rebuilt and compared (results/table2-mid/, tests/table2_mid.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use super::Env;
use incrpipe::report::write_report;
use incrpipe::spec::{Action, StageSpec};
use incrpipe::stages::report_options;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run directories, or directories searched for them.
    #[arg(required = true, value_name = "RUNS")]
    pub runs: Vec<PathBuf>,
    /// The results directory to write (table2.csv, table2.md, runs.csv, index.html, figures).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Take the params of this pipeline's `report` stage (title, confidence,
    /// equivalence_margin), so that the report is the one the pipeline writes.
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// The report stage of --pipeline, where it has more than one.
    #[arg(long, requires = "pipeline", value_name = "STAGE")]
    pub stage: Option<String>,
    /// Heading of table2.md and index.html (overrides --pipeline's).
    #[arg(long)]
    pub title: Option<String>,
    /// Confidence of the paired intervals, in (0.5, 1) (overrides --pipeline's).
    #[arg(long)]
    pub confidence: Option<f64>,
    /// Claim (a)'s equivalence margin in accuracy points (overrides --pipeline's).
    #[arg(long)]
    pub equivalence_margin: Option<f64>,
}

pub fn run(env: &Env, a: ReportArgs) -> anyhow::Result<()> {
    let mut params = match &a.pipeline {
        Some(file) => stage_params(env, file, a.stage.as_deref())?,
        None => BTreeMap::new(),
    };
    let flags = [
        ("title", a.title.map(Value::from)),
        ("confidence", a.confidence.map(Value::from)),
        ("equivalence_margin", a.equivalence_margin.map(Value::from)),
    ];
    for (name, v) in flags {
        if let Some(v) = v {
            params.insert(name.to_string(), v);
        }
    }
    let opts = report_options(&params).context("in the report's options")?;
    for r in &a.runs {
        if !r.is_dir() {
            bail!(
                "{}: not a directory; give run directories (result.json and metrics.csv) or a directory that holds them",
                r.display()
            );
        }
    }
    let staged = Staging::new(&a.out)?;
    let s = write_report(&a.runs, &staged.dir, &opts)?;
    let files = staged.commit()?;
    println!(
        "report: {} runs in {} rows, {} files written to {}",
        s.runs,
        s.rows,
        files,
        a.out.display()
    );
    Ok(())
}

/// The params of a pipeline's report stage (the one, or the one named).
fn stage_params(
    env: &Env,
    file: &Path,
    stage: Option<&str>,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let dag = env
        .load(file, false)
        .map_err(|_| anyhow::anyhow!("{}: the pipeline did not load (above)", file.display()))?;
    let reports: Vec<_> = dag
        .nodes
        .iter()
        .map(|n| &n.spec)
        .filter(|s| matches!(&s.action, Action::Builtin { kind, .. } if kind == "report"))
        .collect();
    let spec = match (stage, reports.as_slice()) {
        (Some(name), _) => reports.iter().find(|s| s.name == name).with_context(|| {
            format!(
                "{}: no report stage `{name}` (report stages: {})",
                file.display(),
                names(&reports)
            )
        })?,
        (None, [one]) => one,
        (None, []) => bail!("{}: no stage of kind `report`", file.display()),
        (None, _) => bail!(
            "{}: several report stages ({}); choose one with --stage",
            file.display(),
            names(&reports)
        ),
    };
    Ok(spec.params.clone())
}

fn names(specs: &[&StageSpec]) -> String {
    let v: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    v.join(", ")
}

/// The report is written to a fresh directory beside `out`, then each file is renamed into
/// place: a failed report leaves `out` as it was.
struct Staging {
    out: PathBuf,
    dir: PathBuf,
}

impl Staging {
    fn new(out: &Path) -> anyhow::Result<Staging> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let dir = out.join(format!(".report-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging {
            out: out.to_path_buf(),
            dir,
        })
    }

    fn commit(self) -> anyhow::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let to = self.out.join(e.file_name());
            std::fs::rename(e.path(), &to)
                .with_context(|| format!("moving the report's {} into place", to.display()))?;
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
