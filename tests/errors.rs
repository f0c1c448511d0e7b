//! Every class of bad pipeline gets a located, explained error, exit code 2,
//! and no stage runs. Messages are snapshot-tested (tests/snapshots/).

mod common;

use common::Ws;

/// Runs a broken pipeline; asserts exit 2 and that nothing ran; returns stderr
/// with the temp workspace path replaced.
fn error_of(pipeline: &[u8]) -> String {
    let ws = Ws::new();
    std::fs::write(ws.path().join("p.toml"), pipeline).unwrap();
    ws.file("exists.txt", "x");
    let o = ws.run(&["run", "p.toml"]);
    o.code(2);
    assert!(ws.runs().is_empty(), "no stage may run on bad input");
    let ws_path = ws.path().canonicalize().unwrap();
    o.stderr.replace(&ws_path.display().to_string(), "[WS]")
}

const HEAD: &str = "[pipeline]\nname = \"t\"\n";

fn with(body: &str) -> Vec<u8> {
    format!("{HEAD}{body}").into_bytes()
}

#[test]
fn toml_syntax() {
    insta::assert_snapshot!(error_of(&with("[stages.a]\ncmd = \"echo >> runs.log\n")));
}

#[test]
fn unknown_key() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo a >> runs.log\"\ndepz = [\"x\"]\n"
    )));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo a >> runs.log\"\nouts = \"o\"\n"
    )));
}

#[test]
fn missing_stage_in_needs() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.prep]\ncmd = \"echo >> runs.log\"\n[stages.b]\ncmd = \"echo >> runs.log\"\nneeds = [\"prepp\"]\n"
    )));
}

#[test]
fn cycle_through_needs() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nneeds = [\"c\"]\n[stages.b]\ncmd = \"echo >> runs.log\"\nneeds = [\"a\"]\n[stages.c]\ncmd = \"echo >> runs.log\"\nneeds = [\"b\"]\n"
    )));
}

#[test]
fn cycle_through_files() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\ndeps = [\"y\"]\nouts = [\"x\"]\n[stages.b]\ncmd = \"echo >> runs.log\"\ndeps = [\"x\"]\nouts = [\"y\"]\n"
    )));
}

#[test]
fn duplicate_out() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nouts = [\"o\"]\n[stages.b]\ncmd = \"echo >> runs.log\"\nouts = [\"./o\"]\n"
    )));
}

#[test]
fn out_outside_workspace() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nouts = [\"../escape\"]\n"
    )));
}

#[test]
fn undefined_parameter() {
    insta::assert_snapshot!(error_of(&with(
        "[params]\nseed = 1\n[stages.a]\ncmd = \"echo ${params.sead} >> runs.log\"\n"
    )));
}

/// `${train.n_est}` is no param reference and no shell expansion: refused at plan time,
/// located, with the param it likely means, instead of bash's "bad substitution" at run time.
#[test]
fn dotted_name_in_a_command() {
    insta::assert_snapshot!(error_of(&with(
        "[params]\nn_est = 50\n[stages.a]\ncmd = \"echo ${train.n_est} >> runs.log\"\n"
    )));
}

#[test]
fn undefined_matrix_value() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo ${matrix.net} >> runs.log\"\n"
    )));
}

#[test]
fn bad_matrix() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nmatrix = { net = [] }\n"
    )));
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nmatrix = { net = [[1]] }\n"
    )));
}

#[test]
fn unknown_kind() {
    insta::assert_snapshot!(error_of(&with("[stages.a]\nkind = \"no-such-kind\"\n")));
}

#[test]
fn missing_dep_file() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\ndeps = [\"exists.txt\", \"missing.txt\"]\n"
    )));
}

#[test]
fn impossible_resources() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nresources = { gpus = 2 }\n"
    )));
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nresources = { cpus = -1 }\n"
    )));
}

#[test]
fn invalid_utf8() {
    let mut bytes = with("[stages.a]\ncmd = \"echo ");
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b" >> runs.log\"\n");
    insta::assert_snapshot!(error_of(&bytes));
}

#[test]
fn cmd_and_kind_together_or_neither() {
    insta::assert_snapshot!(error_of(&with(
        "[stages.a]\ncmd = \"echo >> runs.log\"\nkind = \"x\"\n"
    )));
    insta::assert_snapshot!(error_of(&with("[stages.a]\ndeps = []\n")));
}

#[test]
fn missing_pipeline_file() {
    let ws = Ws::new();
    ws.run(&["run", "nope.toml"])
        .code(2)
        .stderr_has("cannot read pipeline file");
}

/// A kernel path that does not exist (or the old variable) stops the runner before any
/// stage starts, and says what it accepts.
#[test]
fn a_bad_kernel_path_stops_every_command_before_it_runs() {
    let ws = common::Ws::new();
    ws.pipeline(&format!("{HEAD}[stages.a]\ncmd = \"echo a >> runs.log\"\n"));
    let o = ws
        .command(&["run", "p.toml"])
        .env("INCRPIPE_KERNELS", "avx3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("INCRPIPE_KERNELS=\"avx3\" is not a kernel path")
            && err.contains("auto, reference, portable, avx2+fma or avx512"),
        "{err}"
    );
    assert!(ws.runs().is_empty(), "a stage ran");
    let o = ws
        .command(&["run", "p.toml"])
        .env("INCRPIPE_REFERENCE_OPS", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("use INCRPIPE_KERNELS=reference"));
    ws.command(&["run", "p.toml"])
        .env("INCRPIPE_KERNELS", "portable")
        .status()
        .unwrap();
    assert_eq!(ws.runs(), ["a"]);
}

/// No data path is compiled in: `train` without `--data` or `$INCRPIPE_CIFAR10` says so.
#[test]
fn train_without_data_names_both_ways_to_give_it() {
    let ws = common::Ws::new();
    let o = ws
        .command(&[
            "train",
            "--net",
            "resnet8-w4",
            "--method",
            "baseline",
            "--out",
            "o",
        ])
        .env_remove("INCRPIPE_CIFAR10")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("no CIFAR-10 directory: pass --data DIR") && err.contains("INCRPIPE_CIFAR10"),
        "{err}"
    );
}
