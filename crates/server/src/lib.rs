//! The podder server: the JSON API under `/api/v1` over the metadata store
//! (`podder_meta`) and the object store (`podder_store`), plus the lease
//! reaper. Datasets (`datasets`), the storage limits of [`ServerConfig`]
//! (chunk and manifest sizes, per-owner quotas) and garbage collection of
//! the object store (`gc`, made safe for uploads in flight by `grace`) live
//! here too, as do environments (`envs`, with the stock ones seeded at
//! start), the agent list (`agents`), deployed tasks (`tasks`), and
//! pipelines (`pipelines`: the routes; `scheduler`: runs driven by the pure
//! state machine of `podder_pipeline`, and the cron loop on a [`Clock`]).
//!
//! This crate owns HTTP: routing, authentication, mapping errors to statuses,
//! long-polls. It holds no scheduling rules of its own beyond calling the
//! stores; job states change only through the metadata store's checked
//! transitions. One handler module per resource; [`Server`] is the entry
//! point, taking a listener and a shutdown signal so tests run it in-process.

mod admin;
mod agent;
mod agents;
mod auth;
mod chunks;
mod clock;
mod datasets;
mod envs;
mod error;
mod gc;
mod grace;
mod ingest;
mod jobs;
mod logs;
mod manifests;
mod pipelines;
mod projects;
mod reaper;
mod resolve;
mod scheduler;
mod state;
mod tasks;
mod wait;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use podder_core::Name;
use podder_meta::{MetaStore, SqliteStore, TokenHash};
use podder_store::{BlobStore, PackStore};

use state::{AppState, now_ms};

pub use clock::{Clock, ManualClock, Sleep, SystemClock};

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds `meta.db` (SQLite) and `objects/` (the object store).
    pub data_dir: PathBuf,
    /// How long a lease lasts without a heartbeat.
    pub lease_ms: u64,
    /// The URL jobs reach the server at, when not the one the agent used.
    pub public_url: Option<String>,
    /// The largest chunk an upload may carry (uncompressed bytes); a larger
    /// frame is refused with 413. Clients cut chunks of at most 1 MiB.
    pub max_chunk_bytes: usize,
    /// The largest manifest body a commit may send; larger is refused with 413.
    pub max_manifest_bytes: usize,
    /// The most entries (files, directories, symlinks) one manifest may list.
    pub max_manifest_entries: usize,
    /// Each owner's storage quota in bytes (their dataset versions plus their
    /// jobs' outputs, each distinct tree counted once); `None`: no quota.
    pub quota_bytes: Option<u64>,
    /// How long garbage collection spares chunks and manifests that were
    /// just uploaded, so that an upload in flight (chunks, then the
    /// manifest, then the version or job that refers to it) is never
    /// collected half-way. See the `gc` module.
    pub gc_grace: Duration,
    /// The clock of pipeline schedules, retry delays and runs; `None`: the
    /// system clock. Tests pass a [`ManualClock`] and move it by hand.
    pub clock: Option<Arc<dyn Clock>>,
    /// Where [`Server::serve`] listens for files handed over by descriptor
    /// by clients on this machine (see `ingest`); `None`: it does not.
    pub ingest_socket: Option<PathBuf>,
}

impl ServerConfig {
    pub const DEFAULT_LEASE_MS: u64 = 30_000;
    pub const DEFAULT_MAX_CHUNK_BYTES: usize = podder_core::api::frames::MAX_CHUNK;
    pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 256 * 1024 * 1024;
    pub const DEFAULT_MAX_MANIFEST_ENTRIES: usize = 5_000_000;
    pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            lease_ms: Self::DEFAULT_LEASE_MS,
            public_url: None,
            max_chunk_bytes: Self::DEFAULT_MAX_CHUNK_BYTES,
            max_manifest_bytes: Self::DEFAULT_MAX_MANIFEST_BYTES,
            max_manifest_entries: Self::DEFAULT_MAX_MANIFEST_ENTRIES,
            quota_bytes: None,
            gc_grace: Self::DEFAULT_GC_GRACE,
            clock: None,
            ingest_socket: None,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.lease_ms > 0, "the lease length must be more than 0 ms");
        anyhow::ensure!(
            self.max_chunk_bytes > 0 && self.max_chunk_bytes <= u32::MAX as usize,
            "the chunk size limit must be between 1 byte and 4 GiB"
        );
        anyhow::ensure!(self.max_manifest_bytes > 0, "the manifest size limit must be more than 0 bytes");
        anyhow::ensure!(self.max_manifest_entries > 0, "the manifest entry limit must be more than 0");
        Ok(())
    }
}

/// A running server's handle; cheap to clone.
#[derive(Clone)]
pub struct Server {
    state: AppState,
}

impl Server {
    /// Opens (creating if needed) `data_dir/meta.db` and `data_dir/objects/`
    /// (a [`PackStore`], locked against a second server on the directory).
    pub async fn open(config: ServerConfig) -> anyhow::Result<Server> {
        config.check()?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let objects = dir.join("objects");
        // Opening loads the pack indexes (and recovers packs a crash left
        // unsealed): file work, off the async threads.
        let store = tokio::task::spawn_blocking(move || PackStore::open(objects))
            .await
            .context("opening the object store panicked")?
            .with_context(|| format!("cannot open the object store in {}", dir.display()))?;
        let meta = SqliteStore::open(&dir.join("meta.db"))
            .await
            .with_context(|| format!("cannot open the metadata database in {}", dir.display()))?;
        let server = Server::with_stores(Arc::new(meta), Arc::new(store), config);
        server.seed().await?;
        Ok(server)
    }

    /// Creates the stock environments that are missing (never replacing
    /// one an admin changed). `open` and `serve` call it; it is idempotent.
    pub async fn seed(&self) -> anyhow::Result<()> {
        envs::seed_stock(self.state.meta.as_ref()).await.context("cannot seed the stock environments")
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

    /// Waits until the cron loop has handled every schedule instant up to
    /// `at` (on the server's clock), after the latest change of pipelines.
    /// Tests move a [`ManualClock`], then call this before looking at runs.
    pub async fn schedule_checked(&self, at: i64) {
        let mut rx = self.state.scheduler.checked.subscribe();
        let _ = rx.wait_for(|c| c.1 >= at).await;
    }

    /// Every route, under `/api/v1`, each behind the token check.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .merge(admin::routes())
            .merge(projects::routes())
            .merge(chunks::routes())
            .merge(manifests::routes())
            .merge(datasets::routes())
            .merge(gc::routes())
            .merge(jobs::routes())
            .merge(logs::routes())
            .merge(agent::routes())
            .merge(agents::routes())
            .merge(envs::routes())
            .merge(tasks::routes())
            .merge(pipelines::routes())
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
        self.seed().await?;
        let reaper = tokio::spawn(reaper::run(self.state.clone(), self.state.shutdown_signal()));
        let cron = tokio::spawn(scheduler::cron::run(self.state.clone(), self.state.shutdown_signal()));
        let ingest = ingest::start(&self.state);
        scheduler::recover(&self.state).await;
        let stop = self.state.shutdown.clone();
        let signal = async move {
            shutdown.await;
            stop.send_replace(true);
        };
        let served = axum::serve(listener, self.router()).with_graceful_shutdown(signal).await;
        self.state.shutdown.send_replace(true);
        let _ = reaper.await;
        let _ = cron.await;
        if let Some(ingest) = ingest {
            let _ = ingest.await;
        }
        served.context("the HTTP server failed")
    }
}
