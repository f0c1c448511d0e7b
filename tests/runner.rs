//! The runner end to end, through the real binary.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Ws;

/// A -> B -> C chain plus an independent D; every stage logs its name to runs.log.
const CHAIN: &str = r#"
[pipeline]
name = "chain"
[params]
seed = 1
unrelated = "x"
[stages.a]
cmd = "echo a >> runs.log; mkdir -p out; cat in.txt > out/a; echo ${params.seed} >> out/a"
deps = ["in.txt"]
outs = ["out/a"]
[stages.b]
cmd = "echo b >> runs.log; cat out/a | tr a-z A-Z > out/b"
deps = ["out/a"]
outs = ["out/b"]
[stages.c]
cmd = "echo c >> runs.log; cat out/b out/b > out/c"
deps = ["out/b"]
outs = ["out/c"]
[stages.d]
cmd = "echo d >> runs.log; echo d > out-d"
outs = ["out-d"]
"#;

fn chain() -> Ws {
    let ws = Ws::new();
    ws.pipeline(CHAIN).file("in.txt", "hello\n");
    ws
}

#[test]
fn cold_run_then_rerun_runs_nothing() {
    let ws = chain();
    let o = ws.run(&["run", "p.toml"]);
    o.ok();
    assert_eq!(o.ran(), 4);
    assert_eq!(ws.read("out/c"), "HELLO\n1\nHELLO\n1\n");
    ws.clear_runs();
    let o = ws.run(&["run", "p.toml"]);
    o.ok();
    assert_eq!(o.counts(), (0, 4, 0));
    assert!(ws.runs().is_empty(), "nothing may execute: {:?}", ws.runs());
    ws.run(&["status", "p.toml"])
        .ok()
        .stdout_has("4 up to date");
}

#[test]
fn changed_dep_reruns_exactly_its_cone() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    ws.clear_runs();
    ws.file("in.txt", "world\n");
    ws.run(&["status", "p.toml"])
        .ok()
        .stdout_has("run      a: dep `in.txt` changed");
    ws.run(&["run", "p.toml"]).ok();
    assert_eq!(ws.runs(), ["a", "b", "c"]);
    assert_eq!(ws.read("out/c"), "WORLD\n1\nWORLD\n1\n");
}

#[test]
fn status_names_what_changed_in_a_stage_below_one_that_runs() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    ws.file("in.txt", "world\n");
    ws.pipeline(&CHAIN.replace("tr a-z A-Z", "tr a-z A-Z | cat"));
    ws.run(&["status", "p.toml"])
        .ok()
        .stdout_has("run      a: dep `in.txt` changed")
        .stdout_has(
            "run      b: command changed; after a (it runs unless an entry for its new inputs is cached)",
        )
        .stdout_has("pending  c: after b (unless early cut-off spares it)")
        .stdout_has("2 to run, 1 waiting on upstream");
}

#[test]
fn params_used_enter_the_key_and_others_do_not() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    ws.clear_runs();
    ws.pipeline(&CHAIN.replace("unrelated = \"x\"", "unrelated = \"y\""));
    assert_eq!(
        ws.run(&["run", "p.toml"]).ok().ran(),
        0,
        "an unrelated param reruns nothing"
    );
    ws.pipeline(&CHAIN.replace("seed = 1", "seed = 2"));
    ws.run(&["status", "p.toml"])
        .ok()
        .stdout_has("param `seed` changed (1 -> 2)");
    ws.run(&["run", "p.toml"]).ok();
    assert_eq!(ws.runs(), ["a", "b", "c"]);
}

#[test]
fn early_cutoff_keeps_dependants_cached() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    ws.clear_runs();
    // A different command that writes the same bytes.
    ws.pipeline(&CHAIN.replace("cat in.txt > out/a;", "cat < in.txt > out/a;"));
    let o = ws.run(&["run", "p.toml"]);
    o.ok();
    assert_eq!(ws.runs(), ["a"], "b and c must stay cached\n{}", o.stderr);
}

#[test]
fn deleted_or_edited_outs_are_restored_from_the_cache() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    ws.clear_runs();
    std::fs::remove_file(ws.path().join("out/b")).unwrap();
    ws.file("out/c", "tampered");
    ws.run(&["status", "p.toml"])
        .ok()
        .stdout_has("restore  b")
        .stdout_has("restore  c");
    let o = ws.run(&["run", "p.toml"]);
    o.ok();
    assert_eq!(o.counts(), (0, 2, 2));
    assert!(ws.runs().is_empty());
    assert_eq!(ws.read("out/c"), "HELLO\n1\nHELLO\n1\n");
    // Editing a restored out in place must not alter the cache entry (no hardlinks).
    ws.file("out/c", "edited again");
    ws.run(&["verify"]).ok().stdout_has("0 corrupt");
}

#[test]
fn corrupt_entry_is_detected_and_recomputed() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    // Flip the content of b's cached out, then make the runner need it.
    let entry = walk(ws.path().join("cache/entries"))
        .into_iter()
        .find(|p| entry_of(p, "b"))
        .unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&entry, bytes).unwrap();
    std::fs::remove_file(ws.path().join("out/b")).unwrap();
    ws.clear_runs();
    ws.run(&["run", "p.toml"]).ok().stderr_has("corrupt");
    assert_eq!(ws.runs(), ["b"]);
    assert_eq!(ws.read("out/b"), "HELLO\n1\n");
    ws.run(&["verify"]).ok().stdout_has("0 corrupt");
}

#[test]
fn verify_reports_bit_flips() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    let entry = walk(ws.path().join("cache/entries"))
        .into_iter()
        .find(|p| entry_of(p, "c"))
        .unwrap();
    std::fs::write(&entry, "short").unwrap();
    ws.run(&["verify"]).code(1).stdout_has("does not match");
    ws.clear_runs();
    ws.run(&["run", "p.toml"]).ok();
    assert_eq!(ws.runs(), ["c"], "the removed entry is recomputed");
}

/// Whether `p` is the (only) out file of stage `stage`'s entry.
fn entry_of(p: &std::path::Path, stage: &str) -> bool {
    p.file_name().is_some_and(|n| n == "out-0")
        && std::fs::read_to_string(p.with_file_name("meta.json"))
            .is_ok_and(|m| m.contains(&format!("\"stage\": \"{stage}\"")))
}

fn walk(root: std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn failure_stops_new_stages_and_is_not_cached() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
[pipeline]
name = "f"
[stages.bad]
cmd = "echo first line; echo the reason >&2; echo partial > half; exit 3"
outs = ["half"]
[stages.after]
cmd = "echo after >> runs.log; touch x"
deps = ["half"]
outs = ["x"]
"#,
    );
    let o = ws.run(&["run", "p.toml"]);
    o.code(1)
        .stderr_has("stage `bad` exited with status 3")
        .stderr_has("| the reason")
        .stderr_has("incrpipe logs bad");
    assert!(ws.runs().is_empty());
    ws.run(&["logs", "bad"]).ok().stdout_has("first line");
    // Not cached: the next run tries again.
    ws.run(&["run", "p.toml"])
        .code(1)
        .stderr_has("exited with status 3");
    // An out missing after exit 0 is a failure too.
    ws.pipeline("[pipeline]\nname = \"m\"\n[stages.s]\ncmd = \"true\"\nouts = [\"never\"]\n");
    ws.run(&["run", "p.toml"])
        .code(1)
        .stderr_has("did not produce its out `never`");
}

#[test]
fn keep_going_runs_independent_stages() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
[pipeline]
name = "k"
[stages.bad]
cmd = "exit 1"
[stages.good]
cmd = "sleep 0.3; echo good >> runs.log"
"#,
    );
    ws.run(&["run", "p.toml", "-j", "1", "--keep-going"])
        .code(1);
    assert_eq!(ws.runs(), ["good"]);
}

#[test]
fn retries_and_timeout() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
[pipeline]
name = "r"
[stages.flaky]
cmd = "echo try >> runs.log; test $INCRPIPE_ATTEMPT -ge 2 && touch done"
outs = ["done"]
retries = 2
[stages.slow]
cmd = "sleep 30"
timeout = "1s"
"#,
    );
    let t = Instant::now();
    ws.run(&["run", "p.toml", "--keep-going"])
        .code(1)
        .stderr_has("stage `slow` timed out");
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(ws.runs(), ["try", "try"]);
    assert!(ws.exists("done"));
}

#[test]
fn stage_environment_contract() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
[pipeline]
name = "e"
[params]
lr = 1e-4
[stages.s]
cmd = "env | grep -E '^(INCRPIPE_|RAYON_NUM|OMP_NUM|CUDA_VIS|MY_)' | sort > env.txt; cat $INCRPIPE_PARAMS > params.json; test -d $INCRPIPE_SCRATCH; echo ${params.lr} 'it''s' > arg.txt"
outs = ["env.txt", "params.json", "arg.txt"]
env = { MY_VAR = "v-${params.lr}" }
resources = { cpus = 2 }
"#,
    );
    ws.run(&["run", "p.toml", "-j", "2"]).ok();
    let env = ws.read("env.txt");
    for want in [
        "INCRPIPE_STAGE=s",
        "INCRPIPE_CPUS=2",
        "RAYON_NUM_THREADS=2",
        "OMP_NUM_THREADS=2",
        "CUDA_VISIBLE_DEVICES=",
        "MY_VAR=v-0.0001",
        "INCRPIPE_KEY=",
        "INCRPIPE_SCRATCH=",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(want)),
            "missing {want} in\n{env}"
        );
    }
    let params: serde_json::Value = serde_json::from_str(&ws.read("params.json")).unwrap();
    assert_eq!(params["params"]["lr"], serde_json::json!(0.0001));
    assert_eq!(ws.read("arg.txt"), "0.0001 its\n");
}

#[test]
fn gpu_stages_never_share_a_device_and_use_both() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
[pipeline]
name = "g"
[stages.train]
cmd = "s=$(date +%s.%N); sleep 0.6; e=$(date +%s.%N); echo \"$CUDA_VISIBLE_DEVICES $INCRPIPE_GPUS $s $e\" > gpu-${matrix.i}.txt"
outs = ["gpu-${matrix.i}.txt"]
matrix = { i = [1, 2, 3, 4, 5, 6] }
resources = { gpus = 1 }
"#,
    );
    ws.run(&["run", "p.toml", "-j", "6", "--gpus", "0,1"]).ok();
    let mut spans: Vec<(String, f64, f64)> = Vec::new();
    for i in 1..=6 {
        let t = ws.read(&format!("gpu-{i}.txt"));
        let f: Vec<&str> = t.split_whitespace().collect();
        assert_eq!(f[0], f[1], "INCRPIPE_GPUS equals CUDA_VISIBLE_DEVICES");
        assert!(f[0] == "0" || f[0] == "1", "one device each: {t}");
        spans.push((
            f[0].to_string(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        ));
    }
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.0 == b.0 {
                assert!(
                    a.2 <= b.1 || b.2 <= a.1,
                    "device {} shared: {a:?} {b:?}",
                    a.0
                );
            }
        }
    }
    let overlap = spans
        .iter()
        .any(|a| spans.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2));
    assert!(overlap, "both devices must be used at once: {spans:?}");
    // More GPUs than exist: an error before anything runs.
    ws.run(&["run", "p.toml", "--gpus", ""])
        .code(2)
        .stderr_has("needs 1 GPU(s) but only 0");
}

#[test]
fn sigkill_of_the_runner_then_rerun_leaves_everything_whole() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
[pipeline]
name = "k"
[stages.slow]
cmd = "echo start >> runs.log; sleep 2; head -c 100000 /dev/zero > big; echo end >> runs.log"
outs = ["big"]
[stages.next]
cmd = "wc -c < big > size"
deps = ["big"]
outs = ["size"]
"#,
    );
    let mut child = ws
        .command(&["run", "p.toml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = ws.run(&["run", "p.toml"]);
    o.ok();
    assert_eq!(ws.read("size").trim(), "100000");
    assert_eq!(
        ws.runs().iter().filter(|l| *l == "end").count(),
        1,
        "the killed attempt never finished: {:?}",
        ws.runs()
    );
    ws.run(&["verify"]).ok().stdout_has("0 corrupt");
}

#[test]
fn sigint_stops_children_cleanly() {
    let ws = Ws::new();
    ws.pipeline("[pipeline]\nname = \"i\"\n[stages.s]\ncmd = \"trap 'echo term >> runs.log; exit 1' TERM; sleep 30 & wait\"\n");
    let mut child = ws
        .command(&["run", "p.toml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let t = Instant::now();
    let st = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(8));
    assert_eq!(st.code(), Some(130));
    assert_eq!(ws.runs(), ["term"], "the stage got SIGTERM");
}

#[test]
fn a_second_runner_waits_or_fails_clearly() {
    let ws = Ws::new();
    ws.pipeline("[pipeline]\nname = \"l\"\n[stages.s]\ncmd = \"sleep 1.5; echo s >> runs.log; touch o\"\nouts = [\"o\"]\n");
    let mut first = ws
        .command(&["run", "p.toml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    ws.run(&["run", "p.toml", "--no-wait"])
        .code(1)
        .stderr_has("state/lock");
    let second = ws.run(&["run", "p.toml"]);
    second.ok().stderr_has("waiting for another incrpipe run");
    assert!(first.wait().unwrap().success());
    assert_eq!(ws.runs(), ["s"], "the stage ran once");
    assert_eq!(second.counts(), (0, 1, 0));
}

#[test]
fn run_selected_stages_and_force() {
    let ws = chain();
    ws.run(&["run", "p.toml", "b"]).ok();
    assert_eq!(ws.runs(), ["a", "b"]);
    ws.clear_runs();
    ws.run(&["run", "p.toml", "--force", "b"]).ok();
    let mut runs = ws.runs();
    runs.sort();
    assert_eq!(
        runs,
        ["b", "c", "d"],
        "a stays cached, b is forced, c and d never ran"
    );
}

#[test]
fn gc_drops_unreachable_entries() {
    let ws = chain();
    ws.run(&["run", "p.toml"]).ok();
    ws.pipeline(&CHAIN.replace("seed = 1", "seed = 2"));
    ws.run(&["run", "p.toml"]).ok();
    ws.run(&["gc", "p.toml"])
        .ok()
        .stdout_has("kept 4 entries, removed 3");
    ws.clear_runs();
    ws.run(&["run", "p.toml"]).ok();
    assert!(ws.runs().is_empty());
}

#[test]
fn thousand_stage_pipeline_reruns_exactly_the_cone() {
    let ws = Ws::new();
    let (width, layers) = (50, 20);
    let file = incrpipe::bench_runner::generate(ws.path(), width, layers).unwrap();
    std::fs::rename(file, ws.path().join("p.toml")).unwrap();
    assert_eq!(ws.run(&["run", "p.toml"]).ok().ran(), 1000);
    assert_eq!(ws.run(&["run", "p.toml"]).ok().ran(), 0);
    ws.file("in/7", "changed\n");
    // Stage (l, w) reads (l-1, w) and (l-1, w+1): the cone of column 7 at layer l is w in [7-l, 7].
    let cone: usize = (0..layers).map(|l| (l + 1).min(width)).sum();
    assert_eq!(ws.run(&["run", "p.toml"]).ok().ran(), cone);
}

#[test]
fn downstream_runs_a_stage_and_what_depends_on_it() {
    let ws = Ws::new();
    ws.pipeline(
        "[pipeline]\nname = \"d\"\n\
         [stages.a]\ncmd = \"touch a\"\nouts = [\"a\"]\n\
         [stages.b]\ncmd = \"touch b\"\ndeps = [\"a\"]\nouts = [\"b\"]\n\
         [stages.c]\ncmd = \"touch c\"\ndeps = [\"b\"]\nouts = [\"c\"]\n\
         [stages.e]\ncmd = \"touch e\"\ndeps = [\"a\"]\nouts = [\"e\"]\n\
         [stages.x]\ncmd = \"touch x\"\nouts = [\"x\"]\n",
    );
    let o = ws.run(&["run", "p.toml", "--downstream", "b"]);
    assert_eq!(
        o.ok().counts(),
        (3, 0, 0),
        "b, what depends on it (c) and what b needs (a)"
    );
    for (f, made) in [
        ("a", true),
        ("b", true),
        ("c", true),
        ("e", false),
        ("x", false),
    ] {
        assert_eq!(ws.exists(f), made, "{f}");
    }
    ws.run(&["run", "p.toml", "--downstream", "nope"])
        .code(2)
        .stderr_has("--downstream `nope` matches no stage");
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let ws = Ws::new();
    let script = ws.run(&["completions", "bash"]);
    script.ok();
    ws.file("incrpipe.bash", &script.stdout);
    let complete = |words: &str| -> String {
        let n = words.split(' ').count() - 1;
        let cur = words.rsplit(' ').next().unwrap();
        let cmd = format!(
            "source ./incrpipe.bash; COMP_WORDS=({words}); COMP_CWORD={n}; COMP_LINE='{words}'; \
             COMP_POINT=${{#COMP_LINE}}; _incrpipe incrpipe '{cur}' ''; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&cmd)
            .current_dir(ws.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let subs = complete("incrpipe re");
    assert!(subs.lines().any(|l| l == "report"), "{subs}");
    assert!(subs.lines().any(|l| l == "replay"), "{subs}");
    let flags = complete("incrpipe run --dry");
    assert!(flags.lines().any(|l| l == "--dry-run"), "{flags}");
    ws.run(&["completions", "tcsh"]).code(2);
}

#[test]
fn progress_lines_are_shown_and_verbose_shows_every_line() {
    let ws = Ws::new();
    ws.pipeline(
        "[pipeline]\nname = \"v\"\n[stages.s]\ncmd = \"echo hello; echo 'epoch 1 of 2'; sleep 0.4; echo 'epoch 2 of 2'; printf tail; touch o\"\nouts = [\"o\"]\n",
    );
    let o = ws.run(&["run", "p.toml"]);
    o.ok()
        .stderr_has("s: epoch 1 of 2")
        .stderr_has("s: epoch 2 of 2");
    assert!(!o.stderr.contains("s: hello"), "{}", o.stderr);
    let v = ws.run(&["run", "p.toml", "-v", "--force", "s"]);
    v.ok().stderr_has("s: hello").stderr_has("s: epoch 2 of 2");
    // The unfinished last line comes when the stage ends, before its `done` line.
    let tail = v
        .stderr
        .find("s: tail")
        .expect("the last line, without a newline");
    assert!(tail < v.stderr.find("done  s").unwrap(), "{}", v.stderr);
}

#[test]
fn a_running_stage_is_followed_by_logs_f_and_shown_by_status() {
    let ws = Ws::new();
    ws.pipeline(
        "[pipeline]\nname = \"f\"\n[stages.s]\ncmd = \"for i in 1 2 3 4; do echo line-$i; sleep 1; done; touch o\"\nouts = [\"o\"]\n",
    );
    let mut runner = ws
        .command(&["run", "p.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = ws.path().join("cache/logs/s.log");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("line-1")) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the stage never logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let follower = ws
        .command(&["logs", "-f", "s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen_when_followed = std::fs::read_to_string(&log).unwrap();
    // status, from another process, shows the running stage with its latest log line.
    let st = ws.run(&["status", "p.toml"]);
    st.ok()
        .stdout_has("running  s for 0m0")
        .stdout_has(": line-");
    let out = follower.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        !seen_when_followed.contains("line-4"),
        "the stage ended before it could be followed: {seen_when_followed:?}"
    );
    assert_eq!(
        followed, "line-1\nline-2\nline-3\nline-4\n",
        "followed to the end"
    );
    assert!(runner.wait().unwrap().success());
    // An ended stage's log is printed and -f returns at once.
    let t = Instant::now();
    ws.run(&["logs", "-f", "s"]).ok().stdout_has("line-4");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        !ws.run(&["status", "p.toml"]).stdout.contains("running "),
        "an ended stage is not shown as running"
    );
}

#[test]
fn logs_follow_the_latest_run_and_entries_keep_their_own() {
    let ws = Ws::new();
    let p = |v: &str| {
        format!(
            "[pipeline]\nname = \"l\"\n[params]\nv = \"{v}\"\n[stages.s]\ncmd = \"echo log-${{params.v}}; cat $INCRPIPE_PARAMS > p.json; echo ${{params.v}} > o\"\nouts = [\"o\"]\n"
        )
    };
    ws.pipeline(&p("one"));
    ws.run(&["run", "p.toml"]).ok();
    ws.run(&["logs", "s"]).ok().stdout_has("log-one");
    ws.pipeline(&p("two"));
    ws.run(&["run", "p.toml"]).ok();
    ws.run(&["logs", "s"]).ok().stdout_has("log-two");
    // Each entry keeps the log and params file of its own run: the second run
    // did not write through the first entry's log.
    let logs: Vec<String> = walk(ws.path().join("cache/entries"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(logs.len(), 2);
    assert!(logs.iter().any(|l| l == "log-one\n"), "{logs:?}");
    assert!(logs.iter().any(|l| l == "log-two\n"), "{logs:?}");
    let params: serde_json::Value = serde_json::from_str(&ws.read("p.json")).unwrap();
    assert_eq!(params["params"]["v"], "two");
    // Nothing of a finished run is left under tmp/.
    assert_eq!(
        std::fs::read_dir(ws.path().join("cache/tmp"))
            .unwrap()
            .count(),
        0
    );
    // A failing attempt leaves its log readable but no entry.
    ws.pipeline(
        "[pipeline]\nname = \"l\"\n[stages.s]\ncmd = \"echo failing-log; exit 2\"\nouts = [\"o\"]\n",
    );
    ws.run(&["run", "p.toml"]).code(1);
    ws.run(&["logs", "s"]).ok().stdout_has("failing-log");
    assert_eq!(
        std::fs::read_dir(ws.path().join("cache/tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// A printing command whose reader goes away (`incrpipe dag p.toml | head`) ends by SIGPIPE,
/// quietly, like other Unix tools: no panic message about a broken pipe.
#[test]
fn dag_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let ws = Ws::new();
    // 1,000 stages: far more output than a pipe buffers, so the writer meets the closed pipe.
    let file = incrpipe::bench_runner::generate(ws.path(), 50, 20).unwrap();
    let mut child = Command::new(common::bin())
        .arg("dag")
        .arg(&file)
        .current_dir(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The reader is dropped here, closing the pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// Makes a directory immutable (even for root) until dropped: `chattr +i`.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: std::path::PathBuf) -> Immutable {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&dir)
            .status()
            .expect("chattr (e2fsprogs) runs");
        assert!(
            st.success(),
            "chattr +i {} failed: the cache must be on ext4",
            dir.display()
        );
        Immutable(dir)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// A small tmpfs, mounted for the test's life. CI runs as root; elsewhere the
/// test fails and says why (it is never skipped).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(dir: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount runs");
        assert!(
            o.status.success(),
            "mount -t tmpfs {} failed (this test needs root, as in CI): {}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_cache_fails_the_stage_and_nothing_runs_on_its_outs() {
    let ws = Ws::new();
    let cache = Tmpfs::new(ws.path().join("small-cache"), "1m");
    ws.pipeline(
        r#"
[pipeline]
name = "full"
[stages.big]
cmd = "echo big >> runs.log; head -c 3000000 /dev/zero > big.bin"
outs = ["big.bin"]
[stages.after]
cmd = "echo after >> runs.log; wc -c < big.bin > after.txt"
deps = ["big.bin"]
outs = ["after.txt"]
"#,
    );
    let cache_dir = cache.0.to_str().unwrap();
    let o = ws.run(&["--cache-dir", cache_dir, "run", "p.toml", "-j", "2"]);
    o.code(1)
        .stderr_has("stage `big` ran, but could not be committed to the cache at")
        .stderr_has(cache_dir)
        .stderr_has("the cache's filesystem is full")
        .stderr_has("free space there or choose another cache");
    assert_eq!(
        ws.runs(),
        ["big"],
        "`after` must not run on an out the cache never got"
    );
    assert!(!ws.exists("after.txt"));
    // The counter never passes its total, and each stage ends once.
    for l in o.stderr.lines().filter(|l| l.starts_with('[')) {
        let (n, total) = l[1..l.find(']').unwrap()].split_once('/').unwrap();
        let (n, total): (usize, usize) = (n.parse().unwrap(), total.parse().unwrap());
        assert!(n <= total, "counter past its total: {l}\n{}", o.stderr);
    }
    // The stage's work is not lost: its out is whole in the workspace.
    assert_eq!(
        std::fs::metadata(ws.path().join("big.bin")).unwrap().len(),
        3_000_000
    );
    // With room, the same pipeline runs through.
    drop(cache);
    ws.clear_runs();
    let o = ws.run(&["run", "p.toml"]);
    o.ok();
    assert_eq!(ws.runs(), ["big", "after"]);
    assert_eq!(ws.read("after.txt"), "3000000\n");
}

#[test]
fn an_entry_that_cannot_be_committed_fails_its_stage_and_is_not_trusted() {
    // Entries are committed on a background thread after the stage ends: a
    // commit that fails there must still fail the stage and leave no entry.
    let ws = chain();
    ws.run(&["run", "p.toml", "d"]).ok();
    let guard = Immutable::new(ws.path().join("cache/entries"));
    let o = ws.run(&["run", "p.toml", "a"]);
    o.code(1).stderr_has("could not be committed to the cache");
    drop(guard);
    ws.clear_runs();
    // Nothing of `a` was cached: it runs again, and `d` stays cached.
    let o = ws.run(&["run", "p.toml", "a", "d"]);
    o.ok();
    assert_eq!(ws.runs(), ["a"]);
    assert_eq!(o.counts(), (1, 1, 0));
}
