//! The Slurm commands the runner uses: sbatch (without --wait: the runner
//! polls), squeue for job states, scancel. Every call has a time limit, so an
//! unresponsive controller delays the run instead of hanging it.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::SlurmOptions;

/// How long one Slurm command may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot run sbatch ({0}); is Slurm's client installed and on PATH?")]
    NotFound(io::Error),
    /// Slurm will not take this job as asked (resources no node has, bad partition...).
    #[error("sbatch refused the job: {0}")]
    Refused(String),
    /// The controller was busy or unreachable; submitting again later may work.
    #[error("sbatch failed: {0}")]
    Transient(String),
    #[error("Slurm does not answer (sinfo: {0}); is this a Slurm login node?")]
    Unreachable(String),
    #[error("cannot prepare the job: {0}")]
    Io(#[from] io::Error),
}

/// What a stage asks of Slurm.
#[derive(Debug, Clone, Default)]
pub struct JobResources {
    pub cpus: u32,
    pub gpus: u32,
    /// Wall time as Slurm takes it, e.g. "2:00:00".
    pub time: Option<String>,
    /// Memory as Slurm takes it, e.g. "8G".
    pub mem: Option<String>,
}

/// What names a stage's job in Slurm: its stage in the job name, its key and
/// its cache in the comment (how [`tagged_jobs`] finds a job that has no record).
pub struct JobLabel<'a> {
    pub stage: &'a str,
    pub key: &'a str,
    /// [`cache_id`] of the runner's cache.
    pub cache: &'a str,
}

/// A short name of a cache directory for job comments: the hash of its path.
pub fn cache_id(root: &Path) -> String {
    let path = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    blake3::hash(path.as_os_str().as_encoded_bytes()).to_hex()[..16].to_string()
}

/// The comment of a stage's job: a fixed prefix and the stage key.
const TAG: &str = "incrpipe-key=";

/// The sbatch command line for one stage's job.
pub fn sbatch_args(
    opts: &SlurmOptions,
    label: &JobLabel,
    res: &JobResources,
    log: &Path,
    workspace: &Path,
    script: &Path,
) -> Vec<String> {
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=incrpipe:{}", label.stage),
        format!("--comment={TAG}{}@{}", label.key, label.cache),
        format!("--output={}", log.display()),
        format!("--chdir={}", workspace.display()),
        // The script sets the environment itself (see script.rs).
        "--export=NONE".to_string(),
        // The runner resubmits a preempted or failed job itself, so Slurm must
        // not run the same job id a second time behind its back.
        "--no-requeue".to_string(),
        "--ntasks=1".to_string(),
        format!("--cpus-per-task={}", res.cpus.max(1)),
    ];
    if res.gpus > 0 {
        a.push(format!("--gres=gpu:{}", res.gpus));
    }
    if let Some(t) = &res.time {
        a.push(format!("--time={t}"));
    }
    if let Some(m) = &res.mem {
        a.push(format!("--mem={m}"));
    }
    if let Some(p) = &opts.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(acc) = &opts.account {
        a.push(format!("--account={acc}"));
    }
    a.extend(opts.extra.iter().cloned());
    a.push(script.display().to_string());
    a
}

/// Submits; returns the job id.
pub fn submit(args: &[String]) -> Result<String, SubmitError> {
    let out = run_limited(Command::new("sbatch").args(args)).map_err(SubmitError::NotFound)?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        let msg = stderr
            .lines()
            .map(|l| l.trim_start_matches("sbatch: error: ").trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let msg = if msg.is_empty() {
            format!("exit status {:?}", out.status.code())
        } else {
            msg
        };
        return Err(if is_transient(&msg) {
            SubmitError::Transient(msg)
        } else {
            SubmitError::Refused(msg)
        });
    }
    // --parsable prints `JOBID` or `JOBID;CLUSTER`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(SubmitError::Transient(format!(
            "sbatch printed no job id (stdout {stdout:?}, stderr {stderr:?})"
        )));
    }
    Ok(id)
}

/// Failures worth another try: the controller is busy, restarting or unreachable.
fn is_transient(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "temporarily",
        "timed out",
        "time out",
        "try again",
        "unable to contact",
        "connection refused",
        "socket",
        "communication",
        "zero bytes",
        "slurm_persist",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// Cancels exactly these jobs.
pub fn cancel(jobs: &[String]) {
    if jobs.is_empty() {
        return;
    }
    let _ = run_limited(Command::new("scancel").args(jobs));
}

/// The states of these jobs (finished ones too, while Slurm remembers them).
/// A job missing from the map is unknown to Slurm. `None`: squeue failed.
pub fn states(jobs: &[String]) -> Option<BTreeMap<String, String>> {
    if jobs.is_empty() {
        return Some(BTreeMap::new());
    }
    let out = run_limited(Command::new("squeue").args([
        "-h",
        "--states=all",
        "-o",
        "%i|%T",
        "-j",
        &jobs.join(","),
    ]))
    .ok()?;
    if !out.status.success() {
        // When none of the ids is known any more squeue fails with this.
        return String::from_utf8_lossy(&out.stderr)
            .contains("Invalid job id")
            .then(BTreeMap::new);
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (id, st) = l.trim().split_once('|')?;
                Some((id.to_string(), st.to_string()))
            })
            .collect(),
    )
}

/// This user's jobs that Slurm still knows (finished ones too) and that carry
/// a stage key in their comment: key -> (job id, state). `None`: squeue failed.
pub fn tagged_jobs(cache: &str) -> Option<BTreeMap<String, (String, String)>> {
    let out =
        run_limited(Command::new("squeue").args(["-h", "--me", "--states=all", "-o", "%i|%T|%k"]))
            .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(parse_tagged(&String::from_utf8_lossy(&out.stdout), cache))
}

fn parse_tagged(text: &str, cache: &str) -> BTreeMap<String, (String, String)> {
    let mut jobs = BTreeMap::new();
    for l in text.lines() {
        let mut f = l.trim().splitn(3, '|');
        let (Some(id), Some(st), Some(comment)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let ours = comment
            .trim()
            .strip_prefix(TAG)
            .and_then(|rest| rest.split_once('@'))
            .filter(|(_, c)| *c == cache);
        if let Some((key, _)) = ours {
            // Of several jobs of one key (resubmissions), the newest wins.
            let newer = jobs
                .get(key)
                .is_none_or(|(old, _): &(String, String)| job_order(id) > job_order(old));
            if newer {
                jobs.insert(key.to_string(), (id.to_string(), st.to_string()));
            }
        }
    }
    jobs
}

fn job_order(id: &str) -> u64 {
    id.split('_')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Whether Slurm answers (`sinfo`), for a clear error before submitting anything.
pub fn reachable() -> Result<(), String> {
    match run_limited(Command::new("sinfo").args(["-h", "-o", "%P"])) {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run sinfo: {e}")),
    }
}

/// A finished job's CPU time and peak RSS from accounting (`sacct`), or why they are not
/// known (a cluster without slurmdbd says so; the reason is kept, never a blank).
pub fn usage(job: &str) -> Result<crate::process::Usage, String> {
    let out = run_limited(Command::new("sacct").args([
        "-j",
        job,
        "-n",
        "-P",
        "--noconvert",
        "-o",
        "TotalCPU,MaxRSS",
    ]))
    .map_err(|e| format!("cannot run sacct: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(format!("sacct: {stderr}"));
    }
    parse_usage(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        if stderr.is_empty() {
            format!("sacct has no accounting record of job {job}")
        } else {
            format!("sacct: {stderr}")
        }
    })
}

/// `TotalCPU|MaxRSS` lines of a job and its steps: the job's CPU time (its first line) and
/// the largest RSS of any step (bytes with --noconvert, or with a K/M/G suffix).
fn parse_usage(text: &str) -> Option<crate::process::Usage> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next()?;
    let cpu = |t: &str| -> Option<f64> {
        // [DD-][HH:]MM:SS[.mmm]
        let (days, rest) = t.split_once('-').map_or(("0", t), |(d, r)| (d, r));
        let parts: Vec<&str> = rest.split(':').collect();
        let secs: f64 = parts.last()?.parse().ok()?;
        let mut mult = 60.0;
        let mut total = secs;
        for p in parts.iter().rev().skip(1) {
            total += p.parse::<f64>().ok()? * mult;
            mult *= 60.0;
        }
        Some(total + days.parse::<f64>().ok()? * 86_400.0)
    };
    let rss = |t: &str| -> Option<u64> {
        let t = t.trim();
        let (num, scale) = match t.chars().last()? {
            'K' => (&t[..t.len() - 1], 1.0),
            'M' => (&t[..t.len() - 1], 1024.0),
            'G' => (&t[..t.len() - 1], 1024.0 * 1024.0),
            _ => (t, 1.0 / 1024.0),
        };
        Some((num.parse::<f64>().ok()? * scale) as u64)
    };
    let cpu_s = cpu(first.split('|').next()?.trim())?;
    let max_rss_kb = std::iter::once(first)
        .chain(lines)
        .filter_map(|l| rss(l.split('|').nth(1)?))
        .max()?;
    Some(crate::process::Usage { cpu_s, max_rss_kb })
}

/// Runs a command with [`CALL_LIMIT`], output captured.
fn run_limited(cmd: &mut Command) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        if start.elapsed() > CALL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {CALL_LIMIT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sacct_usage_lines_parse() {
        let u = parse_usage("00:01:02.500|\n00:01:02.400|2048000\n00:00:00.100|4096K\n").unwrap();
        assert_eq!((u.cpu_s, u.max_rss_kb), (62.5, 4096));
        let u = parse_usage("1-02:00:00|1G\n").unwrap();
        assert_eq!((u.cpu_s, u.max_rss_kb), (93_600.0, 1024 * 1024));
        assert_eq!(parse_usage(""), None);
        assert_eq!(parse_usage("00:00:01|\n"), None);
    }

    #[test]
    fn resources_map_to_sbatch_options() {
        let opts = SlurmOptions {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            extra: vec!["--qos=long".into()],
            max_jobs: 10,
        };
        let res = JobResources {
            cpus: 4,
            gpus: 2,
            time: Some("1:00:00".into()),
            mem: Some("8G".into()),
        };
        let a = sbatch_args(
            &opts,
            &JobLabel {
                stage: "train",
                key: "k1",
                cache: "c1",
            },
            &res,
            Path::new("/c/l.log"),
            Path::new("/w"),
            Path::new("/c/j.sh"),
        );
        for want in [
            "--cpus-per-task=4",
            "--gres=gpu:2",
            "--time=1:00:00",
            "--mem=8G",
            "--partition=gpu",
            "--account=lab",
            "--qos=long",
            "--output=/c/l.log",
            "--job-name=incrpipe:train",
            "--comment=incrpipe-key=k1@c1",
        ] {
            assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
        }
        assert_eq!(a.last().unwrap(), "/c/j.sh");
    }

    #[test]
    fn jobs_are_found_by_the_key_in_their_comment() {
        let m = parse_tagged(
            "12|RUNNING|incrpipe-key=aa@c1\n13|PENDING|someone else's job\n9|COMPLETED|incrpipe-key=bb@c1\n\
             10|TIMEOUT|incrpipe-key=aa@c1\n14|RUNNING|incrpipe-key=cc@c2\n",
            "c1",
        );
        assert_eq!(m.len(), 2, "another cache's job is not ours: {m:?}");
        assert_eq!(
            m["aa"],
            ("12".to_string(), "RUNNING".to_string()),
            "the newest job of a key"
        );
        assert_eq!(m["bb"].0, "9");
    }

    #[test]
    fn classifies_sbatch_errors() {
        assert!(!is_transient(
            "Batch job submission failed: Requested node configuration is not available"
        ));
        assert!(is_transient(
            "Batch job submission failed: Socket timed out on send/recv operation"
        ));
    }
}
