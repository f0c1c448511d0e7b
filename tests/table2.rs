//! The paper's training through the runner: chains, sharing, reuse, resume,
//! and equality with the single-process `incrpipe train`.

mod common;

use common::{Ws, kind_label};

/// A tiny but real configuration: narrow ResNet-8, a few images, short phases.
const SETTINGS: &[(&str, &str)] = &[
    ("net", "\"resnet8-w4\""),
    ("train_per_class", "10"),
    ("val_per_class", "5"),
    ("test_per_class", "10"),
    ("max_epochs", "2"),
    ("min_epochs", "1"),
    ("ws", "2"),
    ("batch", "32"),
    ("lr", "0.001"),
];

fn pipeline(methods: &str, lookahead_epochs: u32) -> String {
    let mut p = format!(
        "[pipeline]\nname = \"t2\"\n[params]\nmirror = \"{}\"\nlookahead_epochs = {lookahead_epochs}\n",
        common::cifar_dir_str()
    );
    for (k, v) in SETTINGS {
        p.push_str(&format!("{k} = {v}\n"));
    }
    p.push_str(&format!(
        "[stages.data]\nkind = \"download-cifar\"\nouts = [\"data/cifar10\"]\n[stages.run]\nkind = \"incremental\"\ndeps = [\"data/cifar10\"]\nouts = [\"runs/${{matrix.method}}\"]\nmatrix = {{ method = [{methods}] }}\n"
    ));
    p
}

/// metrics.csv without the wall-time column, and the test accuracy.
fn numbers(ws: &Ws, dir: &str) -> (String, f64) {
    let csv: String = ws
        .read(&format!("{dir}/metrics.csv"))
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    let r: serde_json::Value =
        serde_json::from_str(&ws.read(&format!("{dir}/result.json"))).unwrap();
    (csv, r["test_accuracy"].as_f64().unwrap())
}

#[test]
fn chain_equals_single_process_train_and_shares_stage_one() {
    let ws = Ws::new();
    ws.pipeline(&pipeline("\"random\", \"lookahead\"", 1));
    let dag = ws.run(&["dag", "p.toml"]);
    dag.ok()
        .stdout_has("run@method=lookahead/look-ahead-2")
        .stdout_has("run@method=random/train-stage-3")
        .stdout_has(&format!("run/train-stage-1  {}", kind_label("train-stage")))
        .stdout_has(&format!("run/augment  {}", kind_label("augment")));
    assert_eq!(
        dag.stdout.matches("train-stage-1  [").count(),
        1,
        "random and lookahead share one train-stage-1:\n{}",
        dag.stdout
    );
    ws.run(&["run", "p.toml", "-j", "2"]).ok();
    for method in ["random", "lookahead"] {
        let out = ws.path().join(format!("single-{method}"));
        let o = ws
            .command(&[
                "train",
                "--net",
                "resnet8-w4",
                "--method",
                method,
                "--seed",
                "1",
                "--subset",
                "10",
                "--val-subset",
                "5",
                "--test-subset",
                "10",
                "--max-epochs",
                "2",
                "--min-epochs",
                "1",
                "--ws",
                "2",
                "--batch",
                "32",
                "--lr",
                "0.001",
                "--lookahead-epochs",
                "1",
                "--data",
                &common::cifar_dir_str(),
                "--out",
                out.to_str().unwrap(),
            ])
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let single = numbers(&ws, &format!("single-{method}"));
        let chain = numbers(&ws, &format!("runs/{method}"));
        assert_eq!(
            single, chain,
            "{method}: the chain must equal the single-process run bit for bit"
        );
    }
    let r: serde_json::Value =
        serde_json::from_str(&ws.read("runs/lookahead/result.json")).unwrap();
    for k in [
        "backend",
        "device",
        "burn_version",
        "git_commit",
        "stage_key",
        "data_checksum",
    ] {
        assert!(
            r["provenance"].get(k).is_some(),
            "provenance lacks {k}: {r}"
        );
    }
    assert_eq!(
        r["provenance"]["data_checksum"],
        serde_json::json!(incrpipe::download::expected_data_checksum())
    );
    assert_eq!(r["confusion"].as_array().unwrap().len(), 10);
}

#[test]
fn changing_lookahead_epochs_reuses_stage_one_and_baselines() {
    let ws = Ws::new();
    ws.pipeline(&pipeline("\"baseline\", \"lookahead\"", 1));
    ws.run(&["run", "p.toml", "-j", "2"]).ok();
    ws.pipeline(&pipeline("\"baseline\", \"lookahead\"", 2));
    let st = ws.run(&["status", "p.toml"]);
    st.ok().stdout_has(
        "run      run@method=lookahead/look-ahead-2: param `lookahead_epochs` changed (1 -> 2)",
    );
    let o = ws.run(&["run", "p.toml", "-j", "2"]);
    o.ok();
    let ran: Vec<&str> = o
        .stderr
        .lines()
        .filter_map(|l| l.split("done  ").nth(1))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        !ran.iter()
            .any(|s| s.contains("baseline") || s.ends_with("train-stage-1") || *s == "data"),
        "reused stages ran again: {ran:?}"
    );
    assert!(
        ran.contains(&"run@method=lookahead/look-ahead-2"),
        "{ran:?}"
    );
}

#[test]
fn killed_training_stage_resumes_at_its_last_epoch() {
    // Reference: an uninterrupted run.
    let reference = Ws::new();
    reference.pipeline(
        &pipeline("\"baseline\"", 1)
            .replace("max_epochs = 2", "max_epochs = 4")
            .replace("min_epochs = 1", "min_epochs = 4"),
    );
    reference.run(&["run", "p.toml"]).ok();
    let want = numbers(&reference, "runs/baseline");

    let ws = Ws::new();
    ws.file("p.toml", &reference.read("p.toml"));
    let mut child = ws
        .command(&["run", "p.toml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the training stage has checkpointed at least one epoch, then SIGKILL the runner.
    let scratch = ws.path().join("cache/scratch");
    let t0 = std::time::Instant::now();
    loop {
        let has_ckpt = walk(&scratch).iter().any(|p| p.ends_with("LATEST"));
        if has_ckpt || t0.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The running stage's log already shows its finished epoch (printed before the
    // checkpoint is written).
    let log = ws.run(&["logs", "run@method=baseline/train"]);
    // With its rate and how long the phase can still take (the rule may end it sooner).
    log.ok()
        .stdout_has("epoch   1 train")
        .stdout_has(" img/s, phase epoch 1 of <= 4, ETA <= ");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !ws.exists("runs/baseline/result.json"),
        "killed too late to test resuming"
    );
    ws.run(&["run", "p.toml"]).ok();
    ws.run(&["logs", "run@method=baseline/train"])
        .ok()
        .stdout_has("resuming from checkpoint");
    assert_eq!(
        numbers(&ws, "runs/baseline"),
        want,
        "a resumed run ends with the numbers of an uninterrupted one"
    );
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                stack.push(e.path());
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn training_params_are_declared() {
    let ws = Ws::new();
    ws.pipeline("[pipeline]\nname = \"t\"\n[stages.run]\nkind = \"incremental\"\nparams = { net = \"resnet20\", method = \"random\", gama = 0.5 }\ndeps = [\"d\"]\nouts = [\"r\"]\n");
    ws.run(&["run", "p.toml"])
        .code(2)
        .stderr_has("unknown parameter `gama` for kind `incremental`")
        .stderr_has("did you mean `gamma`?");
    ws.pipeline("[pipeline]\nname = \"t\"\n[stages.run]\nkind = \"incremental\"\nparams = { net = \"resnet21\", method = \"random\" }\ndeps = [\"d\"]\nouts = [\"r\"]\n");
    ws.run(&["dag", "p.toml"]).code(2).stderr_has("stage `run`");
}

#[test]
fn stages_after_growth_stops_pass_the_model_through() {
    let ws = Ws::new();
    // The growth rule: S1-S2 cannot gain 100 points over S1, so S3 is never inserted.
    ws.pipeline(
        &pipeline("\"random\"", 1)
            .replace("max_epochs = 2", "max_epochs = 2\nmin_gain_points = 100.0"),
    );
    ws.run(&["run", "p.toml"]).ok();
    ws.run(&["logs", "run@method=random/train-stage-3"])
        .ok()
        .stdout_has("passing the model through unchanged");
    let r: serde_json::Value = serde_json::from_str(&ws.read("runs/random/result.json")).unwrap();
    assert_eq!(r["epochs"], serde_json::json!(4));
    assert_eq!(
        r["active_subnetworks"],
        serde_json::json!(2),
        "S3 was never inserted"
    );
    // A budget that the caps cannot fit is refused at plan time, before anything runs.
    ws.pipeline(
        &pipeline("\"random\"", 1).replace("max_epochs = 2", "max_epochs = 2\nepoch_budget = 2"),
    );
    ws.run(&["run", "p.toml"])
        .code(2)
        .stderr_has("epoch_budget = 2 cannot hold 2 phases of up to max_epochs = 2");
}
