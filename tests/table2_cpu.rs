//! CI's accuracy regression: `pipelines/table2-cpu.toml` from a cold cache, its
//! report checked against `tests/expected/table2-cpu.csv` (tolerances and how they
//! were made: `tests/expected/table2-cpu.tolerances.toml`, docs/table2-cpu.md).
//! Takes minutes; skip locally with `cargo test -- --skip table2_cpu`.

mod common;

use common::Ws;

#[test]
fn table2_cpu_reproduces_the_expected_numbers() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mirror = std::env::var("INCRPIPE_CIFAR10")
        .unwrap_or_else(|_| format!("{root}/../shared/data/cifar-10-batches-bin"));
    let pipeline = std::fs::read_to_string(format!("{root}/pipelines/table2-cpu.toml")).unwrap();
    let line = pipeline
        .lines()
        .find(|l| l.starts_with("mirror = "))
        .expect("the pipeline names its mirror");
    let ws = Ws::new();
    ws.file(
        "pipelines/table2-cpu.toml",
        &pipeline.replace(line, &format!("mirror = \"{mirror}\"")),
    );
    let o = ws.run(&["run", "pipelines/table2-cpu.toml", "-j", "2"]);
    o.ok();
    assert_eq!(
        o.counts(),
        (36, 0, 0),
        "a cold cache runs every stage once (augment and train-stage-1 are shared)"
    );
    let expected = format!("{root}/tests/expected/table2-cpu.csv");
    let check = ws.run(&[
        "check",
        "results/table2-cpu/table2.csv",
        "--expected",
        &expected,
    ]);
    println!("{}", check.stdout);
    check.ok();
    for f in [
        "table2.md",
        "index.html",
        "fig3-val-acc-vs-train-flops.png",
        "fig4-val-acc-vs-params.svg",
    ] {
        assert!(
            ws.exists(&format!("results/table2-cpu/{f}")),
            "report lacks {f}"
        );
    }
    // A finished pipeline reruns nothing.
    assert_eq!(
        ws.run(&["run", "pipelines/table2-cpu.toml"]).ok().counts(),
        (0, 36, 0)
    );
}
