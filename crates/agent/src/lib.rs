//! The podder agent: the worker process that pulls jobs from the server and
//! runs them.
//!
//! [`run_agent`] owns the agent's slots: each free slot long-polls the
//! server for a lease, and runs what it gets to its end (module `job`),
//! through the work directory's caches (modules `prepare` and `cache`),
//! the executor ([`executor`]) and the sandbox ([`sandbox`]). The agent
//! talks to the server only through [`podder_client::Client`].

mod build_job;
mod cache;
pub mod docker_exec;
mod envs;
pub mod executor;
mod heartbeat;
mod images;
pub mod inventory;
mod job;
pub mod logs;
pub mod native;
mod prepare;
mod retry;
pub mod sandbox;
pub mod signals;
mod spawn;
mod stages;
mod venv;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use podder_client::Client;
use podder_core::api::LeaseRequest;
use podder_core::{ExecutorKind, Gpu};
use tokio::sync::watch;

pub use cache::{DEFAULT_CACHE_MAX, default_cache_bytes};
pub use executor::{Ending, ExitStatusInfo, JobPlan, Running, spawn};
pub use inventory::{detect_gpus, parse_gpus};
pub use logs::LogSink;
pub use sandbox::Sandbox;

/// How jobs are isolated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SandboxMode {
    /// The native sandbox; where this machine cannot create it, the agent
    /// refuses to start and says which setting to change.
    #[default]
    Auto,
    /// The native sandbox (the same as `Auto`).
    Native,
    /// bubblewrap, or the agent refuses to start.
    Bubblewrap,
    /// Run jobs directly on the host (each job's log says so).
    None,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The agent's name, as the server shows it.
    pub name: String,
    /// The queue it takes jobs from.
    pub queue: String,
    /// How many jobs it runs at once.
    pub slots: usize,
    /// Caches and the jobs' directories (see the `prepare` module).
    pub work_dir: PathBuf,
    /// Host paths never visible to jobs (e.g. the server's data directory).
    /// The work directory is always hidden too.
    pub hide_paths: Vec<PathBuf>,
    pub sandbox: SandboxMode,
    /// Between SIGTERM and SIGKILL when a job is stopped.
    pub stop_grace: Duration,
    /// How long one lease request waits on the server for work.
    pub lease_wait_ms: u64,
    /// The most bytes the cache in the work directory may hold: the
    /// materialized input trees and the chunk cache together, evicted least
    /// recently used first. Trees that jobs are using are never evicted, so
    /// the cache may go over while they run. `None` (the default): the
    /// smaller of 50 GiB and a quarter of the work directory's filesystem
    /// ([`default_cache_bytes`]).
    pub cache_bytes: Option<u64>,
    /// How jobs run: `Process` (the default; bubblewrap per [`sandbox`](Self::sandbox))
    /// or `Docker` (a container per job on the local Docker engine; see
    /// [`docker_exec`]). Sent to the server in the inventory, which places
    /// jobs that need Docker only on docker agents.
    pub executor: ExecutorKind,
    /// The GPUs this agent offers (`--gpus auto|none|0,1`, see
    /// [`parse_gpus`]). The server assigns a job concrete indices from
    /// these; the process executor passes them in `CUDA_VISIBLE_DEVICES`,
    /// the docker executor as a DeviceRequest.
    pub gpus: Vec<Gpu>,
    /// The user docker jobs run as (`uid:gid`, default `1000:1000`): the
    /// job's code and output directories are given to it.
    pub docker_user: String,
    /// The image of docker jobs without an environment, and the base of
    /// requirements-only environments (default `python:3.11-slim`).
    pub default_image: String,
    /// The memory this agent offers, in bytes. `None`: the machine's
    /// (`MemTotal` of `/proc/meminfo`).
    pub memory_bytes: Option<u64>,
    /// The Python that makes the virtual environments of requirement
    /// environments (process executor). `None`: `/usr/bin/python3` when
    /// present (it is visible inside the sandbox), else `python3` on `PATH`.
    pub venv_python: Option<PathBuf>,
}

impl AgentConfig {
    /// A configuration with one slot on queue `default`, sandbox `Auto`,
    /// a 10 s stop grace, 30 s lease polls and the default cache limit.
    pub fn new(name: impl Into<String>, work_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            queue: "default".into(),
            slots: 1,
            work_dir: work_dir.into(),
            hide_paths: Vec::new(),
            sandbox: SandboxMode::Auto,
            stop_grace: Duration::from_secs(10),
            lease_wait_ms: 30_000,
            cache_bytes: None,
            executor: ExecutorKind::Process,
            gpus: Vec::new(),
            docker_user: DEFAULT_DOCKER_USER.into(),
            default_image: DEFAULT_IMAGE.into(),
            memory_bytes: None,
            venv_python: None,
        }
    }
}

/// The default of [`AgentConfig::docker_user`].
pub const DEFAULT_DOCKER_USER: &str = "1000:1000";
/// The default of [`AgentConfig::default_image`].
pub const DEFAULT_IMAGE: &str = "python:3.11-slim";
/// The label naming the job of a container (`owner/project#n`).
pub const LABEL_JOB: &str = "podder.job";
/// The label naming the agent that made a container; an agent removes every
/// container with its own name at start (the orphans of a crashed run).
pub const LABEL_AGENT: &str = "podder.agent";

/// What every job task of one agent shares.
pub(crate) struct Shared {
    pub client: Client,
    pub config: AgentConfig,
    pub sandbox: Sandbox,
    pub workspace: prepare::Workspace,
    /// The Docker engine and its image builds (docker executor only).
    pub docker: Option<images::Images>,
    /// The virtual environments of requirement environments.
    pub venvs: venv::Venvs,
    /// Becomes true when the agent shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// When calls to the server stop being retried (set on shutdown).
    pub deadline: retry::Deadline,
}

/// After shutdown, how long finishing jobs may keep retrying the server
/// beyond the stop grace.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(30);

/// Runs the agent until `shutdown` completes: then it stops asking for work,
/// stops the running jobs (SIGTERM, then SIGKILL after the grace), reports
/// them as failed ("agent shut down"), and returns.
pub async fn run_agent(
    client: Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(config.slots > 0, "an agent needs at least one slot");
    let sandbox = match config.executor {
        ExecutorKind::Process => Sandbox::resolve(config.sandbox).await?,
        // Containers isolate docker jobs; bubblewrap is not used.
        ExecutorKind::Docker => Sandbox::None,
    };
    let (dir, limit) = (config.work_dir.clone(), config.cache_bytes);
    let workspace = tokio::task::spawn_blocking(move || prepare::Workspace::open(&dir, limit)).await??;
    let venvs = venv::Venvs::open(workspace.root(), config.venv_python.clone())?;
    let docker = match config.executor {
        ExecutorKind::Process => None,
        ExecutorKind::Docker => Some(images::Images::connect(&config.name).await?),
    };
    if config.executor == ExecutorKind::Process && !sandbox.is_sandboxed() {
        tracing::warn!(
            hidden = ?config.hide_paths,
            "--sandbox none: jobs run unsandboxed and can read every path this agent's user can"
        );
    }
    let inventory = inventory::inventory(&config);
    tracing::info!(agent = %config.name, queue = %config.queue, slots = config.slots, sandbox = ?sandbox,
        executor = ?config.executor, gpus = ?inventory.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
        cpus = inventory.cpus, memory = inventory.memory_bytes,
        work_dir = %workspace.root().display(), cache_limit = workspace.cache_limit(), server = client.base_url(), "agent started");
    let (stop_tx, stop_rx) = watch::channel(false);
    let deadline = retry::Deadline::default();
    let grace = config.stop_grace;
    let d = deadline.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        d.set(Instant::now() + grace + SHUTDOWN_RETRY);
        let _ = stop_tx.send(true);
    });
    let shared =
        Arc::new(Shared { client, config, sandbox, workspace, docker, venvs, shutdown: stop_rx.clone(), deadline });
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..shared.config.slots {
        slots.spawn(slot_loop(shared.clone(), slot, inventory.clone()));
    }
    let mut stop = stop_rx.clone();
    tokio::select! {
        _ = async { while slots.join_next().await.is_some() {} } => {}
        _ = signalled(&mut stop) => {
            // Give the jobs their grace and a chance to report, then leave.
            let limit = grace + SHUTDOWN_RETRY + Duration::from_secs(5);
            if tokio::time::timeout(limit, async { while slots.join_next().await.is_some() {} }).await.is_err() {
                tracing::warn!("jobs did not finish reporting in time; leaving them");
                slots.abort_all();
            }
        }
    }
    watcher.abort();
    tracing::info!(agent = %shared.config.name, "agent stopped");
    Ok(())
}

/// One slot: lease a job, run it, repeat, until shutdown.
async fn slot_loop(shared: Arc<Shared>, slot: usize, inventory: podder_core::Inventory) {
    let mut shutdown = shared.shutdown.clone();
    let req = LeaseRequest {
        agent: shared.config.name.clone(),
        queue: shared.config.queue.clone(),
        wait_ms: shared.config.lease_wait_ms,
        inventory,
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let res = tokio::select! {
            r = shared.client.lease(&req) => r,
            _ = signalled(&mut shutdown) => return,
        };
        match res {
            Ok(Some(lease)) => {
                backoff = Duration::from_millis(500);
                job::run_lease(shared.clone(), lease).await;
            }
            Ok(None) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(slot, "asking for work failed, retrying in {backoff:?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = signalled(&mut shutdown) => return,
                }
                backoff = (backoff * 2).min(retry::MAX_BACKOFF);
            }
        }
    }
}

/// Completes once the shutdown flag is set (never, if its sender is gone
/// without setting it).
async fn signalled(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
