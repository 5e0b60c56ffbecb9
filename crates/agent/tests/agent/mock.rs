//! A minimal in-memory stand-in for the server's agent and chunk routes,
//! enough to drive `run_agent` through whole jobs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use podder_core::api::*;
use podder_core::{ChunkId, Inventory, JobState, Manifest, ManifestId};
use tokio::sync::Notify;

#[derive(Default, Debug, Clone)]
pub struct LeaseRecord {
    pub job: Option<Job>,
    pub states: Vec<JobState>,
    pub logs: BTreeMap<u64, LogLine>,
    pub finish: Option<Finish>,
    /// How long the process ran, when the agent did not report `running`.
    pub ran_ms: Option<u64>,
    pub stop: bool,
    pub lost: bool,
}

#[derive(Default)]
pub struct Mock {
    queue: Mutex<VecDeque<Lease>>,
    pub leases: Mutex<HashMap<String, LeaseRecord>>,
    chunks: Mutex<HashMap<ChunkId, Bytes>>,
    manifests: Mutex<HashMap<ManifestId, Manifest>>,
    pub manifest_gets: Mutex<HashMap<ManifestId, u32>>,
    /// Fail this many log uploads with a 500 before accepting them.
    pub fail_logs: AtomicU32,
    /// The inventory of every lease request, in order.
    pub inventories: Mutex<Vec<Inventory>>,
    changed: Notify,
}

type S = State<Arc<Mock>>;

fn err(status: StatusCode, msg: &str) -> Response {
    (status, Json(ErrorBody { error: msg.into(), kind: "test".into() })).into_response()
}

impl Mock {
    /// Serves the mock on a local port; returns its base URL.
    pub async fn start(self: &Arc<Self>) -> String {
        let app = Router::new()
            .route("/api/v1/agent/lease", post(lease))
            .route("/api/v1/agent/leases/{id}/state", post(state))
            .route("/api/v1/agent/leases/{id}/heartbeat", post(heartbeat))
            .route("/api/v1/agent/leases/{id}/logs", post(logs))
            .route("/api/v1/agent/leases/{id}/finish", post(finish))
            .route("/api/v1/chunks/missing", post(missing))
            .route("/api/v1/chunks", post(put_chunks))
            .route("/api/v1/chunks/fetch", post(fetch))
            .route("/api/v1/manifests", post(commit))
            .route("/api/v1/manifests/{id}", get(manifest))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    pub fn enqueue(&self, lease: Lease) {
        self.leases
            .lock()
            .unwrap()
            .insert(lease.lease_id.clone(), LeaseRecord { job: Some(lease.job.clone()), ..Default::default() });
        self.queue.lock().unwrap().push_back(lease);
        self.changed.notify_waiters();
    }

    pub fn record(&self, id: &str) -> LeaseRecord {
        self.leases.lock().unwrap().get(id).cloned().unwrap_or_default()
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut LeaseRecord)) {
        f(self.leases.lock().unwrap().entry(id.into()).or_default());
        self.changed.notify_waiters();
    }

    /// Waits (up to 60 s) until `cond` holds for lease `id`.
    pub async fn wait_for(&self, id: &str, what: &str, cond: impl Fn(&LeaseRecord) -> bool) -> LeaseRecord {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.record(id);
            if cond(&r) {
                return r;
            }
            assert!(tokio::time::Instant::now() < until, "timed out waiting for {what}: {r:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stores a tree's chunks and manifest as an upload would.
    pub fn put_tree(&self, dir: &std::path::Path) -> ManifestId {
        let opts = podder_store::scan::ScanOptions { respect_ignore: false, max_bytes: None, threads: 1 };
        let tree = podder_store::scan::scan_tree(dir, &opts).unwrap();
        for (id, src) in &tree.sources {
            let data = podder_store::scan::read_chunk(src).unwrap();
            self.chunks.lock().unwrap().insert(*id, Bytes::from(data));
        }
        let id = tree.manifest.id();
        self.manifests.lock().unwrap().insert(id, tree.manifest);
        id
    }

    pub fn manifest_of(&self, id: &ManifestId) -> Option<Manifest> {
        self.manifests.lock().unwrap().get(id).cloned()
    }
}

async fn lease(State(m): S, Json(req): Json<LeaseRequest>) -> Response {
    m.inventories.lock().unwrap().push(req.inventory.clone());
    let until = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms);
    loop {
        let notified = m.changed.notified();
        if let Some(l) = m.queue.lock().unwrap().pop_front() {
            return Json(l).into_response();
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return StatusCode::NO_CONTENT.into_response();
        }
    }
}

/// The error answer for a lease that is unknown, lost or finished.
fn check(m: &Mock, id: &str) -> Option<Response> {
    match m.leases.lock().unwrap().get(id) {
        None => Some(err(StatusCode::NOT_FOUND, "no such lease")),
        Some(r) if r.lost || r.finish.is_some() => Some(err(StatusCode::CONFLICT, "the lease is no longer valid")),
        Some(_) => None,
    }
}

async fn state(State(m): S, Path(id): Path<String>, Json(u): Json<StateUpdate>) -> Response {
    if let Some(r) = check(&m, &id) {
        return r;
    }
    m.update(&id, |r| r.states.push(u.state));
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
struct Wait {
    wait_ms: u64,
}

async fn heartbeat(State(m): S, Path(id): Path<String>, Query(w): Query<Wait>) -> Response {
    let until = tokio::time::Instant::now() + Duration::from_millis(w.wait_ms);
    loop {
        let notified = m.changed.notified();
        if let Some(r) = check(&m, &id) {
            return r;
        }
        if m.record(&id).stop {
            return Json(HeartbeatReply { stop: true }).into_response();
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return Json(HeartbeatReply { stop: false }).into_response();
        }
    }
}

async fn logs(State(m): S, Path(id): Path<String>, Json(up): Json<LogUpload>) -> Response {
    if let Some(r) = check(&m, &id) {
        return r;
    }
    if m.fail_logs.load(Ordering::SeqCst) > 0 {
        m.fail_logs.fetch_sub(1, Ordering::SeqCst);
        return err(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }
    m.update(&id, |r| {
        for l in up.lines {
            r.logs.entry(l.seq).or_insert(l);
        }
    });
    StatusCode::NO_CONTENT.into_response()
}

/// Takes the finish with the job's last log lines (failing like the log
/// route while `fail_logs` says so), and the empty output uncommitted.
async fn finish(State(m): S, Path(id): Path<String>, Json(f): Json<FinishWithLogs>) -> Response {
    if let Some(r) = check(&m, &id) {
        return r;
    }
    let FinishWithLogs { finish: f, logs, ran_ms } = f;
    if f.output == Some(Manifest::empty_id()) {
        m.manifests.lock().unwrap().entry(Manifest::empty_id()).or_insert_with(|| Manifest::new(Vec::new()));
    }
    if !logs.is_empty() {
        if m.fail_logs.load(Ordering::SeqCst) > 0 {
            m.fail_logs.fetch_sub(1, Ordering::SeqCst);
            return err(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
        }
        m.update(&id, |r| {
            for l in logs {
                r.logs.entry(l.seq).or_insert(l);
            }
        });
    }
    let mut job = m.record(&id).job.expect("a leased job");
    job.state = f.outcome.state();
    job.exit_code = f.exit_code;
    m.update(&id, |r| {
        r.finish = Some(f);
        r.ran_ms = ran_ms;
    });
    Json(job).into_response()
}

async fn missing(State(m): S, Json(list): Json<ChunkList>) -> Json<ChunkList> {
    let have = m.chunks.lock().unwrap();
    Json(ChunkList { chunks: list.chunks.into_iter().filter(|c| !have.contains_key(c)).collect() })
}

async fn put_chunks(State(m): S, body: Bytes) -> Json<ChunksStored> {
    let (mut rest, mut n) = (body, 0);
    while rest.len() >= frames::HEADER {
        let (id, len) = frames::parse_header(rest[..frames::HEADER].try_into().unwrap());
        let data = rest.slice(frames::HEADER..frames::HEADER + len);
        assert_eq!(ChunkId::of(&data), id);
        m.chunks.lock().unwrap().insert(id, data);
        rest = rest.slice(frames::HEADER + len..);
        n += 1;
    }
    Json(ChunksStored { received: n, stored: n, bytes: 0 })
}

async fn fetch(State(m): S, Json(list): Json<ChunkList>) -> Response {
    let have = m.chunks.lock().unwrap();
    let mut body = Vec::new();
    for id in list.chunks {
        let Some(data) = have.get(&id) else {
            return err(StatusCode::NOT_FOUND, "no such chunk");
        };
        body.extend_from_slice(&frames::header(&id, data.len()));
        body.extend_from_slice(data);
    }
    body.into_response()
}

async fn commit(State(m): S, Json(man): Json<Manifest>) -> Json<ManifestCommitted> {
    let id = man.id();
    let (files, bytes) = (man.file_count() as u64, man.total_size());
    m.manifests.lock().unwrap().insert(id, man);
    Json(ManifestCommitted { id, files, bytes })
}

async fn manifest(State(m): S, Path(id): Path<String>) -> Response {
    let id: ManifestId = id.parse().unwrap();
    *m.manifest_gets.lock().unwrap().entry(id).or_default() += 1;
    match m.manifest_of(&id) {
        Some(man) => Json(man).into_response(),
        None => err(StatusCode::NOT_FOUND, "no such manifest"),
    }
}
