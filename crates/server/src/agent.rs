//! `/agent/*`: the routes agents use. An agent long-polls for a lease, then
//! reports progress, heartbeats (learning of stop requests at once), uploads
//! log lines and finishes the job, always naming its lease.
//!
//! Agent routes need an admin token; the agent's name is recorded. Every
//! lease request records the agent's queue and inventory (`GET /agents`),
//! and the claim places only a job that fits that inventory, assigning its
//! GPU indices (see `MetaStore::claim_job`). A build job's finish may carry
//! what it built, kept as the job's build result. A finish may carry the
//! job's last log lines (`FinishWithLogs`), appended before the job ends, so
//! that a job's end is one call; an empty output needs no commit.
//!
//! A finish whose output would take the job's owner past the storage quota
//! is answered 413, and the job is recorded as failed with that reason
//! (without the output, which garbage collection then frees).

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use podder_core::api::{FinishWithLogs, HeartbeatReply, Job, Lease, LeaseRequest, LogUpload, StateUpdate};
use podder_core::{JobState, Manifest};
use podder_meta::{Claim, FinishJob, MetaError};
use serde::Deserialize;

use crate::auth::{Caller, random_hex};
use crate::error::{ApiError, ApiResult, Json, Kind, Path, Query};
use crate::jobs::check_queue;
use crate::manifests::{load_manifest, store_manifest};
use crate::state::{AppState, now_ms};
use crate::wait::wait_for;

/// The longest an agent waits for work in one request.
const LEASE_WAIT_MAX_MS: u64 = 60_000;
/// Log batches may be large; the agent should send them more often instead.
const LOG_LIMIT: usize = 32 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agent/lease", post(lease))
        .route("/agent/leases/{lease_id}/state", post(progress))
        .route("/agent/leases/{lease_id}/heartbeat", post(heartbeat))
        .route("/agent/leases/{lease_id}/logs", post(logs).layer(DefaultBodyLimit::max(LOG_LIMIT)))
        .route("/agent/leases/{lease_id}/finish", post(finish).layer(DefaultBodyLimit::max(LOG_LIMIT)))
}

fn check_agent(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("the agent name must be 1 to 128 printable characters, e.g. gpu-box-1"));
    }
    Ok(())
}

/// Where the job's tools reach the server: the configured public URL, else
/// the address the agent itself used.
fn server_url(state: &AppState, headers: &HeaderMap) -> Option<String> {
    state.config.public_url.clone().or_else(|| {
        let host = headers.get(HOST)?.to_str().ok()?;
        Some(format!("http://{host}"))
    })
}

async fn lease(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<LeaseRequest>,
) -> ApiResult<Response> {
    caller.require_agent()?;
    check_agent(&req.agent)?;
    check_queue(&req.queue)?;
    state.agent_seen(&req.agent, &req.queue, &req.inventory).await?;
    let notify = state.queues.subscribe(&req.queue);
    let deadline = state.deadline(req.wait_ms, LEASE_WAIT_MAX_MS);
    let lease_ms = state.config.lease_ms;
    let claimed = wait_for(&notify, deadline, &state.shutdown_signal(), || async {
        let now = now_ms();
        let claim = Claim {
            queue: req.queue.clone(),
            agent: req.agent.clone(),
            lease_id: random_hex::<16>().map_err(|e| ApiError::internal(e.to_string()))?,
            now,
            expires_at: now + lease_ms as i64,
            inventory: req.inventory.clone(),
        };
        Ok::<_, ApiError>(state.meta.claim_job(&claim).await?.map(|rec| (claim.lease_id, rec)))
    })
    .await?;
    let Some((lease_id, rec)) = claimed else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    state.job_changed(&rec);
    tracing::info!(job = %rec.job.job_ref, agent = %req.agent, "job leased");
    let lease =
        Lease { lease_id, job: rec.job, lease_ms, server_url: server_url(&state, &headers), finish_with_logs: true };
    Ok(Json(lease).into_response())
}

async fn progress(
    State(state): State<AppState>,
    caller: Caller,
    Path(lease_id): Path<String>,
    Json(update): Json<StateUpdate>,
) -> ApiResult<StatusCode> {
    caller.require_agent()?;
    let rec = state.meta.set_progress(&lease_id, update.state, now_ms()).await?;
    state.job_changed(&rec);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct HeartbeatQuery {
    #[serde(default)]
    wait_ms: u64,
}

async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(lease_id): Path<String>,
    Query(q): Query<HeartbeatQuery>,
) -> ApiResult<Json<HeartbeatReply>> {
    caller.require_agent()?;
    let lease_ms = state.config.lease_ms;
    let rec = state.meta.heartbeat(&lease_id, now_ms() + lease_ms as i64).await?;
    if let Some(agent) = &rec.job.agent {
        // A busy agent sends no lease requests; its heartbeats show it alive.
        state.meta.agent_alive(agent, now_ms()).await?;
    }
    if rec.stop_requested {
        return Ok(Json(HeartbeatReply { stop: true }));
    }
    // Waiting at most a third of the lease leaves time for the next beat.
    let notify = state.job_control.subscribe(&rec.id);
    let deadline = state.deadline(q.wait_ms, lease_ms / 3);
    let stop = wait_for(&notify, deadline, &state.shutdown_signal(), || async {
        let now = state.meta.get_job_by_id(rec.id).await?;
        if !now.holds_lease(&lease_id) {
            return Err(ApiError::from(MetaError::lease_gone(&lease_id)));
        }
        Ok(now.stop_requested.then_some(true))
    })
    .await?;
    Ok(Json(HeartbeatReply { stop: stop.unwrap_or(false) }))
}

async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(lease_id): Path<String>,
    Json(upload): Json<LogUpload>,
) -> ApiResult<StatusCode> {
    caller.require_agent()?;
    let id = state.meta.append_logs(&lease_id, &upload.lines).await?;
    state.job_events.wake(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the job: appends the log lines that came with the finish, then
/// records the outcome. The empty output needs no commit: its manifest is
/// stored here when it is not yet.
async fn finish(
    State(state): State<AppState>,
    caller: Caller,
    Path(lease_id): Path<String>,
    Json(FinishWithLogs { finish: req, logs, ran_ms }): Json<FinishWithLogs>,
) -> ApiResult<Json<Job>> {
    caller.require_agent()?;
    if !logs.is_empty() {
        let id = state.meta.append_logs(&lease_id, &logs).await?;
        state.job_events.wake(&id);
    }
    let _hold = state.grace.hold().await;
    let mut output_bytes = 0;
    if let Some(out) = req.output {
        if out == Manifest::empty_id() {
            if !state.store.has_manifest(out).await? {
                store_manifest(&state, &Manifest::new(Vec::new())).await?;
            }
        } else {
            if !state.store.has_manifest(out).await? {
                return Err(ApiError::invalid(format!(
                    "the output manifest {out} is not committed: upload its chunks and commit it, then finish again"
                )));
            }
            output_bytes = load_manifest(&state, out).await?.total_size();
        }
    }
    let now = now_ms();
    let finish = FinishJob {
        outcome: req.outcome,
        exit_code: req.exit_code,
        output: req.output,
        output_bytes,
        reason: req.reason,
        quota: state.config.quota_bytes,
        build: req.build,
        started_at: ran_ms.map(|ms| now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX))),
        now,
    };
    let rec = state.meta.finish_job(&lease_id, &finish).await?;
    if let (Some(out), Some(owner)) = (rec.job.output, rec.job.job_ref.owner.as_ref()) {
        // After the finish: a resent finish (the agent retries on errors)
        // grants again, so a failure here is not lost.
        state.meta.grant_manifests(owner, &[out]).await?;
    }
    state.job_changed(&rec);
    if rec.job.state != JobState::Succeeded {
        tracing::info!(job = %rec.job.job_ref, state = %rec.job.state, "job ended");
    }
    if req.output.is_some() && rec.job.output.is_none() {
        // Only the quota drops an output: the job is recorded as failed with
        // the reason, and the agent is told (it need not retry).
        let reason = rec.job.reason.unwrap_or_else(|| "the storage quota is exceeded".into());
        return Err(ApiError::new(Kind::QuotaExceeded, reason));
    }
    Ok(Json(rec.job))
}
