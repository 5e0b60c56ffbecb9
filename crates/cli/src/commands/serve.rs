//! `podder server` and `podder up`: the API server, and for `up` an agent in
//! the same process, sharing one data directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use podder_agent::{AgentConfig, SandboxMode};
use podder_client::Client;
use podder_server::{Server, ServerConfig};
use tokio::net::TcpListener;

use crate::args::ServeArgs;
use crate::config::{self, ClientConfig};

/// A started server: its URL and, on its first start, the admin token.
pub struct Started {
    pub url: String,
    pub server: Server,
    pub admin: String,
    pub first_token: Option<String>,
    pub data_dir: PathBuf,
    listener: TcpListener,
}

pub fn admin_name(flag: Option<&str>) -> String {
    let raw = flag.map(str::to_string).or_else(|| std::env::var("USER").ok()).unwrap_or_default();
    let clean: String = raw.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if clean.parse::<podder_core::Name>().is_ok() { clean } else { "admin".into() }
}

pub async fn start(args: &ServeArgs) -> Result<Started> {
    let data_dir = args.data_dir.clone().unwrap_or_else(config::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}: is another server running there? Pick another with --listen", args.listen)
    })?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = Server::open(ServerConfig {
        lease_ms: args.lease_timeout.max(1) * 1000,
        public_url: Some(url.clone()),
        quota_bytes: args.quota_bytes,
        gc_grace: Duration::from_secs(args.gc_grace),
        ingest_socket: (!args.no_local_ingest).then(|| data_dir.join(podder_store::ingest::SOCKET_NAME)),
        ..ServerConfig::new(data_dir.clone())
    })
    .await?;
    let admin = admin_name(args.admin.as_deref());
    let first_token = server.ensure_admin(&admin).await?;
    Ok(Started { url, server, admin, first_token, data_dir, listener })
}

impl Started {
    pub fn into_listener(self) -> TcpListener {
        self.listener
    }

    pub fn serve(self) -> tokio::task::JoinHandle<Result<()>> {
        let Started { server, listener, .. } = self;
        tokio::spawn(async move { server.serve(listener, super::shutdown_signal()).await })
    }
}

pub async fn server(args: ServeArgs) -> Result<i32> {
    let started = start(&args).await?;
    println!("podder server listening on {}", started.url);
    println!("data directory: {}", started.data_dir.display());
    println!("log: {}", crate::logging::log_file(&started.data_dir).display());
    if let Some(t) = &started.first_token {
        println!("admin owner: {}", started.admin);
        println!("admin token: {t}");
        println!("log in with: podder login --server {} --token {t}", started.url);
    }
    started.serve().await??;
    Ok(0)
}

pub async fn up(args: ServeArgs) -> Result<i32> {
    let started = start(&args).await?;
    let (url, data_dir, admin) = (started.url.clone(), started.data_dir.clone(), started.admin.clone());
    let server = started.server.clone();
    let first_token = started.first_token.clone();
    let server_task = started.serve();
    let user_token = match first_token {
        Some(t) => t,
        None => match reusable_token(&url).await {
            Some(t) => t,
            None => server.create_token(&admin, true).await?,
        },
    };
    let path = ClientConfig { server: Some(url.clone()), token: Some(user_token) }.save()?;
    println!("podder is up at {url}");
    println!("data directory: {}", data_dir.display());
    println!("log: {}", crate::logging::log_file(&data_dir).display());
    println!(
        "client config (with the token) written to {} — try `podder init NAME` and `podder run -- python3 train.py`",
        path.display()
    );
    let agent = AgentConfig {
        name: "local".into(),
        queue: "default".into(),
        slots: args.slots.max(1),
        work_dir: data_dir.join("agent"),
        hide_paths: vec![data_dir.clone(), config::config_path().parent().map(PathBuf::from).unwrap_or_default()],
        sandbox: parse_sandbox(&args.sandbox)?,
        stop_grace: Duration::from_secs(10),
        lease_wait_ms: 30_000,
        cache_bytes: args.cache_bytes,
        executor: args.executor.parse()?,
        gpus: podder_agent::parse_gpus(&args.gpus)?,
        docker_user: "1000:1000".into(),
        default_image: super::agent::DEFAULT_IMAGE.into(),
        memory_bytes: None,
        venv_python: None,
    };
    let client = Client::new(&url, &server.create_token(&admin, true).await?)?;
    let agent_task = tokio::spawn(podder_agent::run_agent(client, agent, super::shutdown_signal()));
    let (s, a) = tokio::join!(server_task, agent_task);
    s??;
    a??;
    Ok(0)
}

/// The token in the client config, if it already works against this server.
async fn reusable_token(url: &str) -> Option<String> {
    let cfg = ClientConfig::load().ok()?;
    if cfg.server.as_deref() != Some(url) {
        return None;
    }
    let token = cfg.token?;
    let client = Client::new(url, &token).ok()?;
    client.whoami().await.ok().map(|_| token)
}

pub fn parse_sandbox(s: &str) -> Result<SandboxMode> {
    match s {
        "auto" => Ok(SandboxMode::Auto),
        "native" => Ok(SandboxMode::Native),
        "bwrap" | "bubblewrap" => Ok(SandboxMode::Bubblewrap),
        "none" => Ok(SandboxMode::None),
        other => anyhow::bail!("unknown sandbox '{other}': use auto (podder's own, the default), bwrap or none"),
    }
}
