//! What the bench programs share: an embedded server on a free port with an
//! admin client, agents run in-process beside it, a small code snapshot,
//! and percentiles.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use podder_agent::{AgentConfig, SandboxMode};
use podder_client::Client;
use podder_client::transfer::{NoProgress, upload_tree};
use podder_core::{ExecutorKind, ManifestId};
use podder_server::{Server, ServerConfig};
use podder_store::scan::{ScanOptions, scan_tree};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The value at percentile `p` (0..=1) of `v` (sorted in place).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A server in this process, its data in a temporary directory.
pub struct Embedded {
    pub tmp: tempfile::TempDir,
    data: PathBuf,
    pub client: Client,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Embedded {
    pub async fn start() -> Result<Embedded> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server =
            Server::open(ServerConfig { public_url: Some(url.clone()), ..ServerConfig::new(data.clone()) }).await?;
        let token = server.ensure_admin("bench").await?.expect("fresh data dir");
        let (stop, _) = watch::channel(false);
        let mut e = Embedded { tmp, data, client: Client::new(&url, &token)?, stop, tasks: Vec::new() };
        let stopped = e.stopped();
        e.tasks.push(tokio::spawn(async move {
            let _ = server.serve(listener, stopped).await;
        }));
        Ok(e)
    }

    /// Resolves when [`Embedded::shutdown`] is called.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }

    /// Runs an agent in this process until shutdown; its jobs cannot see
    /// the server's data directory.
    pub fn add_agent(&mut self, mut config: AgentConfig) {
        config.hide_paths.push(self.data.clone());
        let (client, stopped) = (self.client.clone(), self.stopped());
        self.tasks.push(tokio::spawn(async move {
            let _ = podder_agent::run_agent(client, config, stopped).await;
        }));
    }

    /// Creates project `bench` and commits a one-file code snapshot for it.
    pub async fn bench_project(&self) -> Result<ManifestId> {
        self.client.create_project(&"bench".parse()?, "").await?;
        let code = self.tmp.path().join("code");
        std::fs::create_dir_all(&code)?;
        std::fs::write(code.join("main.py"), "print('hi')\n")?;
        let tree = scan_tree(&code, &ScanOptions { respect_ignore: true, max_bytes: None, threads: 1 })?;
        upload_tree(&self.client, &tree, &NoProgress).await?.manifest.ok_or_else(|| anyhow::anyhow!("no manifest"))
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// An agent's configuration for benches: one slot, bubblewrap when present,
/// its work directory under `work`.
pub fn agent_config(name: &str, queue: &str, executor: ExecutorKind, work: PathBuf, image: &str) -> AgentConfig {
    AgentConfig {
        name: name.into(),
        queue: queue.into(),
        slots: 1,
        work_dir: work,
        hide_paths: vec![],
        sandbox: SandboxMode::Auto,
        stop_grace: Duration::from_secs(5),
        lease_wait_ms: 30_000,
        cache_bytes: None,
        executor,
        gpus: vec![],
        docker_user: "1000:1000".into(),
        default_image: image.into(),
        memory_bytes: None,
        venv_python: None,
    }
}
