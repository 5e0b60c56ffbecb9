//! The SQLite backend of [`MetaStore`]: one file in WAL mode.
//!
//! All writes go through a pool of exactly one connection, so writers queue
//! in the process (fairly, without SQLite's sleeping busy handler) and a
//! transaction never fails to upgrade its lock; reads use a separate pool.
//! SQL is kept portable (`$N` parameters, `ON CONFLICT`, `RETURNING`) so a
//! PostgreSQL backend can reuse most of it.

mod agents;
mod datasets;
mod envs;
mod jobs;
mod leases;
mod logs;
mod migrations;
mod owners;
mod pipelines;
mod rows;
mod storage;
mod tasks;

use std::path::Path;
use std::time::Duration;

use std::collections::HashSet;

use async_trait::async_trait;
use podder_core::api::{AgentInfo, Dataset, DatasetVersion, Environment, Job, LogLine, Project, Task};
use podder_core::refs::Version;
use podder_core::{Inventory, JobState, ManifestId, Name};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::{
    CacheHit, Claim, EnvWrite, FinishJob, JobId, JobRecord, MetaStore, NewJob, NewPipeline, NewRun, NewTask,
    NewVersion, Owner, PipelineRecord, PipelineVersion, Result, RunRecord, RunUpdate, StartSteps, StepJob, TokenHash,
};

/// The metadata store in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its
    /// schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        migrations::run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    /// Closes both pools, waiting for running statements.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn ensure_owner(&self, name: &Name, admin: bool, now: i64) -> Result<Owner> {
        owners::ensure_owner(self, name, admin, now).await
    }
    async fn has_admin(&self) -> Result<bool> {
        owners::has_admin(self).await
    }
    async fn add_token(&self, owner: &Name, hash: &TokenHash, now: i64) -> Result<()> {
        owners::add_token(self, owner, hash, now).await
    }
    async fn owner_by_token(&self, hash: &TokenHash) -> Result<Option<Owner>> {
        owners::owner_by_token(self, hash).await
    }

    async fn create_project(&self, owner: &Name, name: &Name, description: &str, now: i64) -> Result<Project> {
        owners::create_project(self, owner, name, description, now).await
    }
    async fn get_project(&self, owner: &Name, name: &Name) -> Result<Project> {
        owners::get_project(self, owner, name).await
    }
    async fn list_projects(&self, owner: &Name) -> Result<Vec<Project>> {
        owners::list_projects(self, owner).await
    }

    async fn create_job(&self, new: NewJob) -> Result<JobRecord> {
        jobs::create_job(self, new).await
    }
    async fn get_job(&self, owner: &Name, project: &Name, number: u64) -> Result<JobRecord> {
        jobs::get_job(self, owner, project, number).await
    }
    async fn get_job_by_id(&self, id: JobId) -> Result<JobRecord> {
        jobs::get_job_by_id(self, id).await
    }
    async fn list_jobs(&self, owner: &Name, project: &Name, limit: u32) -> Result<Vec<Job>> {
        jobs::list_jobs(self, owner, project, limit).await
    }
    async fn request_stop(&self, owner: &Name, project: &Name, number: u64, now: i64) -> Result<JobRecord> {
        jobs::request_stop(self, owner, project, number, now).await
    }

    async fn claim_job(&self, claim: &Claim) -> Result<Option<JobRecord>> {
        leases::claim_job(self, claim).await
    }
    async fn heartbeat(&self, lease_id: &str, expires_at: i64) -> Result<JobRecord> {
        leases::heartbeat(self, lease_id, expires_at).await
    }
    async fn set_progress(&self, lease_id: &str, state: JobState, now: i64) -> Result<JobRecord> {
        leases::set_progress(self, lease_id, state, now).await
    }
    async fn finish_job(&self, lease_id: &str, finish: &FinishJob) -> Result<JobRecord> {
        leases::finish_job(self, lease_id, finish).await
    }
    async fn expire_leases(&self, now: i64) -> Result<Vec<JobRecord>> {
        leases::expire_leases(self, now).await
    }

    async fn latest_build_job(&self, owner: &Name, project: &Name) -> Result<Option<JobRecord>> {
        jobs::latest_build_job(self, owner, project).await
    }

    async fn agent_seen(&self, name: &str, queue: &str, inventory: &Inventory, now: i64) -> Result<()> {
        agents::agent_seen(self, name, queue, inventory, now).await
    }
    async fn agent_alive(&self, name: &str, now: i64) -> Result<()> {
        agents::agent_alive(self, name, now).await
    }
    async fn list_agents(&self) -> Result<Vec<AgentInfo>> {
        agents::list_agents(self).await
    }

    async fn append_logs(&self, lease_id: &str, lines: &[LogLine]) -> Result<JobId> {
        logs::append_logs(self, lease_id, lines).await
    }
    async fn read_logs(&self, job: JobId, from: u64, limit: u32) -> Result<Vec<LogLine>> {
        logs::read_logs(self, job, from, limit).await
    }

    async fn create_dataset(&self, owner: &Name, name: &Name, description: &str, now: i64) -> Result<Dataset> {
        datasets::create_dataset(self, owner, name, description, now).await
    }
    async fn get_dataset(&self, owner: &Name, name: &Name) -> Result<Dataset> {
        datasets::get_dataset(self, owner, name).await
    }
    async fn list_datasets(&self, owner: &Name) -> Result<Vec<Dataset>> {
        datasets::list_datasets(self, owner).await
    }
    async fn delete_dataset(&self, owner: &Name, name: &Name) -> Result<()> {
        datasets::delete_dataset(self, owner, name).await
    }
    async fn create_version(&self, new: NewVersion) -> Result<DatasetVersion> {
        datasets::create_version(self, new).await
    }
    async fn list_versions(&self, owner: &Name, name: &Name) -> Result<Vec<DatasetVersion>> {
        datasets::list_versions(self, owner, name).await
    }
    async fn get_version(&self, owner: &Name, name: &Name, version: Version) -> Result<DatasetVersion> {
        datasets::get_version(self, owner, name, version).await
    }
    async fn delete_version(&self, owner: &Name, name: &Name, version: u32) -> Result<()> {
        datasets::delete_version(self, owner, name, version).await
    }

    async fn put_env(&self, env: &Environment, mode: EnvWrite) -> Result<Environment> {
        envs::put_env(self, env, mode).await
    }
    async fn get_env(&self, owner: &Name, name: &Name) -> Result<Environment> {
        envs::get_env(self, owner, name).await
    }
    async fn list_envs(&self, owner: &Name) -> Result<Vec<Environment>> {
        envs::list_envs(self, owner).await
    }
    async fn delete_env(&self, owner: &Name, name: &Name) -> Result<()> {
        envs::delete_env(self, owner, name).await
    }

    async fn deploy_task(&self, new: NewTask) -> Result<Task> {
        tasks::deploy_task(self, new).await
    }
    async fn get_task(&self, owner: &Name, project: &Name, name: &Name) -> Result<Task> {
        tasks::get_task(self, owner, project, name).await
    }
    async fn list_tasks(&self, owner: &Name, project: &Name) -> Result<Vec<Task>> {
        tasks::list_tasks(self, owner, project).await
    }

    async fn apply_pipeline(&self, new: NewPipeline) -> Result<(PipelineRecord, bool)> {
        pipelines::apply_pipeline(self, new).await
    }
    async fn get_pipeline(&self, owner: &Name, project: &Name, name: &Name) -> Result<PipelineRecord> {
        pipelines::get_pipeline(self, owner, project, name).await
    }
    async fn get_pipeline_by_id(&self, id: i64) -> Result<PipelineRecord> {
        pipelines::get_pipeline_by_id(self, id).await
    }
    async fn list_pipelines(&self, owner: &Name, project: &Name) -> Result<Vec<PipelineRecord>> {
        pipelines::list_pipelines(self, owner, project).await
    }
    async fn scheduled_pipelines(&self) -> Result<Vec<PipelineRecord>> {
        pipelines::scheduled_pipelines(self).await
    }
    async fn set_paused(
        &self,
        owner: &Name,
        project: &Name,
        name: &Name,
        paused: bool,
        now: i64,
    ) -> Result<PipelineRecord> {
        pipelines::set_paused(self, owner, project, name, paused, now).await
    }
    async fn set_last_scheduled(&self, pipeline_id: i64, at: i64) -> Result<()> {
        pipelines::set_last_scheduled(self, pipeline_id, at).await
    }
    async fn pipeline_version(&self, pipeline_id: i64, version: u32) -> Result<PipelineVersion> {
        pipelines::pipeline_version(self, pipeline_id, version).await
    }
    async fn create_run(&self, new: NewRun) -> Result<RunRecord> {
        pipelines::create_run(self, new).await
    }
    async fn get_run(&self, pipeline_id: i64, number: u64) -> Result<RunRecord> {
        pipelines::get_run(self, pipeline_id, number).await
    }
    async fn get_run_by_id(&self, id: i64) -> Result<RunRecord> {
        pipelines::get_run_by_id(self, id).await
    }
    async fn list_runs(&self, pipeline_id: i64, limit: u32) -> Result<Vec<RunRecord>> {
        pipelines::list_runs(self, pipeline_id, limit).await
    }
    async fn active_runs(&self) -> Result<Vec<RunRecord>> {
        pipelines::active_runs(self).await
    }
    async fn update_run(&self, update: RunUpdate) -> Result<RunRecord> {
        pipelines::update_run(self, update).await
    }
    async fn start_steps(&self, start: StartSteps) -> Result<(Vec<JobRecord>, RunRecord)> {
        pipelines::start_steps(self, start).await
    }
    async fn run_jobs(&self, run_id: i64) -> Result<Vec<StepJob>> {
        pipelines::run_jobs(self, run_id).await
    }
    async fn run_of_job(&self, job: JobId) -> Result<Option<i64>> {
        pipelines::run_of_job(self, job).await
    }
    async fn put_cache(
        &self,
        owner: &Name,
        project: &Name,
        key: &str,
        output: ManifestId,
        job: u64,
        now: i64,
    ) -> Result<()> {
        pipelines::put_cache(self, owner, project, key, output, job, now).await
    }
    async fn get_cache(&self, owner: &Name, project: &Name, key: &str) -> Result<Option<CacheHit>> {
        pipelines::get_cache(self, owner, project, key).await
    }

    async fn usage(&self, owner: &Name) -> Result<u64> {
        storage::usage(self, owner).await
    }
    async fn referenced_manifests(&self) -> Result<HashSet<ManifestId>> {
        storage::referenced_manifests(self).await
    }

    async fn grant_manifests(&self, owner: &Name, manifests: &[ManifestId]) -> Result<()> {
        storage::grant_manifests(self, owner, manifests).await
    }
    async fn may_read_manifest(&self, owner: &Name, manifest: ManifestId) -> Result<bool> {
        storage::may_read_manifest(self, owner, manifest).await
    }
}
