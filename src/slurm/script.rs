//! The job script a Slurm job runs. slurmd does not reliably pass the
//! submitter's environment to a job, so the script sets the stage's whole
//! environment contract itself (the same one a local child gets), runs the
//! stage in the workspace, and at the end writes the stage's exit status into
//! the shared cache atomically: that file, not Slurm's accounting, is what the
//! runner trusts.

use std::path::Path;

/// What one job runs, and where it reports.
pub struct JobScript<'a> {
    pub stage: &'a str,
    pub key: &'a str,
    pub workspace: &'a Path,
    /// The stage's command line, e.g. `bash -c TEXT` or `EXE __stage KIND`.
    pub argv: Vec<String>,
    /// Variables to export, in order (INCRPIPE_*, PATH, the stage's `env`).
    pub env: Vec<(String, String)>,
    /// CPUs asked for; Slurm's SLURM_CPUS_PER_TASK wins when set.
    pub cpus: u32,
    pub gpus: u32,
    /// Where the job writes `{"job","exit","terminated"}` when it ends.
    pub status: &'a Path,
}

/// Quotes `s` for bash: single quotes, with `'` written as `'\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl JobScript<'_> {
    pub fn render(&self) -> String {
        let q = |p: &Path| sh_quote(&p.to_string_lossy());
        let mut s = String::from("#!/bin/bash\n");
        s.push_str(&format!(
            "# incrpipe job for stage `{}` (key {}). Generated on each submission.\n",
            self.stage.replace('\n', " "),
            self.key
        ));
        s.push_str(&format!("status={}\n", q(self.status)));
        // Written through a temporary file and renamed: the runner never reads half a status.
        s.push_str(
            r#"write_status() {
  local tmp="$status.tmp.${SLURM_JOB_ID:-$$}"
  printf '{"job":"%s","exit":%d,"terminated":%s}\n' "${SLURM_JOB_ID:-}" "$1" "$2" >"$tmp" && mv -f "$tmp" "$status"
}
"#,
        );
        s.push_str(&format!(
            "cd {} || {{ echo \"incrpipe: cannot enter the workspace on $(hostname)\" >&2; write_status 1 false; exit 1; }}\n",
            q(self.workspace)
        ));
        for (k, v) in &self.env {
            s.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        let cpus = crate::protocol::CPUS;
        s.push_str(&format!(
            "export {cpus}=\"${{SLURM_CPUS_PER_TASK:-{}}}\"\n",
            self.cpus
        ));
        s.push_str(&format!(
            "export RAYON_NUM_THREADS=\"${cpus}\" OMP_NUM_THREADS=\"${cpus}\"\n"
        ));
        if self.gpus > 0 {
            // Slurm sets CUDA_VISIBLE_DEVICES to the devices of this job's --gres;
            // overriding it would put concurrent jobs on the same device.
            s.push_str("export INCRPIPE_GPUS=\"${CUDA_VISIBLE_DEVICES:-}\"\n");
        } else {
            // As for a local stage without GPUs: none visible, even where the
            // node does not confine devices.
            s.push_str("export CUDA_VISIBLE_DEVICES= INCRPIPE_GPUS=\n");
        }
        let argv: Vec<String> = self.argv.iter().map(|a| sh_quote(a)).collect();
        // The stage runs as a child so that the script survives SIGTERM (time
        // limit, preemption, scancel) long enough to record that it was
        // terminated rather than failing on its own.
        s.push_str(&format!(
            r#"terminated=false
trap 'terminated=true; kill -TERM "$child" 2>/dev/null' TERM
{} </dev/null &
child=$!
wait "$child"; rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
write_status "$rc" "$terminated"
exit "$rc"
"#,
            argv.join(" ")
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_survive_bash() {
        let nasty = "a'b \"c\" $HOME `x` \\n";
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), nasty);
    }

    #[test]
    fn gpu_jobs_keep_slurms_devices() {
        let mut j = JobScript {
            stage: "s",
            key: "k",
            workspace: Path::new("/w"),
            argv: vec!["true".into()],
            env: vec![],
            cpus: 1,
            gpus: 1,
            status: Path::new("/c/s.status"),
        };
        assert!(!j.render().contains("export CUDA_VISIBLE_DEVICES"));
        j.gpus = 0;
        assert!(j.render().contains("export CUDA_VISIBLE_DEVICES="));
    }
}
