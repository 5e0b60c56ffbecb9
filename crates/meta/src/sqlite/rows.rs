//! Turning rows into records, and the column lists they are read from.

use podder_core::api::{
    BuildResult, Dataset, DatasetVersion, Environment, Job, JobSpec, LogLine, Project, Stream, Task,
};
use podder_core::{JobRef, JobState, ManifestId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{JobId, JobRecord, MetaError, Result};

/// The `SELECT ... FROM` part of every job query; `WHERE` follows.
macro_rules! job_select {
    () => {
        "SELECT j.id, o.name AS owner, p.name AS project, j.number, j.state, j.spec, j.message,
                j.output, j.exit_code, j.reason, j.attempt, j.agent, j.restarted_from, j.lease_id,
                j.lease_expires_at, j.stop_requested, j.created_at, j.started_at, j.finished_at,
                j.gpus, j.build_result
         FROM jobs j JOIN projects p ON p.id = j.project_id JOIN owners o ON o.id = p.owner_id "
    };
}
pub(super) use job_select;

/// The `SELECT ... FROM` part of every project query; `WHERE` follows.
macro_rules! project_select {
    () => {
        "SELECT o.name AS owner, p.name, p.description, p.created_at, p.last_job
         FROM projects p JOIN owners o ON o.id = p.owner_id "
    };
}
pub(super) use project_select;

/// The `SELECT ... FROM` part of every dataset query; `WHERE` follows.
macro_rules! dataset_select {
    () => {
        "SELECT d.id, o.name AS owner, d.name, d.description, d.created_at,
                (SELECT COUNT(*) FROM dataset_versions v WHERE v.dataset_id = d.id) AS versions,
                (SELECT MAX(v.version) FROM dataset_versions v WHERE v.dataset_id = d.id) AS latest,
                COALESCE((SELECT v.bytes FROM dataset_versions v WHERE v.dataset_id = d.id
                          ORDER BY v.version DESC LIMIT 1), 0) AS bytes
         FROM datasets d JOIN owners o ON o.id = d.owner_id "
    };
}
pub(super) use dataset_select;

/// The `SELECT ... FROM` part of every dataset version query; `WHERE` follows.
macro_rules! version_select {
    () => {
        "SELECT v.id, o.name AS owner, d.name AS dataset, v.version, v.manifest, v.files, v.bytes, v.message,
                v.source, v.created_at
         FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id JOIN owners o ON o.id = d.owner_id "
    };
}
pub(super) use version_select;

/// The `SELECT ... FROM` part of every environment query; `WHERE` follows.
macro_rules! env_select {
    () => {
        "SELECT o.name AS owner, e.name, e.description, e.spec, e.stock, e.created_at
         FROM environments e JOIN owners o ON o.id = e.owner_id "
    };
}
pub(super) use env_select;

/// The `SELECT ... FROM` part of every task query; `WHERE` follows.
macro_rules! task_select {
    () => {
        "SELECT o.name AS owner, p.name AS project, t.name, t.version, t.spec, t.environment, t.build_job,
                t.git_commit, t.obfuscated, t.deployed_at
         FROM tasks t JOIN projects p ON p.id = t.project_id JOIN owners o ON o.id = p.owner_id "
    };
}
pub(super) use task_select;

fn corrupt(what: &str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Internal(format!("stored {what} is unreadable: {e}"))
}

pub(super) fn job(row: &SqliteRow) -> Result<JobRecord> {
    let owner: String = row.try_get("owner")?;
    let project: String = row.try_get("project")?;
    let state: String = row.try_get("state")?;
    let spec: String = row.try_get("spec")?;
    let output: Option<String> = row.try_get("output")?;
    let restarted_from: Option<String> = row.try_get("restarted_from")?;
    let gpus: String = row.try_get("gpus")?;
    let build_result: Option<String> = row.try_get("build_result")?;
    let job = Job {
        job_ref: JobRef {
            owner: Some(owner.parse().map_err(|e| corrupt("owner name", e))?),
            project: project.parse().map_err(|e| corrupt("project name", e))?,
            number: row.try_get::<i64, _>("number")? as u64,
        },
        state: state.parse::<JobState>().map_err(|e| corrupt("job state", e))?,
        spec: serde_json::from_str::<JobSpec>(&spec)?,
        message: row.try_get("message")?,
        output: output.map(|o| o.parse::<ManifestId>()).transpose().map_err(|e| corrupt("output id", e))?,
        exit_code: row.try_get("exit_code")?,
        reason: row.try_get("reason")?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        agent: row.try_get("agent")?,
        restarted_from: restarted_from
            .map(|r| r.parse::<JobRef>())
            .transpose()
            .map_err(|e| corrupt("job reference", e))?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        gpus: serde_json::from_str(&gpus)?,
        build_result: build_result.map(|b| serde_json::from_str::<BuildResult>(&b)).transpose()?,
    };
    Ok(JobRecord {
        id: JobId(row.try_get("id")?),
        job,
        lease_id: row.try_get("lease_id")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        stop_requested: row.try_get("stop_requested")?,
    })
}

pub(super) fn env(row: &SqliteRow) -> Result<Environment> {
    let owner: String = row.try_get("owner")?;
    let name: String = row.try_get("name")?;
    let spec: String = row.try_get("spec")?;
    Ok(Environment {
        owner: owner.parse().map_err(|e| corrupt("owner name", e))?,
        name: name.parse().map_err(|e| corrupt("environment name", e))?,
        description: row.try_get("description")?,
        spec: serde_json::from_str(&spec)?,
        stock: row.try_get("stock")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn task(row: &SqliteRow) -> Result<Task> {
    let owner: String = row.try_get("owner")?;
    let project: String = row.try_get("project")?;
    let name: String = row.try_get("name")?;
    let spec: String = row.try_get("spec")?;
    let environment: String = row.try_get("environment")?;
    let owner: podder_core::Name = owner.parse().map_err(|e| corrupt("owner name", e))?;
    let project: podder_core::Name = project.parse().map_err(|e| corrupt("project name", e))?;
    Ok(Task {
        build_job: JobRef {
            owner: Some(owner.clone()),
            project: project.clone(),
            number: row.try_get::<i64, _>("build_job")? as u64,
        },
        owner,
        project,
        name: name.parse().map_err(|e| corrupt("task name", e))?,
        spec: serde_json::from_str(&spec)?,
        environment: serde_json::from_str(&environment)?,
        commit: row.try_get("git_commit")?,
        obfuscated: row.try_get("obfuscated")?,
        version: row.try_get::<i64, _>("version")? as u32,
        deployed_at: row.try_get("deployed_at")?,
    })
}

pub(super) fn project(row: &SqliteRow) -> Result<Project> {
    let owner: String = row.try_get("owner")?;
    let name: String = row.try_get("name")?;
    Ok(Project {
        owner: owner.parse().map_err(|e| corrupt("owner name", e))?,
        name: name.parse().map_err(|e| corrupt("project name", e))?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        jobs: row.try_get::<i64, _>("last_job")? as u64,
    })
}

pub(super) fn dataset(row: &SqliteRow) -> Result<Dataset> {
    let owner: String = row.try_get("owner")?;
    let name: String = row.try_get("name")?;
    let latest: Option<i64> = row.try_get("latest")?;
    Ok(Dataset {
        owner: owner.parse().map_err(|e| corrupt("owner name", e))?,
        name: name.parse().map_err(|e| corrupt("dataset name", e))?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        versions: row.try_get::<i64, _>("versions")? as u32,
        latest: latest.map(|v| v as u32),
        bytes: row.try_get::<i64, _>("bytes")? as u64,
    })
}

pub(super) fn version(row: &SqliteRow) -> Result<DatasetVersion> {
    let owner: String = row.try_get("owner")?;
    let dataset: String = row.try_get("dataset")?;
    let manifest: String = row.try_get("manifest")?;
    Ok(DatasetVersion {
        owner: owner.parse().map_err(|e| corrupt("owner name", e))?,
        dataset: dataset.parse().map_err(|e| corrupt("dataset name", e))?,
        version: row.try_get::<i64, _>("version")? as u32,
        manifest: manifest.parse().map_err(|e| corrupt("manifest id", e))?,
        files: row.try_get::<i64, _>("files")? as u64,
        bytes: row.try_get::<i64, _>("bytes")? as u64,
        message: row.try_get("message")?,
        source: row.try_get("source")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::System => "system",
    }
}

pub(super) fn log_line(row: &SqliteRow) -> Result<LogLine> {
    let stream: String = row.try_get("stream")?;
    let stream = match stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        "system" => Stream::System,
        other => return Err(corrupt("log stream", other)),
    };
    Ok(LogLine {
        seq: row.try_get::<i64, _>("seq")? as u64,
        ts: row.try_get("ts")?,
        stream,
        text: row.try_get("text")?,
    })
}
