//! Kind versions follow results, not source text. A built-in kind's version is part of every
//! key it produces; it must change when what the kind computes changes, and only then (a
//! comment or a refactor that keeps the bits keeps every cached run).
//!
//! This test computes the result bits of small deterministic cases on every kernel path the
//! CPU has, and compares them with `tests/kind-fingerprints.txt`:
//! - a tiny pipeline through the real binary (`INCRPIPE_KERNELS=<path>`): download, split,
//!   ResNet-8 baseline and three-phase look-ahead and random chains (phases ended by the rule
//!   and by the budget), a six-phase VGG-16 look-ahead chain, evaluation and the report. A
//!   stage whose out moved while its inputs did not names its kind;
//! - network steps and inference on 12x12 images, which take the packed, batched and pixel
//!   convolutions (32x32 CIFAR images take the implicit one), the dense, BatchNorm, L2 and
//!   RMSProp kernels, and a run killed mid-phase and resumed from its checkpoint, in a
//!   child process per path (the `ops_child` test below).
//!
//! Lines are per kernel path and x86-64 level (burn's own ops choose their code by it); a
//! CPU of a level not in the record is reported as not checked.
//!
//! When a case moves and its kinds keep their versions, the test says which versions to
//! bump. Then refresh the record: `INCRPIPE_UPDATE_FINGERPRINTS=1 cargo test --test
//! kind_fingerprints`. Limits: docs/kind-versions.md.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Ws;
use incrpipe::dag::Dag;
use incrpipe::engine::kernels::KernelPath;
use incrpipe::registry::Registry;
use incrpipe::spec::{self, Action};

const RECORD: &str = "tests/kind-fingerprints.txt";
const UPDATE: &str = "INCRPIPE_UPDATE_FINGERPRINTS";

/// The kinds whose results the child's cases (network steps, inference, resume) decide.
const TRAINING: &[&str] = &["train", "train-stage", "look-ahead"];
const INFERENCE: &[&str] = &["train", "train-stage", "look-ahead", "evaluate"];

/// One case on one kernel path: the kinds it guards (with their versions now), a hash of its
/// inputs (`-` when fixed by the test) and of its result.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    path: String,
    case: String,
    kinds: BTreeMap<String, u32>,
    input: String,
    output: String,
}

impl Line {
    fn render(&self) -> String {
        let kinds: Vec<String> = self.kinds.iter().map(|(k, v)| format!("{k}@{v}")).collect();
        format!(
            "{} {} {} in={} out={}",
            self.path,
            self.case,
            kinds.join(","),
            self.input,
            self.output
        )
    }

    fn parse(l: &str) -> Option<Line> {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [path, case, kinds, input, output] = f.as_slice() else {
            return None;
        };
        let kinds = kinds
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('@')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect::<Option<_>>()?;
        Some(Line {
            path: path.to_string(),
            case: case.to_string(),
            kinds,
            input: input.strip_prefix("in=")?.to_string(),
            output: output.strip_prefix("out=")?.to_string(),
        })
    }
}

/// What the record and the results now disagree on.
#[derive(Debug, Default, PartialEq)]
struct Verdict {
    /// Kinds whose results moved on unchanged inputs while their version stayed: (kind, why).
    bump: BTreeMap<String, Vec<String>>,
    /// Other differences (new cases, moved inputs, bumped versions): the record is stale.
    stale: Vec<String>,
}

/// Compares the lines computed now with the record, for the paths computed now.
fn compare(recorded: &[Line], now: &[Line]) -> Verdict {
    let mut v = Verdict::default();
    let old: BTreeMap<(&str, &str), &Line> = recorded
        .iter()
        .map(|l| ((l.path.as_str(), l.case.as_str()), l))
        .collect();
    for l in now {
        let Some(r) = old.get(&(l.path.as_str(), l.case.as_str())) else {
            v.stale
                .push(format!("{} on {}: not recorded", l.case, l.path));
            continue;
        };
        if r.output != l.output && r.input == l.input {
            for (kind, version) in &l.kinds {
                if r.kinds.get(kind) == Some(version) {
                    v.bump.entry(kind.clone()).or_default().push(format!(
                        "{} on {} moved ({} -> {})",
                        l.case, l.path, r.output, l.output
                    ));
                }
            }
        }
        if *r != l {
            v.stale
                .push(format!("{} on {}: differs from the record", l.case, l.path));
        }
    }
    let paths: BTreeSet<&str> = now.iter().map(|l| l.path.as_str()).collect();
    let cases: BTreeSet<(&str, &str)> = now
        .iter()
        .map(|l| (l.path.as_str(), l.case.as_str()))
        .collect();
    for r in recorded {
        if paths.contains(r.path.as_str()) && !cases.contains(&(r.path.as_str(), r.case.as_str())) {
            v.stale.push(format!(
                "{} on {}: recorded, no longer computed",
                r.case, r.path
            ));
        }
    }
    v
}

fn record_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORD)
}

fn read_record() -> Vec<Line> {
    std::fs::read_to_string(record_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| Line::parse(l).unwrap_or_else(|| panic!("{RECORD}: bad line {l:?}")))
        .collect()
}

const HEADER: &str = "\
# Result fingerprints of the built-in kinds, one line per case and kernel path:
# path case kind@version,... in=<inputs> out=<result> (blake3, 16 hex digits).
# Written by INCRPIPE_UPDATE_FINGERPRINTS=1 cargo test --test kind_fingerprints; read by
# that test (tests/kind_fingerprints.rs). Lines of a path this CPU lacks are kept as they are.
";

fn write_record(recorded: &[Line], now: &[Line]) {
    let paths: BTreeSet<&str> = now.iter().map(|l| l.path.as_str()).collect();
    let mut lines: Vec<&Line> = recorded
        .iter()
        .filter(|l| !paths.contains(l.path.as_str()))
        .chain(now)
        .collect();
    lines.sort_by(|a, b| (&a.path, &a.case).cmp(&(&b.path, &b.case)));
    let body: String = lines.iter().map(|l| l.render() + "\n").collect();
    std::fs::write(record_path(), format!("{HEADER}{body}")).unwrap();
}

/// The x86-64 level of this CPU: burn's own ops (the gemm crate, built with `x86-v4`)
/// choose their code by it, so the same kernel path gives other bits on another level.
fn cpu_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl")
        {
            "x86-64-v4"
        } else if has!("avx2") && has!("fma") && has!("bmi2") {
            "x86-64-v3"
        } else {
            "x86-64"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::env::consts::ARCH
}

/// How a record line names a kernel path on this CPU.
fn label(path: KernelPath) -> String {
    format!("{}@{}", path.name(), cpu_level())
}

fn short(h: blake3::Hash) -> String {
    h.to_hex()[..16].to_string()
}

// ---- the tiny pipeline -------------------------------------------------------------------

fn pipeline_toml() -> String {
    format!(
        r#"[pipeline]
name = "fingerprint"

[params]
mirror = "{}"
net = "resnet8-w4"
train_per_class = 8
val_per_class = 4
test_per_class = 4
batch = 20
lr = 0.002
epoch_budget = 12
ws = 2
gamma = 0.5
min_epochs = 2
max_epochs = 4
lookahead_epochs = 1

[stages.data]
kind = "download-cifar"
outs = ["data/cifar10"]

[stages.run]
kind = "incremental"
deps = ["data/cifar10"]
outs = ["runs/resnet/${{matrix.method}}"]
matrix = {{ method = ["baseline", "lookahead", "random"], seed = [1] }}

[stages.vgg]
kind = "incremental"
deps = ["data/cifar10"]
outs = ["runs/vgg/${{matrix.method}}"]
params = {{ net = "vgg16-w2", max_epochs = 2, epoch_budget = 17 }}
matrix = {{ method = ["lookahead"], seed = [2] }}

[stages.report]
kind = "report"
deps = ["runs"]
outs = ["results"]
"#,
        common::cifar_dir_str()
    )
}

/// Fields that say where, when and how fast a result was made, not what it is.
const NOT_RESULTS: &[&str] = &[
    "seconds",
    "provenance",
    "hosts",
    "source",
    "stage_key",
    "stage_keys",
    "git_commit",
];

fn strip_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !NOT_RESULTS.contains(&k.as_str()));
            m.values_mut().for_each(strip_json);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_json),
        _ => {}
    }
}

fn strip_csv(text: &str) -> String {
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = rdr.headers().unwrap().clone();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !NOT_RESULTS.contains(&&header[i]))
        .collect();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(keep.iter().map(|&i| &header[i])).unwrap();
    for r in rdr.records() {
        let r = r.unwrap();
        out.write_record(keep.iter().map(|&i| &r[i])).unwrap();
    }
    String::from_utf8(out.into_inner().unwrap()).unwrap()
}

/// A file's bytes without what [`NOT_RESULTS`] names; in other text, `masked` values (the
/// hosts and stage keys the report prints) are replaced.
fn canonical(file: &Path, masked: &[String]) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "json" => {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            strip_json(&mut v);
            serde_json::to_vec(&v).unwrap()
        }
        "csv" => strip_csv(std::str::from_utf8(&bytes).unwrap()).into_bytes(),
        "md" | "html" | "svg" | "txt" => {
            let mut t = String::from_utf8(bytes).unwrap();
            for m in masked {
                t = t.replace(m.as_str(), "<masked>");
            }
            t.into_bytes()
        }
        "mpk" => mask_param_ids(bytes),
        _ => bytes,
    }
}

/// burn's records (MessagePack) carry each parameter's `id`, random per process: the
/// fixed-length string after the key `id` is zeroed.
fn mask_param_ids(mut bytes: Vec<u8>) -> Vec<u8> {
    const KEY: &[u8] = &[0xa2, b'i', b'd'];
    let mut i = 0;
    while i + KEY.len() < bytes.len() {
        if &bytes[i..i + KEY.len()] == KEY && (0xa0..=0xbf).contains(&bytes[i + KEY.len()]) {
            let start = i + KEY.len() + 1;
            let len = (bytes[i + KEY.len()] & 0x1f) as usize;
            let end = (start + len).min(bytes.len());
            bytes[start..end].fill(0);
            i = start + len;
        } else {
            i += 1;
        }
    }
    bytes
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    if root.is_file() {
        return vec![root.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        out.extend(files_under(&e.unwrap().path()));
    }
    out.sort();
    out
}

/// Every run's `result.json` under the workspace's `runs/`.
fn run_results(ws: &Path) -> Vec<serde_json::Value> {
    files_under(&ws.join("runs"))
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "result.json"))
        .map(|f| serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap())
        .collect()
}

/// Every provenance value of the runs that the report may print (hosts, stage keys).
fn masked_values(results: &[serde_json::Value]) -> Vec<String> {
    let mut m = BTreeSet::new();
    for v in results {
        for k in ["hosts", "stage_key", "git_commit"] {
            if let Some(s) = v["provenance"][k].as_str() {
                m.insert(s.to_string());
            }
        }
    }
    m.into_iter().collect()
}

/// Runs the pipeline on `path` and returns one line per stage, and the phase stops seen.
fn pipeline_lines(path: KernelPath) -> (Vec<Line>, BTreeSet<String>) {
    let ws = Ws::new();
    ws.pipeline(&pipeline_toml());
    let o = ws
        .command(&["run", "p.toml", "-j", "2"])
        .env("INCRPIPE_KERNELS", path.name())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the fingerprint pipeline failed on {path}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let reg = incrpipe::stages::registry();
    let p = spec::load(&ws.path().join("p.toml"), &reg).unwrap();
    let dag = Dag::build(&p, ws.path(), true).unwrap();
    let results = run_results(ws.path());
    let masked = masked_values(&results);
    let mut out_hash: Vec<String> = vec![String::new(); dag.nodes.len()];
    let mut lines = Vec::new();
    for &i in &dag.order {
        let n = &dag.nodes[i];
        let Action::Builtin { kind, version } = &n.spec.action else {
            panic!("{}: not a built-in kind", n.spec.name)
        };
        let mut h = blake3::Hasher::new();
        for o in &n.outs {
            let root = o.resolve(ws.path());
            for f in files_under(&root) {
                let rel = f
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                h.update(rel.as_bytes());
                h.update(&canonical(&f, &masked));
            }
        }
        out_hash[i] = short(h.finalize());
        let mut inp = blake3::Hasher::new();
        for &u in &n.upstream {
            inp.update(out_hash[u].as_bytes());
        }
        lines.push(Line {
            path: label(path),
            case: format!("pipeline:{}", n.spec.name),
            kinds: [(kind.clone(), *version)].into(),
            input: if n.upstream.is_empty() {
                "-".into()
            } else {
                short(inp.finalize())
            },
            output: out_hash[i].clone(),
        });
    }
    let stops = results
        .iter()
        .flat_map(|v| v["phases"].as_array().unwrap())
        .map(|ph| ph["stop"].as_str().unwrap().to_string())
        .collect();
    (lines, stops)
}

// ---- the child's cases -------------------------------------------------------------------

fn version_of(reg: &Registry, kinds: &[&str]) -> BTreeMap<String, u32> {
    kinds
        .iter()
        .map(|k| (k.to_string(), reg.get(k).unwrap().version()))
        .collect()
}

/// Runs [`ops_child`] in a child of this test binary on `path`.
fn child_lines(path: KernelPath) -> Vec<Line> {
    let o = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "ops_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("INCRPIPE_KERNELS", path.name())
        .env("INCRPIPE_CIFAR10", common::cifar_dir_str())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the fingerprint child failed on {path}\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let reg = incrpipe::stages::registry();
    let lines: Vec<Line> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FINGERPRINT "))
        .map(|l| {
            let (case, hash) = l.split_once(' ').unwrap();
            let kinds = if case.starts_with("infer") {
                INFERENCE
            } else {
                TRAINING
            };
            Line {
                path: label(path),
                case: format!("engine:{case}"),
                kinds: version_of(&reg, kinds),
                input: "-".into(),
                output: hash.to_string(),
            }
        })
        .collect();
    assert!(
        lines.len() >= 4,
        "the child printed too few cases:\n{stdout}"
    );
    lines
}

#[test]
fn kind_versions_follow_their_results() {
    let recorded = read_record();
    let mut now = Vec::new();
    let mut by_path: BTreeMap<KernelPath, Vec<Line>> = BTreeMap::new();
    for path in KernelPath::available_here() {
        let (mut lines, stops) = pipeline_lines(path);
        // The pipeline must keep covering what it is meant to: phases ended by the rule,
        // by the budget, and look-ahead phases.
        for want in ["NoImprovement", "Budget", "FixedEpochs"] {
            assert!(
                stops.contains(want),
                "on {path} no phase ended by {want} (stops: {stops:?}): adjust the pipeline"
            );
        }
        lines.extend(child_lines(path));
        by_path.insert(path, lines.clone());
        now.extend(lines);
    }
    for p in KernelPath::ALL.iter().filter(|p| !p.available()) {
        eprintln!("kernel path {p}: not run (this CPU lacks it); its recorded lines are kept");
    }

    // AVX-512 widens tiles and row loops, never a sum: every case gives AVX2's bits.
    if let (Some(a), Some(b)) = (
        by_path.get(&KernelPath::Avx2Fma),
        by_path.get(&KernelPath::Avx512),
    ) {
        let bits = |ls: &[Line]| -> Vec<String> {
            ls.iter()
                .map(|l| format!("{} in={} out={}", l.case, l.input, l.output))
                .collect()
        };
        assert_eq!(
            bits(a),
            bits(b),
            "the avx512 and avx2+fma kernel paths give different results"
        );
    }

    // The test can tell: another path's bits, taken as this one's, move every training
    // case and leave the split and the download alone.
    if let (Some(a), Some(b)) = (
        by_path.get(&KernelPath::Portable),
        by_path.get(&KernelPath::Reference),
    ) {
        let relabelled: Vec<Line> = b
            .iter()
            .map(|l| Line {
                path: a[0].path.clone(),
                ..l.clone()
            })
            .collect();
        let v = compare(a, &relabelled);
        let bumped: BTreeSet<&str> = v.bump.keys().map(String::as_str).collect();
        assert!(
            ["train", "train-stage", "look-ahead", "evaluate"]
                .iter()
                .all(|k| bumped.contains(k)),
            "the reference path's bits did not move every training kind: {bumped:?}"
        );
        assert!(
            !bumped.contains("augment") && !bumped.contains("download-cifar"),
            "the split or the download depends on the kernel path: {bumped:?}"
        );
    }

    let v = compare(&recorded, &now);
    let here: BTreeSet<String> = now.iter().map(|l| l.path.clone()).collect();
    if std::env::var_os(UPDATE).is_none() && !recorded.iter().any(|l| here.contains(&l.path)) {
        eprintln!(
            "no fingerprints recorded for this CPU's level ({}): results not checked here; \
             record them on such a host with {UPDATE}=1",
            cpu_level()
        );
        return;
    }
    if std::env::var_os(UPDATE).is_some() {
        assert!(
            v.bump.is_empty(),
            "bump these versions before refreshing the record:\n{}",
            render_bumps(&v)
        );
        write_record(&recorded, &now);
        return;
    }
    assert!(
        v.bump.is_empty() && v.stale.is_empty(),
        "{}{}\nthen refresh the record: {UPDATE}=1 cargo test --test kind_fingerprints",
        render_bumps(&v),
        v.stale.join("\n")
    );
}

fn render_bumps(v: &Verdict) -> String {
    v.bump
        .iter()
        .map(|(k, why)| {
            format!(
                "results of kind `{k}` moved: bump the version of `{k}`\n  {}\n",
                why.join("\n  ")
            )
        })
        .collect()
}

#[test]
fn a_moved_result_names_its_kind_and_a_moved_input_does_not() {
    let line = |case: &str, kind: &str, v: u32, input: &str, output: &str| Line {
        path: "portable@x86-64-v4".into(),
        case: case.into(),
        kinds: [(kind.to_string(), v)].into(),
        input: input.into(),
        output: output.into(),
    };
    let rec = vec![
        line("a", "augment", 3, "-", "aa"),
        line("t1", "train-stage", 7, "aa", "t1"),
        line("t2", "train-stage", 7, "t1", "t2"),
    ];
    // Same bits: nothing to do (a comment or a refactor).
    assert_eq!(compare(&rec, &rec), Verdict::default());
    // t1 moves on the same input: bump train-stage; t2 moves because its input did.
    let now = vec![
        rec[0].clone(),
        line("t1", "train-stage", 7, "aa", "T1"),
        line("t2", "train-stage", 7, "T1", "T2"),
    ];
    let v = compare(&rec, &now);
    assert_eq!(v.bump.keys().collect::<Vec<_>>(), ["train-stage"]);
    assert_eq!(v.bump["train-stage"].len(), 1, "{v:?}");
    assert_eq!(v.stale.len(), 2);
    // After the bump only the record is stale.
    let bumped: Vec<Line> = now
        .iter()
        .map(|l| Line {
            kinds: [(l.kinds.keys().next().unwrap().clone(), 8)].into(),
            ..l.clone()
        })
        .collect();
    let v = compare(&rec, &bumped);
    assert!(v.bump.is_empty() && !v.stale.is_empty(), "{v:?}");
    // A path not computed here is neither checked nor dropped.
    let other = vec![Line {
        path: "avx2+fma@x86-64-v4".into(),
        ..rec[0].clone()
    }];
    assert_eq!(compare(&other, &rec[..1]).stale.len(), 1);
    assert!(
        compare(&[other.clone(), rec.clone()].concat(), &rec)
            .stale
            .is_empty()
    );
    let l = &now[1];
    assert_eq!(Line::parse(&l.render()).as_ref(), Some(l));
}

/// The child side: cases computed in-process on the path `INCRPIPE_KERNELS` selects, printed
/// as `FINGERPRINT <case> <hash>` lines. Run by [`kind_versions_follow_their_results`].
#[test]
#[ignore = "run by kind_versions_follow_their_results in a child process per kernel path"]
fn ops_child() {
    child::run();
}

mod child {
    use burn::module::{AutodiffModule, ModuleVisitor, Param};
    use burn::nn::loss::CrossEntropyLoss;
    use burn::optim::{GradientsParams, Optimizer};
    use burn::prelude::*;
    use burn::tensor::TensorData;
    use incrpipe::engine::EngineError;
    use incrpipe::engine::backend::{CpuTrainBackend, cpu_device};
    use incrpipe::engine::data::{self, Cifar10, DataConfig};
    use incrpipe::engine::model::{Net, NetSpec};
    use incrpipe::engine::train::{self, Ctx, Method, OptimConfig, TrainConfig};

    type AB = CpuTrainBackend;

    struct Hash(blake3::Hasher);
    impl<B: Backend> ModuleVisitor<B> for Hash {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            floats(&mut self.0, p.val().into_data());
        }
    }
    fn floats(h: &mut blake3::Hasher, d: TensorData) {
        for v in d.to_vec::<f32>().unwrap() {
            h.update(&v.to_bits().to_le_bytes());
        }
    }
    fn module<B: Backend, M: burn::module::Module<B>>(h: &mut blake3::Hasher, m: &M) {
        let mut v = Hash(std::mem::replace(h, blake3::Hasher::new()));
        m.visit(&mut v);
        *h = v.0;
    }
    fn print(case: &str, h: blake3::Hasher) {
        println!("FINGERPRINT {case} {}", &h.finalize().to_hex()[..16]);
    }
    fn images(n: usize, side: usize, salt: usize) -> Vec<f32> {
        (0..n * 3 * side * side)
            .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 2.0)
            .collect()
    }

    /// Two RMSProp steps of a whole network with weight decay, then inference: the kernels'
    /// forward, both backward passes, BatchNorm (train and inference), L2 and the update.
    fn steps_and_inference(net_name: &str, side: usize) {
        let d = cpu_device();
        let spec = NetSpec::parse(net_name).unwrap();
        let batch = 6;
        let mut net = Net::<AB>::init(&spec, spec.k(), 5, &d);
        let ocfg = OptimConfig {
            lr: 1e-3,
            ..OptimConfig::default()
        };
        let mut optim = ocfg.build::<AB>();
        let loss_fn = CrossEntropyLoss::new(None, &d);
        let mut h = blake3::Hasher::new();
        for step in 0..2 {
            let x = Tensor::<AB, 4>::from_data(
                TensorData::new(images(batch, side, step), [batch, 3, side, side]),
                &d,
            );
            let labels: Vec<i32> = (0..batch as i32)
                .map(|i| (i * 3 + step as i32) % 10)
                .collect();
            let y = Tensor::<AB, 1, Int>::from_data(TensorData::new(labels, [batch]), &d);
            let loss = loss_fn.forward(net.forward(x), y)
                + net.kernel_sq_sum().mul_scalar(ocfg.weight_decay);
            floats(&mut h, loss.clone().into_data());
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(ocfg.lr, net.clone(), grads);
        }
        module(&mut h, &net);
        print(&format!("steps-{net_name}-{side}px"), h);
        let valid = net.valid();
        let x = Tensor::from_data(
            TensorData::new(images(batch, side, 9), [batch, 3, side, side]),
            &d,
        );
        let mut h = blake3::Hasher::new();
        floats(&mut h, valid.forward(x).into_data());
        print(&format!("infer-{net_name}-{side}px"), h);
    }

    /// A look-ahead run killed mid-phase and after a look-ahead epoch, resumed each time from
    /// its checkpoint directory.
    fn resume() {
        let dir = std::path::PathBuf::from(std::env::var("INCRPIPE_CIFAR10").unwrap());
        let (all, test) = data::load_cifar10(&dir).unwrap();
        let cfg = DataConfig {
            train_per_class: Some(6),
            val_per_class: Some(3),
            test_per_class: Some(3),
            ..DataConfig::default()
        };
        let data = Cifar10::from_sets(&all, test, &cfg).unwrap();
        let spec = NetSpec::parse("resnet8-w4").unwrap();
        let mut cfg = TrainConfig::new("fingerprint", &spec, Method::Lookahead, 11);
        cfg.batch_size = 20;
        cfg.termination.ws = 2;
        cfg.termination.min_epochs = 0;
        cfg.termination.max_epochs = 2;
        cfg.lookahead_epochs = 1;
        cfg.optim.lr = 2e-3;
        let ctx = Ctx {
            spec: &spec,
            data: &data,
            cfg: &cfg,
        };
        let d = cpu_device();
        let ck = tempfile::tempdir().unwrap();
        for kill in [3, 4] {
            let mut c = cfg.clone();
            c.interrupt_after_epoch = Some(kill);
            let r = train::run::<AB>(Ctx { cfg: &c, ..ctx }, Some(ck.path()), &d);
            assert!(matches!(r, Err(EngineError::Interrupted(e)) if e == kill));
        }
        let r = train::run::<AB>(ctx, Some(ck.path()), &d).unwrap();
        let mut h = blake3::Hasher::new();
        module(&mut h, &r.state.net);
        for rec in &r.state.progress.records {
            h.update(&rec.train_loss.to_bits().to_le_bytes());
            h.update(&rec.val_acc.to_bits().to_le_bytes());
        }
        h.update(&r.test_acc.to_bits().to_le_bytes());
        print("resume-resnet8-w4", h);
    }

    pub fn run() {
        println!("kernel path: {}", incrpipe::engine::kernels::path().name());
        steps_and_inference("resnet8-w4", 12);
        steps_and_inference("vgg16-w2", 32);
        resume();
    }
}
