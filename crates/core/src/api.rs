//! Wire types of the HTTP API under `/api/v1`, shared by server and client.
//!
//! Every request and response body is one of these types, as JSON. Times are
//! Unix milliseconds. The chunk upload and fetch bodies are binary frames,
//! described in [`frames`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{ChunkId, ManifestId};
use crate::env::{EnvSpec, ImageBuild, Inventory, Resources};
use crate::job::{JobState, Outcome};
use crate::mount::MountPath;
use crate::names::Name;
use crate::refs::JobRef;
use crate::task::TaskSpec;

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

/// Answer of `GET /chunks/local`: the Unix socket through which a client on
/// the server's machine may hand it files by descriptor (see
/// `podder_store::ingest`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalIngest {
    pub socket: String,
    /// Names this server process; its socket's `hello` answers the same, so
    /// a client knows the socket belongs to the server it talks to.
    pub instance: String,
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
    /// GPUs, CPU and memory limits, network.
    #[serde(default)]
    pub resources: Resources,
    /// Makes this a build job: the agent builds the image of a task from
    /// `code` (the task directory) or from a Git repository, and reports a
    /// [`BuildResult`]. `command` must then be empty.
    #[serde(default)]
    pub build: Option<BuildRequest>,
}

/// `task build`: what to build. The Dockerfile is the context's own.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BuildRequest {
    /// `URL[#REF]`: clone this instead of using the code snapshot.
    #[serde(default)]
    pub git: Option<String>,
    #[serde(default)]
    pub obfuscate: bool,
}

/// What a build job produced, reported by the agent when it finishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildResult {
    /// The local tag (`podder-build:...`, from [`ImageBuild::tag`] once the
    /// Git commit is known).
    pub image: String,
    /// The engine's image id (`sha256:...`).
    pub image_id: String,
    /// The build as made (with the Git commit filled in).
    pub build: ImageBuild,
    /// The text of the context's `task.yaml`.
    pub task_yaml: String,
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
    /// The environment resolved at submit (`env` is the name as typed).
    #[serde(default)]
    pub environment: Option<EnvSpec>,
    #[serde(default)]
    pub resources: Resources,
    /// Present on a build job: what to build.
    #[serde(default)]
    pub build: Option<ImageBuild>,
}

impl JobSpec {
    /// Only a docker agent can run it.
    pub fn needs_docker(&self) -> bool {
        self.build.is_some() || self.environment.as_ref().is_some_and(EnvSpec::needs_docker)
    }
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
    /// The GPU indices the server assigned on the agent (empty without GPUs).
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// What a build job built, once it succeeded.
    #[serde(default)]
    pub build_result: Option<BuildResult>,
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
    /// What the agent offers; the server places only jobs that fit it.
    #[serde(default)]
    pub inventory: Inventory,
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
    /// The server takes a [`FinishWithLogs`] (the job's last log lines with
    /// its end, in one call) and the empty output manifest without a commit
    /// ([`Manifest::empty_id`](crate::Manifest::empty_id)). False from servers
    /// that predate both: the agent then uploads the lines and commits the
    /// empty manifest first.
    #[serde(default)]
    pub finish_with_logs: bool,
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
    /// A build job's result (only with outcome succeeded).
    #[serde(default)]
    pub build: Option<BuildResult>,
}

/// `POST /agent/leases/{id}/finish` from agents whose lease says
/// `finish_with_logs`: the job's end and its last log lines, which the server
/// appends (as `POST .../logs` would, idempotently) before it ends the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishWithLogs {
    #[serde(flatten)]
    pub finish: Finish,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// How long the job's process ran, in milliseconds, when the agent did
    /// not report `running` (a job that ends within moments goes straight
    /// from assigned to its end): the server dates `started_at` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_ms: Option<u64>,
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

/// `GET /agents`: an agent as the server last saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    pub queue: String,
    pub inventory: Inventory,
    pub last_seen: i64,
    /// GPU indices held by its running jobs.
    pub gpus_in_use: Vec<u32>,
}

/// `POST /envs`: a custom environment (yours), or with `stock: true` (an
/// admin only) one of the shared stock ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateEnv {
    pub name: Name,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub gpu_image: Option<String>,
    /// A Dockerfile's text (no COPY/ADD: there is no context).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// A pip requirements file's text.
    #[serde(default)]
    pub requirements: Option<String>,
    #[serde(default)]
    pub stock: bool,
    /// Replace an environment of that name (jobs keep what they resolved).
    #[serde(default)]
    pub replace: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    pub owner: Name,
    pub name: Name,
    pub description: String,
    pub spec: EnvSpec,
    pub stock: bool,
    pub created_at: i64,
}

/// `POST /projects/{owner}/{project}/tasks`: register the task a succeeded
/// build job built (by default the project's newest one).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeployTask {
    #[serde(default)]
    pub build_job: Option<u64>,
}

/// A deployed task: runnable by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub owner: Name,
    pub project: Name,
    pub name: Name,
    pub spec: TaskSpec,
    /// The environment its runs get: the built image (and how to rebuild it).
    pub environment: EnvSpec,
    pub build_job: JobRef,
    /// The Git commit it was built from, if from Git.
    pub commit: Option<String>,
    pub obfuscated: bool,
    /// 1 for the first deploy; each deploy of the same name adds one.
    pub version: u32,
    pub deployed_at: i64,
}

/// `POST /projects/{owner}/{project}/tasks/{name}/runs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunTask {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `INPUT=SRC` (mounted where the task declares INPUT) or `SRC[:MOUNT]`.
    #[serde(default)]
    pub data: Vec<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
}

/// `POST /projects/{owner}/{project}/pipelines`: create or update a pipeline
/// from its file (a new version when the text changed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyPipeline {
    /// The pipeline file's text (YAML).
    pub file: String,
    /// Its name as the user has it, for error messages (`nightly.yaml`).
    pub file_name: String,
    /// The code snapshot that inline steps run on (the directory the file
    /// was applied from), already committed.
    #[serde(default)]
    pub code: Option<ManifestId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pipeline {
    pub owner: Name,
    pub project: Name,
    pub name: Name,
    /// 1 for the first apply; each apply that changes the file adds one.
    pub version: u32,
    pub description: String,
    /// The parsed pipeline file (podder_pipeline::PipelineSpec as JSON).
    pub spec: serde_json::Value,
    pub code: Option<ManifestId>,
    /// The schedule is paused (manual runs still work).
    pub paused: bool,
    /// When the schedule fires next (none without a schedule or paused).
    pub next_run_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST .../pipelines/{name}/runs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StartRun {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Run this step alone, fed by the latest successful upstream outputs.
    #[serde(default)]
    pub only: Option<String>,
}

/// `POST .../pipelines/{name}/runs/{n}/retry`: a new run that keeps the
/// results before `from` (default: the failed steps) and runs the rest.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RetryRun {
    #[serde(default)]
    pub from: Option<String>,
}

/// One step of a run, as users see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepView {
    pub name: String,
    /// pending, running, retrying, succeeded, cached, failed, skipped, cancelled
    pub state: String,
    pub attempt: u32,
    pub needs: Vec<String>,
    /// The step's job (the current or last attempt).
    pub job: Option<JobRef>,
    /// The job whose result a cached step reused.
    #[serde(default)]
    pub cached_from: Option<JobRef>,
    pub output: Option<ManifestId>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineRun {
    pub owner: Name,
    pub project: Name,
    pub pipeline: Name,
    /// Per pipeline, from 1: `nightly/3`.
    pub number: u64,
    pub pipeline_version: u32,
    /// running, succeeded, failed, cancelled
    pub state: String,
    /// manual, schedule, retry, only
    pub trigger: String,
    /// For a scheduled run: the instant it was due.
    pub scheduled_for: Option<i64>,
    pub params: BTreeMap<String, String>,
    pub steps: Vec<StepView>,
    pub retry_of: Option<u64>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Grows with every change of the run: `GET ...?wait_ms=N&after=REV`
    /// answers as soon as the revision passes `after`.
    pub revision: u64,
}
