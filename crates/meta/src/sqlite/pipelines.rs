//! Pipelines, their versions and runs, the link from a step's job to its
//! run, and the step cache.
//!
//! A run's state (`podder_pipeline::RunState`) is stored as JSON and
//! rewritten with every transition; its `revision` grows with each write,
//! and every write names the revision it read (optimistic concurrency), so
//! two writers never overwrite each other's transitions. Starting a step
//! creates its job, links it and writes the run in one transaction.

use std::collections::BTreeMap;

use podder_core::{ManifestId, Name};
use podder_pipeline::{RunOutcome, RunState};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use super::jobs::{insert_job, load};
use crate::{
    CacheHit, JobId, JobRecord, MetaError, NewPipeline, NewRun, PipelineRecord, PipelineVersion, Result, RunRecord,
    RunUpdate, StartSteps, StepJob, Trigger,
};

/// The `SELECT ... FROM` part of every pipeline query (with its current
/// version); `WHERE` follows.
macro_rules! pipeline_select {
    () => {
        "SELECT pl.id, o.name AS owner, p.name AS project, pl.name, pl.version, pl.paused, pl.last_scheduled,
                pl.created_at, pl.updated_at, v.file, v.file_name, v.spec, v.code
         FROM pipelines pl JOIN projects p ON p.id = pl.project_id JOIN owners o ON o.id = p.owner_id
         JOIN pipeline_versions v ON v.pipeline_id = pl.id AND v.version = pl.version "
    };
}

/// The `SELECT ... FROM` part of every run query; `WHERE` follows.
macro_rules! run_select {
    () => {
        "SELECT r.id, r.pipeline_id, o.name AS owner, p.name AS project, pl.name AS pipeline, r.number, r.version,
                r.trigger, r.scheduled_for, r.params, r.state, r.revision, r.retry_of, r.created_at, r.finished_at
         FROM pipeline_runs r JOIN pipelines pl ON pl.id = r.pipeline_id JOIN projects p ON p.id = pl.project_id
         JOIN owners o ON o.id = p.owner_id "
    };
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Internal(format!("stored {what} is unreadable: {e}"))
}

fn name_of(row: &SqliteRow, col: &str) -> Result<Name> {
    let s: String = row.try_get(col)?;
    s.parse().map_err(|e| corrupt(col, e))
}

fn manifest_of(s: Option<String>) -> Result<Option<ManifestId>> {
    s.map(|m| m.parse::<ManifestId>()).transpose().map_err(|e| corrupt("manifest id", e))
}

fn pipeline(row: &SqliteRow) -> Result<PipelineRecord> {
    let spec: String = row.try_get("spec")?;
    Ok(PipelineRecord {
        id: row.try_get("id")?,
        owner: name_of(row, "owner")?,
        project: name_of(row, "project")?,
        name: name_of(row, "name")?,
        version: row.try_get::<i64, _>("version")? as u32,
        paused: row.try_get("paused")?,
        last_scheduled: row.try_get("last_scheduled")?,
        file: row.try_get("file")?,
        file_name: row.try_get("file_name")?,
        spec: serde_json::from_str(&spec)?,
        code: manifest_of(row.try_get("code")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn run(row: &SqliteRow) -> Result<RunRecord> {
    let trigger: String = row.try_get("trigger")?;
    let params: String = row.try_get("params")?;
    let state: String = row.try_get("state")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        pipeline_id: row.try_get("pipeline_id")?,
        owner: name_of(row, "owner")?,
        project: name_of(row, "project")?,
        pipeline: name_of(row, "pipeline")?,
        number: row.try_get::<i64, _>("number")? as u64,
        version: row.try_get::<i64, _>("version")? as u32,
        trigger: Trigger::parse(&trigger).ok_or_else(|| corrupt("run trigger", &trigger))?,
        scheduled_for: row.try_get("scheduled_for")?,
        params: serde_json::from_str::<BTreeMap<String, String>>(&params)?,
        state: serde_json::from_str::<RunState>(&state)?,
        revision: row.try_get::<i64, _>("revision")? as u64,
        retry_of: row.try_get::<Option<i64>, _>("retry_of")?.map(|n| n as u64),
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn outcome_str(o: RunOutcome) -> &'static str {
    match o {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed => "failed",
        RunOutcome::Cancelled => "cancelled",
    }
}

fn pipeline_missing(owner: &Name, project: &Name, name: &Name) -> MetaError {
    MetaError::NotFound(format!(
        "there is no pipeline {name} in {owner}/{project}: apply its file with `podder pipeline apply FILE`, \
         see `podder pipeline list`"
    ))
}

async fn project_id(conn: &mut SqliteConnection, owner: &Name, project: &Name) -> Result<i64> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT p.id FROM projects p JOIN owners o ON o.id = p.owner_id WHERE o.name = $1 AND p.name = $2",
    )
    .bind(owner.as_str())
    .bind(project.as_str())
    .fetch_optional(conn)
    .await?;
    id.ok_or_else(|| {
        MetaError::NotFound(format!("there is no project {owner}/{project}: create it with `podder init {project}`"))
    })
}

async fn load_pipeline(conn: &mut SqliteConnection, id: i64) -> Result<PipelineRecord> {
    let row = sqlx::query(concat!(pipeline_select!(), "WHERE pl.id = $1")).bind(id).fetch_one(conn).await?;
    pipeline(&row)
}

async fn load_run(conn: &mut SqliteConnection, id: i64) -> Result<RunRecord> {
    let row = sqlx::query(concat!(run_select!(), "WHERE r.id = $1")).bind(id).fetch_one(conn).await?;
    run(&row)
}

async fn insert_version(conn: &mut SqliteConnection, pipeline_id: i64, version: i64, new: &NewPipeline) -> Result<()> {
    sqlx::query(
        "INSERT INTO pipeline_versions (pipeline_id, version, file, file_name, spec, code, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(pipeline_id)
    .bind(version)
    .bind(&new.file)
    .bind(&new.file_name)
    .bind(serde_json::to_string(&new.spec)?)
    .bind(new.code.map(|c| c.to_hex()))
    .bind(new.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn apply_pipeline(s: &SqliteStore, new: NewPipeline) -> Result<(PipelineRecord, bool)> {
    let mut tx = s.writer.begin().await?;
    let project_id = project_id(&mut tx, &new.owner, &new.project).await?;
    let scheduled = new.spec.schedule.is_some();
    let existing = sqlx::query(
        "SELECT pl.id, pl.version, v.file, v.code FROM pipelines pl
         JOIN pipeline_versions v ON v.pipeline_id = pl.id AND v.version = pl.version
         WHERE pl.project_id = $1 AND pl.name = $2",
    )
    .bind(project_id)
    .bind(new.spec.name.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let (id, added) = match existing {
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO pipelines (project_id, name, version, paused, scheduled, last_scheduled, created_at,
                                        updated_at)
                 VALUES ($1, $2, 1, FALSE, $3, $4, $4, $4) RETURNING id",
            )
            .bind(project_id)
            .bind(new.spec.name.as_str())
            .bind(scheduled)
            .bind(new.now)
            .fetch_one(&mut *tx)
            .await?;
            insert_version(&mut tx, id, 1, &new).await?;
            (id, true)
        }
        Some(row) => {
            let id: i64 = row.try_get("id")?;
            let version: i64 = row.try_get("version")?;
            let file: String = row.try_get("file")?;
            let code = manifest_of(row.try_get("code")?)?;
            if file == new.file && code == new.code {
                (id, false)
            } else {
                insert_version(&mut tx, id, version + 1, &new).await?;
                sqlx::query("UPDATE pipelines SET version = $2, scheduled = $3, updated_at = $4 WHERE id = $1")
                    .bind(id)
                    .bind(version + 1)
                    .bind(scheduled)
                    .bind(new.now)
                    .execute(&mut *tx)
                    .await?;
                (id, true)
            }
        }
    };
    let record = load_pipeline(&mut tx, id).await?;
    tx.commit().await?;
    Ok((record, added))
}

pub(super) async fn get_pipeline(s: &SqliteStore, owner: &Name, project: &Name, name: &Name) -> Result<PipelineRecord> {
    let row = sqlx::query(concat!(pipeline_select!(), "WHERE o.name = $1 AND p.name = $2 AND pl.name = $3"))
        .bind(owner.as_str())
        .bind(project.as_str())
        .bind(name.as_str())
        .fetch_optional(&s.reader)
        .await?;
    match row {
        Some(row) => pipeline(&row),
        None => Err(pipeline_missing(owner, project, name)),
    }
}

pub(super) async fn get_pipeline_by_id(s: &SqliteStore, id: i64) -> Result<PipelineRecord> {
    let row = sqlx::query(concat!(pipeline_select!(), "WHERE pl.id = $1")).bind(id).fetch_optional(&s.reader).await?;
    match row {
        Some(row) => pipeline(&row),
        None => Err(MetaError::NotFound(format!("there is no pipeline with id {id}"))),
    }
}

pub(super) async fn list_pipelines(s: &SqliteStore, owner: &Name, project: &Name) -> Result<Vec<PipelineRecord>> {
    let rows = sqlx::query(concat!(pipeline_select!(), "WHERE o.name = $1 AND p.name = $2 ORDER BY pl.name"))
        .bind(owner.as_str())
        .bind(project.as_str())
        .fetch_all(&s.reader)
        .await?;
    rows.iter().map(pipeline).collect()
}

pub(super) async fn scheduled_pipelines(s: &SqliteStore) -> Result<Vec<PipelineRecord>> {
    let rows = sqlx::query(concat!(pipeline_select!(), "WHERE pl.scheduled AND NOT pl.paused ORDER BY pl.id"))
        .fetch_all(&s.reader)
        .await?;
    rows.iter().map(pipeline).collect()
}

pub(super) async fn set_paused(
    s: &SqliteStore,
    owner: &Name,
    project: &Name,
    name: &Name,
    paused: bool,
    now: i64,
) -> Result<PipelineRecord> {
    let mut tx = s.writer.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT pl.id FROM pipelines pl JOIN projects p ON p.id = pl.project_id JOIN owners o ON o.id = p.owner_id
         WHERE o.name = $1 AND p.name = $2 AND pl.name = $3",
    )
    .bind(owner.as_str())
    .bind(project.as_str())
    .bind(name.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Err(pipeline_missing(owner, project, name));
    };
    // A resume restarts the schedule's clock: what fell due while paused is not run.
    sqlx::query(
        "UPDATE pipelines SET
             last_scheduled = CASE WHEN paused AND NOT $2 THEN MAX(last_scheduled, $3) ELSE last_scheduled END,
             updated_at = CASE WHEN paused <> $2 THEN $3 ELSE updated_at END,
             paused = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(paused)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let record = load_pipeline(&mut tx, id).await?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn set_last_scheduled(s: &SqliteStore, pipeline_id: i64, at: i64) -> Result<()> {
    sqlx::query("UPDATE pipelines SET last_scheduled = MAX(last_scheduled, $2) WHERE id = $1")
        .bind(pipeline_id)
        .bind(at)
        .execute(&s.writer)
        .await?;
    Ok(())
}

pub(super) async fn pipeline_version(s: &SqliteStore, pipeline_id: i64, version: u32) -> Result<PipelineVersion> {
    let row = sqlx::query(
        "SELECT pipeline_id, version, file, file_name, spec, code, created_at FROM pipeline_versions
         WHERE pipeline_id = $1 AND version = $2",
    )
    .bind(pipeline_id)
    .bind(i64::from(version))
    .fetch_optional(&s.reader)
    .await?;
    let Some(row) = row else {
        return Err(MetaError::NotFound(format!("there is no version {version} of this pipeline")));
    };
    let spec: String = row.try_get("spec")?;
    Ok(PipelineVersion {
        pipeline_id: row.try_get("pipeline_id")?,
        version: row.try_get::<i64, _>("version")? as u32,
        file: row.try_get("file")?,
        file_name: row.try_get("file_name")?,
        spec: serde_json::from_str(&spec)?,
        code: manifest_of(row.try_get("code")?)?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) async fn create_run(s: &SqliteStore, new: NewRun) -> Result<RunRecord> {
    let mut tx = s.writer.begin().await?;
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM pipelines WHERE id = $1")
        .bind(new.pipeline_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(name) = name else {
        return Err(MetaError::NotFound(format!("there is no pipeline with id {}", new.pipeline_id)));
    };
    if let Some(at) = new.scheduled_for {
        // Handled, whether the run is created or refused below.
        sqlx::query("UPDATE pipelines SET last_scheduled = MAX(last_scheduled, $2) WHERE id = $1")
            .bind(new.pipeline_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    let active: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pipeline_runs WHERE pipeline_id = $1 AND outcome IS NULL")
            .bind(new.pipeline_id)
            .fetch_one(&mut *tx)
            .await?;
    if active >= i64::from(new.max_active) {
        tx.commit().await?;
        return Err(MetaError::Conflict(format!(
            "pipeline {name} has {active} active run(s), as many as its max_active_runs allows: wait for one to \
             end, or cancel one with `podder pipeline cancel {name}/N`"
        )));
    }
    let number: i64 =
        sqlx::query_scalar("UPDATE pipelines SET last_run = last_run + 1 WHERE id = $1 RETURNING last_run")
            .bind(new.pipeline_id)
            .fetch_one(&mut *tx)
            .await?;
    let outcome = new.state.outcome.map(outcome_str);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO pipeline_runs (pipeline_id, number, version, trigger, scheduled_for, params, state, outcome,
                                    revision, retry_of, created_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11) RETURNING id",
    )
    .bind(new.pipeline_id)
    .bind(number)
    .bind(i64::from(new.version))
    .bind(new.trigger.as_str())
    .bind(new.scheduled_for)
    .bind(serde_json::to_string(&new.params)?)
    .bind(serde_json::to_string(&new.state)?)
    .bind(outcome)
    .bind(new.retry_of.map(|n| n as i64))
    .bind(new.now)
    .bind(outcome.map(|_| new.now))
    .fetch_one(&mut *tx)
    .await?;
    let record = load_run(&mut tx, id).await?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn get_run(s: &SqliteStore, pipeline_id: i64, number: u64) -> Result<RunRecord> {
    let row = sqlx::query(concat!(run_select!(), "WHERE r.pipeline_id = $1 AND r.number = $2"))
        .bind(pipeline_id)
        .bind(number as i64)
        .fetch_optional(&s.reader)
        .await?;
    match row {
        Some(row) => run(&row),
        None => Err(MetaError::NotFound(format!("this pipeline has no run {number}: see `podder pipeline runs NAME`"))),
    }
}

pub(super) async fn get_run_by_id(s: &SqliteStore, id: i64) -> Result<RunRecord> {
    let row = sqlx::query(concat!(run_select!(), "WHERE r.id = $1")).bind(id).fetch_optional(&s.reader).await?;
    match row {
        Some(row) => run(&row),
        None => Err(MetaError::NotFound(format!("there is no pipeline run with id {id}"))),
    }
}

pub(super) async fn list_runs(s: &SqliteStore, pipeline_id: i64, limit: u32) -> Result<Vec<RunRecord>> {
    let rows = sqlx::query(concat!(run_select!(), "WHERE r.pipeline_id = $1 ORDER BY r.number DESC LIMIT $2"))
        .bind(pipeline_id)
        .bind(i64::from(limit))
        .fetch_all(&s.reader)
        .await?;
    rows.iter().map(run).collect()
}

pub(super) async fn active_runs(s: &SqliteStore) -> Result<Vec<RunRecord>> {
    let rows =
        sqlx::query(concat!(run_select!(), "WHERE r.outcome IS NULL ORDER BY r.id")).fetch_all(&s.reader).await?;
    rows.iter().map(run).collect()
}

/// Writes a run's state if it is still at `revision`; `Conflict` if not.
async fn write_run(conn: &mut SqliteConnection, id: i64, revision: u64, state: &RunState, now: i64) -> Result<()> {
    let outcome = state.outcome.map(outcome_str);
    let done = sqlx::query(
        "UPDATE pipeline_runs SET state = $3, outcome = $4, revision = revision + 1,
                finished_at = CASE WHEN $4 IS NULL THEN NULL ELSE COALESCE(finished_at, $5) END
         WHERE id = $1 AND revision = $2",
    )
    .bind(id)
    .bind(revision as i64)
    .bind(serde_json::to_string(state)?)
    .bind(outcome)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT revision FROM pipeline_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
        return Err(match exists {
            Some(now_at) => MetaError::Conflict(format!(
                "the pipeline run changed meanwhile (revision {now_at}, not {revision}): read it again"
            )),
            None => MetaError::NotFound(format!("there is no pipeline run with id {id}")),
        });
    }
    Ok(())
}

pub(super) async fn update_run(s: &SqliteStore, update: RunUpdate) -> Result<RunRecord> {
    let mut tx = s.writer.begin().await?;
    write_run(&mut tx, update.run_id, update.revision, &update.state, update.now).await?;
    let record = load_run(&mut tx, update.run_id).await?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn start_steps(s: &SqliteStore, start: StartSteps) -> Result<(Vec<JobRecord>, RunRecord)> {
    let mut tx = s.writer.begin().await?;
    let mut state = start.state;
    let mut jobs = Vec::with_capacity(start.steps.len());
    for st in &start.steps {
        let job_id = insert_job(&mut tx, &st.job).await?;
        let linked = sqlx::query(
            "INSERT INTO step_jobs (job_id, run_id, step, attempt) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(job_id)
        .bind(start.run_id)
        .bind(&st.step)
        .bind(i64::from(st.attempt))
        .execute(&mut *tx)
        .await?;
        if linked.rows_affected() == 0 {
            return Err(MetaError::Conflict(format!(
                "step {} (attempt {}) of this run already has a job",
                st.step, st.attempt
            )));
        }
        let job = load(&mut tx, job_id).await?;
        podder_pipeline::dag::started(&mut state, &st.step, st.attempt, job.job.job_ref.number, start.now);
        jobs.push(job);
    }
    write_run(&mut tx, start.run_id, start.revision, &state, start.now).await?;
    let run = load_run(&mut tx, start.run_id).await?;
    tx.commit().await?;
    Ok((jobs, run))
}

pub(super) async fn run_jobs(s: &SqliteStore, run_id: i64) -> Result<Vec<StepJob>> {
    let rows = sqlx::query(
        "SELECT s.step, s.attempt, j.id, j.number, j.state, j.output, j.exit_code, j.reason, j.stop_requested
         FROM step_jobs s JOIN jobs j ON j.id = s.job_id WHERE s.run_id = $1 ORDER BY j.id",
    )
    .bind(run_id)
    .fetch_all(&s.reader)
    .await?;
    rows.iter()
        .map(|r| {
            let state: String = r.try_get("state")?;
            Ok(StepJob {
                step: r.try_get("step")?,
                attempt: r.try_get::<i64, _>("attempt")? as u32,
                job: JobId(r.try_get("id")?),
                number: r.try_get::<i64, _>("number")? as u64,
                state: state.parse().map_err(|e| corrupt("job state", e))?,
                output: manifest_of(r.try_get("output")?)?,
                exit_code: r.try_get("exit_code")?,
                reason: r.try_get("reason")?,
                stop_requested: r.try_get("stop_requested")?,
            })
        })
        .collect()
}

pub(super) async fn run_of_job(s: &SqliteStore, job: JobId) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT run_id FROM step_jobs WHERE job_id = $1")
        .bind(job.0)
        .fetch_optional(&s.reader)
        .await?)
}

pub(super) async fn put_cache(
    s: &SqliteStore,
    owner: &Name,
    project: &Name,
    key: &str,
    output: ManifestId,
    job: u64,
    now: i64,
) -> Result<()> {
    let mut tx = s.writer.begin().await?;
    let project_id = project_id(&mut tx, owner, project).await?;
    let job_id: Option<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE project_id = $1 AND number = $2")
        .bind(project_id)
        .bind(job as i64)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(job_id) = job_id else {
        return Err(MetaError::NotFound(format!("there is no job {owner}/{project}#{job}")));
    };
    sqlx::query(
        "INSERT INTO step_cache (project_id, cache_key, output, job_id, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (project_id, cache_key) DO UPDATE SET output = excluded.output, job_id = excluded.job_id,
             created_at = excluded.created_at",
    )
    .bind(project_id)
    .bind(key)
    .bind(output.to_hex())
    .bind(job_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get_cache(s: &SqliteStore, owner: &Name, project: &Name, key: &str) -> Result<Option<CacheHit>> {
    let row = sqlx::query(
        "SELECT c.output, j.number FROM step_cache c JOIN jobs j ON j.id = c.job_id
         JOIN projects p ON p.id = c.project_id JOIN owners o ON o.id = p.owner_id
         WHERE o.name = $1 AND p.name = $2 AND c.cache_key = $3",
    )
    .bind(owner.as_str())
    .bind(project.as_str())
    .bind(key)
    .fetch_optional(&s.reader)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let output: String = row.try_get("output")?;
    Ok(Some(CacheHit {
        output: output.parse().map_err(|e| corrupt("manifest id", e))?,
        job: row.try_get::<i64, _>("number")? as u64,
    }))
}
