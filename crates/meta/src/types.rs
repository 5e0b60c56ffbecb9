//! Records the metadata store reads and writes, beyond the wire types of
//! `podder_core::api` that it returns where they fit.

use std::fmt;

use podder_core::api::{BuildResult, Job, JobSpec};
use podder_core::task::TaskSpec;
use podder_core::{EnvSpec, Inventory, JobRef, ManifestId, Name, Outcome};

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
