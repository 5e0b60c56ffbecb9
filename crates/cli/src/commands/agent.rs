//! `podder agent`: a worker that pulls jobs from a server.

use std::time::Duration;

use anyhow::{Result, anyhow};
use podder_agent::AgentConfig;
use podder_client::Client;

use crate::args::AgentArgs;
use crate::config::{self, ClientConfig};

pub async fn run(a: AgentArgs) -> Result<i32> {
    let cfg = ClientConfig::load()?;
    let server = a.server.or(cfg.server).ok_or_else(|| anyhow!("no server given: pass --server URL"))?;
    let token = a.token.or(cfg.token).ok_or_else(|| anyhow!("no token given: pass --token TOKEN"))?;
    let client = Client::new(&server, &token)?;
    client.whoami().await?;
    let name = a.name.unwrap_or_else(hostname);
    let work_dir = a.work_dir.unwrap_or_else(|| config::default_data_dir().join(format!("agent-{name}")));
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
    };
    eprintln!("agent {name} pulling jobs from {server}");
    podder_agent::run_agent(client, config, super::shutdown_signal()).await?;
    Ok(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}
