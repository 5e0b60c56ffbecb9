//! The typed HTTP client of podder's API, used by the CLI and the agent.
//!
//! [`Client`] has one method per route of `/api/v1`; [`transfer`] builds the
//! upload and download protocols (missing chunks, framed batches, manifest
//! commit) on top of it. This crate must not parse command lines or print.

mod datasets;
mod envs;
mod error;
mod frames;
pub mod local;
mod pipelines;
pub mod transfer;

use std::time::Duration;

use podder_core::api::*;
use podder_core::{ChunkId, JobRef, Manifest, ManifestId, Name};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::ClientError;
pub use frames::FrameReader;

pub type Result<T> = std::result::Result<T, ClientError>;

/// A client bound to one server and one token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Hand large files to a server on this machine by descriptor (see
    /// [`local`]); on unless turned off.
    local_ingest: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &"<redacted>").finish()
    }
}

fn job_path(r: &JobRef, owner: &Name) -> String {
    let owner = r.owner.as_ref().unwrap_or(owner);
    format!("/jobs/{owner}/{}/{}", r.project, r.number)
}

impl Client {
    pub fn new(base: &str, token: &str) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_nodelay(true)
            .build()
            .map_err(ClientError::Http)?;
        Ok(Client { http, base: base.trim_end_matches('/').to_string(), token: token.to_string(), local_ingest: true })
    }

    /// Turns handing files to a server on this machine by descriptor on or
    /// off (off: every byte of an upload goes over HTTP).
    pub fn with_local_ingest(mut self, on: bool) -> Client {
        self.local_ingest = on;
        self
    }

    pub fn local_ingest_enabled(&self) -> bool {
        self.local_ingest
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The server's socket for files handed over by descriptor.
    pub async fn local_ingest(&self) -> Result<LocalIngest> {
        self.get("/chunks/local").await
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{PREFIX}{path}", self.base)).bearer_auth(&self.token)
    }

    async fn send(&self, rb: RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| ClientError::connect(&self.base, e))?;
        error::check(resp).await
    }

    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send(rb).await?;
        resp.json().await.map_err(ClientError::Http)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.req(Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.req(Method::POST, path).json(body)).await
    }

    async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        self.send(self.req(Method::POST, path).json(body)).await.map(drop)
    }

    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.get("/whoami").await
    }

    pub async fn projects(&self) -> Result<Vec<Project>> {
        self.get("/projects").await
    }

    pub async fn create_project(&self, name: &Name, description: &str) -> Result<Project> {
        self.post("/projects", &CreateProject { name: name.clone(), description: description.into() }).await
    }

    pub async fn project(&self, owner: &Name, name: &Name) -> Result<Project> {
        self.get(&format!("/projects/{owner}/{name}")).await
    }

    pub async fn missing_chunks(&self, chunks: Vec<ChunkId>) -> Result<Vec<ChunkId>> {
        let r: ChunkList = self.post("/chunks/missing", &ChunkList { chunks }).await?;
        Ok(r.chunks)
    }

    /// Sends one framed batch of chunks (see `podder_core::api::frames`).
    pub async fn upload_frames(&self, body: impl Into<bytes::Bytes>) -> Result<ChunksStored> {
        let body: bytes::Bytes = body.into();
        self.json(self.req(Method::POST, "/chunks").header("content-type", "application/octet-stream").body(body)).await
    }

    /// Asks for chunks; the answer is read frame by frame with [`FrameReader`].
    pub async fn fetch_chunks(&self, chunks: Vec<ChunkId>) -> Result<FrameReader> {
        let resp = self.send(self.req(Method::POST, "/chunks/fetch").json(&ChunkList { chunks })).await?;
        Ok(FrameReader::new(resp))
    }

    pub async fn commit_manifest(&self, m: &Manifest) -> Result<ManifestCommitted> {
        self.post("/manifests", m).await
    }

    pub async fn manifest(&self, id: &ManifestId) -> Result<Manifest> {
        self.get(&format!("/manifests/{id}")).await
    }

    pub async fn submit(&self, owner: &Name, project: &Name, job: &SubmitJob) -> Result<Job> {
        self.post(&format!("/projects/{owner}/{project}/jobs"), job).await
    }

    pub async fn jobs(&self, owner: &Name, project: &Name) -> Result<Vec<Job>> {
        self.get(&format!("/projects/{owner}/{project}/jobs")).await
    }

    /// `me` fills in the owner when the ref has none.
    pub async fn job(&self, r: &JobRef, me: &Name) -> Result<Job> {
        self.get(&job_path(r, me)).await
    }

    pub async fn stop(&self, r: &JobRef, me: &Name) -> Result<Job> {
        self.post(&format!("{}/stop", job_path(r, me)), &()).await
    }

    pub async fn restart(&self, r: &JobRef, me: &Name) -> Result<Job> {
        self.post(&format!("{}/restart", job_path(r, me)), &()).await
    }

    pub async fn logs(&self, r: &JobRef, me: &Name, from: u64, wait_ms: u64) -> Result<LogBatch> {
        self.get(&format!("{}/logs?from={from}&wait_ms={wait_ms}", job_path(r, me))).await
    }

    pub async fn stats(&self) -> Result<Stats> {
        self.get("/admin/stats").await
    }

    /// Long-polls for work; `None` when nothing came within `wait_ms`.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<Option<Lease>> {
        let resp = self
            .send(self.req(Method::POST, "/agent/lease").json(req).timeout(Duration::from_millis(req.wait_ms + 30_000)))
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        resp.json().await.map(Some).map_err(ClientError::Http)
    }

    pub async fn set_state(&self, lease: &str, state: podder_core::JobState) -> Result<()> {
        self.post_empty(&format!("/agent/leases/{lease}/state"), &StateUpdate { state }).await
    }

    pub async fn heartbeat(&self, lease: &str, wait_ms: u64) -> Result<HeartbeatReply> {
        self.json(
            self.req(Method::POST, &format!("/agent/leases/{lease}/heartbeat?wait_ms={wait_ms}"))
                .timeout(Duration::from_millis(wait_ms + 30_000)),
        )
        .await
    }

    pub async fn upload_logs(&self, lease: &str, lines: Vec<LogLine>) -> Result<()> {
        self.post_empty(&format!("/agent/leases/{lease}/logs"), &LogUpload { lines }).await
    }

    pub async fn finish(&self, lease: &str, finish: &Finish) -> Result<Job> {
        self.post(&format!("/agent/leases/{lease}/finish"), finish).await
    }

    /// [`finish`](Self::finish) with the job's last log lines, for a server
    /// whose lease says `finish_with_logs`.
    pub async fn finish_with_logs(&self, lease: &str, finish: &FinishWithLogs) -> Result<Job> {
        self.post(&format!("/agent/leases/{lease}/finish"), finish).await
    }
}
