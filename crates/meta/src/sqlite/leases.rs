//! The agent side of jobs: claiming, heartbeats, progress, finishing, and
//! expiring leases whose agent went silent.

use podder_core::JobState;
use podder_core::api::JobSpec;
use sqlx::Row;

use super::SqliteStore;
use super::jobs::{load, load_by_lease};
use super::storage;
use crate::{Claim, FinishJob, JobRecord, MetaError, Result};

/// The states in which an agent holds a lease, as SQL.
macro_rules! leased {
    () => {
        "('assigned', 'preparing', 'running')"
    };
}

pub(super) async fn claim_job(s: &SqliteStore, claim: &Claim) -> Result<Option<JobRecord>> {
    let to = JobState::Queued.transition(JobState::Assigned)?;
    let mut tx = s.writer.begin().await?;
    // One statement picks and takes the job, so two agents never get the
    // same one (PostgreSQL: add FOR UPDATE SKIP LOCKED to the subquery).
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET state = $5, agent = $2, lease_id = $3, lease_expires_at = $4, stop_requested = FALSE
         WHERE id = (SELECT id FROM jobs WHERE queue = $1 AND state = 'queued' ORDER BY id LIMIT 1)
           AND state = 'queued'
         RETURNING id",
    )
    .bind(&claim.queue)
    .bind(&claim.agent)
    .bind(&claim.lease_id)
    .bind(claim.expires_at)
    .bind(to.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else { return Ok(None) };
    let rec = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Some(rec))
}

pub(super) async fn heartbeat(s: &SqliteStore, lease_id: &str, expires_at: i64) -> Result<JobRecord> {
    let mut tx = s.writer.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(concat!(
        "UPDATE jobs SET lease_expires_at = $2 WHERE lease_id = $1 AND state IN ",
        leased!(),
        " RETURNING id"
    ))
    .bind(lease_id)
    .bind(expires_at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Err(MetaError::lease_gone(lease_id));
    };
    let rec = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(rec)
}

pub(super) async fn set_progress(s: &SqliteStore, lease_id: &str, state: JobState, now: i64) -> Result<JobRecord> {
    if !matches!(state, JobState::Preparing | JobState::Running) {
        return Err(MetaError::Invalid(format!(
            "an agent may only report 'preparing' or 'running', not '{state}': end a job with finish"
        )));
    }
    let mut tx = s.writer.begin().await?;
    let rec = match load_by_lease(&mut tx, lease_id).await? {
        Some(rec) if rec.holds_lease(lease_id) => rec,
        _ => return Err(MetaError::lease_gone(lease_id)),
    };
    if rec.job.state == state {
        return Ok(rec);
    }
    let to = rec.job.state.transition(state)?;
    let started_at = if to == JobState::Running { Some(now) } else { rec.job.started_at };
    sqlx::query("UPDATE jobs SET state = $2, started_at = $3 WHERE id = $1 AND state = $4")
        .bind(rec.id.0)
        .bind(to.as_str())
        .bind(started_at)
        .bind(rec.job.state.as_str())
        .execute(&mut *tx)
        .await?;
    let rec = load(&mut tx, rec.id.0).await?;
    tx.commit().await?;
    Ok(rec)
}

pub(super) async fn finish_job(s: &SqliteStore, lease_id: &str, finish: &FinishJob) -> Result<JobRecord> {
    let mut tx = s.writer.begin().await?;
    let Some(rec) = load_by_lease(&mut tx, lease_id).await? else {
        return Err(MetaError::lease_gone(lease_id));
    };
    let mut to = finish.outcome.state();
    if rec.stop_requested && to == JobState::Failed {
        // Killing a stopped job makes its command fail; the user asked for it.
        to = JobState::Stopped;
    }
    if rec.job.state.is_terminal() {
        // A resent finish (the first answer was lost) gets the same answer.
        if rec.job.state == to && rec.job.output == finish.output && rec.job.exit_code == finish.exit_code {
            return Ok(rec);
        }
        return Err(MetaError::lease_gone(lease_id));
    }
    let mut output = finish.output;
    let mut over_quota = None;
    if let (Some(out), Some(quota)) = (output, finish.quota) {
        let owner_id: i64 =
            sqlx::query_scalar("SELECT p.owner_id FROM jobs j JOIN projects p ON p.id = j.project_id WHERE j.id = $1")
                .bind(rec.id.0)
                .fetch_one(&mut *tx)
                .await?;
        let owner = rec.job.job_ref.owner.clone().expect("stored jobs have an owner");
        match storage::check_quota(&mut tx, owner_id, &owner, &out.to_hex(), finish.output_bytes, quota).await {
            Ok(()) => {}
            // The job is kept, failed, without the output; the agent is told why.
            Err(MetaError::Quota(m)) => {
                over_quota = Some(m);
                output = None;
                to = JobState::Failed;
            }
            Err(e) => return Err(e),
        }
    }
    let to = rec.job.state.transition(to)?;
    let reason = match (over_quota, &finish.reason, to) {
        (Some(q), _, _) => Some(q),
        (None, Some(r), _) => Some(r.clone()),
        (None, None, JobState::Stopped) if rec.stop_requested => Some("stopped by request".to_string()),
        (None, None, _) => None,
    };
    sqlx::query(
        "UPDATE jobs SET state = $2, exit_code = $3, output = $4, output_bytes = $5, reason = $6, finished_at = $7,
                lease_expires_at = NULL
         WHERE id = $1 AND state = $8",
    )
    .bind(rec.id.0)
    .bind(to.as_str())
    .bind(finish.exit_code)
    .bind(output.map(|o| o.to_hex()))
    .bind(output.map(|_| finish.output_bytes as i64))
    .bind(reason)
    .bind(finish.now)
    .bind(rec.job.state.as_str())
    .execute(&mut *tx)
    .await?;
    let rec = load(&mut tx, rec.id.0).await?;
    tx.commit().await?;
    Ok(rec)
}

pub(super) async fn expire_leases(s: &SqliteStore, now: i64) -> Result<Vec<JobRecord>> {
    let mut tx = s.writer.begin().await?;
    let expired = sqlx::query(concat!(
        "SELECT id, state, spec, attempt, agent, stop_requested FROM jobs
         WHERE lease_expires_at < $1 AND state IN ",
        leased!(),
        " ORDER BY id"
    ))
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let mut changed = Vec::with_capacity(expired.len());
    for row in expired {
        let id: i64 = row.try_get("id")?;
        let state: String = row.try_get("state")?;
        let state: JobState = state.parse()?;
        let spec: JobSpec = serde_json::from_str(row.try_get("spec")?)?;
        let attempt: i64 = row.try_get("attempt")?;
        let agent: Option<String> = row.try_get("agent")?;
        let stop_requested: bool = row.try_get("stop_requested")?;
        let agent = agent.as_deref().unwrap_or("?");
        let lost = state.transition(JobState::Lost)?;
        if attempt <= i64::from(spec.retries) && !stop_requested {
            let queued = lost.transition(JobState::Queued)?;
            // The next attempt's agent numbers its log lines from 0 again;
            // they are stored after every line kept so far.
            sqlx::query(
                "UPDATE jobs SET state = $2, attempt = attempt + 1, agent = NULL, lease_id = NULL,
                        lease_expires_at = NULL, stop_requested = FALSE, started_at = NULL, reason = $3,
                        log_base = COALESCE((SELECT MAX(seq) + 1 FROM log_lines WHERE job_id = $1), log_base)
                 WHERE id = $1",
            )
            .bind(id)
            .bind(queued.as_str())
            .bind(format!("lease expired on agent {agent} (attempt {attempt}); queued again"))
            .execute(&mut *tx)
            .await?;
        } else {
            let reason = if stop_requested {
                format!("lease expired on agent {agent} after a stop was requested")
            } else {
                format!("lease expired on agent {agent}")
            };
            sqlx::query(
                "UPDATE jobs SET state = $2, lease_id = NULL, lease_expires_at = NULL, finished_at = $3,
                        reason = $4
                 WHERE id = $1",
            )
            .bind(id)
            .bind(lost.as_str())
            .bind(now)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        changed.push(load(&mut tx, id).await?);
    }
    tx.commit().await?;
    Ok(changed)
}
