//! `incrpipe trace` as text (an aligned table) and as CSV; JSON is the trace itself.

use super::{RunTrace, StageTrace};

const COLUMNS: [&str; 14] = [
    "stage",
    "key",
    "outcome",
    "attempt",
    "start_s",
    "wall_s",
    "cpu_s",
    "peak_rss_mb",
    "exit",
    "executor",
    "cpus",
    "gpus",
    "slurm_job",
    "note",
];

/// A row's cells, in [`COLUMNS`] order; times relative to the run's start.
fn cells(run: &RunTrace, s: &StageTrace) -> [String; 14] {
    let f = |v: Option<f64>, p: usize| v.map_or(String::new(), |v| format!("{v:.p$}"));
    [
        s.stage.clone(),
        s.key.clone().unwrap_or_default(),
        s.outcome.as_str().to_string(),
        s.attempt.to_string(),
        f(s.start.map(|t| t - run.start), 2),
        f(s.wall_s, 2),
        f(s.cpu_s, 2),
        f(s.peak_rss_kb.map(|k| k as f64 / 1024.0), 1),
        s.exit.clone().unwrap_or_default(),
        s.executor.clone().unwrap_or_default(),
        if s.executor.is_some() {
            s.cpus.to_string()
        } else {
            String::new()
        },
        s.gpus.join(","),
        s.slurm_job.clone().unwrap_or_default(),
        s.usage_unavailable
            .as_ref()
            .map_or(String::new(), |w| format!("cpu/rss unavailable: {w}")),
    ]
}

/// The header line, then one aligned line per row.
pub fn text(run: &RunTrace) -> String {
    let rows: Vec<[String; 14]> = run.stages.iter().map(|s| cells(run, s)).collect();
    let mut width = COLUMNS.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &[String]| -> String {
        let mut out = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            // Numbers right-aligned, text left-aligned; the last column unpadded.
            let numeric = (3..=7).contains(&i) || i == 10;
            if i + 1 == r.len() {
                out.push_str(c);
            } else if numeric {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
                out.push_str("  ");
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = format!(
        "run {} of {}: {:.2} s, -j {}{}\n",
        run.id,
        run.pipeline,
        run.end - run.start,
        run.jobs,
        if run.gpus.is_empty() {
            String::new()
        } else {
            format!(", GPUs {}", run.gpus.join(","))
        }
    );
    out.push_str(&line(&COLUMNS.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// RFC 4180 CSV with the [`COLUMNS`] header.
pub fn csv(run: &RunTrace) -> String {
    let quote = |c: &str| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_string()
        }
    };
    let mut out = COLUMNS.join(",") + "\n";
    for s in &run.stages {
        let r = cells(run, s);
        out.push_str(&r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}
