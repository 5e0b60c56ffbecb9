//! `podder agent`: a worker that pulls jobs from a server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use podder_agent::AgentConfig;
use podder_client::Client;

use crate::args::AgentArgs;
use crate::config::{self, ClientConfig};

/// The image of docker jobs that name no environment.
pub const DEFAULT_IMAGE: &str = "python:3.11-slim";

pub async fn run(a: AgentArgs) -> Result<i32> {
    let work_dir = work_dir(&a);
    let cfg = ClientConfig::load()?;
    let server = a.server.or(cfg.server).ok_or_else(|| anyhow!("no server given: pass --server URL"))?;
    let token = a.token.or(cfg.token).ok_or_else(|| anyhow!("no token given: pass --token TOKEN"))?;
    let client = Client::new(&server, &token)?;
    client.whoami().await?;
    let name = a.name.unwrap_or_else(hostname);
    podder_agent::docker_exec::set_network_mode(podder_agent::docker_exec::NetworkMode::parse(&a.docker_network)?)?;
    let config = AgentConfig {
        name: name.clone(),
        queue: a.queue,
        slots: a.slots.max(1),
        work_dir,
        hide_paths: vec![
            config::default_data_dir(),
            config::config_path().parent().map(Into::into).unwrap_or_default(),
        ],
        sandbox: super::serve::parse_sandbox(&a.sandbox)?,
        stop_grace: Duration::from_secs(a.stop_grace),
        lease_wait_ms: 30_000,
        cache_bytes: a.cache_bytes,
        executor: a.executor.parse()?,
        gpus: podder_agent::parse_gpus(&a.gpus)?,
        docker_user: a.docker_user,
        default_image: a.default_image.unwrap_or_else(|| DEFAULT_IMAGE.into()),
        memory_bytes: None,
        venv_python: None,
    };
    let gpus: Vec<String> = config.gpus.iter().map(|g| g.index.to_string()).collect();
    eprintln!(
        "agent {name} ({:?} executor, GPUs: {}) pulling jobs from {server}",
        config.executor,
        if gpus.is_empty() { "none".into() } else { gpus.join(",") }
    );
    eprintln!("log: {}", crate::logging::log_file(&config.work_dir).display());
    podder_agent::run_agent(client, config, super::shutdown_signal()).await?;
    Ok(0)
}

/// The agent's work directory: `--work-dir`, else `agent-NAME` in the
/// default data directory. Its `logs/podder.log` is the agent's log.
pub fn work_dir(a: &AgentArgs) -> PathBuf {
    a.work_dir.clone().unwrap_or_else(|| {
        let name = a.name.clone().unwrap_or_else(hostname);
        config::default_data_dir().join(format!("agent-{name}"))
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}
