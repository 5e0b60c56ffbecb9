//! Records the metadata store reads and writes, beyond the wire types of
//! `podder_core::api` that it returns where they fit.

use std::collections::BTreeMap;
use std::fmt;

use podder_core::api::{BuildResult, Job, JobSpec};
use podder_core::task::TaskSpec;
use podder_core::{EnvSpec, Inventory, JobRef, JobState, ManifestId, Name, Outcome};
use podder_pipeline::{PipelineSpec, RunState};

/// An owner (a user or a team) as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: Name,
    pub admin: bool,
}

/// The BLAKE3 hash of an API token: the only form in which a token is stored.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(blake3::hash(token.as_bytes()).to_hex().to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.0[..8])
    }
}

/// The store's internal id of a job: stable, cheap to look up, never shown
/// to users (they see `owner/project#number`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

/// A job with the scheduling fields that the wire type does not show.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub id: JobId,
    pub job: Job,
    /// The lease an agent holds on the job, while it is leased (kept after a
    /// normal finish so that a resent finish is answered the same way).
    pub lease_id: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub stop_requested: bool,
}

impl JobRecord {
    /// True while `lease_id` is the live lease of this job.
    pub fn holds_lease(&self, lease_id: &str) -> bool {
        self.job.state.is_leased() && self.lease_id.as_deref() == Some(lease_id)
    }
}

/// A job to create; its number is allocated by the store.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub owner: Name,
    pub project: Name,
    pub spec: JobSpec,
    pub message: Option<String>,
    pub restarted_from: Option<JobRef>,
    pub now: i64,
}

/// An agent's claim on the oldest queued job of a queue.
#[derive(Clone, Debug)]
pub struct Claim {
    pub queue: String,
    pub agent: String,
    /// A fresh random id; every later agent call names it.
    pub lease_id: String,
    pub now: i64,
    pub expires_at: i64,
    /// What the agent offers: only a job that fits it (`podder_core::env::place`,
    /// counting the GPUs the agent's leased jobs hold) is claimed, and the
    /// GPU indices placement picks are recorded on the job.
    pub inventory: Inventory,
}

/// How an agent ended a job.
#[derive(Clone, Debug)]
pub struct FinishJob {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// Must already be committed in the object store (the server checks).
    pub output: Option<ManifestId>,
    /// The total file bytes of `output` (0 without one), for quotas.
    pub output_bytes: u64,
    pub reason: Option<String>,
    /// The owner's storage quota in bytes, if any: an output that would take
    /// the owner past it is not kept, and the job fails with the reason
    /// [`MetaError::quota_exceeded`](crate::MetaError::quota_exceeded) gives.
    pub quota: Option<u64>,
    /// A build job's result; only for a build job that succeeded.
    pub build: Option<BuildResult>,
    /// When the job's process started, where the agent never reported
    /// `running` (kept if `started_at` is set already).
    pub started_at: Option<i64>,
    pub now: i64,
}

/// A dataset version to create; its number is allocated by the store.
#[derive(Clone, Debug)]
pub struct NewVersion {
    pub owner: Name,
    pub dataset: Name,
    /// Must already be committed in the object store (the server checks).
    pub manifest: ManifestId,
    pub files: u64,
    pub bytes: u64,
    pub message: Option<String>,
    /// Where the version came from when not uploaded, e.g. `alice/mnist#12`.
    pub source: Option<String>,
    /// The owner's storage quota in bytes, if any: a version that would take
    /// the owner past it is refused with [`MetaError::Quota`](crate::MetaError::Quota).
    pub quota: Option<u64>,
    pub now: i64,
}

/// A task to deploy (or deploy again: the version goes up by one).
#[derive(Clone, Debug)]
pub struct NewTask {
    pub owner: Name,
    pub project: Name,
    pub spec: TaskSpec,
    pub environment: EnvSpec,
    /// The build job's number in the same project.
    pub build_job: u64,
    pub commit: Option<String>,
    pub obfuscated: bool,
    pub now: i64,
}

/// How `MetaStore::put_env` treats an environment of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvWrite {
    /// `Conflict` when one exists.
    Create,
    /// Replaces one that exists.
    Replace,
    /// Leaves one that exists alone (seeding the stock environments).
    IfAbsent,
}

/// What a pipeline run was started by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Schedule,
    /// `pipeline retry`: a new run keeping the results before a step.
    Retry,
    /// `pipeline run --only STEP`: one step alone.
    Only,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Retry => "retry",
            Trigger::Only => "only",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        Some(match s {
            "manual" => Trigger::Manual,
            "schedule" => Trigger::Schedule,
            "retry" => Trigger::Retry,
            "only" => Trigger::Only,
            _ => return None,
        })
    }
}

/// A pipeline file to apply to a project: creates the pipeline, or adds a
/// version when the file or the code differs from the current version.
#[derive(Clone, Debug)]
pub struct NewPipeline {
    pub owner: Name,
    pub project: Name,
    /// The file as written, and its name (for messages).
    pub file: String,
    pub file_name: String,
    /// The parsed file; its `name` names the pipeline.
    pub spec: PipelineSpec,
    /// The code snapshot inline steps run on (committed; the server checks).
    pub code: Option<ManifestId>,
    pub now: i64,
}

/// A pipeline with its current version.
#[derive(Clone, Debug)]
pub struct PipelineRecord {
    pub id: i64,
    pub owner: Name,
    pub project: Name,
    pub name: Name,
    /// The current version (1 for the first apply).
    pub version: u32,
    /// The schedule is paused.
    pub paused: bool,
    /// The last schedule instant handled (or when the schedule's clock
    /// started: creation, or the last resume).
    pub last_scheduled: i64,
    pub file: String,
    pub file_name: String,
    pub spec: PipelineSpec,
    pub code: Option<ManifestId>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One applied version of a pipeline.
#[derive(Clone, Debug)]
pub struct PipelineVersion {
    pub pipeline_id: i64,
    pub version: u32,
    pub file: String,
    pub file_name: String,
    pub spec: PipelineSpec,
    pub code: Option<ManifestId>,
    pub created_at: i64,
}

/// A run to create; its number is allocated by the store.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub pipeline_id: i64,
    /// The pipeline version it runs.
    pub version: u32,
    pub trigger: Trigger,
    /// For a scheduled run: the instant it is for (recorded as the
    /// pipeline's last handled instant in the same transaction, also when
    /// the run is refused because `max_active` runs are active).
    pub scheduled_for: Option<i64>,
    pub params: BTreeMap<String, String>,
    pub state: RunState,
    /// The number of the run this one retries.
    pub retry_of: Option<u64>,
    /// `Conflict` when this many runs of the pipeline are active.
    pub max_active: u32,
    pub now: i64,
}

/// A pipeline run as stored.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: i64,
    pub pipeline_id: i64,
    pub owner: Name,
    pub project: Name,
    pub pipeline: Name,
    /// Per pipeline, from 1.
    pub number: u64,
    pub version: u32,
    pub trigger: Trigger,
    pub scheduled_for: Option<i64>,
    pub params: BTreeMap<String, String>,
    pub state: RunState,
    /// Grows with every write of the run.
    pub revision: u64,
    pub retry_of: Option<u64>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl RunRecord {
    /// Not finished yet (no outcome).
    pub fn is_active(&self) -> bool {
        self.state.outcome.is_none()
    }
}

/// A new state for a run, written only if the run is still at `revision`
/// (else `Conflict`): optimistic concurrency between the scheduler and the
/// routes that change runs (cancel).
#[derive(Clone, Debug)]
pub struct RunUpdate {
    pub run_id: i64,
    pub revision: u64,
    pub state: RunState,
    /// Stamps `finished_at` when the state gets an outcome.
    pub now: i64,
}

/// Starts steps: in one transaction each step's job is created and linked
/// to the run's step, and the run's state (`state`, with `dag::started`
/// applied for each new job's number) is written, if the run is still at
/// `revision`.
#[derive(Clone, Debug)]
pub struct StartSteps {
    pub run_id: i64,
    pub revision: u64,
    /// The run's state before the starts (it may carry other changes too).
    pub state: RunState,
    pub steps: Vec<StepStart>,
    /// The scheduler's clock, for the run's state (each job has its own `now`).
    pub now: i64,
}

/// One step attempt to start, with its job.
#[derive(Clone, Debug)]
pub struct StepStart {
    pub step: String,
    pub attempt: u32,
    pub job: NewJob,
}

/// A job created for a step attempt of a run, with what the scheduler
/// reads of it (not its spec).
#[derive(Clone, Debug)]
pub struct StepJob {
    pub step: String,
    pub attempt: u32,
    pub job: JobId,
    pub number: u64,
    pub state: JobState,
    pub output: Option<ManifestId>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub stop_requested: bool,
}

/// A hit in the step cache: the output and the job that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheHit {
    pub output: ManifestId,
    /// The job's number in the same project.
    pub job: u64,
}
