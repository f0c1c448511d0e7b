//! `incrpipe bench train|infer`: the figures a user compares builds with, and the libtorch
//! comparison backend's error on a build without it.

mod common;

use common::Ws;

/// One real training step of a narrow network: the median and the fastest step are both
/// reported, on the human line and in the JSON line.
#[test]
fn bench_train_reports_median_and_fastest_step() {
    let ws = Ws::new();
    let o = ws.run(&[
        "bench",
        "train",
        "--net",
        "resnet8-w4",
        "--batch",
        "8",
        "--steps",
        "2",
        "--warmup",
        "0",
    ]);
    o.ok()
        .stdout_has("images/s (median step")
        .stdout_has("; fastest ");
    let json: serde_json::Value = o
        .stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a JSON line");
    let (median, fastest) = (
        json["median_step_seconds"].as_f64().unwrap(),
        json["fastest_step_seconds"].as_f64().unwrap(),
    );
    assert!(fastest > 0.0 && fastest <= median, "{json}");
}

#[cfg(not(feature = "tch"))]
#[test]
fn libtorch_needs_the_tch_feature() {
    Ws::new()
        .run(&["bench", "train", "--device", "libtorch", "--steps", "1"])
        .code(1)
        .stderr_has("built without the `tch` feature");
}
