//! `pipelines/table2.toml`, the paper's scale: its DAG, dry run, GPU demands and
//! settings (running it needs GPUs; see README).

mod common;

use std::path::Path;

use common::{Ws, kind_label};
use incrpipe::dag::Dag;
use incrpipe::spec::{self, Action};
use serde_json::json;

fn pipeline() -> String {
    std::fs::read_to_string(format!(
        "{}/pipelines/table2.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn dag_has_every_network_and_method_with_the_papers_growth_phases() {
    let p = spec::parse(
        Path::new("table2.toml"),
        pipeline().into_bytes(),
        &incrpipe::stages::registry(),
    )
    .unwrap();
    let dag = Dag::build(&p, Path::new("/ws"), false).unwrap();
    let names: Vec<&str> = dag.nodes.iter().map(|n| n.spec.name.as_str()).collect();
    for (net, seed) in ["vgg16", "resnet20", "resnet32", "resnet44", "resnet56"]
        .into_iter()
        .flat_map(|n| (1..=3).map(move |s| (n, s)))
    {
        let k = if net == "vgg16" { 6 } else { 3 };
        let run = |m: &str| format!("run@method={m},net={net},seed={seed}");
        assert!(names.contains(&format!("{}/train", run("baseline")).as_str()));
        assert!(
            names.contains(&format!("run@net={net},seed={seed}/train-stage-1").as_str()),
            "shared stage 1 of {net} seed {seed}"
        );
        for i in 2..=k {
            assert!(
                names.contains(&format!("{}/look-ahead-{i}", run("lookahead")).as_str()),
                "{net} look-ahead-{i}"
            );
            assert!(
                names.contains(&format!("{}/train-stage-{i}", run("random")).as_str()),
                "{net} random train-stage-{i}"
            );
        }
        assert!(!names.contains(&format!("{}/look-ahead-{}", run("lookahead"), k + 1).as_str()));
        for m in ["baseline", "lookahead", "random"] {
            assert!(names.contains(&format!("{}/evaluate", run(m)).as_str()));
        }
    }
    // data + report + per network and seed: baseline 2, shared stage 1, random (K-1) +
    // evaluate, look-ahead 2(K-1) + evaluate; three seeds.
    let per_net = |k: usize| 2 + 1 + (k - 1) + 1 + 2 * (k - 1) + 1;
    assert_eq!(
        dag.nodes.len(),
        3 + 3 * (per_net(6) + 4 * per_net(3)),
        "data, augment (shared by all), report, and the chains"
    );
    // Every training stage asks for one GPU and trains on cuda:0 of the device it is pinned to.
    for n in &dag.nodes {
        match &n.spec.action {
            Action::Builtin { kind, .. } if kind == "download-cifar" || kind == "report" => {
                assert_eq!(n.spec.gpus, 0, "{}", n.spec.name)
            }
            Action::Builtin { kind, .. } if kind == "augment" => {
                assert_eq!(n.spec.params["train_per_class"], json!(0))
            }
            _ => {
                assert_eq!(n.spec.gpus, 1, "{}", n.spec.name);
                // Table 1: RMSProp lr 1e-4 (rho 0.9, no momentum), weight decay 1e-4,
                // the paper's batch size per network (0 = 128 ResNets, 32 VGG), 10% validation,
                // augmentation, the full data set.
                let p = &n.spec.params;
                assert_eq!(p["device"], json!("cuda:0"));
                assert_eq!(
                    (p["lr"].clone(), p["rho"].clone(), p["momentum"].clone()),
                    (json!(0.0001), json!(0.9), json!(0.0))
                );
                assert_eq!(
                    (p["weight_decay"].clone(), p["batch"].clone()),
                    (json!(0.0001), json!(0))
                );
                assert_eq!(
                    (p["val_fraction"].clone(), p["augment"].clone()),
                    (json!(0.1), json!(true))
                );
                for subset in ["train_per_class", "val_per_class", "test_per_class"] {
                    assert_eq!(p[subset], json!(0), "{} uses a subset", n.spec.name);
                }
            }
        }
    }
}

#[test]
fn dry_run_and_gpu_demands() {
    let ws = Ws::new();
    ws.file("pipelines/table2.toml", &pipeline());
    let o = ws.run(&["run", "pipelines/table2.toml", "--dry-run"]);
    o.ok()
        .stdout_has("run      data: never run")
        .stdout_has("195 stages: 0 up to date, 0 to restore, 1 to run, 194 waiting on upstream");
    assert!(!ws.exists("cache/entries/00"), "a dry run runs nothing");
    // Without GPUs the run stops before anything starts, naming the stage and the demand.
    let o = ws.run(&["run", "pipelines/table2.toml", "--gpus", ""]);
    o.code(2)
        .stderr_has("needs 1 GPU(s) but only 0 are available");
    assert!(!ws.exists("data"), "nothing ran");
    ws.run(&["dag", "pipelines/table2.toml"])
        .ok()
        .stdout_has(&format!(
            "run@method=lookahead,net=vgg16,seed=1/look-ahead-6  {} gpus=1",
            kind_label("look-ahead")
        ));
}
