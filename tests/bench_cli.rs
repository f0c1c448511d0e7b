//! `incrpipe bench train|infer|kernels`: the figures a user compares builds with, and the libtorch
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
    // The FLOP rate is the rate of images times the network's FLOPs per training image.
    let (ips, gflops) = (
        json["images_per_sec"].as_f64().unwrap(),
        json["gflops"].as_f64().unwrap(),
    );
    let spec = incrpipe::engine::model::NetSpec::parse("resnet8-w4").unwrap();
    let per_image = incrpipe::engine::flops::train_flops_per_image(&spec, spec.k(), 0) as f64;
    assert!(
        (gflops * 1e9 / ips / per_image - 1.0).abs() < 1e-9,
        "{json}: {per_image} FLOPs per image"
    );
    o.stdout_has("GFLOP/s at the median step");
}

/// `bench peak`: one line per vector width the CPU has and thread count, JSON for each, the
/// host named; a thread count of 0 is refused with the flag named.
#[test]
fn bench_peak_measures_every_width_the_cpu_has() {
    let ws = Ws::new();
    let o = ws.run(&[
        "bench",
        "peak",
        "--threads",
        "1,2",
        "--repeats",
        "1",
        "--seconds",
        "0.01",
    ]);
    o.ok().stdout_has("host: ");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |f: &str| cpuinfo.split_whitespace().any(|w| w == f);
    let mut widths = Vec::new();
    if has("fma") && has("avx") {
        widths.extend(["xmm", "ymm"]);
    }
    if has("avx512f") {
        widths.push("zmm");
    }
    let peaks: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(peaks.len(), 2 * widths.len(), "{}", o.stdout);
    for w in widths {
        for t in [1, 2] {
            let p = peaks
                .iter()
                .find(|p| p["width"] == w && p["threads"] == t)
                .unwrap_or_else(|| panic!("no {w} peak on {t} threads:\n{}", o.stdout));
            assert!(p["gflops"].as_f64().unwrap() > 0.1, "{p}");
        }
    }
    ws.run(&["bench", "peak", "--threads", "0"])
        .code(1)
        .stderr_has("--threads: a thread count must be at least 1");
}

#[cfg(not(feature = "tch"))]
#[test]
fn libtorch_needs_the_tch_feature() {
    Ws::new()
        .run(&["bench", "train", "--device", "libtorch", "--steps", "1"])
        .code(1)
        .stderr_has("built without the `tch` feature");
}

/// Minor page faults of one run of `incrpipe args` (its own, via wait4).
fn minor_faults(ws: &Ws, args: &[&str]) -> i64 {
    // Reaped by wait4 below, which also gives its rusage (std's `wait` does not).
    #[allow(clippy::zombie_processes)]
    let child = ws
        .command(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (`child` is never waited on).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "incrpipe {args:?} failed: {status}"
    );
    usage.ru_minflt
}

/// The allocator keeps freed memory (src/main.rs): training steps after the first reuse the
/// previous step's pages instead of faulting in fresh, zeroed ones. With mimalloc's default
/// purging, 4 further ResNet-20 steps of batch 64 faulted in 8,992 pages (437 -> 9,429).
#[test]
fn further_training_steps_fault_in_no_fresh_pages() {
    let ws = Ws::new();
    let run = |steps: &str| {
        let args = [
            "bench", "train", "--net", "resnet20", "--batch", "64", "--warmup", "1", "--steps",
            steps,
        ];
        minor_faults(&ws, &args)
    };
    let (one, five) = (run("1"), run("5"));
    assert!(
        five - one < 500,
        "4 more steps faulted in {} more pages ({one} -> {five})",
        five - one
    );
}

/// `bench kernels --net` times the network's own layer shapes: one forward line per distinct
/// convolution, whose counts add up to the network's 13 convolutions (VGG-16), and with
/// `--without-burn` no burn figures.
#[test]
fn bench_kernels_times_the_layer_shapes_of_a_network() {
    let ws = Ws::new();
    let o = ws.run(&[
        "bench",
        "kernels",
        "--net",
        "vgg16-w4",
        "--batch",
        "3",
        "--repeats",
        "1",
        "--without-burn",
    ]);
    o.ok()
        .stdout_has("[3, 32, 2, 2] -> 32 s1 x3")
        .stdout_has("convolutions of one vgg16-w4 training step at batch 3:");
    let forwards: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|j: &serde_json::Value| j["op"] == "conv2d forward")
        .collect();
    assert_eq!(forwards.len(), 9, "{}", o.stdout);
    let layers: u64 = forwards.iter().map(|j| j["count"].as_u64().unwrap()).sum();
    assert_eq!(layers, 13);
    assert!(
        forwards.iter().all(|j| j["burn_ms"].is_null()),
        "burn was not timed: {}",
        o.stdout
    );
}
