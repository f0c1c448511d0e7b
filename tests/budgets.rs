//! Equal budgets: in every shipped pipeline, every method of one network and seed gets
//! the same total epoch budget (docs/deviations.md), read off the expanded chains.

use std::collections::BTreeMap;
use std::path::Path;

use incrpipe::spec::{self, Action};

#[test]
fn every_shipped_pipeline_gives_all_methods_one_budget() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let reg = incrpipe::stages::registry();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let p = spec::load(&path, &reg).unwrap_or_else(|d| panic!("{}: {d}", path.display()));
        // (run without its method) -> method -> budget, from each chain's evaluate stage.
        let mut runs: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for s in &p.stages {
            if !matches!(&s.action, Action::Builtin { kind, .. } if kind == "evaluate") {
                continue;
            }
            let mut key = s.params.clone();
            let method = key.remove("method").unwrap().as_str().unwrap().to_string();
            for neutral in ["lookahead_epochs", "min_gain_points"] {
                key.remove(neutral);
            }
            let budget = s.params["epoch_budget"].as_u64().unwrap();
            assert!(
                budget > 0,
                "{}: {} has no epoch_budget: methods would train for different lengths",
                path.display(),
                s.name
            );
            runs.entry(serde_json::to_string(&key).unwrap())
                .or_default()
                .insert(method, budget);
        }
        if runs.is_empty() {
            continue;
        }
        for (run, budgets) in &runs {
            assert_eq!(
                budgets.keys().collect::<Vec<_>>(),
                ["baseline", "lookahead", "random"],
                "{}: {run} lacks a method",
                path.display()
            );
            let first = budgets.values().next().unwrap();
            assert!(
                budgets.values().all(|b| b == first),
                "{}: unequal budgets {budgets:?} for {run}",
                path.display()
            );
        }
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        ["table2-cpu.toml", "table2-mid.toml", "table2.toml"]
    );
}
