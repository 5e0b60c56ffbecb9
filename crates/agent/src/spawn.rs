//! Starting a sandboxed job without `fork`.
//!
//! A job's process must die with the agent: it gets SIGKILL as its
//! parent-death signal, armed in the child before `exec` and followed by a
//! check that the agent is still its parent (the agent may have died just
//! before). `std::process::Command` can do that only through `pre_exec`,
//! which makes it `fork` the agent — copying the page tables of a process
//! that holds a server, a database and a runtime, then taking a
//! copy-on-write fault for every page either side touches until the
//! `exec`. That was about 2 ms of every pipeline step.
//!
//! So the bubblewrap path starts its process the way `posix_spawn` does:
//! `clone(CLONE_VM | CLONE_VFORK)` onto a small stack of its own. The child
//! shares the agent's memory and the agent's thread waits until it has
//! called `execve` (or failed). In between, the child only makes plain
//! system calls on data prepared beforehand: descriptors onto 0–3, a new
//! process group, the parent-death signal and the parent check, signal
//! handlers back to their defaults and an empty signal mask (every signal
//! is blocked across the `clone`, so no handler of the agent can run in the
//! child), then `execve`. A failure is written to a word the parent reads
//! once the child is gone.
//!
//! The process is then watched through a pidfd (see [`Process`]).

use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// The child's stack: it calls nothing but system call wrappers.
const STACK: usize = 64 * 1024;

/// What the child needs, prepared by the parent (the child must not
/// allocate: it shares the parent's heap and its locks).
struct ChildArgs {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// (from, to): duplicated in this order.
    fds: [(RawFd, RawFd); 4],
    nfds: usize,
    parent: libc::pid_t,
    /// Set by the child when it fails: the errno, or -1 when the agent was
    /// no longer its parent.
    error: *mut c_int,
}

/// A started process, in its own process group, with SIGKILL as its
/// parent-death signal.
pub(crate) struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
    /// The stack the process runs on while it shares our memory (the
    /// native sandbox's init), kept until it is reaped.
    pub stack: Option<Stack>,
}

/// A stack for a process that shares our memory: mapped, with a guard page
/// below it, unmapped on drop (only once nothing runs on it).
pub(crate) struct Stack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone.
unsafe impl Send for Stack {}
unsafe impl Sync for Stack {}

impl Stack {
    pub(crate) fn new(size: usize) -> io::Result<Stack> {
        let page = 4096;
        let len = size + page;
        // SAFETY: a fresh anonymous mapping; the lowest page becomes the guard.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            libc::mprotect(base, page, libc::PROT_NONE);
            Ok(Stack { base, len })
        }
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    pub(crate) fn top(&self) -> *mut c_void {
        let end = self.base as usize + self.len;
        (end - end % 16) as *mut c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts `program` with `args` and exactly the variables `env`, in a new
/// process group, its descriptors 0–2 (and 3, with `fd3`) set as given and
/// every other descriptor closed at `exec` (the agent opens all of its
/// descriptors close-on-exec).
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    stdio: [&OwnedFd; 3],
    fd3: Option<&OwnedFd>,
) -> io::Result<Spawned> {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::other("a NUL byte in a job's command or variables"));
    let program_c = cstr(program.as_os_str().as_bytes())?;
    let mut argv_c = vec![program_c.clone()];
    for a in args {
        argv_c.push(cstr(a.as_bytes())?);
    }
    let envp_c: Vec<CString> =
        env.iter().map(|(k, v)| cstr(format!("{k}={v}").as_bytes())).collect::<Result<_, _>>()?;
    let mut argv: Vec<*const c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    // The sources are moved above 3 first, so that no dup2 overwrites a
    // source still to be copied, and none is its own target (which would
    // leave it close-on-exec).
    let mut high = Vec::new();
    for fd in stdio.iter().copied().chain(fd3) {
        high.push(rustix::io::fcntl_dupfd_cloexec(fd, 10)?);
    }
    let mut fds = [(0, 0); 4];
    for (i, fd) in high.iter().enumerate() {
        fds[i] = (fd.as_raw_fd(), i as RawFd);
    }
    let mut error: c_int = 0;
    let args = ChildArgs {
        program: program_c.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        fds,
        nfds: high.len(),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        error: &mut error,
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down from its (16-byte aligned) top.
    let top = {
        let end = stack.as_mut_ptr().wrapping_add(STACK);
        end.wrapping_sub(end as usize % 16)
    };

    // SAFETY: every signal is blocked around the clone (and restored after),
    // so the child runs no handler of ours; `child` only reads `args` and
    // writes `error`, both alive until the clone returns, which with
    // CLONE_VFORK is after the child's execve or exit; the stack is ours and
    // unused by anyone else meanwhile.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut c_void,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    // SAFETY: the child is gone from our memory (exec'd or exited): `error`
    // is no longer written.
    let error = unsafe { std::ptr::read_volatile(&error) };
    if error != 0 {
        let mut status = 0;
        // SAFETY: reaps our own child, which has exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(match error {
            -1 => io::Error::other("the agent exited"),
            e => io::Error::from_raw_os_error(e),
        });
    }
    // Our own unreaped child: its pid cannot be reused before we wait.
    let p = rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::other("clone returned pid 0"))?;
    let pidfd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            // SAFETY: our own child; it is killed and reaped here.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut 0, 0);
            }
            return Err(e.into());
        }
    };
    Ok(Spawned { pid: pid as u32, pidfd, stack: None })
}

/// The child, between clone and exec: plain system calls only.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and unchanged until
    // this process has exec'd or exited (CLONE_VFORK).
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |e: c_int| -> c_int {
            *a.error = if e == 0 { libc::EIO } else { e };
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        for &(from, to) in &a.fds[..a.nfds] {
            if libc::dup2(from, to) < 0 {
                return fail(errno());
            }
        }
        if libc::setpgid(0, 0) < 0 {
            return fail(errno());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
            return fail(errno());
        }
        // The agent may have died before the signal was armed.
        if libc::getppid() != a.parent {
            *a.error = -1;
            libc::_exit(127);
        }
        // Handlers back to the defaults (the new program must not inherit
        // our ignored SIGPIPE either), then nothing blocked.
        default_signals();
        libc::execve(a.program, a.argv, a.envp);
        fail(errno())
    }
}

/// Between clone and exec: every handler back to its default (SIGPIPE too,
/// which the agent ignores and a new program must not inherit), then no
/// signal blocked. Plain system calls only.
pub(crate) unsafe fn default_signals() {
    // SAFETY: sigaction and sigprocmask on zeroed, filled structures.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (old.sa_sigaction != libc::SIG_DFL || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// A process started by [`spawn`], watched through its pidfd.
pub(crate) struct Process {
    pid: u32,
    pidfd: tokio::io::unix::AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    stack: Option<Stack>,
}

impl Process {
    pub(crate) fn new(s: Spawned) -> io::Result<Process> {
        // SAFETY: the `OwnedFd` is owned by the `AsyncFd` and open as long as it.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(s.pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(format!("cannot watch the job's process: {e}")))?;
        Ok(Process { pid: s.pid, pidfd, status: None, stack: s.stack })
    }

    /// Waits for the process to exit and reaps it. May be called again,
    /// and cancelled, safely.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(st) = self.status {
                return Ok(st);
            }
            let mut guard = self.pidfd.readable().await?;
            let mut status: c_int = 0;
            // SAFETY: our own child, reaped only here.
            let r = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
            match r {
                0 => guard.clear_ready(),
                r if r < 0 => return Err(io::Error::last_os_error()),
                _ => {
                    self.status = Some(ExitStatus::from_raw(status));
                    // Reaped: nothing runs on its stack any more.
                    self.stack = None;
                }
            }
        }
    }
}

impl Drop for Process {
    /// A process never waited for is killed and reaped (as `kill_on_drop`
    /// would), on a blocking thread when a runtime is there.
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let pid = self.pid as libc::pid_t;
        // SAFETY: our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let stack = self.stack.take();
        let reap = move || {
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut 0, 0) };
            drop(stack);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(reap)),
            Err(_) => reap(),
        }
    }
}

/// The pipes of a job's stdout and stderr: (our read end, the child's write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    Ok((OwnedFd::from(r), OwnedFd::from(w)))
}

/// `/dev/null` for the job's stdin.
pub(crate) fn dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::File::open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

/// Turns the read end of a pipe into an async reader.
pub(crate) fn reader(fd: OwnedFd) -> io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::{Duration, Instant};

    use super::*;

    fn sh(script: &str, env: &[(String, String)]) -> io::Result<(Spawned, OwnedFd)> {
        let null = dev_null()?;
        let (r, w) = pipe()?;
        let args = ["-c".to_string(), script.to_string()];
        Ok((spawn(Path::new("/bin/sh"), &args, env, [&null, &w, &w], None)?, r))
    }

    fn reap(pid: u32) -> Option<ExitStatus> {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let mut status = 0;
            // SAFETY: the test's own child.
            if unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) } == pid as libc::pid_t {
                return Some(ExitStatus::from_raw(status));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn runs_with_exactly_its_args_variables_and_descriptors_in_its_own_group() {
        let env = [("ONLY".to_string(), "this one".to_string())];
        let script = "echo \"$ONLY\"; env | wc -l; ps -o pgid= -p $$ | tr -d ' '; echo $$; \
                      grep -E '^Sig(Blk|Ign)' /proc/self/status";
        let (s, r) = sh(script, &env).unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert!(reap(s.pid).unwrap().success());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "this one");
        // sh adds PWD (and may add a few of its own), never the agent's.
        assert!(lines[1].trim().parse::<u32>().unwrap() <= 3, "{out}");
        assert_eq!(lines[2], lines[3], "the child leads a process group of its own: {out}");
        assert_eq!(lines[3], s.pid.to_string());
        assert!(lines.contains(&"SigBlk:\t0000000000000000"), "nothing blocked: {out}");
        let ignored = lines.iter().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
        let ignored = u64::from_str_radix(ignored, 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is not ignored: {out}");
    }

    #[test]
    fn descriptor_3_is_given_when_asked() {
        let null = dev_null().unwrap();
        let (r, w) = pipe().unwrap();
        let args = ["-c".to_string(), "echo to three >&3".to_string()];
        let s = spawn(Path::new("/bin/sh"), &args, &[], [&null, &null, &null], Some(&w)).unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert!(reap(s.pid).unwrap().success());
        assert_eq!(out, "to three\n");
    }

    #[test]
    fn a_missing_program_is_an_error_and_leaves_no_process() {
        let null = dev_null().unwrap();
        let err = spawn(Path::new("/nonexistent/bwrap"), &[], &[], [&null, &null, &null], None).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        // SAFETY: asks about any child of this test process, without waiting.
        let left = unsafe { libc::waitpid(-1, &mut 0, libc::WNOHANG) };
        assert!(left <= 0, "the failed child was reaped");
    }

    /// The parent-death signal: when the thread that started the process
    /// ends (as when the agent is killed), the process is killed.
    #[test]
    fn the_process_dies_with_the_thread_that_started_it() {
        let pid = std::thread::spawn(|| sh("exec sleep 1000", &[]).unwrap().0.pid).join().unwrap();
        let st = reap(pid).expect("the process ended");
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn process_wait_reports_the_exit_status() {
        let (s, _r) = sh("exit 7", &[]).unwrap();
        let mut p = Process::new(s).unwrap();
        assert_eq!(p.wait().await.unwrap().code(), Some(7));
        assert_eq!(p.wait().await.unwrap().code(), Some(7), "again, from the kept status");
    }
}
