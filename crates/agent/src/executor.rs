//! Running one job's process: spawning it (in its own process group, with
//! SIGKILL as its parent-death signal), reading its output into the log,
//! enforcing its timeout, stopping it (SIGTERM to the group, then SIGKILL
//! after a grace period), and reporting how it ended.
//!
//! This module knows nothing of the server: it runs a [`JobPlan`] and hands
//! back a [`Running`] handle, so it can be tested alone.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use podder_core::MountPath;
use podder_core::api::Stream;
use rustix::process::{Signal, getppid, set_parent_process_death_signal};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::logs::{LogSink, read_lines};
pub use crate::native::limits::Limits;
pub use crate::native::proxy::JobServer;
use crate::native::{self, limits};
use crate::sandbox::{self, Sandbox, UNSANDBOXED_WARNING};
use crate::signals;
use crate::spawn as vspawn;

/// How long the output readers may take after the process ended (a stray
/// process outside the group may still hold the pipes).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything needed to run one job's process.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// Shell text run by `/bin/sh -c` (see [`sandbox::build_script`]).
    pub script: String,
    /// Variables besides `PATH`, `HOME`, `LANG`, `PYTHONUNBUFFERED` and the
    /// path variables (`PODDER_CODE`, `PODDER_OUTPUT`, `PODDER_MOUNT_*`),
    /// which the executor sets itself.
    pub env: Vec<(String, String)>,
    /// The job's writable code directory (`/code` in the sandbox).
    pub code_dir: PathBuf,
    /// The job's writable output directory (`/output` in the sandbox).
    pub output_dir: PathBuf,
    /// Read-only input trees and where they appear.
    pub inputs: Vec<(PathBuf, MountPath)>,
    /// Host paths never visible to the job (hidden where they lie inside a
    /// directory that the sandbox shows).
    pub hide: Vec<PathBuf>,
    /// Host directories shown read-only at the same path, even inside a
    /// hidden one (a requirement environment's venv in the work directory).
    pub extra_ro: Vec<PathBuf>,
    pub sandbox: Sandbox,
    /// Stop the job (as a failure) after this long.
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// `--cpus` and `--memory` (see [`crate::native::limits`]).
    pub limits: Limits,
    /// `--no-network`: loopback only (and the job's server, through
    /// [`crate::native::proxy`]).
    pub no_network: bool,
    /// The job's server, given to it as `PODDER_SERVER`.
    pub server: Option<JobServer>,
}

impl JobPlan {
    /// A plan running `script` in these directories, with no inputs,
    /// variables or limits, and a 10 s stop grace.
    pub fn new(script: String, code_dir: PathBuf, output_dir: PathBuf, sandbox: Sandbox) -> JobPlan {
        JobPlan {
            script,
            env: Vec::new(),
            code_dir,
            output_dir,
            inputs: Vec::new(),
            hide: Vec::new(),
            extra_ro: Vec::new(),
            sandbox,
            timeout: None,
            stop_grace: Duration::from_secs(10),
            limits: Limits::default(),
            no_network: false,
            server: None,
        }
    }
}

/// Why the process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// By itself.
    Exited,
    /// After [`Running::stop`].
    Stopped,
    /// After [`Running::kill`] (or the handle was dropped).
    Killed,
    /// Its timeout expired.
    TimedOut,
}

/// How a job's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatusInfo {
    /// The exit code, or 128 + the signal that killed it.
    pub code: i32,
    /// The signal, when the process was killed by one (under bubblewrap the
    /// sandbox reports it as the exit code 128 + signal instead).
    pub signal: Option<i32>,
    pub ending: Ending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Request {
    Run,
    Stop,
    Kill,
}

/// A running job: a process group, or a container (see
/// [`crate::docker_exec`]). Dropping it kills the job.
pub struct Running {
    pid: u32,
    container: Option<String>,
    requests: watch::Sender<Request>,
    done: watch::Receiver<Option<ExitStatusInfo>>,
    /// Becomes true once what the job leaves behind (its container) is gone.
    released: Option<watch::Receiver<bool>>,
}

/// The supervising side of a [`Running`], for executors in this crate.
pub(crate) struct Supervised {
    pub requests: watch::Receiver<Request>,
    pub done: watch::Sender<Option<ExitStatusInfo>>,
    pub released: watch::Sender<bool>,
}

impl Running {
    /// A handle for a container; the executor drives the other side.
    pub(crate) fn for_container(id: String) -> (Running, Supervised) {
        let (requests, req_rx) = watch::channel(Request::Run);
        let (done_tx, done) = watch::channel(None);
        let (rel_tx, rel_rx) = watch::channel(false);
        let running = Running { pid: 0, container: Some(id), requests, done, released: Some(rel_rx) };
        (running, Supervised { requests: req_rx, done: done_tx, released: rel_tx })
    }

    /// The pid of the spawned process, which is also the process group id
    /// (0 for a container).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container's id, when the job runs in one.
    pub fn container(&self) -> Option<&str> {
        self.container.as_deref()
    }

    /// Lets go of an ended job: its container (if any) is removed, and this
    /// returns once it is. Call it after the output was captured.
    pub async fn release(self) {
        let Running { requests, released, .. } = self;
        drop(requests);
        if let Some(mut r) = released {
            let _ = r.wait_for(|gone| *gone).await;
        }
    }

    /// Asks the job to stop: SIGTERM to its processes, SIGKILL to the group
    /// after the grace period. Returns at once; see [`wait`](Self::wait).
    pub fn stop(&self) {
        self.escalate(Request::Stop);
    }

    /// Kills the whole process group with SIGKILL at once.
    pub fn kill(&self) {
        self.escalate(Request::Kill);
    }

    fn escalate(&self, to: Request) {
        self.requests.send_if_modified(|r| {
            let more = *r < to;
            if more {
                *r = to;
            }
            more
        });
    }

    /// Waits until the process has ended and its output has been read.
    /// May be called again, and cancelled, safely.
    pub async fn wait(&self) -> ExitStatusInfo {
        let mut done = self.done.clone();
        match done.wait_for(Option::is_some).await {
            Ok(info) => info.clone().expect("checked by wait_for"),
            // The supervisor died without a result (it panicked).
            Err(_) => ExitStatusInfo { code: -1, signal: None, ending: Ending::Killed },
        }
    }
}

/// Starts the job. Its stdout and stderr, and the executor's own notes
/// (the unsandboxed warning, stop and timeout notices), go to `log`.
///
/// Call it from a task on the runtime, not from a blocking thread: the
/// parent-death signal fires when the *thread* that spawned the process ends.
pub async fn spawn(plan: JobPlan, log: LogSink) -> std::io::Result<Running> {
    let applied = limits::apply(&plan.limits).map_err(std::io::Error::other)?;
    if matches!(plan.sandbox, Sandbox::None) {
        tracing::warn!(code = %plan.code_dir.display(), "{UNSANDBOXED_WARNING}");
        log.system(UNSANDBOXED_WARNING).await;
        if plan.no_network {
            return Err(std::io::Error::other(
                "--no-network needs the job sandbox, and this agent runs jobs unsandboxed (--sandbox none)",
            ));
        }
    }
    if matches!(plan.sandbox, Sandbox::Bubblewrap(_)) && (plan.limits != Limits::default()) {
        return Err(std::io::Error::other(
            "--cpus and --memory are enforced by the native sandbox and docker, not under bubblewrap: \
             start the agent with the default sandbox",
        ));
    }
    for note in &applied.notes {
        log.system(note.clone()).await;
    }
    let mut readers = Vec::new();
    let mut proxy = None;
    let (child, pid, init) = match &plan.sandbox {
        Sandbox::Native(n) => {
            // Started by the agent itself, without fork or a second program
            // (see `native`); its init is the returned process.
            let inv = sandbox::invocation(&plan);
            let root = native::root_dir(&plan.code_dir);
            std::fs::create_dir_all(&root)?;
            native::give_dirs(n, &[&plan.code_dir, &plan.output_dir])?;
            let steps = native::layout::steps(&plan);
            let (out_r, out_w) = vspawn::pipe()?;
            let (err_r, err_w) = vspawn::pipe()?;
            let null = vspawn::dev_null()?;
            let extras = native::Extras {
                no_network: plan.no_network,
                proxy_port: plan.server.as_ref().filter(|_| plan.no_network).map(JobServer::inside_port),
                limits: applied,
            };
            let started = native::spawn(n, &root, &steps, &inv, [&null, &out_w, &err_w], &extras)?;
            drop((out_w, err_w, null));
            if let (Some(l), Some(server)) = (started.listener, &plan.server) {
                proxy = Some(native::proxy::serve(l, server.clone()));
            }
            let pid = started.spawned.pid;
            let process = vspawn::Process::new(started.spawned)?;
            readers.push(tokio::spawn(read_lines(vspawn::reader(out_r)?, Stream::Stdout, log.clone())));
            readers.push(tokio::spawn(read_lines(vspawn::reader(err_r)?, Stream::Stderr, log.clone())));
            (Proc::Spawned(process), pid, None)
        }
        Sandbox::Bubblewrap(_) => {
            // Under bubblewrap: started without fork (see `spawn`), with the
            // write end of a pipe as the child's `INFO_FD`, on which bwrap
            // names its sandbox's init (see `SandboxInit`).
            let inv = sandbox::invocation(&plan);
            let (out_r, out_w) = vspawn::pipe()?;
            let (err_r, err_w) = vspawn::pipe()?;
            let (info_r, info_w) = std::io::pipe()?;
            let info_w = std::os::fd::OwnedFd::from(info_w);
            let null = vspawn::dev_null()?;
            let started = vspawn::spawn(&inv.program, &inv.args, &inv.env, [&null, &out_w, &err_w], Some(&info_w))?;
            drop((out_w, err_w, info_w, null));
            let pid = started.pid;
            let process = vspawn::Process::new(started)?;
            readers.push(tokio::spawn(read_lines(vspawn::reader(out_r)?, Stream::Stdout, log.clone())));
            readers.push(tokio::spawn(read_lines(vspawn::reader(err_r)?, Stream::Stderr, log.clone())));
            (Proc::Spawned(process), pid, Some(SandboxInit::read(info_r)))
        }
        Sandbox::None => {
            let mut cmd = sandbox::command(&plan);
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
            let parent = rustix::process::getpid();
            let (data_limit, cpus) = (applied.data_limit, applied.cpus);
            // SAFETY: the closure only makes async-signal-safe system calls
            // (prctl, getppid, setrlimit, sched_setaffinity) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    set_parent_process_death_signal(Some(Signal::KILL))?;
                    // The agent may have died before the signal was armed.
                    if getppid() != Some(parent) {
                        return Err(std::io::Error::other("the agent exited"));
                    }
                    if let Some(b) = data_limit {
                        let lim = libc::rlimit { rlim_cur: b, rlim_max: b };
                        if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if let Some(set) = &cpus
                        && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn()?;
            let pid = child.id().ok_or_else(|| std::io::Error::other("the job's process ended before it started"))?;
            if let Some(out) = child.stdout.take() {
                readers.push(tokio::spawn(read_lines(out, Stream::Stdout, log.clone())));
            }
            if let Some(err) = child.stderr.take() {
                readers.push(tokio::spawn(read_lines(err, Stream::Stderr, log.clone())));
            }
            (Proc::Child(child), pid, None)
        }
    };
    let (requests, req_rx) = watch::channel(Request::Run);
    let (done_tx, done) = watch::channel(None);
    let sup = Supervisor {
        pid,
        // bwrap's outer process must not get SIGTERM (see `signals::terminate`).
        spare_leader: matches!(plan.sandbox, Sandbox::Bubblewrap(_)),
        timeout: plan.timeout,
        grace: plan.stop_grace,
        log,
        init,
    };
    tokio::spawn(async move {
        let info = sup.run(child, req_rx, readers).await;
        if let Some(p) = proxy {
            p.abort();
        }
        let _ = done_tx.send(Some(info));
    });
    Ok(Running { pid, container: None, requests, done, released: None })
}

struct Supervisor {
    pid: u32,
    spare_leader: bool,
    timeout: Option<Duration>,
    grace: Duration,
    log: LogSink,
    /// Under bubblewrap: the sandbox's init, once bwrap has named it.
    init: Option<tokio::sync::oneshot::Receiver<Option<SandboxInit>>>,
}

/// The job's main process: a tokio child (unsandboxed), or bwrap started by
/// [`spawn`].
enum Proc {
    Child(Child),
    Spawned(vspawn::Process),
}

impl Proc {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Proc::Child(c) => c.wait().await,
            Proc::Spawned(p) => p.wait().await,
        }
    }
}

/// The init process of a bubblewrap sandbox (pid 1 of its pid namespace),
/// as bwrap reports it on `--info-fd`: a pidfd on it. Every process of the
/// job lives in that namespace, and the kernel kills them all when the init
/// dies, and the init is dead only once they all are: so waiting for the
/// init alone waits for the whole job, without scanning `/proc` for the
/// group's members.
struct SandboxInit(std::os::fd::OwnedFd);

impl SandboxInit {
    /// Reads bwrap's report on a blocking thread (bwrap writes it once the
    /// sandbox is set up; a bwrap that fails earlier closes the pipe).
    fn read(r: std::io::PipeReader) -> tokio::sync::oneshot::Receiver<Option<SandboxInit>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(Self::read_blocking(r));
        });
        rx
    }

    fn read_blocking(mut r: std::io::PipeReader) -> Option<SandboxInit> {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        // `{"child-pid": N, ...}`: read up to its closing brace.
        while !buf.contains(&b'}') && buf.len() < 4096 {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.iter().position(|b| *b == b'}')?;
        let v: serde_json::Value = serde_json::from_slice(&buf[..=end]).ok()?;
        let pid = i32::try_from(v.get("child-pid")?.as_u64()?).ok()?;
        let p = rustix::process::Pid::from_raw(pid)?;
        rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK).ok().map(SandboxInit)
    }
}

impl Supervisor {
    async fn run(
        mut self,
        mut child: Proc,
        mut req: watch::Receiver<Request>,
        readers: Vec<JoinHandle<()>>,
    ) -> ExitStatusInfo {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut ending = Ending::Exited;
        let mut kill_at: Option<Instant> = None;
        let mut req_open = true;
        let status = loop {
            tokio::select! {
                st = child.wait() => break st,
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && ending == Ending::Exited => {
                    ending = Ending::TimedOut;
                    let secs = self.timeout.unwrap_or_default().as_secs();
                    self.log.system(format!("timed out after {secs} s: stopping the job")).await;
                    kill_at = Some(self.terminate());
                }
                r = req.changed(), if req_open => {
                    let r = if r.is_ok() { *req.borrow_and_update() } else { req_open = false; Request::Kill };
                    match r {
                        Request::Run => {}
                        Request::Stop if ending == Ending::Exited => {
                            ending = Ending::Stopped;
                            self.log.system("stop requested: sending SIGTERM to the job").await;
                            kill_at = Some(self.terminate());
                        }
                        Request::Stop => {}
                        Request::Kill => {
                            if ending == Ending::Exited {
                                ending = Ending::Killed;
                            }
                            signals::kill(self.pid);
                        }
                    }
                }
                _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                    kill_at = None;
                    let secs = self.grace.as_secs_f64();
                    self.log.system(format!("the job still runs {secs:.0} s after SIGTERM: sending SIGKILL")).await;
                    signals::kill(self.pid);
                }
            }
        };
        // Whatever the main process left behind in its group goes with it;
        // wait (briefly) until the kernel has taken every one of them down.
        // Under bubblewrap the outer bwrap exits as soon as it knows the
        // job's status, while the sandbox's init is still exiting: wait for
        // that init (see `SandboxInit`). Otherwise (unsandboxed, or bwrap
        // never named its init) the group's members are listed once — after
        // the kill no process joins the group — and each is waited for.
        let exited = Instant::now();
        let until = exited + DRAIN_TIMEOUT;
        signals::kill(self.pid);
        let init = match self.init.take() {
            Some(rx) => tokio::time::timeout_at(until, rx).await.ok().and_then(Result::ok).flatten(),
            None => None,
        };
        let waited = match init {
            Some(SandboxInit(pidfd)) => match tokio::time::timeout_at(until, signals::pidfd_exit(pidfd)).await {
                Ok(watched) => watched,
                Err(_) => {
                    tracing::warn!(pid = self.pid, "the job's sandbox was still exiting after the drain timeout");
                    true
                }
            },
            None => false,
        };
        if !waited && signals::group_exists(self.pid) {
            let left = signals::group_members(self.pid);
            let waits: Vec<_> = left.into_iter().filter_map(|pid| signals::exit_of(pid, self.pid)).collect();
            let all = async {
                for w in waits {
                    w.await;
                }
            };
            if tokio::time::timeout_at(until, all).await.is_err() {
                tracing::warn!(pid = self.pid, "the job's processes were still exiting after the drain timeout");
            }
        }
        let group_gone = exited.elapsed();
        for r in readers {
            let abort = r.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, r).await.is_err() {
                tracing::warn!(pid = self.pid, "a process outside the job's group holds its output open");
                abort.abort();
            }
        }
        tracing::debug!(pid = self.pid, group_gone = ?group_gone, drained = ?exited.elapsed(), "the job's processes are gone");
        match status {
            Ok(st) => match (st.code(), st.signal()) {
                (Some(code), _) => ExitStatusInfo { code, signal: None, ending },
                (None, Some(sig)) => ExitStatusInfo { code: 128 + sig, signal: Some(sig), ending },
                (None, None) => ExitStatusInfo { code: -1, signal: None, ending },
            },
            Err(e) => {
                tracing::error!(pid = self.pid, "waiting for the job's process failed: {e}");
                ExitStatusInfo { code: -1, signal: None, ending }
            }
        }
    }

    /// Sends SIGTERM and returns when SIGKILL is due.
    fn terminate(&self) -> Instant {
        signals::terminate(self.pid, self.spare_leader);
        Instant::now() + self.grace
    }
}
