//! The podder server: the JSON API under `/api/v1` over the metadata store
//! (`podder_meta`) and the object store (`podder_store`), plus the lease
//! reaper.
//!
//! This crate owns HTTP: routing, authentication, mapping errors to statuses,
//! long-polls. It holds no scheduling rules of its own beyond calling the
//! stores; job states change only through the metadata store's checked
//! transitions. One handler module per resource; [`Server`] is the entry
//! point, taking a listener and a shutdown signal so tests run it in-process.

mod admin;
mod agent;
mod auth;
mod chunks;
mod error;
mod jobs;
mod logs;
mod manifests;
mod projects;
mod reaper;
mod resolve;
mod state;
mod wait;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use podder_core::Name;
use podder_meta::{MetaStore, SqliteStore, TokenHash};
use podder_store::{BlobStore, LocalStore};

use state::{AppState, now_ms};

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds `meta.db` (SQLite) and `objects/` (the object store).
    pub data_dir: PathBuf,
    /// How long a lease lasts without a heartbeat.
    pub lease_ms: u64,
    /// The URL jobs reach the server at, when not the one the agent used.
    pub public_url: Option<String>,
}

impl ServerConfig {
    pub const DEFAULT_LEASE_MS: u64 = 30_000;

    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig { data_dir: data_dir.into(), lease_ms: Self::DEFAULT_LEASE_MS, public_url: None }
    }
}

/// A running server's handle; cheap to clone.
#[derive(Clone)]
pub struct Server {
    state: AppState,
}

impl Server {
    /// Opens (creating if needed) `data_dir/meta.db` and `data_dir/objects/`.
    pub async fn open(config: ServerConfig) -> anyhow::Result<Server> {
        anyhow::ensure!(config.lease_ms > 0, "the lease length must be more than 0 ms");
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let store = LocalStore::open(dir.join("objects"))
            .with_context(|| format!("cannot open the object store in {}", dir.display()))?;
        let meta = SqliteStore::open(&dir.join("meta.db"))
            .await
            .with_context(|| format!("cannot open the metadata database in {}", dir.display()))?;
        Ok(Server::with_stores(Arc::new(meta), Arc::new(store), config))
    }

    /// A server over stores chosen by the caller (other backends, tests).
    pub fn with_stores(meta: Arc<dyn MetaStore>, store: Arc<dyn BlobStore>, config: ServerConfig) -> Server {
        Server { state: AppState::new(meta, store, config) }
    }

    /// On the first start (no admin yet), creates `owner` as an admin with a
    /// token and returns the token; later starts return `None`.
    pub async fn ensure_admin(&self, owner: &str) -> anyhow::Result<Option<String>> {
        if self.state.meta.has_admin().await? {
            return Ok(None);
        }
        Ok(Some(self.create_token(owner, true).await?))
    }

    /// A new token for `owner`, creating the owner if missing (`admin` makes
    /// it an admin; it never takes the flag away).
    pub async fn create_token(&self, owner: &str, admin: bool) -> anyhow::Result<String> {
        let owner: Name = owner.parse()?;
        let meta = &self.state.meta;
        meta.ensure_owner(&owner, admin, now_ms()).await?;
        let token = auth::new_token()?;
        meta.add_token(&owner, &TokenHash::of(&token), now_ms()).await?;
        Ok(token)
    }

    /// Every route, under `/api/v1`, each behind the token check.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .merge(admin::routes())
            .merge(projects::routes())
            .merge(chunks::routes())
            .merge(manifests::routes())
            .merge(jobs::routes())
            .merge(logs::routes())
            .merge(agent::routes())
            .route_layer(axum::middleware::from_fn_with_state(self.state.clone(), auth::require_token));
        Router::new().nest(podder_core::api::PREFIX, api).fallback(error::no_route).with_state(self.state.clone())
    }

    /// Serves until `shutdown` completes, running the lease reaper alongside.
    /// At shutdown, open long-polls answer at once.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let reaper = tokio::spawn(reaper::run(self.state.clone(), self.state.shutdown_signal()));
        let stop = self.state.shutdown.clone();
        let signal = async move {
            shutdown.await;
            stop.send_replace(true);
        };
        let served = axum::serve(listener, self.router()).with_graceful_shutdown(signal).await;
        self.state.shutdown.send_replace(true);
        let _ = reaper.await;
        served.context("the HTTP server failed")
    }
}
