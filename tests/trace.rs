//! `incrpipe trace`: each run's record of its stages, checked field by field on a known
//! pipeline (a stage that uses CPU and memory, one that sleeps, one that fails once and is
//! retried, one that waits for two others), its CSV and its timeline in a real browser; the
//! last 20 runs are kept, and `gc` bounds them.

mod common;

use common::{Ws, dump_dom};
use serde_json::Value;

const PIPELINE: &str = r#"[pipeline]
name = "traced"

[stages.busy]
cmd = "python3 -c 'import time; x = bytearray(80_000_000); s = time.time()\nwhile time.time() - s < 0.4: pass' && touch busy"
outs = ["busy"]

[stages.nap]
cmd = "sleep 0.3 && touch nap"
outs = ["nap"]

[stages.flaky]
cmd = "if [ ! -e tried ]; then touch tried; exit 3; fi; touch flaky"
outs = ["flaky"]
retries = 1

[stages.join]
cmd = "cat busy nap > join"
deps = ["busy", "nap"]
outs = ["join"]
"#;

fn trace_json(ws: &Ws, args: &[&str]) -> Value {
    let mut all = vec!["trace", "--json"];
    all.extend_from_slice(args);
    let o = ws.run(&all);
    o.ok();
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

fn rows<'a>(t: &'a Value, stage: &str) -> Vec<&'a Value> {
    t["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["stage"] == stage)
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_run_is_traced_stage_by_stage() {
    let ws = Ws::new();
    ws.file("p.toml", PIPELINE);
    ws.run(&["run", "p.toml", "-j", "2"]).ok();
    let t = trace_json(&ws, &[]);
    assert_eq!(t["jobs"], 2);
    assert_eq!(t["pipeline"], "p.toml");
    let (start, end) = (f(&t["start"]), f(&t["end"]));

    let busy = rows(&t, "busy");
    assert_eq!(busy.len(), 1, "{t:#}");
    let b = busy[0];
    assert_eq!(b["outcome"], "ran");
    assert_eq!(b["attempt"], 1);
    assert_eq!(b["exit"], "exit 0");
    assert_eq!(b["executor"], "local");
    assert_eq!(b["cpus"], 1);
    assert_eq!(b["gpus"], serde_json::json!([]));
    assert!(
        b["slurm_job"].is_null() && b["usage_unavailable"].is_null(),
        "{b}"
    );
    assert_eq!(b["key"].as_str().unwrap().len(), 12);
    // It spun for 0.4 s and held 80 MB.
    assert!(f(&b["cpu_s"]) >= 0.3, "{b}");
    assert!(f(&b["wall_s"]) >= 0.4, "{b}");
    assert!(b["peak_rss_kb"].as_u64().unwrap() >= 80_000, "{b}");
    assert!(f(&b["start"]) >= start && f(&b["end"]) <= end, "{b}");

    let nap = rows(&t, "nap")[0];
    assert!(f(&nap["wall_s"]) >= 0.3, "{nap}");
    assert!(f(&nap["cpu_s"]) < 0.2, "sleeping is not CPU time: {nap}");

    // The failed try and its retry are two rows.
    let flaky = rows(&t, "flaky");
    assert_eq!(flaky.len(), 2, "{t:#}");
    assert_eq!(
        (
            &flaky[0]["outcome"],
            &flaky[0]["attempt"],
            &flaky[0]["exit"]
        ),
        (&"failed".into(), &1.into(), &"exit 3".into())
    );
    assert_eq!(
        (&flaky[1]["outcome"], &flaky[1]["attempt"]),
        (&"ran".into(), &2.into())
    );

    // join starts after both of its deps ended.
    let join = rows(&t, "join")[0];
    let deps_end = f(&b["end"]).max(f(&nap["end"]));
    assert!(f(&join["start"]) >= deps_end, "{t:#}");

    // A rerun is traced too, every stage from the cache; the first run is still there.
    ws.run(&["run", "p.toml"]).ok();
    let again = trace_json(&ws, &[]);
    let outcomes: Vec<&Value> = again["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["outcome"])
        .collect();
    assert_eq!(outcomes, vec!["cached"; 4], "{again:#}");
    assert_eq!(trace_json(&ws, &["2"]), t);
    ws.run(&["trace", "--list"]).ok().stdout_has(" 2  ");

    // Text and CSV: a row per try.
    let text = ws.run(&["trace", "2"]);
    text.ok().stdout_has("flaky").stdout_has("exit 3");
    let csv = ws.run(&["trace", "2", "--csv"]);
    csv.ok();
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 5, "{}", csv.stdout);
    assert!(lines[0].starts_with("stage,key,outcome,attempt,start_s,wall_s,cpu_s,peak_rss_mb"));

    // The timeline, drawn by its script in a real browser: one bar per try that ran.
    ws.run(&["trace", "2", "--html", "timeline.html"]).ok();
    let dom = dump_dom(&ws.path().join("timeline.html"));
    assert!(dom.contains("data-bars=\"5\""), "{dom}");
    assert_eq!(dom.matches("class=\"bar ran\"").count(), 4, "{dom}");
    assert_eq!(dom.matches("class=\"bar failed\"").count(), 1, "{dom}");
    assert!(
        dom.contains("CPU slot 2") && !dom.contains("CPU slot 3"),
        "{dom}"
    );
    assert!(
        dom.contains("busy (try 1, ran)"),
        "the hover details: {dom}"
    );

    ws.run(&["trace", "nope"])
        .code(2)
        .stderr_has("no traced run \"nope\"");
}

#[test]
fn the_last_twenty_runs_are_kept_and_gc_bounds_them() {
    let ws = Ws::new();
    ws.run(&["trace"])
        .code(2)
        .stderr_has("no run has been traced");
    ws.file(
        "p.toml",
        "[pipeline]\nname = \"t\"\n[stages.a]\ncmd = \"touch a\"\nouts = [\"a\"]\n",
    );
    for _ in 0..22 {
        ws.run(&["run", "p.toml"]).ok();
    }
    let dir = ws.path().join("cache/state/traces");
    let count = || std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(count(), 20);
    // Traces left by hand (or an older binary) beyond the bound: gc removes the oldest.
    for n in 0..3 {
        std::fs::copy(
            std::fs::read_dir(&dir)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
            dir.join(format!("0000000000000-{n}.json")),
        )
        .unwrap();
    }
    ws.run(&["gc", "p.toml"])
        .ok()
        .stdout_has("removed 3 run traces older than the last 20");
    assert_eq!(count(), 20);
    assert!(!dir.join("0000000000000-0.json").exists());
}
