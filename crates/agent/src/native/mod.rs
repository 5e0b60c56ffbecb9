//! podder's own sandbox for the process executor: Linux namespaces and
//! bind mounts set up by the agent itself, with nothing to install.
//!
//! - **Namespaces**: mount, PID and IPC always; network with
//!   `--no-network` (loopback only, plus a proxy to the job's own server,
//!   see [`proxy`]); a user namespace when the agent is not root, which is
//!   then the only way in (root agents need none).
//! - **The job's user**: never root. A root agent runs jobs as
//!   [`JOB_UID`]`:`[`JOB_GID`] (`nobody` by default), and gives them their
//!   `/code` and `/output`; an unprivileged agent runs them as itself,
//!   mapped to the same id inside. No capabilities, `no_new_privs`.
//! - **The filesystem** ([`layout`]): a fresh read-only root with the
//!   system directories read-only, `/code` and `/output`, the inputs
//!   read-only, fresh `/proc`, `/dev`, `/tmp`; nothing of homes, `/root`,
//!   `/var`, the server's data directory or the agent's work directory.
//! - **Life**: the job's PID 1 is the sandbox's init, which dies with the
//!   agent (parent-death signal) and takes every process of the job with it.
//! - **Limits** ([`limits`]): memory and CPUs through cgroup v2 where the
//!   agent may create cgroups, else `RLIMIT_DATA` per process and CPU
//!   affinity.
//!
//! No second program is executed to set this up: see [`child`].

mod child;
pub(crate) mod layout;
pub(crate) mod limits;
pub mod proxy;

use std::ffi::{CString, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use child::{ChildPlan, Creds, Op};
use layout::Step;

use crate::sandbox::Invocation;
use crate::spawn::{Spawned, Stack};

/// The user a root agent runs jobs as (`nobody`).
pub const JOB_UID: u32 = 65534;
/// Its group (`nogroup`).
pub const JOB_GID: u32 = 65534;

/// How long the init may take to set the sandbox up before it is killed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The native sandbox as resolved on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Native {
    /// Root agent: jobs run as this uid/gid, without a user namespace.
    /// `None`: an unprivileged agent, jobs in a user namespace as itself.
    pub job_user: Option<(u32, u32)>,
}

impl Native {
    /// The sandbox for this process's privileges.
    pub fn for_this_user() -> Native {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Native { job_user: root.then_some((JOB_UID, JOB_GID)) }
    }

    /// The uid that owns a job's files on the host.
    pub fn host_uid(&self) -> u32 {
        match self.job_user {
            Some((u, _)) => u,
            // SAFETY: no preconditions.
            None => unsafe { libc::geteuid() },
        }
    }
}

/// What the job's process gets besides its filesystem.
pub(crate) struct Extras {
    /// Own network namespace (loopback only).
    pub no_network: bool,
    /// With `no_network`: a listener for the job's server proxy on
    /// 127.0.0.1 of that port inside.
    pub proxy_port: Option<u16>,
    pub limits: limits::Applied,
}

/// A started sandbox: its init's process, and the proxy listener.
pub(crate) struct Started {
    pub spawned: Spawned,
    pub listener: Option<std::net::TcpListener>,
}

fn cstr(p: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(p.as_ref()).map_err(|_| io::Error::other("a NUL byte in a job's command, variables or paths"))
}

fn inside(root: &Path, p: &Path) -> io::Result<CString> {
    let rel = p.strip_prefix("/").unwrap_or(p);
    cstr(root.join(rel).as_os_str().as_bytes())
}

fn ops(root: &Path, steps: &[Step]) -> io::Result<Vec<Op>> {
    steps
        .iter()
        .map(|s| {
            Ok(match s {
                Step::Mkdir(p) => Op::Mkdir(inside(root, p)?),
                Step::Touch(p) => Op::Touch(inside(root, p)?),
                Step::Bind { src, dst, ro, dev } => {
                    Op::Bind { src: cstr(src.as_os_str().as_bytes())?, dst: inside(root, dst)?, ro: *ro, dev: *dev }
                }
                Step::Tmpfs { dst, mode } => {
                    Op::Tmpfs { dst: inside(root, dst)?, opts: cstr(format!("mode={mode:o}"))? }
                }
                Step::Proc(p) => Op::Proc(inside(root, p)?),
                Step::Symlink { target, link } => {
                    Op::Symlink { target: cstr(target.as_os_str().as_bytes())?, link: inside(root, link)? }
                }
            })
        })
        .collect()
}

fn describe(stage: i32, steps: &[Step]) -> String {
    match stage {
        child::STAGE_UID_MAP | child::STAGE_GID_MAP => "writing the user namespace's id map".into(),
        child::STAGE_PRIVATE => "making the mounts private".into(),
        child::STAGE_ROOT => "mounting the job's root".into(),
        child::STAGE_PIVOT => "entering the job's root".into(),
        child::STAGE_LOOPBACK => "bringing up the loopback interface".into(),
        child::STAGE_LISTENER => "listening for the job's server proxy".into(),
        child::STAGE_CGROUP => "joining the job's cgroup".into(),
        child::STAGE_CLONE => "starting the job's process".into(),
        child::STAGE_AGENT_GONE => "checking the agent (it exited)".into(),
        child::STAGE_DEATHSIG => "arming the parent-death signal".into(),
        child::STAGE_JOB_CREDS => "dropping to the job's user".into(),
        child::STAGE_JOB_LIMITS => "setting the job's limits".into(),
        child::STAGE_JOB_EXEC => "executing /bin/sh".into(),
        child::STAGE_JOB_STDIO => "setting the job's output".into(),
        s if s >= child::STAGE_OP => match steps.get((s - child::STAGE_OP) as usize) {
            Some(Step::Bind { src, dst, .. }) => format!("binding {} at {}", src.display(), dst.display()),
            Some(Step::Mkdir(p)) => format!("creating {}", p.display()),
            Some(step) => format!("{step:?}"),
            None => format!("step {s}"),
        },
        s => format!("stage {s}"),
    }
}

/// Starts `command` (its program, arguments and variables) in a new sandbox whose
/// filesystem is `steps` (mounted on the empty directory `root`), with
/// stdio as given, in a new process group; the init is the returned
/// process, whose exit status is the job's.
///
/// Call it from a task on the runtime, not from a blocking thread: the
/// parent-death signal fires when the *thread* that started it ends.
pub(crate) fn spawn(
    native: &Native,
    root: &Path,
    steps: &[Step],
    command: &Invocation,
    stdio: [&OwnedFd; 3],
    extras: &Extras,
) -> io::Result<Started> {
    let (program, args, env) = (&command.program, &command.args, &command.env);
    let mut argv_c = vec![cstr(program.as_os_str().as_bytes())?];
    for a in args {
        argv_c.push(cstr(a)?);
    }
    let envp_c: Vec<CString> = env.iter().map(|(k, v)| cstr(format!("{k}={v}"))).collect::<Result<_, _>>()?;
    let mut argv: Vec<*const std::ffi::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const std::ffi::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    // Above 10, so that no dup2 onto 0-2 overwrites another source, and
    // none is its own target (which would leave it close-on-exec).
    let high: Vec<OwnedFd> =
        stdio.iter().map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 10)).collect::<Result<_, _>>()?;
    let (report_r, report_w) = std::io::pipe()?;
    let (report_r, report_w) = (OwnedFd::from(report_r), OwnedFd::from(report_w));
    let pair = match extras.proxy_port {
        Some(_) => Some(std::os::unix::net::UnixDatagram::pair()?),
        None => None,
    };
    // SAFETY: getpid has no preconditions.
    let me = rustix::process::Pid::from_raw(unsafe { libc::getpid() }).expect("a pid");
    let agent = rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty())?;
    let init_stack = Stack::new(256 * 1024)?;
    let job_stack = Stack::new(64 * 1024)?;
    let (uid_map, gid_map) = match native.job_user {
        Some(_) => (None, None),
        None => {
            // SAFETY: no preconditions.
            let (u, g) = unsafe { (libc::geteuid(), libc::getegid()) };
            (Some(cstr(format!("{u} {u} 1"))?), Some(cstr(format!("{g} {g} 1"))?))
        }
    };
    let plan = ChildPlan {
        uid_map,
        gid_map,
        root: cstr(root.as_os_str().as_bytes())?,
        ops: ops(root, steps)?,
        cgroup_procs: match &extras.limits.cgroup {
            Some(dir) => Some(cstr(dir.join("cgroup.procs").as_os_str().as_bytes())?),
            None => None,
        },
        loopback: extras.no_network,
        listener: match (extras.proxy_port, &pair) {
            (Some(port), Some((_, theirs))) => Some((port, theirs.as_raw_fd())),
            _ => None,
        },
        report: report_w.as_raw_fd(),
        agent: agent.as_raw_fd(),
        stdio: [high[0].as_raw_fd(), high[1].as_raw_fd(), high[2].as_raw_fd()],
        creds: native.job_user.map(|(uid, gid)| Creds { uid, gid }),
        data_limit: extras.limits.data_limit,
        cpus: extras.limits.cpus,
        program: argv_c[0].clone(),
        argv,
        envp,
        job_stack_top: job_stack.top(),
    };
    let mut flags = libc::CLONE_VM | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::SIGCHLD;
    if native.job_user.is_none() {
        flags |= libc::CLONE_NEWUSER;
    }
    if extras.no_network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: every signal is blocked around the clone (and restored
    // after), so the init runs no handler of ours; it reads `plan`, which
    // lives until its report has come or it is dead (below), and runs on
    // its own stack, kept until it is reaped.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(child::init, init_stack.top(), flags, &plan as *const ChildPlan as *mut c_void);
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(io::Error::new(err.kind(), format!("cannot create the job's namespaces: {err}")));
        }
        pid
    };
    drop(report_w);
    let p = rustix::process::Pid::from_raw(pid).expect("clone returned a pid");
    let kill_and_reap = || {
        // SAFETY: our own unreaped child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut 0, 0);
        }
    };
    // The report: eight bytes, or nothing when the init died first.
    let report = read_report(&report_r);
    match report {
        Some((child::STAGE_OK, _)) => {}
        Some((stage, errno)) => {
            kill_and_reap();
            let e = io::Error::from_raw_os_error(errno);
            return Err(io::Error::new(e.kind(), format!("sandbox setup failed {}: {e}", describe(stage, steps))));
        }
        None => {
            kill_and_reap();
            return Err(io::Error::other("the sandbox's init ended before setting up the job"));
        }
    }
    drop(plan);
    drop(job_stack);
    let listener = match pair {
        Some((ours, _theirs)) => Some(receive_listener(&ours)?),
        None => None,
    };
    let pidfd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            kill_and_reap();
            return Err(e.into());
        }
    };
    Ok(Started { spawned: Spawned { pid: pid as u32, pidfd, stack: Some(init_stack) }, listener })
}

/// Reads the init's report, waiting at most [`SETUP_TIMEOUT`]. Only raw
/// system calls (rustix): the init shares this thread's `errno`.
fn read_report(fd: &OwnedFd) -> Option<(i32, i32)> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut buf = [0u8; 8];
    let mut got = 0;
    let until = std::time::Instant::now() + SETUP_TIMEOUT;
    while got < 8 {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let ts = rustix::event::Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return None,
        }
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    let stage = i32::from_ne_bytes(buf[..4].try_into().ok()?);
    let errno = i32::from_ne_bytes(buf[4..].try_into().ok()?);
    Some((stage, errno))
}

/// The listening socket the init made in the job's network namespace.
fn receive_listener(sock: &std::os::unix::net::UnixDatagram) -> io::Result<std::net::TcpListener> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr() as *mut c_void, iov_len: 1 };
    let mut cbuf = [0u64; 4];
    // SAFETY: a recvmsg into our own zeroed, sized structures; the
    // descriptor it carries is taken into an OwnedFd once.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        if libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::other("the sandbox sent no listener"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32);
        let l = std::net::TcpListener::from(OwnedFd::from_raw_fd(fd));
        l.set_nonblocking(true)?;
        Ok(l)
    }
}

/// Whether this machine lets the agent create the namespaces it needs:
/// a sandbox running `/bin/true` once. The error names the setting to
/// change.
pub fn probe(native: &Native) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("podder-probe").tempdir()?;
    let root = dir.path().join("root");
    let (code, output) = (dir.path().join("code"), dir.path().join("output"));
    for d in [&root, &code, &output] {
        std::fs::create_dir_all(d)?;
    }
    let plan = crate::executor::JobPlan::new(String::new(), code, output, crate::Sandbox::None);
    let steps = layout::steps(&plan);
    let null = crate::spawn::dev_null()?;
    let extras = Extras { no_network: true, proxy_port: None, limits: limits::Applied::default() };
    let run = || -> io::Result<std::process::ExitStatus> {
        let cmd = Invocation { program: "/bin/true".into(), args: vec![], env: vec![], cwd: None };
        let s = spawn(native, &root, &steps, &cmd, [&null, &null, &null], &extras)?;
        let pid = s.spawned.pid as libc::pid_t;
        let mut status = 0;
        // SAFETY: our own child, waited for once.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        use std::os::unix::process::ExitStatusExt;
        Ok(std::process::ExitStatus::from_raw(status))
    };
    match run() {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => anyhow::bail!("a test sandbox ended with {st}"),
        Err(e) => Err(anyhow::anyhow!("{}", userns_advice(native, &e))),
    }
}

/// The error of a failed probe, with what to change on this machine.
fn userns_advice(native: &Native, e: &io::Error) -> String {
    let mut s = format!("the job sandbox cannot be created here ({e})");
    if native.job_user.is_none() {
        let setting = |p: &str| std::fs::read_to_string(p).ok().map(|v| v.trim().to_string());
        s.push_str(": jobs of an agent that is not root need user namespaces");
        if let Some(v) = setting("/proc/sys/kernel/unprivileged_userns_clone")
            && v == "0"
        {
            s.push_str("; enable them with `sysctl -w kernel.unprivileged_userns_clone=1`");
        }
        if let Some(v) = setting("/proc/sys/user/max_user_namespaces")
            && v == "0"
        {
            s.push_str("; allow them with `sysctl -w user.max_user_namespaces=15000`");
        }
        if let Some(v) = setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            && v == "1"
        {
            s.push_str(
                "; AppArmor restricts them: `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` \
                 (or an AppArmor profile for podder)",
            );
        }
        s.push_str("; or run the agent as root");
    }
    s.push_str(". To run jobs without any isolation instead, start the agent with `--sandbox none`");
    s
}

/// Gives a root agent's job user its writable directories.
pub(crate) fn give_dirs(native: &Native, dirs: &[&Path]) -> io::Result<()> {
    let Some((uid, gid)) = native.job_user else { return Ok(()) };
    for d in dirs {
        chown_tree(d, uid, gid)?;
    }
    Ok(())
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The empty directory a job's root is mounted on, beside its code.
pub(crate) fn root_dir(code_dir: &Path) -> PathBuf {
    code_dir.with_file_name(".sandbox-root")
}
