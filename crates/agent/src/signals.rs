//! Signalling a job's process group: the graceful SIGTERM, the final
//! SIGKILL, and listing the group's members from `/proc`.
//!
//! Every job runs in its own process group whose id is the pid of the
//! process the agent spawned (`/bin/sh`, or the outer `bwrap`).

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// Sends SIGTERM to the job. Unsandboxed, the whole group gets it. Under
/// bubblewrap the group leader is the outer `bwrap`, which would die of it
/// and take the sandbox down with SIGKILL at once, so every other member
/// gets it instead (`bwrap` then exits with the job's status).
pub(crate) fn terminate(pgid: u32, spare_leader: bool) {
    if !spare_leader {
        signal_group(pgid, Signal::TERM);
        return;
    }
    for pid in group_members(pgid) {
        if pid != pgid
            && let Some(p) = Pid::from_raw(pid as i32)
        {
            let _ = kill_process(p, Signal::TERM);
        }
    }
}

/// Sends SIGKILL to the whole group; a group that is gone is no error.
pub(crate) fn kill(pgid: u32) {
    signal_group(pgid, Signal::KILL);
}

fn signal_group(pgid: u32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pgid as i32) {
        // ESRCH: nothing is left of the group.
        let _ = kill_process_group(p, sig);
    }
}

/// Whether any process (a zombie included) is left in group `pgid`: one
/// `kill(-pgid, 0)`, much cheaper than [`group_members`].
pub(crate) fn group_exists(pgid: u32) -> bool {
    match Pid::from_raw(pgid as i32) {
        Some(p) => !matches!(rustix::process::test_kill_process_group(p), Err(rustix::io::Errno::SRCH)),
        None => false,
    }
}

/// A future that resolves when process `pid` has exited, if it is still a
/// live member of group `pgid` (`None` when it is gone already). It waits on
/// a pidfd (see [`pidfd_exit`]); where pidfds are missing (Linux before 5.3)
/// it looks again every millisecond.
pub(crate) fn exit_of(pid: u32, pgid: u32) -> Option<impl std::future::Future<Output = ()>> {
    let p = Pid::from_raw(pid as i32)?;
    let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK).ok();
    // Checked after the open: the pidfd, if any, is of this very process.
    if !in_group(pid, pgid) {
        return None;
    }
    Some(async move {
        if let Some(fd) = fd
            && pidfd_exit(fd).await
        {
            return;
        }
        while in_group(pid, pgid) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
}

/// Waits until the process of `pidfd` has exited: a pidfd becomes readable
/// then, for any process, child or not. False, at once, when the pidfd
/// cannot be watched.
pub(crate) async fn pidfd_exit(pidfd: std::os::fd::OwnedFd) -> bool {
    // SAFETY: the `OwnedFd` is owned by the `AsyncFd` and open as long as it.
    let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    match fd {
        Ok(fd) => {
            let _ = fd.readable().await;
            true
        }
        Err(_) => false,
    }
}

/// The pids of the live processes in process group `pgid` (zombies
/// excluded), read from `/proc`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if in_group(pid, pgid) {
            out.push(pid);
        }
    }
    out
}

/// Whether process `pid` is alive (not a zombie) in group `pgid`.
pub(crate) fn in_group(pid: u32, pgid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
}

/// (state, process group) from `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}
