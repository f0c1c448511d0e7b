//! The Slurm executor against a real Slurm (scripts/slurm-up.sh: one node, two
//! fake GPUs). The daemons use fixed ports, so every test here takes one file
//! lock and the tests run one at a time on one shared cluster. Where Slurm is
//! not reachable they fail, telling how to start it: CI must run them.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Out, Ws};

/// Held for the whole test: one test at a time on the cluster.
struct ClusterLock(#[allow(dead_code)] File);

fn cluster() -> ClusterLock {
    let f = File::create(std::env::temp_dir().join("incrpipe-slurm-tests.lock")).unwrap();
    f.lock().unwrap();
    let ok = Command::new("timeout")
        .args(["5", "sinfo", "-h", "-o", "%T"])
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            o.status.success() && ["idle", "mixed", "allocated"].iter().any(|w| s.contains(w))
        })
        .unwrap_or(false);
    assert!(
        ok,
        "no usable Slurm here (sinfo does not answer or the node is not idle): \
         run `sudo scripts/slurm-up.sh` first (scripts/test.sh does it)"
    );
    ClusterLock(f)
}

/// A workspace whose `sbatch` counts its calls in `sbatch-calls` before calling the real one.
fn ws() -> Ws {
    let ws = Ws::new();
    let real = which("sbatch");
    ws.file(
        "bin/sbatch",
        &format!(
            "#!/bin/sh\necho \"$@\" >> {}/sbatch-calls\nexec {} \"$@\"\n",
            ws.path().display(),
            real.display()
        ),
    );
    let p = ws.path().join("bin/sbatch");
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ws
}

fn which(prog: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn slurm_cmd(ws: &Ws, extra: &[&str]) -> Command {
    let mut args = vec!["run", "p.toml", "--executor", "slurm"];
    args.extend_from_slice(extra);
    let mut c = ws.command(&args);
    c.env(
        "PATH",
        format!(
            "{}:{}",
            ws.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    c
}

fn run(ws: &Ws, extra: &[&str]) -> Out {
    let o = slurm_cmd(ws, extra).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        args: format!("run p.toml --executor slurm {}", extra.join(" ")),
    }
}

/// Starts the runner in the background, its output to files in the workspace.
fn spawn(ws: &Ws) -> Child {
    let mut c = slurm_cmd(ws, &[]);
    c.stdout(File::create(ws.path().join("runner.out")).unwrap())
        .stderr(File::create(ws.path().join("runner.err")).unwrap());
    c.spawn().unwrap()
}

fn sbatch_calls(ws: &Ws) -> usize {
    std::fs::read_to_string(ws.path().join("sbatch-calls"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Job ids recorded in the cache (stage key -> job id).
fn recorded_jobs(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("state/jobs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".job.json"))
        .filter_map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some(v["job"].as_str()?.to_string())
        })
        .collect()
}

/// A job's state as squeue tells it (finished jobs too); `None` when Slurm forgot it.
fn job_state(job: &str) -> Option<String> {
    let o = Command::new("squeue")
        .args(["-h", "--states=all", "-o", "%T", "-j", job])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

const DAG: &str = r#"
[pipeline]
name = "slurm"
[params]
n = 3
[stages.a]
cmd = "echo a >> runs.log; mkdir -p out; seq ${params.n} > out/a; echo job=$SLURM_JOB_ID"
outs = ["out/a"]
[stages.b]
cmd = "echo b >> runs.log; awk '{s+=$1} END {print s}' out/a > out/b; echo b-log-line"
deps = ["out/a"]
outs = ["out/b"]
resources = { cpus = 2 }
[stages.c]
cmd = "echo c >> runs.log; cat out/b out/b > out/c; echo cpus=$INCRPIPE_CPUS"
deps = ["out/b"]
outs = ["out/c"]
[stages.login]
cmd = "echo login >> runs.log; echo \"job=[$SLURM_JOB_ID]\" > out-login"
outs = ["out-login"]
executor = "local"
"#;

#[test]
fn dag_runs_through_slurm_and_a_rerun_submits_nothing() {
    let _c = cluster();
    let ws = ws();
    ws.pipeline(DAG);
    let o = run(&ws, &[]);
    o.ok();
    assert_eq!(o.ran(), 4);
    assert_eq!(ws.read("out/a"), "1\n2\n3\n");
    assert_eq!(ws.read("out/c"), "6\n6\n");
    // The local stage ran here, the others as jobs (one sbatch each).
    assert_eq!(ws.read("out-login"), "job=[]\n");
    assert_eq!(sbatch_calls(&ws), 3);
    let calls = std::fs::read_to_string(ws.path().join("sbatch-calls")).unwrap();
    assert!(calls.contains("--cpus-per-task=2"), "{calls}");
    // Logs were collected into the cache, by Slurm's --output.
    let log = ws.run(&["logs", "a"]);
    log.ok().stdout_has("job=");
    assert!(
        !log.stdout.contains("job=\n"),
        "a ran inside a job: {}",
        log.stdout
    );
    ws.run(&["logs", "b"]).ok().stdout_has("b-log-line");
    ws.run(&["logs", "c"]).ok().stdout_has("cpus=1");
    ws.run(&["verify"])
        .ok()
        .stdout_has("4 entries checked, 0 corrupt");
    assert!(
        recorded_jobs(&ws.path().join("cache")).is_empty(),
        "finished jobs are forgotten"
    );
    // The trace names each job, and gives its CPU time and peak RSS from sacct where
    // the cluster keeps accounting, else why not (this one has no slurmdbd): never blank.
    let trace = ws.run(&["trace", "--json"]);
    trace.ok();
    let t: serde_json::Value = serde_json::from_str(&trace.stdout).unwrap();
    let rows = t["stages"].as_array().unwrap();
    let on = |e: &str| rows.iter().filter(|r| r["executor"] == e).count();
    assert_eq!((on("slurm"), on("local")), (3, 1), "{}", trace.stdout);
    for r in rows.iter().filter(|r| r["executor"] == "slurm") {
        assert!(
            r["slurm_job"].as_str().is_some_and(|j| !j.is_empty()),
            "{r}"
        );
        assert_eq!(r["exit"], "exit 0", "{r}");
        let measured = r["cpu_s"].is_f64() && r["peak_rss_kb"].is_u64();
        let why = r["usage_unavailable"].as_str().unwrap_or("");
        assert!(measured || why.contains("sacct"), "{r}");
    }
    assert!(
        rows.iter().any(|r| r["stage"] == "b" && r["cpus"] == 2),
        "{}",
        trace.stdout
    );

    ws.clear_runs();
    let o = run(&ws, &[]);
    o.ok();
    assert_eq!(o.counts(), (0, 4, 0));
    assert_eq!(sbatch_calls(&ws), 3, "a rerun submits nothing");
    assert!(ws.runs().is_empty());

    // Early cut-off: a changed `a` with the same output keeps b and c cached.
    ws.pipeline(&DAG.replace("seq ${params.n} > out/a", "seq 1 ${params.n} > out/a"));
    let o = run(&ws, &[]);
    o.ok();
    assert_eq!(ws.runs(), ["a"], "{}", o.stderr);
    assert_eq!(sbatch_calls(&ws), 4);
}

#[test]
fn a_failing_job_fails_its_dependants_and_the_run() {
    let _c = cluster();
    let ws = ws();
    ws.pipeline(
        r#"
[pipeline]
name = "fail"
[stages.bad]
cmd = "echo bad >> runs.log; echo about to fail; exit 3"
outs = ["out-bad"]
[stages.after]
cmd = "echo after >> runs.log; cp out-bad out-after"
deps = ["out-bad"]
outs = ["out-after"]
[stages.fine]
cmd = "echo fine >> runs.log; echo ok > out-fine"
outs = ["out-fine"]
"#,
    );
    let o = run(&ws, &[]);
    o.code(1)
        .stderr_has("stage `bad` exited with status 3")
        .stderr_has("about to fail");
    let mut runs = ws.runs();
    runs.sort();
    assert_eq!(runs, ["bad", "fine"], "`after` must never run");
    assert_eq!(sbatch_calls(&ws), 2, "the dependant is never submitted");
    assert!(!ws.exists("out-after"));
}

#[test]
fn two_gpu_jobs_run_at_once_on_different_devices() {
    let _c = cluster();
    let ws = ws();
    let stage = |n: &str| {
        format!(
            r#"
[stages.{n}]
cmd = "echo \"$CUDA_VISIBLE_DEVICES $INCRPIPE_GPUS $(date +%s.%N)\" > out-{n}; sleep 2; date +%s.%N >> out-{n}"
outs = ["out-{n}"]
resources = {{ gpus = 1 }}
"#
        )
    };
    ws.pipeline(&format!(
        "[pipeline]\nname = \"gpu\"\n{}{}",
        stage("g1"),
        stage("g2")
    ));
    // No GPU on this machine and none given: Slurm allocates them, not the local pool.
    run(&ws, &[]).ok();
    let parse = |n: &str| {
        let t = ws.read(&format!("out-{n}"));
        let mut l = t.lines();
        let first: Vec<&str> = l.next().unwrap().split_whitespace().collect();
        let end: f64 = l.next().unwrap().parse().unwrap();
        assert_eq!(first[0], first[1], "INCRPIPE_GPUS mirrors Slurm's devices");
        (first[0].to_string(), first[2].parse::<f64>().unwrap(), end)
    };
    let (d1, s1, e1) = parse("g1");
    let (d2, s2, e2) = parse("g2");
    assert_ne!(d1, d2, "concurrent GPU jobs must get different devices");
    assert!(["0", "1"].contains(&d1.as_str()) && ["0", "1"].contains(&d2.as_str()));
    assert!(
        s1 < e2 && s2 < e1,
        "the jobs must overlap: g1 {s1}..{e1}, g2 {s2}..{e2}"
    );
}

#[test]
fn more_gpus_than_any_node_has_is_refused_at_submit() {
    let _c = cluster();
    let ws = ws();
    ws.pipeline(
        r#"
[pipeline]
name = "big"
[stages.big]
cmd = "touch out-big"
outs = ["out-big"]
resources = { gpus = 3 }
"#,
    );
    run(&ws, &[])
        .code(1)
        .stderr_has("sbatch refused the job")
        .stderr_has("Requested node configuration is not available")
        .stderr_has("--gres=gpu:3");
}

/// `logs -f` follows a Slurm stage's log on the shared cache until its job ends.
#[test]
fn logs_follow_a_running_job_to_its_end() {
    let _c = cluster();
    let ws = ws();
    ws.pipeline(
        r#"
[pipeline]
name = "follow"
[stages.talk]
cmd = "touch started; for i in 1 2 3 4; do echo line-$i; sleep 0.7; done; echo x > out-talk"
outs = ["out-talk"]
"#,
    );
    let mut runner = spawn(&ws);
    wait_for("the job to start", Duration::from_secs(20), || {
        ws.exists("started") && ws.exists("cache/logs/talk.log")
    });
    let start = Instant::now();
    let o = ws.run(&["logs", "-f", "talk"]);
    o.ok().stdout_has("line-1").stdout_has("line-4");
    // It returned because the job ended, not before: its last line had been written.
    assert!(
        ws.exists("out-talk"),
        "returned while the job ran:\n{}",
        o.stdout
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(runner.wait().unwrap().success());
}

#[test]
fn ctrl_c_cancels_the_submitted_jobs_and_nothing_else() {
    let _c = cluster();
    let ws = ws();
    ws.pipeline(
        r#"
[pipeline]
name = "int"
[stages.slow]
cmd = "touch started; sleep 6; touch finished; echo x > out-slow"
outs = ["out-slow"]
"#,
    );
    // A job that is not the runner's must survive its Ctrl-C.
    let other = Command::new("sbatch")
        .args(["--parsable", "--output=/dev/null", "--wrap", "sleep 30"])
        .output()
        .unwrap();
    let other = String::from_utf8_lossy(&other.stdout).trim().to_string();
    assert!(!other.is_empty());
    let mut runner = spawn(&ws);
    wait_for("the job to start", Duration::from_secs(20), || {
        ws.exists("started")
    });
    let jobs = recorded_jobs(&ws.path().join("cache"));
    assert_eq!(jobs.len(), 1, "the runner records its job");
    unsafe { libc::kill(runner.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let status = runner.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "Ctrl-C must not wait for the job"
    );
    // Slurm shows COMPLETING while it kills the job's processes.
    wait_for("the job to be cancelled", Duration::from_secs(20), || {
        job_state(&jobs[0]).is_none_or(|s| s != "COMPLETING")
    });
    let st = job_state(&jobs[0]);
    assert!(
        st.as_deref().is_none_or(|s| s.starts_with("CANCELLED")),
        "job {} is {st:?}",
        jobs[0]
    );
    let other_state = job_state(&other);
    let _ = Command::new("scancel").arg(&other).status();
    assert!(
        matches!(other_state.as_deref(), Some("RUNNING" | "PENDING")),
        "a job the runner did not submit was touched: {other_state:?}"
    );
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        !ws.exists("finished"),
        "the cancelled stage must not complete"
    );
    assert!(recorded_jobs(&ws.path().join("cache")).is_empty());
}

#[test]
fn a_killed_runners_rerun_follows_the_job_instead_of_submitting_again() {
    let _c = cluster();
    let ws = ws();
    ws.pipeline(
        r#"
[pipeline]
name = "kill"
[stages.long]
cmd = "echo long >> runs.log; sleep 4; echo done > out-long"
outs = ["out-long"]
[stages.next]
cmd = "echo next >> runs.log; cp out-long out-next"
deps = ["out-long"]
outs = ["out-next"]
"#,
    );
    let mut runner = spawn(&ws);
    wait_for("the job to start", Duration::from_secs(20), || {
        !ws.runs().is_empty()
    });
    runner.kill().unwrap(); // SIGKILL: no chance to cancel anything
    runner.wait().unwrap();
    let jobs = recorded_jobs(&ws.path().join("cache"));
    assert_eq!(jobs.len(), 1);
    assert!(
        matches!(job_state(&jobs[0]).as_deref(), Some("RUNNING")),
        "the job outlives its runner"
    );
    let o = run(&ws, &[]);
    o.ok()
        .stderr_has(&format!("following Slurm job {}", jobs[0]));
    assert_eq!(ws.runs(), ["long", "next"], "the stage ran once");
    assert_eq!(sbatch_calls(&ws), 2, "long once, then next");
    assert_eq!(ws.read("out-next"), "done\n");
}

/// Makes the workspace's `sbatch` wait after the real one returned, for as long
/// as the file `hold-sbatch` exists: the runner is then between sbatch and
/// writing the job's record.
fn hold_sbatch(ws: &Ws) {
    let real = which("sbatch");
    let w = ws.path().display();
    ws.file(
        "bin/sbatch",
        &format!(
            "#!/bin/sh\necho \"$@\" >> {w}/sbatch-calls\nout=$({} \"$@\"); rc=$?\necho \"$out\"\n\
             while [ -e {w}/hold-sbatch ]; do touch {w}/sbatch-held; sleep 0.1; done\nexit $rc\n",
            real.display()
        ),
    );
    ws.file("hold-sbatch", "");
}

#[test]
fn a_runner_killed_between_sbatch_and_the_job_record_adopts_the_job() {
    let _c = cluster();
    // The job still running at the rerun (found by the key in its comment), and
    // the job already ended (found by its status file).
    for job_ended in [false, true] {
        let ws = ws();
        hold_sbatch(&ws);
        ws.pipeline(
            r#"
[pipeline]
name = "window"
[stages.long]
cmd = "echo long >> runs.log; sleep 3; echo done > out-long"
outs = ["out-long"]
"#,
        );
        let mut runner = spawn(&ws);
        wait_for("sbatch to return", Duration::from_secs(20), || {
            ws.exists("sbatch-held")
        });
        runner.kill().unwrap(); // SIGKILL inside the window
        runner.wait().unwrap();
        std::fs::remove_file(ws.path().join("hold-sbatch")).unwrap();
        let cache = ws.path().join("cache");
        assert!(recorded_jobs(&cache).is_empty(), "killed before the record");
        if job_ended {
            wait_for("the job to end", Duration::from_secs(30), || {
                ws.exists("out-long")
                    && std::fs::read_dir(cache.join("state/jobs"))
                        .unwrap()
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".status"))
            });
        }
        let o = run(&ws, &[]);
        o.ok().stderr_has("following Slurm job");
        assert_eq!(
            ws.runs(),
            ["long"],
            "the stage ran once (job ended: {job_ended})"
        );
        assert_eq!(sbatch_calls(&ws), 1, "nothing was submitted again");
        assert_eq!(ws.read("out-long"), "done\n");
        run(&ws, &[]).ok();
        assert_eq!(sbatch_calls(&ws), 1, "and the rerun finds it cached");
    }
}

#[test]
fn a_job_stopped_by_slurm_is_resubmitted_and_resumes_from_its_checkpoint() {
    let _c = cluster();
    let ws = ws();
    // Counts to 8 with a checkpoint in INCRPIPE_SCRATCH after every step.
    ws.pipeline(
        r#"
[pipeline]
name = "resume"
[stages.count]
cmd = '''
ck="$INCRPIPE_SCRATCH/ck"; n=$(cat "$ck" 2>/dev/null || echo 0)
echo "attempt $INCRPIPE_ATTEMPT from $n" >> runs.log
while [ "$n" -lt 8 ]; do n=$((n+1)); echo $n > "$ck"; sleep 0.4; done
echo "$n" > out-count
'''
outs = ["out-count"]
"#,
    );
    let mut runner = spawn(&ws);
    let scratch_ck = || {
        std::fs::read_dir(ws.path().join("cache/scratch"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("ck")).ok())
            .filter_map(|s| s.trim().parse::<u32>().ok())
            .next()
            .unwrap_or(0)
    };
    wait_for("the first checkpoints", Duration::from_secs(20), || {
        scratch_ck() >= 3
    });
    // Failing the node ends its jobs with NODE_FAIL, as a time limit or a
    // preemption ends them with TIMEOUT or PREEMPTED: Slurm stopped the job.
    let host =
        String::from_utf8_lossy(&Command::new("hostname").arg("-s").output().unwrap().stdout)
            .trim()
            .to_string();
    let down = Command::new("scontrol")
        .args([
            "update",
            &format!("NodeName={host}"),
            "State=DOWN",
            "Reason=incrpipe-test",
        ])
        .status()
        .unwrap();
    assert!(down.success());
    // ReturnToService=2 brings the node back by itself; RESUME if it did not.
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("scontrol")
        .args(["update", &format!("NodeName={host}"), "State=RESUME"])
        .output();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = runner.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the run did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(ws.path().join("runner.err")).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("NODE_FAIL; submitting it again"), "{err}");
    let runs = ws.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], "attempt 1 from 0");
    let resumed: u32 = runs[1]
        .strip_prefix("attempt 2 from ")
        .unwrap_or_else(|| panic!("{runs:?}"))
        .parse()
        .unwrap();
    assert!(
        resumed >= 3,
        "the second job resumed from the checkpoint: {runs:?}"
    );
    assert_eq!(ws.read("out-count"), "8\n");
    assert_eq!(sbatch_calls(&ws), 2);
}
