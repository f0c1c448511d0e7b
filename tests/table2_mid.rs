//! The mid-scale Table 2 (issue 18) from its committed runs alone: the runs in
//! `results/table2-mid/runs/` are those of `pipelines/table2-mid.toml`'s matrix (every one,
//! or every one not listed in `runs/PENDING` while the table is still training), and
//! `incrpipe report` rebuilds the committed report from them, file for file.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Ws, png_size};

/// `method/seedN` of every committed run directory (one holding result.json).
fn committed_runs(runs: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in std::fs::read_dir(runs).expect("results/table2-mid/runs is missing") {
        let m = m.unwrap().path();
        if !m.is_dir() {
            continue;
        }
        for s in std::fs::read_dir(&m).unwrap() {
            let s = s.unwrap().path();
            if s.join("result.json").is_file() {
                assert!(
                    s.join("metrics.csv").is_file(),
                    "{} has result.json but no metrics.csv",
                    s.display()
                );
                let rel = s.strip_prefix(runs).unwrap();
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// `method/seedN` for the matrix of the pipeline's run stage.
fn matrix_runs(pipeline: &str) -> BTreeSet<String> {
    let doc: toml::Table = pipeline.parse().unwrap();
    let m = &doc["stages"]["run"]["matrix"];
    let list = |k: &str| -> Vec<String> {
        m[k].as_array()
            .unwrap()
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    let mut out = BTreeSet::new();
    for method in list("method") {
        for seed in list("seed") {
            out.insert(format!("{method}/seed{seed}"));
        }
    }
    out
}

#[test]
fn the_committed_report_is_rebuilt_from_the_committed_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline_file = root.join("pipelines/table2-mid.toml");
    let pipeline = std::fs::read_to_string(&pipeline_file).unwrap();
    let results = root.join("results/table2-mid");
    let runs_dir = results.join("runs");

    let committed = committed_runs(&runs_dir);
    let pending: BTreeSet<String> = std::fs::read_to_string(runs_dir.join("PENDING"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let expected = matrix_runs(&pipeline);
    let both: Vec<_> = committed.intersection(&pending).collect();
    assert!(
        both.is_empty(),
        "runs/PENDING lists committed runs: {both:?}"
    );
    let listed: BTreeSet<String> = committed.union(&pending).cloned().collect();
    assert_eq!(
        listed, expected,
        "the committed runs and runs/PENDING must together be the pipeline's matrix \
         (a run is missing, or one is not the pipeline's)"
    );
    assert!(
        !committed.is_empty(),
        "no run of the mid-scale table is committed"
    );

    let ws = Ws::new();
    let out = ws.path().join("report");
    let o = ws.run(&[
        "report",
        runs_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pipeline",
        pipeline_file.to_str().unwrap(),
    ]);
    o.ok();
    let mut rebuilt: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    rebuilt.sort();
    // The report's files in results/table2-mid (runs/, pilot/ and README.md are not the report's).
    let mut kept: Vec<String> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_file() && e.file_name() != "README.md")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        rebuilt, kept,
        "the committed report's files differ from what `incrpipe report` writes; rebuild it with\n  \
         incrpipe report results/table2-mid/runs --out results/table2-mid --pipeline pipelines/table2-mid.toml"
    );
    for name in &rebuilt {
        let new = std::fs::read(out.join(name)).unwrap();
        let old = std::fs::read(results.join(name)).unwrap();
        if name.ends_with(".png") {
            // Raster bytes may depend on the rasteriser's float path; the SVG beside each
            // PNG is compared byte for byte and carries the same figure.
            assert_eq!(png_size(&new), png_size(&old), "{name}: size differs");
        } else {
            assert!(
                new == old,
                "results/table2-mid/{name} is not what the committed runs give; rebuild it \
                 (command above) and look at the difference"
            );
        }
    }
}
