//! A thin wrapper over the Docker Engine API (bollard) with the operations
//! podder needs: images (exists, pull, build), containers (create from a
//! [`ContainerSpec`], start, logs with stdout and stderr apart, wait, stop,
//! kill, remove, inspect), label queries (finding orphans) and networks
//! (the isolated bridge network job containers join).
//!
//! It knows nothing of jobs or servers: the agent's docker executor turns a
//! job into a [`ContainerSpec`] and drives it through an [`Engine`].
//!
//! Two pitfalls of bollard 0.21 are handled here once: it sends unversioned
//! paths, so [`Engine::connect`] checks the engine's API version itself
//! (at least [`MIN_API`]); and its streams are lazy, so [`Engine::wait`] must
//! be called after [`Engine::start`] (it asks for `not-running`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, DeviceRequest, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, DuplexStream};

mod images;
mod networks;

pub use bollard::models::ContainerSummary;

/// The oldest Engine API this crate works with (Docker 20.10).
pub const MIN_API: (u32, u32) = (1, 41);

/// How long one request may wait for the engine's response headers (long
/// streams such as logs and builds answer at once and then stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything that can go wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine cannot be reached.
    #[error(
        "cannot reach the Docker engine: {0}; is dockerd running, and may this user use its socket \
         (/var/run/docker.sock, or DOCKER_HOST)?"
    )]
    Connect(String),
    /// The engine is too old.
    #[error("the Docker engine speaks API {found}; podder needs API {}.{} or newer (Docker 20.10+)", MIN_API.0, MIN_API.1)]
    TooOld { found: String },
    /// An image or container that does not exist.
    #[error("{0} was not found on the Docker engine")]
    NotFound(String),
    /// An image build that failed; `log` holds every line it printed.
    #[error("building {tag} failed: {message}")]
    Build { tag: String, message: String, log: Vec<String> },
    /// A pull that failed (no registry, no such image, no access).
    #[error("the image '{image}' could not be pulled: {message}")]
    Pull { image: String, message: String },
    #[error("the Docker engine refused: {0}")]
    Api(bollard::errors::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = DockerError> = std::result::Result<T, E>;

impl From<bollard::errors::Error> for DockerError {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError { status_code: 404, message } => DockerError::NotFound(message),
            other => DockerError::Api(other),
        }
    }
}

/// A directory bound into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The host path (must exist).
    pub host: PathBuf,
    /// The absolute path inside the container.
    pub container: String,
    pub read_only: bool,
}

/// What a container is made from: a plain description that the agent fills
/// and [`Engine::create`] turns into the engine's create body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    /// The container's name; `None`: the engine picks one.
    pub name: Option<String>,
    pub image: String,
    /// The command (the image's entrypoint, if any, is replaced when
    /// `entrypoint` is set).
    pub cmd: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// `uid:gid` (or a user name the image knows); `None`: the image's.
    pub user: Option<String>,
    pub binds: Vec<Bind>,
    /// CPU limit in billionths of a core.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes (swap is limited to the same).
    pub memory: Option<i64>,
    /// The network mode: `none` (no network at all), `host` (the host's
    /// network), a network's name; `None`: the engine's default (bridge).
    pub network: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// GPU indices, handed to the NVIDIA runtime as a DeviceRequest
    /// (driver `nvidia`, capabilities `[["gpu"]]`, these device ids).
    pub gpus: Vec<u32>,
    /// Run a tiny init as PID 1 (`--init`), so that signals reach the
    /// command and zombies are reaped.
    pub init: bool,
}

impl ContainerSpec {
    /// The engine's create body for this spec.
    pub fn to_body(&self) -> ContainerCreateBody {
        let mounts = self
            .binds
            .iter()
            .map(|b| Mount {
                target: Some(b.container.clone()),
                source: Some(b.host.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(b.read_only),
                ..Default::default()
            })
            .collect();
        let device_requests = (!self.gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: None,
                device_ids: Some(self.gpus.iter().map(u32::to_string).collect()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                options: None,
            }]
        });
        let host = HostConfig {
            mounts: Some(mounts),
            nano_cpus: self.nano_cpus,
            memory: self.memory,
            memory_swap: self.memory,
            network_mode: self.network.clone(),
            device_requests,
            init: self.init.then_some(true),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.cmd.clone()),
            entrypoint: self.entrypoint.clone(),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            labels: Some(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(host),
            ..Default::default()
        }
    }
}

/// The Dockerfile of a build: a file of the context, or text.
#[derive(Clone, Debug)]
pub enum Dockerfile {
    /// A path relative to the context's root.
    Path(String),
    /// The Dockerfile's text (added to the context under a private name).
    Text(String),
}

/// The build context.
#[derive(Clone, Debug)]
pub enum Context {
    /// A directory, sent whole (symlinks as symlinks).
    Dir(PathBuf),
    /// A tar archive of the context, already made.
    Tar(Vec<u8>),
    /// No files (a Dockerfile without COPY or ADD).
    Empty,
}

/// One image build.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    pub context: Context,
    pub dockerfile: Dockerfile,
    pub tag: String,
    pub labels: BTreeMap<String, String>,
}

/// Where a piece of a container's output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// A container's stdout and stderr as two byte streams (see
/// [`Engine::output`]); each ends when the container has ended and all its
/// output was read.
pub struct OutputReaders {
    pub stdout: DuplexStream,
    pub stderr: DuplexStream,
}

/// The name under which a Dockerfile given as text is added to a context.
const TEXT_DOCKERFILE: &str = ".podder.Dockerfile";

/// A connection to one Docker engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: Docker,
    api: String,
}

impl Engine {
    /// Connects to the local engine (`DOCKER_HOST`, else the default
    /// socket) and checks that it speaks API [`MIN_API`] or newer.
    pub async fn connect() -> Result<Engine> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| DockerError::Connect(e.to_string()))?
            .with_timeout(REQUEST_TIMEOUT);
        let v = docker.version().await.map_err(|e| DockerError::Connect(e.to_string()))?;
        let api = v.api_version.unwrap_or_default();
        if !api_at_least(&api, MIN_API) {
            return Err(DockerError::TooOld { found: api });
        }
        Ok(Engine { docker, api })
    }

    /// The engine's API version, e.g. `1.41`.
    pub fn api_version(&self) -> &str {
        &self.api
    }

    /// The underlying bollard client, for anything not wrapped here.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Creates a container (not started); returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let mut opts = CreateContainerOptionsBuilder::default();
        if let Some(n) = &spec.name {
            opts = opts.name(n);
        }
        let r = self.docker.create_container(Some(opts.build()), spec.to_body()).await?;
        for w in &r.warnings {
            tracing::warn!(container = %r.id, "Docker: {w}");
        }
        Ok(r.id)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        Ok(self.docker.start_container(id, None).await?)
    }

    /// Waits until the container is not running; returns its exit code.
    /// Call it after [`start`](Self::start).
    pub async fn wait(&self, id: &str) -> Result<i64> {
        let opts = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let mut stream = self.docker.wait_container(id, Some(opts));
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(e.into()),
            None => {
                // The stream ended without an answer: ask the state instead.
                let i = self.inspect(id).await?;
                Ok(i.state.and_then(|s| s.exit_code).unwrap_or(-1))
            }
        }
    }

    /// Stops a container: SIGTERM (or its stop signal), SIGKILL after `grace`.
    /// Returns once it has stopped; a container already stopped or gone is
    /// no error.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let t = grace.as_secs().min(i32::MAX as u64) as i32;
        let opts = StopContainerOptionsBuilder::default().t(t).build();
        match self.docker.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304 | 404, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends SIGKILL; a container not running is no error.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let opts = KillContainerOptionsBuilder::default().signal("KILL").build();
        match self.docker.kill_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404 | 409, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container (killing it if it runs) with its anonymous
    /// volumes; one already gone is no error.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            // "removal already in progress"
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse> {
        Ok(self.docker.inspect_container(id, None).await?)
    }

    /// Every container (running or not) that has label `key=value`.
    pub async fn list_by_label(&self, key: &str, value: &str) -> Result<Vec<ContainerSummary>> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{key}={value}")])]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        Ok(self.docker.list_containers(Some(opts)).await?)
    }

    /// Removes every container with label `key=value`; returns their ids.
    pub async fn remove_by_label(&self, key: &str, value: &str) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for c in self.list_by_label(key, value).await? {
            if let Some(id) = c.id {
                self.remove(&id).await?;
                removed.push(id);
            }
        }
        Ok(removed)
    }

    /// The container's output as it comes, from its start, stdout and
    /// stderr apart (the container must not use a TTY).
    pub fn output_stream(
        &self,
        id: &str,
    ) -> impl futures_util::Stream<Item = Result<(Output, bytes::Bytes)>> + Send + 'static {
        let opts = LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).build();
        self.docker.logs(id, Some(opts)).filter_map(|item| async move {
            use bollard::container::LogOutput;
            match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    Some(Ok((Output::Stdout, message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok((Output::Stderr, message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(e.into())),
            }
        })
    }

    /// The container's stdout and stderr as two readers, fed by a task that
    /// follows its logs (see [`output_stream`](Self::output_stream)). Both
    /// end when the container has ended (or the log stream broke).
    pub fn output(&self, id: &str) -> OutputReaders {
        let (mut out_w, stdout) = tokio::io::duplex(64 * 1024);
        let (mut err_w, stderr) = tokio::io::duplex(64 * 1024);
        let stream = self.output_stream(id);
        let id = id.to_string();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let res = match item {
                    Ok((Output::Stdout, b)) => out_w.write_all(&b).await,
                    Ok((Output::Stderr, b)) => err_w.write_all(&b).await,
                    Err(e) => {
                        tracing::warn!(container = %id, "following the container's output failed: {e}");
                        break;
                    }
                };
                if res.is_err() {
                    break;
                }
            }
            let _ = out_w.shutdown().await;
            let _ = err_w.shutdown().await;
        });
        OutputReaders { stdout, stderr }
    }

    /// Runs a throwaway container to its end and returns its exit code and
    /// stdout (stderr is appended to stdout); it is removed afterwards.
    pub async fn run_capture(&self, spec: &ContainerSpec) -> Result<(i64, String)> {
        let id = self.create(spec).await?;
        let res = async {
            self.start(&id).await?;
            let code = self.wait(&id).await?;
            let mut out = String::new();
            let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
            let mut logs = self.docker.logs(&id, Some(opts));
            while let Some(item) = logs.next().await {
                out.push_str(&String::from_utf8_lossy(item?.as_ref()));
            }
            Ok((code, out))
        }
        .await;
        let _ = self.remove(&id).await;
        res
    }
}

/// Whether `api` (`MAJOR.MINOR`) is at least `min`.
pub fn api_at_least(api: &str, min: (u32, u32)) -> bool {
    let mut parts = api.trim().split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= min,
        _ => false,
    }
}

/// `repo[:tag]` split into repo and tag (default `latest`); a registry
/// port (`host:5000/x`) is not a tag, and neither is a digest.
fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// The readable message of an engine error.
fn engine_message(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerStreamError { error } => error.trim().to_string(),
        E::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// The context as a tar archive, and the Dockerfile's path in it.
fn context_tar(context: &Context, dockerfile: &Dockerfile) -> std::io::Result<(Vec<u8>, String)> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    match context {
        Context::Dir(dir) => append_dir(&mut b, dir)?,
        Context::Tar(bytes) => {
            let mut a = tar::Archive::new(bytes.as_slice());
            for entry in a.entries()? {
                let mut entry = entry?;
                let mut header = entry.header().clone();
                let path = entry.path()?.into_owned();
                b.append_data(&mut header, path, &mut entry)?;
            }
        }
        Context::Empty => {}
    }
    let name = match dockerfile {
        Dockerfile::Path(p) => p.clone(),
        Dockerfile::Text(text) => {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, TEXT_DOCKERFILE, text.as_bytes())?;
            TEXT_DOCKERFILE.to_string()
        }
    };
    Ok((b.into_inner()?, name))
}

fn append_dir(b: &mut tar::Builder<Vec<u8>>, dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = path.strip_prefix(dir).expect("a child").to_path_buf();
        if entry.file_type()?.is_dir() {
            b.append_dir_all(&name, &path)?;
        } else {
            b.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_tags() {
        assert!(api_at_least("1.41", MIN_API));
        assert!(api_at_least("1.47", MIN_API));
        assert!(api_at_least("2.0", MIN_API));
        assert!(!api_at_least("1.40", MIN_API));
        assert!(!api_at_least("", MIN_API));
        assert_eq!(split_tag("python:3.11-slim"), ("python", "3.11-slim"));
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("host:5000/x"), ("host:5000/x", "latest"));
        assert_eq!(split_tag("host:5000/x:1"), ("host:5000/x", "1"));
    }

    #[test]
    fn gpus_become_a_device_request() {
        let spec =
            ContainerSpec { image: "x".into(), gpus: vec![0, 2], network: Some("none".into()), ..Default::default() };
        let body = spec.to_body();
        let host = body.host_config.unwrap();
        let req = &host.device_requests.unwrap()[0];
        assert_eq!(req.driver.as_deref(), Some("nvidia"));
        assert_eq!(req.device_ids.as_deref(), Some(&["0".to_string(), "2".to_string()][..]));
        assert_eq!(req.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        let none = ContainerSpec { image: "x".into(), ..Default::default() }.to_body();
        assert!(none.host_config.unwrap().device_requests.is_none());
    }

    #[test]
    fn text_dockerfiles_join_the_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "a").unwrap();
        let (tar, name) =
            context_tar(&Context::Dir(dir.path().into()), &Dockerfile::Text("FROM scratch\n".into())).unwrap();
        assert_eq!(name, TEXT_DOCKERFILE);
        let mut a = tar::Archive::new(tar.as_slice());
        let mut names: Vec<String> =
            a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, [".podder.Dockerfile", "sub/", "sub/a.txt"]);
    }
}
