//! The docker executor: runs one job's [`JobPlan`] in a container on the
//! local Docker engine, with the same contract as the process executor.
//!
//! The container sees `/code` (the job's writable copy), `/output`
//! (writable) and each input read-only at its mount path, all bind mounts;
//! it starts in `/code` (or the environment's workdir) and runs the same
//! `sh -c` script with the same variables (`PODDER_JOB`, `PODDER_OUTPUT`,
//! `PODDER_PARAM_*`, `MLFLOW_*`, ...). It runs as a non-root user (the code
//! and output directories are handed to it first), with the job's CPU and
//! memory limits, on its own network (see [`NetworkMode`]: the agent's
//! isolated bridge network `podder` by default, the host's only when the
//! agent is told so, none on request), with the job's GPUs as a
//! DeviceRequest, and with `--init` so that signals reach the command.
//! Every container carries the labels `podder.job` and `podder.agent`.
//!
//! Stop is `docker stop` with the agent's grace; a lost lease kills; a
//! timeout stops. The container stays after it ended until the job lets go
//! of it ([`Running::release`], after its output was captured); then it is
//! removed. Like [`crate::executor`], this module knows nothing of the
//! server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use podder_core::api::Stream;
use podder_docker::{Bind, ContainerSpec, Engine};
use tokio::time::{Instant, sleep_until};

use crate::executor::{Ending, ExitStatusInfo, JobPlan, Request, Running, Supervised};
use crate::logs::{LogSink, read_lines};

/// How long the output readers may take after the container ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the engine can run `--init` (it has `docker-init`); cleared the
/// first time a container fails to start for the lack of it.
static INIT_WORKS: AtomicBool = AtomicBool::new(true);

/// The network podder makes for job containers (see [`NetworkMode::Podder`]).
pub const PODDER_NETWORK: &str = "podder";

/// The label on the network podder made.
pub const LABEL_NETWORK: &str = "podder.network";

/// Which network a docker agent's job containers join (`--docker-network`;
/// a job with `no_network` gets none whatever this says).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// `podder` (the default): a bridge network of the agent's engine,
    /// created when missing, with inter-container traffic off. A job
    /// reaches the outside through NAT, but not the host's loopback (so no
    /// service listening on the host's 127.0.0.1, the podder server
    /// included) and not the other jobs' containers.
    #[default]
    Podder,
    /// `bridge`: the engine's default bridge (other containers on it are
    /// reachable).
    Bridge,
    /// `host`: the host's network stack, every host service included. Only
    /// when asked for.
    Host,
    /// Any other name: an existing network of the engine.
    Named(String),
}

impl NetworkMode {
    /// Parses a `--docker-network` value.
    pub fn parse(s: &str) -> anyhow::Result<NetworkMode> {
        Ok(match s.trim() {
            "" => anyhow::bail!("--docker-network needs a value: podder (the default), bridge, host or a network name"),
            "podder" => NetworkMode::Podder,
            "bridge" | "default" => NetworkMode::Bridge,
            "host" => NetworkMode::Host,
            "none" => anyhow::bail!(
                "--docker-network none would take every job's network away: jobs ask for that with --no-network"
            ),
            other => NetworkMode::Named(other.to_string()),
        })
    }

    /// The container's `NetworkMode`.
    pub fn engine_name(&self) -> &str {
        match self {
            NetworkMode::Podder => PODDER_NETWORK,
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::Named(n) => n,
        }
    }

    /// Makes sure the network exists on `engine` (creates `podder` when
    /// missing; a named network must exist) and returns what a container's
    /// `NetworkMode` names: the network's id for `podder` (an engine may
    /// hold several networks of one name), else its name.
    pub async fn ensure(&self, engine: &Engine) -> anyhow::Result<String> {
        match self {
            NetworkMode::Podder => ensure_isolated_network(engine, PODDER_NETWORK).await,
            NetworkMode::Named(n) => {
                anyhow::ensure!(
                    engine.network_exists(n).await?,
                    "--docker-network {n}: the Docker engine has no such network (docker network create {n}, \
                     or use podder, bridge or host)"
                );
                Ok(n.clone())
            }
            NetworkMode::Bridge | NetworkMode::Host => Ok(self.engine_name().to_string()),
        }
    }
}

/// The id of the isolated bridge network `name` (see
/// [`NetworkMode::Podder`]), created when missing. Agents on one machine
/// take a file lock around looking and creating: engines before API 1.44
/// would make one network per racer, all of one name. Where there are
/// several anyway (agents on other machines), the smallest id is used.
pub async fn ensure_isolated_network(engine: &Engine, name: &str) -> anyhow::Result<String> {
    let path = std::env::temp_dir().join("podder-docker-network.lock");
    let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        f.lock()?;
        Ok(f)
    })
    .await??;
    let mut ids = engine.networks_named(name).await?;
    if ids.is_empty() {
        let labels = BTreeMap::from([(LABEL_NETWORK.to_string(), "jobs".to_string())]);
        ids.push(engine.create_isolated_network(name, &labels).await?);
        tracing::info!(network = name, "created the Docker network of job containers");
    } else if ids.len() > 1 {
        tracing::warn!(network = name, ids = ?ids, "several Docker networks have this name: using the first");
    }
    drop(lock);
    Ok(ids.swap_remove(0))
}

/// The agent's network mode, when set by [`set_network_mode`].
static NETWORK_MODE: OnceLock<NetworkMode> = OnceLock::new();

/// Sets the network mode of this process's docker agents (the
/// `--docker-network` option), before any agent starts; once only.
// TODO(AgentConfig): this becomes the field `AgentConfig::docker_network`.
pub fn set_network_mode(mode: NetworkMode) -> anyhow::Result<()> {
    NETWORK_MODE.set(mode).map_err(|_| anyhow::anyhow!("the docker network mode was set already"))
}

/// The network mode of this process's docker agents: the one set by
/// [`set_network_mode`], else `PODDER_DOCKER_NETWORK`, else `podder`.
pub fn network_mode() -> NetworkMode {
    if let Some(m) = NETWORK_MODE.get() {
        return m.clone();
    }
    match std::env::var("PODDER_DOCKER_NETWORK") {
        Ok(v) if !v.trim().is_empty() => NetworkMode::parse(&v).unwrap_or_else(|e| {
            tracing::warn!("PODDER_DOCKER_NETWORK ignored: {e:#}");
            NetworkMode::Podder
        }),
        _ => NetworkMode::Podder,
    }
}

/// What a job's container needs beyond its [`JobPlan`].
#[derive(Clone, Debug, Default)]
pub struct DockerPlan {
    pub image: String,
    /// `uid:gid` the job runs as; `None`: the image's user.
    pub user: Option<String>,
    /// The working directory; `None`: `/code`.
    pub workdir: Option<String>,
    /// Assigned GPU indices (a DeviceRequest for the NVIDIA runtime).
    pub gpus: Vec<u32>,
    /// CPU limit in cores.
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// No network at all (`none`), whatever `network` says.
    pub no_network: bool,
    /// The network it joins otherwise: what a container's `NetworkMode`
    /// names (see [`NetworkMode::ensure`]); empty: the engine's default.
    pub network: String,
    pub labels: BTreeMap<String, String>,
}

/// The container that runs `plan` as `docker` asks.
pub fn container_spec(plan: &JobPlan, docker: &DockerPlan) -> ContainerSpec {
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("PODDER_CODE".into(), "/code".into()),
        ("PODDER_OUTPUT".into(), "/output".into()),
    ];
    let mut binds = vec![
        Bind { host: abs(&plan.code_dir), container: "/code".into(), read_only: false },
        Bind { host: abs(&plan.output_dir), container: "/output".into(), read_only: false },
    ];
    for (tree, mount) in &plan.inputs {
        env.push((format!("PODDER_MOUNT_{}", mount.env_suffix()), mount.to_string()));
        binds.push(Bind { host: abs(tree), container: mount.to_string(), read_only: true });
    }
    env.extend(plan.env.iter().cloned());
    ContainerSpec {
        name: None,
        image: docker.image.clone(),
        cmd: vec!["-c".into(), plan.script.clone()],
        entrypoint: Some(vec!["/bin/sh".into()]),
        env,
        workdir: Some(docker.workdir.clone().unwrap_or_else(|| "/code".into())),
        user: docker.user.clone(),
        binds,
        nano_cpus: docker.cpus.map(|c| (c * 1e9) as i64),
        memory: docker.memory_bytes.map(|m| m as i64),
        // A network of its own (the host's only when the agent says so).
        network: if docker.no_network {
            Some("none".into())
        } else {
            Some(docker.network.clone()).filter(|n| !n.is_empty())
        },
        labels: docker.labels.clone(),
        gpus: docker.gpus.clone(),
        init: true,
    }
}

fn abs(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Creates and starts the job's container; its output goes to `log`.
pub async fn spawn(engine: &Engine, plan: &JobPlan, docker: &DockerPlan, log: LogSink) -> anyhow::Result<Running> {
    if let Some(user) = &docker.user {
        let (code, output, user) = (plan.code_dir.clone(), plan.output_dir.clone(), user.clone());
        tokio::task::spawn_blocking(move || give_to_user(&[&code, &output], &user)).await??;
    }
    let mut spec = container_spec(plan, docker);
    spec.init = INIT_WORKS.load(Ordering::Relaxed);
    let id = start(engine, &mut spec).await?;
    let readers = engine.output(&id);
    let out = tokio::spawn(read_lines(readers.stdout, Stream::Stdout, log.clone()));
    let err = tokio::spawn(read_lines(readers.stderr, Stream::Stderr, log.clone()));
    let (running, sup) = Running::for_container(id.clone());
    let supervisor = Supervisor { engine: engine.clone(), id, timeout: plan.timeout, grace: plan.stop_grace, log };
    tokio::spawn(supervisor.run(sup, vec![out, err]));
    Ok(running)
}

/// Creates and starts the container, without `--init` when the engine
/// lacks it. A container that fails to start is removed.
async fn start(engine: &Engine, spec: &mut ContainerSpec) -> anyhow::Result<String> {
    loop {
        let id = engine.create(spec).await?;
        match engine.start(&id).await {
            Ok(()) => return Ok(id),
            Err(e) => {
                let _ = engine.remove(&id).await;
                let msg = e.to_string();
                if spec.init && msg.contains("docker-init") {
                    tracing::warn!("the Docker engine has no docker-init: containers run without --init");
                    INIT_WORKS.store(false, Ordering::Relaxed);
                    spec.init = false;
                    continue;
                }
                return Err(anyhow::anyhow!("cannot start the container of image {}: {msg}", spec.image));
            }
        }
    }
}

/// Hands the job's directories to `user` (`uid:gid`): chown when the agent
/// may, else makes them writable by everyone.
fn give_to_user(dirs: &[&Path], user: &str) -> anyhow::Result<()> {
    let ids = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let uid: Option<u32> = ids.0.parse().ok();
    let gid: Option<u32> = ids.1.and_then(|g| g.parse().ok());
    for d in dirs {
        let chowned = uid.is_some() && walk(d, &mut |p| std::os::unix::fs::lchown(p, uid, gid)).is_ok();
        if !chowned {
            walk(d, &mut |p| {
                use std::os::unix::fs::PermissionsExt;
                let m = std::fs::symlink_metadata(p)?;
                if m.file_type().is_symlink() {
                    return Ok(());
                }
                let mode = m.permissions().mode();
                let add = if m.is_dir() || mode & 0o100 != 0 { 0o777 } else { 0o666 };
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | add))
            })?;
        }
    }
    Ok(())
}

fn walk(p: &Path, f: &mut dyn FnMut(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    f(p)?;
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        for e in std::fs::read_dir(p)? {
            walk(&e?.path(), f)?;
        }
    }
    Ok(())
}

struct Supervisor {
    engine: Engine,
    id: String,
    timeout: Option<Duration>,
    grace: Duration,
    log: LogSink,
}

impl Supervisor {
    async fn run(self, mut sup: Supervised, readers: Vec<tokio::task::JoinHandle<()>>) {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut ending = Ending::Exited;
        let mut req_open = true;
        let wait = self.engine.wait(&self.id);
        tokio::pin!(wait);
        let code = loop {
            tokio::select! {
                r = &mut wait => break r,
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && ending == Ending::Exited => {
                    ending = Ending::TimedOut;
                    let secs = self.timeout.unwrap_or_default().as_secs();
                    self.log.system(format!("timed out after {secs} s: stopping the container")).await;
                    self.stop();
                }
                r = sup.requests.changed(), if req_open => {
                    let r = if r.is_ok() { *sup.requests.borrow_and_update() } else { req_open = false; Request::Kill };
                    match r {
                        Request::Run => {}
                        Request::Stop if ending == Ending::Exited => {
                            ending = Ending::Stopped;
                            let secs = self.grace.as_secs_f64();
                            self.log.system(format!(
                                "stop requested: stopping the container (SIGTERM, SIGKILL after {secs:.0} s)"
                            )).await;
                            self.stop();
                        }
                        Request::Stop => {}
                        Request::Kill => {
                            if ending == Ending::Exited {
                                ending = Ending::Killed;
                            }
                            let (e, id) = (self.engine.clone(), self.id.clone());
                            tokio::spawn(async move { e.kill(&id).await });
                        }
                    }
                }
            }
        };
        for r in readers {
            let abort = r.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, r).await.is_err() {
                tracing::warn!(container = %self.id, "the container's output did not end");
                abort.abort();
            }
        }
        let info = match code {
            Ok(code) => ExitStatusInfo { code: code as i32, signal: None, ending },
            Err(e) => {
                tracing::error!(container = %self.id, "waiting for the container failed: {e}");
                self.log.system(format!("error: waiting for the container failed: {e}")).await;
                ExitStatusInfo { code: -1, signal: None, ending }
            }
        };
        let _ = sup.done.send(Some(info));
        // Until the job lets go (its output is captured), the container stays.
        while sup.requests.changed().await.is_ok() {}
        if let Err(e) = self.engine.remove(&self.id).await {
            tracing::warn!(container = %self.id, "cannot remove the job's container: {e}");
        }
        let _ = sup.released.send(true);
    }

    /// `docker stop` with the grace, in the background (it returns only
    /// once the container is down; the wait sees that first).
    fn stop(&self) {
        let (e, id, grace) = (self.engine.clone(), self.id.clone(), self.grace);
        tokio::spawn(async move {
            if let Err(err) = e.stop(&id, grace).await {
                tracing::warn!(container = %id, "docker stop failed, killing: {err}");
                let _ = e.kill(&id).await;
            }
        });
    }
}
