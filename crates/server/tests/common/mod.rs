//! A real server on a temp dir and a loopback port, and helpers that drive
//! it over HTTP the way the client and the agent do.
#![allow(dead_code)]

use podder_core::api::{DatasetVersion, ErrorBody, Lease, LeaseRequest, ManifestCommitted, SubmitJob, frames};
use podder_core::env::{ExecutorKind, Gpu};
use podder_core::{ChunkId, Entry, EntryKind, Inventory, Manifest, ManifestId};
use podder_server::{Server, ServerConfig};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub mod ingest;

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<TempDir>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_lease_ms(30_000).await
    }

    pub async fn with_lease_ms(lease_ms: u64) -> TestServer {
        TestServer::with_config(|c| c.lease_ms = lease_ms).await
    }

    /// A server whose configuration `f` adjusts (it starts on a temp dir).
    pub async fn with_config(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path());
        f(&mut config);
        TestServer::open(config, None, Some(dir)).await
    }

    /// A server on `config` (its data directory may hold an earlier
    /// server's data: pass that server's admin token then).
    pub async fn open(config: ServerConfig, admin: Option<String>, dir: Option<TempDir>) -> TestServer {
        let server = Server::open(config).await.unwrap();
        let admin = match admin {
            Some(a) => a,
            None => server.ensure_admin("admin").await.unwrap().expect("first start makes an admin"),
        };
        assert!(server.ensure_admin("admin").await.unwrap().is_none(), "only the first start does");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        TestServer { server, base, admin, client, stop: Some(stop), task: Some(task), _dir: dir }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// A token of a new (or existing) non-admin owner.
    pub async fn token(&self, owner: &str) -> String {
        self.server.create_token(owner, false).await.unwrap()
    }

    pub fn req(&self, method: Method, token: &str, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}/api/v1{path}", self.base)).bearer_auth(token)
    }
    pub fn get(&self, token: &str, path: &str) -> RequestBuilder {
        self.req(Method::GET, token, path)
    }
    pub fn post(&self, token: &str, path: &str) -> RequestBuilder {
        self.req(Method::POST, token, path)
    }
    pub fn delete(&self, token: &str, path: &str) -> RequestBuilder {
        self.req(Method::DELETE, token, path)
    }

    pub async fn create_dataset(&self, token: &str, name: &str) {
        let r = self.post(token, "/datasets").json(&serde_json::json!({ "name": name })).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    }

    /// Makes a committed manifest the next version of `owner/name`.
    pub async fn add_version(&self, token: &str, owner: &str, name: &str, manifest: ManifestId) -> Response {
        let body = serde_json::json!({ "manifest": manifest, "message": "test" });
        self.post(token, &format!("/datasets/{owner}/{name}/versions")).json(&body).send().await.unwrap()
    }

    /// Like `add_version`, expecting success; returns the version number.
    pub async fn version(&self, token: &str, owner: &str, name: &str, manifest: ManifestId) -> u32 {
        let r = self.add_version(token, owner, name, manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        r.json::<DatasetVersion>().await.unwrap().version
    }

    pub async fn create_project(&self, token: &str, name: &str) {
        let r = self.post(token, "/projects").json(&serde_json::json!({ "name": name })).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    /// Uploads chunks as one framed body; returns their ids.
    pub async fn upload(&self, token: &str, chunks: &[&[u8]]) -> Vec<ChunkId> {
        let mut body = Vec::new();
        let mut ids = Vec::new();
        for data in chunks {
            let id = ChunkId::of(data);
            body.extend_from_slice(&frames::header(&id, data.len()));
            body.extend_from_slice(data);
            ids.push(id);
        }
        let r = self.post(token, "/chunks").body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        ids
    }

    /// Uploads files (path, bytes; one chunk each) and commits their tree.
    pub async fn commit_tree(&self, token: &str, files: &[(&str, &[u8])]) -> ManifestId {
        let datas: Vec<&[u8]> = files.iter().map(|f| f.1).collect();
        let ids = self.upload(token, &datas).await;
        let mut entries = Vec::new();
        for ((path, data), id) in files.iter().zip(ids) {
            if let Some((dir, _)) = path.rsplit_once('/')
                && !entries.iter().any(|e: &Entry| e.path == dir)
            {
                entries.push(Entry { path: dir.into(), kind: EntryKind::Dir { mode: 0o755 } });
            }
            let kind = EntryKind::File { mode: 0o644, size: data.len() as u64, chunks: vec![id] };
            entries.push(Entry { path: path.to_string(), kind });
        }
        let manifest = Manifest::new(entries);
        let r = self.post(token, "/manifests").json(&manifest).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        let committed: ManifestCommitted = r.json().await.unwrap();
        assert_eq!(committed.id, manifest.id());
        committed.id
    }

    pub async fn code(&self, token: &str) -> ManifestId {
        self.commit_tree(token, &[("train.py", b"print('hello')\n")]).await
    }

    pub async fn submit(&self, token: &str, owner: &str, project: &str, job: &SubmitJob) -> Response {
        self.post(token, &format!("/projects/{owner}/{project}/jobs")).json(job).send().await.unwrap()
    }

    /// Asks for work on a queue; `None` when none came within `wait_ms`.
    pub async fn lease(&self, token: &str, queue: &str, wait_ms: u64) -> Option<Lease> {
        self.lease_as(token, "test-agent", queue, Default::default(), wait_ms).await
    }

    /// Asks for work as a named agent offering `inventory`.
    pub async fn lease_as(
        &self,
        token: &str,
        agent: &str,
        queue: &str,
        inventory: Inventory,
        wait_ms: u64,
    ) -> Option<Lease> {
        let req = LeaseRequest { agent: agent.into(), queue: queue.into(), wait_ms, inventory };
        let r = self.post(token, "/agent/lease").json(&req).send().await.unwrap();
        match r.status() {
            StatusCode::NO_CONTENT => None,
            StatusCode::OK => Some(r.json().await.unwrap()),
            s => panic!("lease answered {s}: {}", r.text().await.unwrap()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A submit request with a command and code, the rest defaulted.
pub fn job(code: ManifestId) -> SubmitJob {
    SubmitJob { code: Some(code), command: vec!["python".into(), "train.py".into()], ..SubmitJob::default() }
}

/// The status and error body of a failed response.
pub async fn error(r: Response) -> (StatusCode, ErrorBody) {
    let status = r.status();
    let body: ErrorBody = r.json().await.expect("errors have a JSON body");
    (status, body)
}

/// Asserts a status and an error message that contains `needle`.
pub async fn assert_error(r: Response, status: StatusCode, needle: &str) -> ErrorBody {
    let (got, body) = error(r).await;
    assert_eq!(got, status, "{}", body.error);
    assert!(body.error.contains(needle), "'{}' does not mention '{needle}'", body.error);
    body
}

/// Asserts a 400 whose message contains `needle`.
pub async fn assert_invalid(r: Response, needle: &str) {
    let (status, body) = error(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", body.error);
    assert_eq!(body.kind, "invalid");
    assert!(body.error.contains(needle), "'{}' does not mention '{needle}'", body.error);
}

/// A fake agent inventory: these GPU indices, docker or process executor.
pub fn inventory(gpus: &[u32], docker: bool) -> Inventory {
    Inventory {
        executor: Some(if docker { ExecutorKind::Docker } else { ExecutorKind::Process }),
        gpus: gpus.iter().map(|&index| Gpu { index, name: "Fake GPU".into(), memory_bytes: 16 << 30 }).collect(),
        slots: 8,
        cpus: 8,
        memory_bytes: 32 << 30,
    }
}
