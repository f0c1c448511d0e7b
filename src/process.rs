//! Stage processes: each in its own process group, dying with the runner,
//! with output to a log file; and ending the process groups of a dead runner.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// What a stage process is started with.
pub struct Spawn<'a> {
    /// `argv[0]` is the program: a path, or a name looked up in PATH.
    pub argv: &'a [String],
    /// Added to (or replacing in) the runner's own environment, in order.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: &'a Path,
    /// Receives stdout and stderr; stdin is /dev/null.
    pub log: File,
}

/// Starts a stage process in its own process group with stdout and stderr to
/// the log, and returns its pid (also its process group id). The child gets
/// SIGKILL when the spawning thread's process dies (PR_SET_PDEATHSIG), so no
/// stage outlives a killed runner unnoticed; its own children are ended by the
/// next runner through the recorded process group.
///
/// Why not `std::process::Command` with `pre_exec`: that forks, and a fork of
/// the runner (a large binary with a live heap) copies its page tables and then
/// pays a copy-on-write fault for every page either side touches; it was about
/// 1.2 ms of the runner's overhead per stage. This is what posix_spawn does
/// instead, `clone(CLONE_VM | CLONE_VFORK)`, with the three calls posix_spawn has
/// no attribute for (setpgid is one it has; PR_SET_PDEATHSIG is not).
pub fn spawn(s: Spawn) -> io::Result<i32> {
    let cstr =
        |b: &[u8]| CString::new(b).map_err(|_| io::Error::other("a NUL byte in an argument"));
    let env = merged_env(s.env);
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let program = resolve(OsStr::new(&s.argv[0]), path_var.as_deref())?;
    let program = cstr(program.as_os_str().as_bytes())?;
    let argv: Vec<CString> = s
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstr(&kv)
        })
        .collect::<Result<_, _>>()?;
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let cwd = cstr(s.cwd.as_os_str().as_bytes())?;
    let dev_null = File::open("/dev/null")?;
    let mut ctx = ChildContext {
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ptr(),
        stdin: dev_null.as_raw_fd(),
        log: s.log.as_raw_fd(),
        parent: std::process::id() as libc::pid_t,
        // SAFETY: sigset_t is plain data; filled in below before use.
        mask: unsafe { std::mem::zeroed() },
        error: 0,
    };
    // The child runs on this stack while this thread is suspended (CLONE_VFORK).
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the child shares this process's memory but this thread waits until
    // it has exec'd or exited (CLONE_VFORK); it only makes raw system calls and
    // writes `ctx.error`. All signals are blocked around the clone, so no handler
    // of the runner can run on the child's side before it resets them.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut ctx.mask);
        let top = stack.as_mut_ptr().add(CHILD_STACK) as usize & !15;
        let pid = libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut ctx).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &ctx.mask, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        if ctx.error != 0 {
            wait(pid)?;
            return Err(io::Error::from_raw_os_error(ctx.error));
        }
        Ok(pid)
    }
}

/// What a reaped process used: its CPU time and the largest resident set of it and the
/// descendants it waited for (`wait4`'s rusage).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User plus system seconds.
    pub cpu_s: f64,
    pub max_rss_kb: u64,
}

/// Waits for a process started by [`spawn`] (and reaps it).
pub fn wait(pid: i32) -> io::Result<ExitStatus> {
    wait_usage(pid).map(|(status, _)| status)
}

/// [`wait`], with what the process used.
pub fn wait_usage(pid: i32) -> io::Result<(ExitStatus, Usage)> {
    let mut status = 0;
    loop {
        // SAFETY: plain system call on our own child; `ru` is written by the kernel.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } == pid {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let usage = Usage {
                cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime),
                max_rss_kb: ru.ru_maxrss.max(0) as u64,
            };
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The child needs a few hundred bytes; posix_spawn in glibc uses a similar size.
const CHILD_STACK: usize = 64 * 1024;

#[repr(C)]
struct ChildContext {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: libc::c_int,
    log: libc::c_int,
    parent: libc::pid_t,
    /// The spawning thread's signal mask, restored just before exec.
    mask: libc::sigset_t,
    /// errno of the step that failed, for the parent to report.
    error: libc::c_int,
}

/// The child between clone and exec: only async-signal-safe calls, no allocation.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildContext, alive while the parent is suspended.
    unsafe {
        let ctx = &mut *(arg as *mut ChildContext);
        let fail = |ctx: &mut ChildContext| -> ! {
            ctx.error = *libc::__errno_location();
            libc::_exit(127)
        };
        // The runner's handlers go back to the default (the child must not run
        // them), and so does SIGPIPE, which the runner ignores but commands
        // expect to end them (`yes | head`). Other ignored signals stay ignored.
        for sig in 1..libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (sig == libc::SIGPIPE
                    || (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN))
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            fail(ctx);
        }
        // The runner may have died before the prctl.
        if libc::getppid() != ctx.parent {
            libc::_exit(137);
        }
        for (from, to) in [(ctx.stdin, 0), (ctx.log, 1), (ctx.log, 2)] {
            // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
            let ok = if from == to {
                libc::fcntl(to, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(from, to) == to
            };
            if !ok {
                fail(ctx);
            }
        }
        if libc::chdir(ctx.cwd) != 0 {
            fail(ctx);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &ctx.mask, std::ptr::null_mut());
        libc::execve(ctx.program, ctx.argv, ctx.envp);
        fail(ctx)
    }
}

/// The runner's environment with `overrides` applied (a later value wins).
fn merged_env(overrides: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in overrides {
        match env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    env
}

/// `program` itself if it names a path, else the first executable of that name in `path`.
fn resolve(program: &OsStr, path: Option<&OsStr>) -> io::Result<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let dirs = path.map(std::env::split_paths).into_iter().flatten();
    for dir in dirs {
        let candidate = dir.join(program);
        let c = CString::new(candidate.as_os_str().as_bytes()).ok();
        // SAFETY: access(2) on a NUL-terminated path.
        if c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
            && candidate.is_file()
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("`{}` not found in PATH", program.to_string_lossy()),
    ))
}

/// Sends `sig` to a whole process group.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: plain syscall; a vanished group gives ESRCH, which is fine.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Whether any process of the group still exists.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat),
/// used to tell a recorded process from a later one that reused its pid.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// How long ago process `pid` started, from its start time and the system's uptime.
pub fn age(pid: i32) -> Option<std::time::Duration> {
    let ticks = start_ticks(pid)? as f64;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (hz > 0.0).then(|| std::time::Duration::from_secs_f64((uptime - ticks / hz).max(0.0)))
}

/// Kills the process group of a stage left by a dead runner, if it is still the same group.
pub fn end_orphan(pgid: i32, ticks: u64) -> bool {
    if start_ticks(pgid) == Some(ticks) || (ticks == 0 && group_alive(pgid)) {
        signal_group(pgid, libc::SIGKILL);
        return true;
    }
    // The leader is gone but members may remain; the group id cannot be reused
    // while any member lives, so ending the group is safe.
    if start_ticks(pgid).is_none() && group_alive(pgid) {
        signal_group(pgid, libc::SIGKILL);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` with bash through [`spawn`], returns its exit status and log.
    fn run(script: &str, env: &[(&str, &str)], cwd: &Path) -> (ExitStatus, String, i32) {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).unwrap();
        let argv = ["bash".to_string(), "-c".to_string(), script.to_string()];
        let pid = spawn(Spawn {
            argv: &argv,
            env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            cwd,
            log,
        })
        .unwrap();
        let status = wait(pid).unwrap();
        (status, std::fs::read_to_string(log_path).unwrap(), pid)
    }

    #[test]
    fn a_stage_gets_its_group_cwd_env_stdin_and_log() {
        let cwd = tempfile::tempdir().unwrap();
        let (status, log, pid) = run(
            "echo pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$; pwd; echo \"$X $HOME\"; \
             read -r line; echo read=$?; echo to-stderr >&2; exit 3",
            &[("X", "one"), ("X", "two")],
            cwd.path(),
        );
        assert_eq!(status.code(), Some(3), "log:\n{log}");
        let cwd_real = cwd.path().canonicalize().unwrap();
        let home = std::env::var("HOME").unwrap_or_default();
        let want = format!(
            "pgid={pid} pid={pid}\n{}\ntwo {home}\nread=1\nto-stderr\n",
            cwd_real.display()
        );
        assert_eq!(log, want);
    }

    #[test]
    fn sigpipe_is_the_default_in_a_stage() {
        // With SIGPIPE ignored (as in the runner), `yes` would see EPIPE and complain.
        let cwd = std::env::temp_dir();
        let (status, log, _) = run("yes | head -n 1; echo \"${PIPESTATUS[0]}\"", &[], &cwd);
        assert!(status.success());
        assert_eq!(log, "y\n141\n", "`yes` must die of SIGPIPE (128 + 13)");
    }

    #[test]
    fn a_stage_starts_with_no_signal_blocked() {
        // spawn blocks every signal around the clone; the child must restore the mask.
        let cwd = std::env::temp_dir();
        let (status, log, _) = run("kill -TERM $$; sleep 5; echo survived", &[], &cwd);
        assert_eq!(status.signal(), Some(libc::SIGTERM), "log:\n{log}");
    }

    #[test]
    fn spawn_failures_are_errors_not_children() {
        let cwd = std::env::temp_dir();
        let log = || tempfile::tempfile().unwrap();
        let missing = ["no-such-program-incrpipe".to_string()];
        let e = spawn(Spawn {
            argv: &missing,
            env: vec![],
            cwd: &cwd,
            log: log(),
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        // A file that exists but is not executable: execve's EACCES comes back.
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let argv = [plain.to_string_lossy().into_owned()];
        let e = spawn(Spawn {
            argv: &argv,
            env: vec![],
            cwd: &cwd,
            log: log(),
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        // A working directory that does not exist: chdir's ENOENT.
        let argv = ["true".to_string()];
        let gone = dir.path().join("gone");
        let e = spawn(Spawn {
            argv: &argv,
            env: vec![],
            cwd: &gone,
            log: log(),
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
}
