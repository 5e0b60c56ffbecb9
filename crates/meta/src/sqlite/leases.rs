//! The agent side of jobs: claiming, heartbeats, progress, finishing, and
//! expiring leases whose agent went silent.

use podder_core::api::JobSpec;
use podder_core::env::place;
use podder_core::{ExecutorKind, JobState, Outcome};
use sqlx::{Row, SqliteConnection};

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

/// How many queued jobs of a queue one claim looks at, in queue order,
/// after the SQL filter on GPU count and docker (placement decides the rest).
const CLAIM_SCAN: i64 = 256;

/// The GPU indices held by the jobs an agent has leased now.
pub(super) async fn held_gpus(conn: &mut SqliteConnection, agent: &str) -> Result<Vec<u32>> {
    let rows: Vec<String> =
        sqlx::query_scalar(concat!("SELECT gpus FROM jobs WHERE agent = $1 AND state IN ", leased!()))
            .bind(agent)
            .fetch_all(conn)
            .await?;
    let mut held = Vec::new();
    for r in rows {
        held.extend(serde_json::from_str::<Vec<u32>>(&r)?);
    }
    held.sort_unstable();
    Ok(held)
}

pub(super) async fn claim_job(s: &SqliteStore, claim: &Claim) -> Result<Option<JobRecord>> {
    let to = JobState::Queued.transition(JobState::Assigned)?;
    let inv = &claim.inventory;
    // Reading what the agent holds, choosing a job and taking it happen in
    // one write transaction on the one writer connection, so no other claim
    // sees the GPUs as free in between (PostgreSQL: lock the agent's row
    // first, and add FOR UPDATE SKIP LOCKED to the candidate query).
    let mut tx = s.writer.begin().await?;
    // An agent without GPUs holds none: no need to ask.
    let held = if inv.gpus.is_empty() { Default::default() } else { held_gpus(&mut tx, &claim.agent).await? };
    let free = inv.gpus.iter().filter(|g| !held.contains(&g.index)).count();
    let docker = inv.executor == Some(ExecutorKind::Docker);
    let candidates = sqlx::query(
        "SELECT id, spec FROM jobs
         WHERE queue = $1 AND state = 'queued' AND gpus_needed <= $2 AND (needs_docker = FALSE OR $3)
         ORDER BY id LIMIT $4",
    )
    .bind(&claim.queue)
    .bind(free as i64)
    .bind(docker)
    .bind(CLAIM_SCAN)
    .fetch_all(&mut *tx)
    .await?;
    let mut chosen = None;
    for row in candidates {
        let spec: JobSpec = serde_json::from_str(row.try_get("spec")?)?;
        if let Some(gpus) = place(inv, &held, &spec.resources, spec.needs_docker()) {
            chosen = Some((row.try_get::<i64, _>("id")?, gpus));
            break;
        }
    }
    let Some((id, gpus)) = chosen else { return Ok(None) };
    let taken = sqlx::query(
        "UPDATE jobs SET state = $5, agent = $2, lease_id = $3, lease_expires_at = $4, stop_requested = FALSE,
                gpus = $6
         WHERE id = $1 AND state = 'queued'",
    )
    .bind(id)
    .bind(&claim.agent)
    .bind(&claim.lease_id)
    .bind(claim.expires_at)
    .bind(to.as_str())
    .bind(serde_json::to_string(&gpus)?)
    .execute(&mut *tx)
    .await?;
    if taken.rows_affected() == 0 {
        return Ok(None);
    }
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
    if finish.build.is_some() {
        if rec.job.spec.build.is_none() {
            return Err(MetaError::Invalid(format!(
                "job {} is not a build job: only a build job reports what it built",
                rec.job.job_ref
            )));
        }
        if finish.outcome != Outcome::Succeeded {
            return Err(MetaError::Invalid(
                "a build result comes only with a succeeded build: finish without it".to_string(),
            ));
        }
    }
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
    // A build result is kept only when the job did succeed (not over quota).
    let build = finish.build.as_ref().filter(|_| to == JobState::Succeeded).map(serde_json::to_string).transpose()?;
    sqlx::query(
        "UPDATE jobs SET state = $2, exit_code = $3, output = $4, output_bytes = $5, reason = $6, finished_at = $7,
                lease_expires_at = NULL, build_result = $9, started_at = COALESCE(started_at, $10)
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
    .bind(build)
    .bind(finish.started_at)
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
                "UPDATE jobs SET state = $2, attempt = attempt + 1, agent = NULL, lease_id = NULL, gpus = '[]',
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
