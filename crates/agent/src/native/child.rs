//! The two processes of a native sandbox, between `clone` and `exec`.
//!
//! The agent clones the sandbox's *init* with `CLONE_VM` (no `fork`: the
//! agent's page tables are not copied) and new mount, PID, IPC and — for
//! `--no-network` — network namespaces, plus a user namespace when the
//! agent is not root. The init is PID 1 of the job: it builds the job's
//! root (see [`Op`]), pivots into it, then clones the job's process with
//! `CLONE_VM | CLONE_VFORK`, which drops to the job's user, sets its
//! limits and execs `/bin/sh`. The init reports to the agent on a pipe and
//! stays as the namespace's reaper: when the job's process exits, the init
//! exits with its status and the kernel kills whatever is left in the
//! namespace, so waiting for the init waits for the whole job.
//!
//! Both run on memory the agent prepared ([`ChildPlan`]) and make plain
//! system calls only: no allocation, no locks, no panics. Until the init
//! has reported, the agent's thread that cloned it waits in `poll`; the
//! init shares that thread's TLS (so its `errno`), and after reporting it
//! only calls rustix's raw `waitpid` and `_exit`, which do not touch it.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::fd::RawFd;

/// One step of building the job's root, run in order by the init.
pub(crate) enum Op {
    /// `mkdir` (an existing directory is fine).
    Mkdir(CString),
    /// An empty file to bind a device or a hidden file onto.
    Touch(CString),
    /// A recursive bind mount; `ro` makes it (and what is under it)
    /// read-only. Every bind is nosuid.
    Bind {
        src: CString,
        dst: CString,
        ro: bool,
        dev: bool,
    },
    /// A fresh tmpfs with these options (`mode=...`).
    Tmpfs {
        dst: CString,
        opts: CString,
    },
    /// The job's own `/proc`.
    Proc(CString),
    Symlink {
        target: CString,
        link: CString,
    },
}

/// The credentials the job's process takes (the agent runs as root): a
/// plain unprivileged user, no supplementary groups.
#[derive(Clone, Copy)]
pub(crate) struct Creds {
    pub uid: u32,
    pub gid: u32,
}

/// Everything the init and the job's process need, prepared by the agent.
pub(crate) struct ChildPlan {
    /// Unprivileged agents: the identity maps written by the init into its
    /// new user namespace (`"UID UID 1"`).
    pub uid_map: Option<CString>,
    pub gid_map: Option<CString>,
    /// The directory the new root's tmpfs is mounted on.
    pub root: CString,
    pub ops: Vec<Op>,
    /// `cgroup.procs` of the job's cgroup (cgroup v2), joined first.
    pub cgroup_procs: Option<CString>,
    /// Bring up `lo` (the job has a network namespace of its own).
    pub loopback: bool,
    /// A listener made inside the job's network namespace on this
    /// 127.0.0.1 port, sent to the agent over `listener_to` (SCM_RIGHTS).
    pub listener: Option<(u16, RawFd)>,
    /// Where the init reports: [`Report`] as two native-endian i32.
    pub report: RawFd,
    /// A pidfd of the agent: readable once it is gone.
    pub agent: RawFd,
    /// The job's stdin, stdout and stderr (duplicated onto 0–2).
    pub stdio: [RawFd; 3],
    pub creds: Option<Creds>,
    /// RLIMIT_DATA, the per-process memory limit where no cgroup is.
    pub data_limit: Option<u64>,
    /// CPU affinity, where no cgroup limits the CPU.
    pub cpus: Option<libc::cpu_set_t>,
    pub program: CString,
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
    /// The job process's stack (it runs on it until its `exec`).
    pub job_stack_top: *mut c_void,
}

/// Where setup failed: stage and errno.
pub(crate) const STAGE_OK: i32 = 0;
pub(crate) const STAGE_UID_MAP: i32 = 1;
pub(crate) const STAGE_GID_MAP: i32 = 2;
pub(crate) const STAGE_PRIVATE: i32 = 3;
pub(crate) const STAGE_ROOT: i32 = 4;
pub(crate) const STAGE_PIVOT: i32 = 5;
pub(crate) const STAGE_LOOPBACK: i32 = 6;
pub(crate) const STAGE_LISTENER: i32 = 7;
pub(crate) const STAGE_CGROUP: i32 = 8;
pub(crate) const STAGE_CLONE: i32 = 9;
pub(crate) const STAGE_AGENT_GONE: i32 = 10;
pub(crate) const STAGE_DEATHSIG: i32 = 11;
/// The job's process failed before `exec` (errno is its).
pub(crate) const STAGE_JOB_CREDS: i32 = 20;
pub(crate) const STAGE_JOB_LIMITS: i32 = 21;
pub(crate) const STAGE_JOB_EXEC: i32 = 22;
pub(crate) const STAGE_JOB_STDIO: i32 = 23;
/// Op `i` failed: `STAGE_OP + i`.
pub(crate) const STAGE_OP: i32 = 1000;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: c_int = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn errno() -> c_int {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Reports (stage, errno) to the agent.
unsafe fn report(fd: RawFd, stage: i32, err: i32) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&stage.to_ne_bytes());
    buf[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: a plain write of our buffer.
    unsafe { libc::write(fd, buf.as_ptr() as *const c_void, 8) };
}

unsafe fn write_file(path: &CStr, data: &[u8]) -> c_int {
    // SAFETY: plain system calls on valid pointers.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return errno();
        }
        let n = libc::write(fd, data.as_ptr() as *const c_void, data.len());
        let e = if n < 0 { errno() } else { 0 };
        libc::close(fd);
        e
    }
}

/// Makes the mount at `path` read-only (and everything under it, with
/// `recursive`), adding nosuid/nodev; older kernels without
/// `mount_setattr` get a remount of the top mount that keeps its flags.
unsafe fn set_attrs(path: &CStr, ro: bool, nodev: bool, recursive: bool) -> c_int {
    let mut set = MOUNT_ATTR_NOSUID;
    if ro {
        set |= MOUNT_ATTR_RDONLY;
    }
    if nodev {
        set |= MOUNT_ATTR_NODEV;
    }
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: plain system calls on valid pointers.
    unsafe {
        let r = libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        );
        if r == 0 {
            return 0;
        }
        if errno() != libc::ENOSYS {
            return errno();
        }
        // A remount must keep the flags a less privileged mount may not drop.
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) < 0 {
            return errno();
        }
        let mut f: libc::c_ulong = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID;
        for (st_flag, ms) in [
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st.f_flag & st_flag != 0 {
                f |= ms;
            }
        }
        if ro {
            f |= libc::MS_RDONLY;
        }
        if nodev {
            f |= libc::MS_NODEV;
        }
        if libc::mount(std::ptr::null(), path.as_ptr(), std::ptr::null(), f, std::ptr::null()) < 0 {
            return errno();
        }
        0
    }
}

unsafe fn run_op(op: &Op) -> c_int {
    let null = std::ptr::null::<c_char>();
    // SAFETY: plain system calls on valid, NUL-terminated strings.
    unsafe {
        match op {
            Op::Mkdir(p) => {
                if libc::mkdir(p.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                    return errno();
                }
                0
            }
            Op::Touch(p) => {
                let fd = libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                if fd < 0 {
                    return errno();
                }
                libc::close(fd);
                0
            }
            Op::Bind { src, dst, ro, dev } => {
                if libc::mount(src.as_ptr(), dst.as_ptr(), null, libc::MS_BIND | libc::MS_REC, null as *const c_void)
                    < 0
                {
                    return errno();
                }
                set_attrs(dst, *ro, !*dev, true)
            }
            Op::Tmpfs { dst, opts } => {
                let fstype = c"tmpfs";
                let flags = libc::MS_NOSUID | libc::MS_NODEV;
                if libc::mount(fstype.as_ptr(), dst.as_ptr(), fstype.as_ptr(), flags, opts.as_ptr() as *const c_void)
                    < 0
                {
                    return errno();
                }
                0
            }
            Op::Proc(dst) => {
                let fstype = c"proc";
                let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                if libc::mount(fstype.as_ptr(), dst.as_ptr(), fstype.as_ptr(), flags, null as *const c_void) < 0 {
                    return errno();
                }
                0
            }
            Op::Symlink { target, link } => {
                if libc::symlink(target.as_ptr(), link.as_ptr()) < 0 && errno() != libc::EEXIST {
                    return errno();
                }
                0
            }
        }
    }
}

/// Sets `lo` up in the current network namespace.
unsafe fn loopback_up() -> c_int {
    // SAFETY: plain system calls on a zeroed, filled ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return errno();
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as c_char;
        }
        let mut e = 0;
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            e = errno();
        } else {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as i16;
            if libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) < 0 {
                e = errno();
            }
        }
        libc::close(s);
        e
    }
}

/// Listens on 127.0.0.1:`port` here and sends the socket over `to`.
unsafe fn send_listener(port: u16, to: RawFd) -> c_int {
    // SAFETY: plain system calls on zeroed, filled structures.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return errno();
        }
        let one: c_int = 1;
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const c_int as *const c_void,
            std::mem::size_of::<c_int>() as u32,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(s, &addr as *const libc::sockaddr_in as *const libc::sockaddr, len) < 0
            || libc::listen(s, 128) < 0
        {
            let e = errno();
            libc::close(s);
            return e;
        }
        // One descriptor as SCM_RIGHTS, with one byte of data.
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec { iov_base: byte.as_mut_ptr() as *mut c_void, iov_len: 1 };
        let mut cbuf = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut c_void;
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut c_int, s);
        let r = libc::sendmsg(to, &msg, libc::MSG_NOSIGNAL);
        let e = if r < 0 { errno() } else { 0 };
        libc::close(s);
        e
    }
}

/// Closes every descriptor but those in `keep`: the init shares no
/// descriptor table with the agent but starts with a copy of it, which
/// would keep other jobs' pipes (and everything else) open.
unsafe fn close_others(keep: &mut [c_int]) {
    keep.sort_unstable();
    let mut from: u32 = 0;
    // SAFETY: close_range on ranges of our own table.
    unsafe {
        for &k in keep.iter() {
            let k = k as u32;
            if k > from {
                libc::syscall(libc::SYS_close_range, from, k - 1, 0);
            }
            from = from.max(k + 1);
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
    }
}

/// The init: entered by `clone`, `arg` is the agent's [`ChildPlan`].
pub(crate) extern "C" fn init(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the agent's plan, alive and unchanged until this
    // process reports (the agent waits for the report or for its death).
    unsafe {
        let p = &*(arg as *const ChildPlan);
        let mut keep = [p.report, p.agent, p.stdio[0], p.stdio[1], p.stdio[2], p.listener.map_or(p.report, |l| l.1)];
        close_others(&mut keep);
        let fail = |stage: i32, e: c_int| -> c_int {
            report(p.report, stage, if e == 0 { libc::EIO } else { e });
            libc::_exit(127)
        };
        // A process group of its own, which the job's processes join: the
        // agent stops and kills the job through it.
        if libc::setpgid(0, 0) < 0 {
            return fail(STAGE_DEATHSIG, errno());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
            return fail(STAGE_DEATHSIG, errno());
        }
        // The agent may have died before the signal was armed.
        let mut pfd = libc::pollfd { fd: p.agent, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut pfd, 1, 0) != 0 {
            return fail(STAGE_AGENT_GONE, libc::ESRCH);
        }
        if let Some(procs) = &p.cgroup_procs {
            let e = write_file(procs, b"0");
            if e != 0 {
                return fail(STAGE_CGROUP, e);
            }
        }
        if let (Some(u), Some(g)) = (&p.uid_map, &p.gid_map) {
            // Without setgroups denied, an unprivileged gid_map is refused.
            let _ = write_file(c"/proc/self/setgroups", b"deny");
            let e = write_file(c"/proc/self/uid_map", u.as_bytes());
            if e != 0 {
                return fail(STAGE_UID_MAP, e);
            }
            let e = write_file(c"/proc/self/gid_map", g.as_bytes());
            if e != 0 {
                return fail(STAGE_GID_MAP, e);
            }
        }
        let null = std::ptr::null::<c_char>();
        if libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, null as *const c_void) < 0 {
            return fail(STAGE_PRIVATE, errno());
        }
        let tmpfs = c"tmpfs";
        if libc::mount(
            tmpfs.as_ptr(),
            p.root.as_ptr(),
            tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr() as *const c_void,
        ) < 0
        {
            return fail(STAGE_ROOT, errno());
        }
        for (i, op) in p.ops.iter().enumerate() {
            let e = run_op(op);
            if e != 0 {
                return fail(STAGE_OP + i as i32, e);
            }
        }
        if p.loopback {
            let e = loopback_up();
            if e != 0 {
                return fail(STAGE_LOOPBACK, e);
            }
        }
        if let Some((port, to)) = p.listener {
            let e = send_listener(port, to);
            if e != 0 {
                return fail(STAGE_LISTENER, e);
            }
        }
        // The root itself read-only, then into it; the old root goes.
        let e = set_attrs(&p.root, true, true, false);
        if e != 0 {
            return fail(STAGE_PIVOT, e);
        }
        if libc::chdir(p.root.as_ptr()) < 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0
            || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0
            || libc::chdir(c"/code".as_ptr()) < 0
        {
            return fail(STAGE_PIVOT, errno());
        }
        // The job's process: it runs on its own stack until its exec, while
        // this process waits (CLONE_VFORK); a failure comes back in `job_err`.
        let mut job_err: [c_int; 2] = [0, 0];
        let job_args = JobArgs { plan: p, err: &mut job_err };
        let pid = libc::clone(
            job,
            p.job_stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &job_args as *const JobArgs as *mut c_void,
        );
        if pid < 0 {
            return fail(STAGE_CLONE, errno());
        }
        let job_err = std::ptr::read_volatile(&job_err);
        for fd in [p.agent, p.stdio[0], p.stdio[1], p.stdio[2], p.listener.map_or(-1, |l| l.1)] {
            if fd >= 0 {
                libc::close(fd);
            }
        }
        if job_err[0] != 0 {
            report(p.report, job_err[0], job_err[1]);
            libc::_exit(127);
        }
        let report_fd = p.report;
        report(report_fd, STAGE_OK, 0);
        libc::close(report_fd);
        // From here on, `p` may be gone: only locals, and no errno.
        reap(pid)
    }
}

/// PID 1's loop: reaps every child, and exits with the job process's
/// status (128 + signal when a signal ended it).
fn reap(job: c_int) -> ! {
    use rustix::process::{WaitOptions, waitpid};
    let code = loop {
        match waitpid(None, WaitOptions::empty()) {
            Ok(Some((pid, st))) if pid.as_raw_nonzero().get() == job => {
                if let Some(c) = st.exit_status() {
                    break c;
                }
                if let Some(s) = st.terminating_signal() {
                    break 128 + s;
                }
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break 127,
        }
    };
    // SAFETY: ends this process (exit_group); nothing else runs here.
    unsafe { libc::_exit(code) }
}

struct JobArgs<'a> {
    plan: &'a ChildPlan,
    err: *mut [c_int; 2],
}

/// The job's process, between its clone and its exec.
extern "C" fn job(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the init's `JobArgs`, alive until this process
    // execs or exits (CLONE_VFORK); plain system calls only.
    unsafe {
        let a = &*(arg as *const JobArgs);
        let p = a.plan;
        let fail = |stage: i32, e: c_int| -> c_int {
            *a.err = [stage, if e == 0 { libc::EIO } else { e }];
            libc::_exit(127)
        };
        for (to, &from) in p.stdio.iter().enumerate() {
            if libc::dup2(from, to as c_int) < 0 {
                return fail(STAGE_JOB_STDIO, errno());
            }
        }
        if let Some(c) = p.creds {
            // Raw system calls: glibc's wrappers would change every thread
            // of the agent, whose memory this process shares.
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
                || libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid) < 0
                || libc::syscall(libc::SYS_setresuid, c.uid, c.uid, c.uid) < 0
            {
                return fail(STAGE_JOB_CREDS, errno());
            }
            // The uid change made the shared memory undumpable (the agent's
            // too, until the exec gives this process its own).
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        }
        // No setuid program may give the job more than it has.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return fail(STAGE_JOB_CREDS, errno());
        }
        if let Some(bytes) = p.data_limit {
            let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) < 0 {
                return fail(STAGE_JOB_LIMITS, errno());
            }
        }
        if let Some(set) = &p.cpus
            && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) < 0
        {
            return fail(STAGE_JOB_LIMITS, errno());
        }
        // Handlers back to the defaults, then nothing blocked.
        crate::spawn::default_signals();
        libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(STAGE_JOB_EXEC, errno())
    }
}
