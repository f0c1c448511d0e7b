//! Stage processes: each in its own process group, dying with the runner,
//! with output to a log file; and ending the process groups of a dead runner.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Spawns `cmd` in its own process group with stdout and stderr to `log`.
/// The child gets SIGKILL when the spawning thread's process dies
/// (PR_SET_PDEATHSIG), so no stage outlives a killed runner unnoticed; its own
/// children are ended by the next runner through the recorded process group.
pub fn spawn(mut cmd: Command, log: File) -> io::Result<Child> {
    let err = log.try_clone()?;
    let out = log;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The runner may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    cmd.spawn()
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
