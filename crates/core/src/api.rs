//! Wire types of the HTTP API under `/api/v1`, shared by server and client.
//!
//! Every request and response body is one of these types, as JSON. Times are
//! Unix milliseconds. The chunk upload and fetch bodies are binary frames,
//! described in [`frames`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{ChunkId, ManifestId};
use crate::job::{JobState, Outcome};
use crate::mount::MountPath;
use crate::names::Name;
use crate::refs::JobRef;

/// The API version prefix.
pub const PREFIX: &str = "/api/v1";

/// Every error response: a message for a person and a machine-readable kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub kind: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    pub owner: Name,
    pub admin: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateProject {
    pub name: Name,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Project {
    pub owner: Name,
    pub name: Name,
    pub description: String,
    pub created_at: i64,
    pub jobs: u64,
}

/// `POST /chunks/missing`: which of these chunks does the server lack?
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkList {
    pub chunks: Vec<ChunkId>,
}

/// Answer of `POST /chunks` (an upload of framed chunks).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunksStored {
    pub received: u64,
    pub stored: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestCommitted {
    pub id: ManifestId,
    pub files: u64,
    pub bytes: u64,
}

/// `POST /projects/{owner}/{project}/jobs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SubmitJob {
    /// The code snapshot, already committed as a manifest.
    pub code: Option<ManifestId>,
    pub command: Vec<String>,
    #[serde(default)]
    pub setup: Vec<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `--data SRC[:MOUNT]` as the user typed them; the server resolves them.
    #[serde(default)]
    pub data: Vec<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// An input resolved at submit time: the concrete manifest it mounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// What the user asked for, resolved (e.g. `alice/mnist#12/model`).
    pub source: String,
    pub manifest: ManifestId,
    pub mount: MountPath,
}

/// Everything that defines what a job runs; restart copies it unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub code: ManifestId,
    pub command: Vec<String>,
    pub setup: Vec<String>,
    pub params: BTreeMap<String, String>,
    pub inputs: Vec<Input>,
    pub env: Option<String>,
    pub timeout_secs: Option<u64>,
    pub retries: u32,
    pub queue: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    #[serde(rename = "ref")]
    pub job_ref: JobRef,
    pub state: JobState,
    pub spec: JobSpec,
    pub message: Option<String>,
    pub output: Option<ManifestId>,
    pub exit_code: Option<i32>,
    /// Why it ended, when it did not succeed (timeout, lost lease, ...).
    pub reason: Option<String>,
    /// 1 for the first attempt; each retry after a lost lease adds one.
    pub attempt: u32,
    pub agent: Option<String>,
    pub restarted_from: Option<JobRef>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines the agent writes about the job (setup, warnings).
    System,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Per job, from 0, without gaps; a resent line with a known seq is ignored.
    pub seq: u64,
    pub ts: i64,
    pub stream: Stream,
    pub text: String,
}

/// `GET .../logs?from=SEQ&wait_ms=N`: lines from `from` on; `done` once the
/// job has ended and every line was returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogBatch {
    pub lines: Vec<LogLine>,
    pub done: bool,
    pub state: JobState,
}

/// `POST /agent/lease`: an agent asks for work, waiting up to `wait_ms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub agent: String,
    pub queue: String,
    pub wait_ms: u64,
}

/// Work handed to an agent. All later agent calls name `lease_id`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lease {
    pub lease_id: String,
    pub job: Job,
    /// How long the lease lasts without a heartbeat.
    pub lease_ms: u64,
    /// The server's base URL for the job's tools (e.g. MLflow), as the agent reached it.
    #[serde(default)]
    pub server_url: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateUpdate {
    pub state: JobState,
}

/// `POST /agent/leases/{id}/heartbeat?wait_ms=N`: extends the lease; answers
/// at once when a stop was asked, else after `wait_ms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub stop: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogUpload {
    pub lines: Vec<LogLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finish {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub output: Option<ManifestId>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub chunks_received: u64,
    pub chunk_bytes_received: u64,
    pub chunks_stored: u64,
}

/// The binary body of chunk uploads and fetches: a sequence of frames, each
/// `[32-byte chunk id][u32 big-endian length][length bytes of chunk data]`,
/// the data uncompressed. The receiver checks every chunk against its id.
pub mod frames {
    pub const HEADER: usize = 36;
    /// No chunk may be larger than this (FastCDC's maximum is far below it).
    pub const MAX_CHUNK: usize = 16 * 1024 * 1024;

    pub fn header(id: &crate::ChunkId, len: usize) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..32].copy_from_slice(&id.0.0);
        h[32..].copy_from_slice(&(len as u32).to_be_bytes());
        h
    }

    pub fn parse_header(h: &[u8; HEADER]) -> (crate::ChunkId, usize) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&h[..32]);
        let len = u32::from_be_bytes([h[32], h[33], h[34], h[35]]) as usize;
        (crate::ChunkId(crate::Digest(id)), len)
    }
}

/// `POST /datasets`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateDataset {
    pub name: Name,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dataset {
    pub owner: Name,
    pub name: Name,
    pub description: String,
    pub created_at: i64,
    /// How many versions exist now (deleted ones are not counted).
    pub versions: u32,
    /// The newest version's number, if any.
    pub latest: Option<u32>,
    /// Bytes of the newest version.
    pub bytes: u64,
}

/// One immutable version of a dataset: a committed manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetVersion {
    pub owner: Name,
    pub dataset: Name,
    pub version: u32,
    pub manifest: ManifestId,
    pub files: u64,
    pub bytes: u64,
    pub message: Option<String>,
    /// Where it came from when not uploaded: e.g. `alice/mnist#12`.
    pub source: Option<String>,
    pub created_at: i64,
}

/// `POST /datasets/{owner}/{name}/versions`: the manifest must be committed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateVersion {
    pub manifest: ManifestId,
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST /datasets/{owner}/{name}/from-output`: a job's output becomes a new
/// version without moving a byte.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FromOutput {
    pub job: JobRef,
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST /admin/gc`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GcRequest {
    #[serde(default)]
    pub dry_run: bool,
}

/// What a collection freed (or, in a dry run, would have freed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Manifests that no record refers to and that were not committed
    /// within the server's grace window.
    pub manifests_freed: u64,
    pub chunks_freed: u64,
    /// The bytes the freed chunks took in the store (compressed, as stored).
    pub bytes_freed: u64,
    /// The chunks that stay: named by a surviving manifest, or uploaded
    /// within the grace window.
    pub chunks_kept: u64,
    /// The freed chunk ids (at most the first 1000), for the record.
    pub freed: Vec<ChunkId>,
}
