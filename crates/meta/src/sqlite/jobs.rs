//! Creating, reading and stopping jobs.

use podder_core::api::{Input, Job};
use podder_core::refs::Version;
use podder_core::{JobState, Name, SourceRef};
use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use super::rows::{self, job_select};
use crate::{JobId, JobRecord, MetaError, NewJob, Result};

fn job_missing(owner: &Name, project: &Name, number: u64) -> MetaError {
    MetaError::NotFound(format!(
        "there is no job {owner}/{project}#{number}: list the project's jobs with `podder status`"
    ))
}

/// Reads a job inside a transaction (or on the writer connection).
pub(super) async fn load(conn: &mut SqliteConnection, id: i64) -> Result<JobRecord> {
    let row = sqlx::query(concat!(job_select!(), "WHERE j.id = $1")).bind(id).fetch_one(conn).await?;
    rows::job(&row)
}

/// Reads the job that holds (or held) a lease, inside a transaction.
pub(super) async fn load_by_lease(conn: &mut SqliteConnection, lease_id: &str) -> Result<Option<JobRecord>> {
    let row = sqlx::query(concat!(job_select!(), "WHERE j.lease_id = $1")).bind(lease_id).fetch_optional(conn).await?;
    row.as_ref().map(rows::job).transpose()
}

pub(super) async fn create_job(s: &SqliteStore, new: NewJob) -> Result<JobRecord> {
    let mut tx = s.writer.begin().await?;
    let id = insert_job(&mut tx, &new).await?;
    let record = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(record)
}

/// Allocates the project's next job number and inserts the queued job with
/// its inputs, inside the caller's transaction; answers the job's id.
pub(super) async fn insert_job(tx: &mut SqliteConnection, new: &NewJob) -> Result<i64> {
    let spec = serde_json::to_string(&new.spec).map_err(|e| MetaError::Internal(e.to_string()))?;
    // Allocating the number and inserting in one transaction makes numbers
    // unique and gap-free however many submits race.
    let row = sqlx::query(
        "UPDATE projects SET last_job = last_job + 1
         WHERE id = (SELECT p.id FROM projects p JOIN owners o ON o.id = p.owner_id
                     WHERE o.name = $1 AND p.name = $2)
         RETURNING id, last_job",
    )
    .bind(new.owner.as_str())
    .bind(new.project.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(MetaError::NotFound(format!(
            "there is no project {}/{}: create it with `podder init {}`",
            new.owner, new.project, new.project
        )));
    };
    let project_id: i64 = row.try_get("id")?;
    let number: i64 = row.try_get("last_job")?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (project_id, number, state, queue, spec, message, attempt, restarted_from,
                           stop_requested, log_base, created_at, gpus_needed, needs_docker)
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, FALSE, 0, $8, $9, $10)
         RETURNING id",
    )
    .bind(project_id)
    .bind(number)
    .bind(JobState::Queued.as_str())
    .bind(&new.spec.queue)
    .bind(spec)
    .bind(&new.message)
    .bind(new.restarted_from.as_ref().map(|r| r.to_string()))
    .bind(new.now)
    .bind(i64::from(new.spec.resources.gpus))
    .bind(new.spec.needs_docker())
    .fetch_one(&mut *tx)
    .await?;
    for (position, input) in new.spec.inputs.iter().enumerate() {
        link_input(&mut *tx, id, position, input).await?;
    }
    Ok(id)
}

/// Records one input of a new job. A concrete dataset version must still
/// exist with the manifest the input names: checked here, in the job's
/// transaction, so a delete cannot slip between resolving and creating.
async fn link_input(conn: &mut SqliteConnection, job_id: i64, position: usize, input: &Input) -> Result<()> {
    let mut version_id = None;
    if let Ok(SourceRef::Dataset { owner: Some(owner), name, version: Version::Number(n) }) = input.source.parse() {
        let row = sqlx::query(
            "SELECT v.id, v.manifest FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id
             JOIN owners o ON o.id = d.owner_id
             WHERE o.name = $1 AND d.name = $2 AND v.version = $3",
        )
        .bind(owner.as_str())
        .bind(name.as_str())
        .bind(i64::from(n))
        .fetch_optional(&mut *conn)
        .await?;
        let found = match row {
            Some(row) => {
                let manifest: String = row.try_get("manifest")?;
                (manifest == input.manifest.to_hex()).then(|| row.try_get::<i64, _>("id")).transpose()?
            }
            None => None,
        };
        let Some(found) = found else {
            return Err(MetaError::NotFound(format!(
                "the dataset version {} no longer exists (it was deleted): submit the job again with a version \
                 that exists; see `podder data versions {name}`",
                input.source
            )));
        };
        version_id = Some(found);
    }
    sqlx::query(
        "INSERT INTO job_inputs (job_id, position, source, manifest, dataset_version_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(job_id)
    .bind(position as i64)
    .bind(&input.source)
    .bind(input.manifest.to_hex())
    .bind(version_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn get_job(s: &SqliteStore, owner: &Name, project: &Name, number: u64) -> Result<JobRecord> {
    let row = sqlx::query(concat!(job_select!(), "WHERE o.name = $1 AND p.name = $2 AND j.number = $3"))
        .bind(owner.as_str())
        .bind(project.as_str())
        .bind(number as i64)
        .fetch_optional(&s.reader)
        .await?;
    match row {
        Some(row) => rows::job(&row),
        None => Err(job_missing(owner, project, number)),
    }
}

pub(super) async fn get_job_by_id(s: &SqliteStore, id: JobId) -> Result<JobRecord> {
    let row = sqlx::query(concat!(job_select!(), "WHERE j.id = $1")).bind(id.0).fetch_optional(&s.reader).await?;
    match row {
        Some(row) => rows::job(&row),
        None => Err(MetaError::NotFound(format!("there is no job with id {}", id.0))),
    }
}

pub(super) async fn list_jobs(s: &SqliteStore, owner: &Name, project: &Name, limit: u32) -> Result<Vec<Job>> {
    let rows = sqlx::query(concat!(job_select!(), "WHERE o.name = $1 AND p.name = $2 ORDER BY j.number DESC LIMIT $3"))
        .bind(owner.as_str())
        .bind(project.as_str())
        .bind(i64::from(limit))
        .fetch_all(&s.reader)
        .await?;
    rows.iter().map(|r| rows::job(r).map(|rec| rec.job)).collect()
}

pub(super) async fn request_stop(
    s: &SqliteStore,
    owner: &Name,
    project: &Name,
    number: u64,
    now: i64,
) -> Result<JobRecord> {
    let mut tx = s.writer.begin().await?;
    let row = sqlx::query(concat!(job_select!(), "WHERE o.name = $1 AND p.name = $2 AND j.number = $3"))
        .bind(owner.as_str())
        .bind(project.as_str())
        .bind(number as i64)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Err(job_missing(owner, project, number));
    };
    let rec = rows::job(&row)?;
    let state = rec.job.state;
    if state == JobState::Queued {
        let to = state.transition(JobState::Stopped)?;
        sqlx::query(
            "UPDATE jobs SET state = $2, finished_at = $3, reason = 'stopped before it started'
             WHERE id = $1 AND state = 'queued'",
        )
        .bind(rec.id.0)
        .bind(to.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    } else if state.is_leased() {
        // The agent learns it from its heartbeat and ends the job itself.
        sqlx::query("UPDATE jobs SET stop_requested = TRUE WHERE id = $1").bind(rec.id.0).execute(&mut *tx).await?;
    } else {
        return Err(MetaError::Conflict(format!(
            "job {} is already {state}: there is nothing to stop",
            rec.job.job_ref
        )));
    }
    let rec = load(&mut tx, rec.id.0).await?;
    tx.commit().await?;
    Ok(rec)
}

pub(super) async fn latest_build_job(s: &SqliteStore, owner: &Name, project: &Name) -> Result<Option<JobRecord>> {
    let row = sqlx::query(concat!(
        job_select!(),
        "WHERE o.name = $1 AND p.name = $2 AND j.state = 'succeeded' AND j.build_result IS NOT NULL
         ORDER BY j.number DESC LIMIT 1"
    ))
    .bind(owner.as_str())
    .bind(project.as_str())
    .fetch_optional(&s.reader)
    .await?;
    row.as_ref().map(rows::job).transpose()
}
