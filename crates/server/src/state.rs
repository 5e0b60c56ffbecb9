//! The state every handler shares: the metadata and object stores, the
//! configuration, the waiters of long-polls, the garbage collector's grace
//! memory and lock, the pipeline scheduler and its clock, and the counters
//! of `/admin/stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podder_core::Inventory;
use podder_core::api::Stats;
use podder_meta::{JobId, JobRecord, MetaStore};
use podder_store::BlobStore;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ServerConfig;
use crate::clock::{Clock, SystemClock};
use crate::grace::Grace;
use crate::scheduler::{self, Scheduler};
use crate::wait::Waiters;

/// A cheap handle to the shared state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub meta: Arc<dyn MetaStore>,
    pub store: Arc<dyn BlobStore>,
    pub config: ServerConfig,
    pub counters: Counters,
    /// Agents long-polling for work, by queue.
    pub queues: Waiters<String>,
    /// Log followers, by job: woken by new lines and state changes.
    pub job_events: Waiters<JobId>,
    /// Heartbeats waiting for a stop request, by job: woken by state changes.
    pub job_control: Waiters<JobId>,
    /// Becomes true when the server shuts down; long-polls then answer at once.
    pub shutdown: watch::Sender<bool>,
    /// Keeps garbage collection away from uploads in flight.
    pub grace: Grace,
    /// Run followers, by run id: woken by every write of the run.
    pub runs: Waiters<i64>,
    /// The pipeline scheduler's shared state.
    pub scheduler: Scheduler,
    /// The clock of schedules, retry delays and runs (a manual one in tests).
    pub clock: Arc<dyn Clock>,
    /// What this server last wrote to each agent's row (queue, inventory,
    /// when), so that lease requests skip an unchanged, recent write.
    pub agents_seen: Mutex<HashMap<String, SeenAgent>>,
    /// The ingest socket, once it listens, and the random name of this
    /// server process that its `hello` answers with (see `ingest`).
    pub ingest_socket: std::sync::OnceLock<(std::path::PathBuf, String)>,
}

/// An agent's row as this server last wrote it.
pub struct SeenAgent {
    pub queue: String,
    pub inventory: Inventory,
    pub written_ms: i64,
}

/// How long a written `last_seen` is kept before a lease request writes it
/// again: far below the minutes the "agent seen recently" checks allow.
pub const AGENT_SEEN_REFRESH_MS: i64 = 5_000;

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(meta: Arc<dyn MetaStore>, store: Arc<dyn BlobStore>, config: ServerConfig) -> AppState {
        let grace = Grace::new(config.gc_grace);
        let clock = config.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        AppState(Arc::new(Inner {
            runs: Waiters::new(),
            scheduler: Scheduler::default(),
            clock,
            grace,
            meta,
            store,
            config,
            counters: Counters::default(),
            queues: Waiters::new(),
            job_events: Waiters::new(),
            job_control: Waiters::new(),
            shutdown: watch::channel(false).0,
            agents_seen: Mutex::new(HashMap::new()),
            ingest_socket: std::sync::OnceLock::new(),
        }))
    }
}

impl AppState {
    /// Records that `agent` asked for work: writes its row unless this server
    /// wrote the same queue and inventory less than
    /// [`AGENT_SEEN_REFRESH_MS`] ago.
    pub async fn agent_seen(&self, agent: &str, queue: &str, inventory: &Inventory) -> podder_meta::Result<()> {
        let now = now_ms();
        let fresh = |s: &SeenAgent| {
            s.queue == queue && s.inventory == *inventory && (0..AGENT_SEEN_REFRESH_MS).contains(&(now - s.written_ms))
        };
        if self.agents_seen.lock().expect("agents_seen lock").get(agent).is_some_and(fresh) {
            return Ok(());
        }
        self.meta.agent_seen(agent, queue, inventory, now).await?;
        let seen = SeenAgent { queue: queue.to_owned(), inventory: inventory.clone(), written_ms: now };
        self.agents_seen.lock().expect("agents_seen lock").insert(agent.to_owned(), seen);
        Ok(())
    }

    /// A job changed state (or got a stop request): wake whoever watches it,
    /// and the agents of its queue when it is queued again or has ended (an
    /// ended job frees its GPUs, so a waiting job may fit now). An ended
    /// job that is a pipeline step wakes its run at once.
    pub fn job_changed(&self, rec: &JobRecord) {
        self.job_events.wake(&rec.id);
        self.job_control.wake(&rec.id);
        if rec.job.state == podder_core::JobState::Queued || rec.job.state.is_terminal() {
            self.queues.wake(&rec.job.spec.queue);
        }
        if rec.job.state.is_terminal() {
            scheduler::job_ended(self, rec.id);
        }
    }
}

impl Inner {
    /// The instant a long-poll of `wait_ms` (capped at `cap_ms`) ends.
    pub fn deadline(&self, wait_ms: u64, cap_ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(wait_ms.min(cap_ms))
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Counters of this server process, for `/admin/stats`.
#[derive(Default)]
pub struct Counters {
    pub chunks_received: AtomicU64,
    pub chunk_bytes_received: AtomicU64,
    pub chunks_stored: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        Stats {
            chunks_received: self.chunks_received.load(Ordering::Relaxed),
            chunk_bytes_received: self.chunk_bytes_received.load(Ordering::Relaxed),
            chunks_stored: self.chunks_stored.load(Ordering::Relaxed),
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
