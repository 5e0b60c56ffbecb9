//! The metadata store: owners, tokens, projects, jobs, leases (with GPU
//! placement), log lines, datasets and their versions, environments, agents,
//! deployed tasks, pipelines (versions, runs with their DAG state, the link
//! from a step's job to its run, the step cache), and what storage the
//! records hold on to.
//!
//! [`MetaStore`] is the one interface the server uses; [`SqliteStore`] is the
//! embedded backend (WAL mode, one writer connection, a pool of readers).
//! A PostgreSQL backend will implement the same trait and must pass the same
//! [`testsuite`]. Every method takes the current time as an argument where it
//! needs one, so tests control time (only migrations stamp their own).
//!
//! This crate must not know about HTTP or the object store. Job states change
//! only through `podder_core::JobState::transition`.

pub mod error;
pub mod sqlite;
pub mod testsuite;
pub mod types;

use std::collections::HashSet;

use async_trait::async_trait;
use podder_core::api::{AgentInfo, Dataset, DatasetVersion, Environment, Job, LogLine, Project, Task};
use podder_core::refs::Version;
use podder_core::{Inventory, JobState, ManifestId, Name};

pub use error::{MetaError, Result};
pub use sqlite::SqliteStore;
pub use types::{
    CacheHit, Claim, EnvWrite, FinishJob, JobId, JobRecord, NewJob, NewPipeline, NewRun, NewTask, NewVersion, Owner,
    PipelineRecord, PipelineVersion, RunRecord, RunUpdate, StartSteps, StepJob, StepStart, TokenHash, Trigger,
};

/// Everything the server stores about owners, projects and jobs.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    // --- owners and tokens ---

    /// Creates the owner if missing. `admin = true` makes an existing owner
    /// an admin; `admin = false` never takes the flag away.
    async fn ensure_owner(&self, name: &Name, admin: bool, now: i64) -> Result<Owner>;
    /// Whether any owner is an admin (false only before the first start).
    async fn has_admin(&self) -> Result<bool>;
    /// Records a token (by its hash) for an existing owner.
    async fn add_token(&self, owner: &Name, hash: &TokenHash, now: i64) -> Result<()>;
    /// The owner a token belongs to, if the token is known.
    async fn owner_by_token(&self, hash: &TokenHash) -> Result<Option<Owner>>;

    // --- projects ---

    /// Creates a project of an existing owner; `Conflict` if it exists.
    async fn create_project(&self, owner: &Name, name: &Name, description: &str, now: i64) -> Result<Project>;
    async fn get_project(&self, owner: &Name, name: &Name) -> Result<Project>;
    /// An owner's projects, by name.
    async fn list_projects(&self, owner: &Name) -> Result<Vec<Project>>;

    // --- jobs ---

    /// Creates a queued job with the project's next number (race-free), and
    /// records its inputs. An input whose source names a concrete dataset
    /// version (`owner/name@N`, as the server resolves them) must still exist
    /// with the same manifest, checked in the same transaction that links the
    /// job to it, so a version is never deleted under a job being created.
    async fn create_job(&self, new: NewJob) -> Result<JobRecord>;
    async fn get_job(&self, owner: &Name, project: &Name, number: u64) -> Result<JobRecord>;
    async fn get_job_by_id(&self, id: JobId) -> Result<JobRecord>;
    /// A project's jobs, newest first, at most `limit`.
    async fn list_jobs(&self, owner: &Name, project: &Name, limit: u32) -> Result<Vec<Job>>;
    /// A queued job stops at once; a leased one gets `stop_requested`;
    /// an ended one is a `Conflict` ("already <state>").
    async fn request_stop(&self, owner: &Name, project: &Name, number: u64, now: i64) -> Result<JobRecord>;

    // --- leases (agent side); an invalid lease is `MetaError::lease_gone` ---

    /// Atomically assigns to an agent the oldest queued job of `claim.queue`
    /// that fits its inventory (`podder_core::env::place`, counting the GPUs
    /// its leased jobs hold), recording the GPU indices placement picked.
    /// Choosing and taking happen in one write transaction, so two jobs
    /// never hold the same GPU of an agent, however many claims race.
    async fn claim_job(&self, claim: &Claim) -> Result<Option<JobRecord>>;
    /// Extends a live lease to `expires_at`.
    async fn heartbeat(&self, lease_id: &str, expires_at: i64) -> Result<JobRecord>;
    /// `preparing` or `running` (which sets `started_at`); resending the
    /// current state is a no-op.
    async fn set_progress(&self, lease_id: &str, state: JobState, now: i64) -> Result<JobRecord>;
    /// Ends a leased job; `finish.build` is kept as the job's build result
    /// and is `Invalid` unless the job is a build job that succeeded. A failure after a stop request is recorded as
    /// `stopped`. Resending the same finish returns the job unchanged. An
    /// output over the owner's quota (`finish.quota`) is dropped and the job
    /// recorded as `failed` with the quota message as its reason.
    async fn finish_job(&self, lease_id: &str, finish: &FinishJob) -> Result<JobRecord>;
    /// Every leased job whose lease ran out before `now` becomes `lost`, and
    /// goes back to `queued` (attempt + 1) while its retries allow. Returns
    /// the jobs changed, in their new state.
    async fn expire_leases(&self, now: i64) -> Result<Vec<JobRecord>>;

    /// The newest succeeded build job of a project that has a build result.
    async fn latest_build_job(&self, owner: &Name, project: &Name) -> Result<Option<JobRecord>>;

    // --- agents ---

    /// Records what an agent offers on which queue, and when it was seen.
    async fn agent_seen(&self, name: &str, queue: &str, inventory: &Inventory, now: i64) -> Result<()>;
    /// Marks a known agent as seen now (a heartbeat of one of its jobs).
    async fn agent_alive(&self, name: &str, now: i64) -> Result<()>;
    /// Every agent as last seen, by name, with the GPUs its leased jobs hold.
    async fn list_agents(&self) -> Result<Vec<AgentInfo>>;

    // --- logs ---

    /// Stores lines of a leased job; a seq already stored is ignored. The
    /// agent numbers lines per attempt from 0; the store shifts a retried
    /// attempt's lines past the earlier attempts' ones. Returns the job's id.
    async fn append_logs(&self, lease_id: &str, lines: &[LogLine]) -> Result<JobId>;
    /// Lines with `seq >= from`, in order, at most `limit`.
    async fn read_logs(&self, job: JobId, from: u64, limit: u32) -> Result<Vec<LogLine>>;

    // --- datasets ---

    /// Creates an empty dataset of an existing owner; `Conflict` if it exists.
    async fn create_dataset(&self, owner: &Name, name: &Name, description: &str, now: i64) -> Result<Dataset>;
    async fn get_dataset(&self, owner: &Name, name: &Name) -> Result<Dataset>;
    /// An owner's datasets, by name.
    async fn list_datasets(&self, owner: &Name) -> Result<Vec<Dataset>>;
    /// Deletes a dataset and all its versions; `Conflict` (naming the job)
    /// while a queued or leased job mounts one of them.
    async fn delete_dataset(&self, owner: &Name, name: &Name) -> Result<()>;
    /// Adds a version with the dataset's next number (race-free; a number is
    /// never handed out twice). `Quota` when it would take the owner past
    /// `new.quota`; a manifest the owner already holds adds nothing.
    async fn create_version(&self, new: NewVersion) -> Result<DatasetVersion>;
    /// A dataset's versions, oldest first.
    async fn list_versions(&self, owner: &Name, name: &Name) -> Result<Vec<DatasetVersion>>;
    /// One version, or the newest; `NotFound` when there is none.
    async fn get_version(&self, owner: &Name, name: &Name, version: Version) -> Result<DatasetVersion>;
    /// Deletes one version; `Conflict` (naming the job) while a queued or
    /// leased job mounts it.
    async fn delete_version(&self, owner: &Name, name: &Name, version: u32) -> Result<()>;

    // --- environments ---

    /// Stores an environment of an existing owner (see [`EnvWrite`]);
    /// answers what is stored afterwards.
    async fn put_env(&self, env: &Environment, mode: EnvWrite) -> Result<Environment>;
    async fn get_env(&self, owner: &Name, name: &Name) -> Result<Environment>;
    /// The stock environments and `owner`'s own, stock first, by name.
    async fn list_envs(&self, owner: &Name) -> Result<Vec<Environment>>;
    async fn delete_env(&self, owner: &Name, name: &Name) -> Result<()>;

    // --- tasks ---

    /// Registers a task under its spec's name: version 1, or one more than
    /// the deployed one (which it replaces).
    async fn deploy_task(&self, new: NewTask) -> Result<Task>;
    async fn get_task(&self, owner: &Name, project: &Name, name: &Name) -> Result<Task>;
    /// A project's tasks, by name.
    async fn list_tasks(&self, owner: &Name, project: &Name) -> Result<Vec<Task>>;

    // --- pipelines ---

    /// Creates the pipeline `new.spec.name` of a project (version 1), or adds
    /// a version when the file text or the code differs from the current
    /// one. Answers the pipeline and whether a version was added.
    async fn apply_pipeline(&self, new: NewPipeline) -> Result<(PipelineRecord, bool)>;
    async fn get_pipeline(&self, owner: &Name, project: &Name, name: &Name) -> Result<PipelineRecord>;
    async fn get_pipeline_by_id(&self, id: i64) -> Result<PipelineRecord>;
    /// A project's pipelines, by name.
    async fn list_pipelines(&self, owner: &Name, project: &Name) -> Result<Vec<PipelineRecord>>;
    /// Every pipeline whose current version has a schedule that is not paused.
    async fn scheduled_pipelines(&self) -> Result<Vec<PipelineRecord>>;
    /// Pauses or resumes the schedule. A resume restarts the schedule's
    /// clock at `now`: the instants missed while paused are not run.
    async fn set_paused(
        &self,
        owner: &Name,
        project: &Name,
        name: &Name,
        paused: bool,
        now: i64,
    ) -> Result<PipelineRecord>;
    /// Records a handled schedule instant (it never goes back).
    async fn set_last_scheduled(&self, pipeline_id: i64, at: i64) -> Result<()>;
    async fn pipeline_version(&self, pipeline_id: i64, version: u32) -> Result<PipelineVersion>;

    /// Creates a run with the pipeline's next number; `Conflict` when
    /// `new.max_active` runs are active (checked in the same transaction).
    async fn create_run(&self, new: NewRun) -> Result<RunRecord>;
    async fn get_run(&self, pipeline_id: i64, number: u64) -> Result<RunRecord>;
    async fn get_run_by_id(&self, id: i64) -> Result<RunRecord>;
    /// A pipeline's runs, newest first, at most `limit`.
    async fn list_runs(&self, pipeline_id: i64, limit: u32) -> Result<Vec<RunRecord>>;
    /// Every run without an outcome (recovery at start).
    async fn active_runs(&self) -> Result<Vec<RunRecord>>;
    /// Writes a run's new state if it is still at `update.revision`
    /// (`Conflict` otherwise); the revision grows by one.
    async fn update_run(&self, update: RunUpdate) -> Result<RunRecord>;
    /// Creates the steps' jobs, links each to its run's step and writes the
    /// run's state with the steps started, all in one transaction; nothing
    /// happens (`Conflict`) if the run moved past `start.revision` or a
    /// step attempt already has a job. Answers the jobs in order.
    async fn start_steps(&self, start: StartSteps) -> Result<(Vec<JobRecord>, RunRecord)>;
    /// The jobs of a run's steps, every attempt.
    async fn run_jobs(&self, run_id: i64) -> Result<Vec<StepJob>>;
    /// The run a job is a step of, if any.
    async fn run_of_job(&self, job: JobId) -> Result<Option<i64>>;

    /// Remembers that job `job` (of the project) succeeded with `output`
    /// under a step cache key (replacing an older entry).
    async fn put_cache(
        &self,
        owner: &Name,
        project: &Name,
        key: &str,
        output: ManifestId,
        job: u64,
        now: i64,
    ) -> Result<()>;
    async fn get_cache(&self, owner: &Name, project: &Name, key: &str) -> Result<Option<CacheHit>>;

    // --- storage ---

    /// The bytes an owner's records hold: every distinct manifest among the
    /// owner's dataset versions and job outputs, counted once.
    async fn usage(&self, owner: &Name) -> Result<u64>;
    /// Every manifest a record refers to: each job's code snapshot, inputs
    /// and output, each dataset version, and each pipeline version's code. What is not here may be
    /// collected as garbage.
    async fn referenced_manifests(&self) -> Result<HashSet<ManifestId>>;

    // --- manifest readers ---

    /// Lets `owner` read `manifests` (idempotent: a grant held is kept).
    /// `NotFound` when the owner does not exist.
    async fn grant_manifests(&self, owner: &Name, manifests: &[ManifestId]) -> Result<()>;
    /// Whether `owner` was granted `manifest` (false for an unknown owner).
    /// Admins read every manifest; that rule is the server's, not checked here.
    async fn may_read_manifest(&self, owner: &Name, manifest: ManifestId) -> Result<bool>;
}
