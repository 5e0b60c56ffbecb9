//! Jobs: submitting (validated and with every source resolved), listing,
//! showing, stopping and restarting. Submit and restart hold the garbage
//! collector's shared lock (see `grace`) until the job exists.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use podder_core::api::{Job, JobSpec, SubmitJob};
use podder_core::{DataSpec, Name};
use podder_meta::{JobRecord, NewJob};
use serde::Deserialize;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::manifests::may_read;
use crate::resolve;
use crate::state::{AppState, now_ms};

const DEFAULT_QUEUE: &str = "default";
const LIST_DEFAULT: u32 = 1000;
const LIST_MAX: u32 = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/projects/{owner}/{project}/jobs", get(list).post(submit))
        .route("/jobs/{owner}/{project}/{n}", get(show))
        .route("/jobs/{owner}/{project}/{n}/stop", post(stop))
        .route("/jobs/{owner}/{project}/{n}/restart", post(restart))
}

/// A parameter name becomes an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
fn check_param(name: &str) -> ApiResult<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "the parameter name '{name}' is not valid: use letters, digits and '_', not starting with a digit"
        )))
    }
}

/// Checks a queue name; the same rule as owner and project names.
pub fn check_queue(queue: &str) -> ApiResult<()> {
    queue.parse::<Name>().map(|_| ()).map_err(|e| ApiError::invalid(format!("the queue name is not valid: {e}")))
}

/// Turns a submit request into a spec: every check, every source resolved.
async fn build_spec(state: &AppState, caller: &Caller, req: SubmitJob) -> ApiResult<JobSpec> {
    if req.command.is_empty() || req.command[0].trim().is_empty() {
        return Err(ApiError::invalid("the command is empty: give one after --, e.g. podder run -- python train.py"));
    }
    let Some(code) = req.code else {
        return Err(ApiError::invalid("no code snapshot was given: upload the project's code and name its manifest"));
    };
    for name in req.params.keys() {
        check_param(name)?;
    }
    let queue = req.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    check_queue(&queue)?;
    let data = req.data.iter().map(|d| d.parse::<DataSpec>()).collect::<Result<Vec<_>, _>>()?;
    podder_core::refs::check_mounts(data.iter().map(|d| &d.mount))?;
    // A code snapshot the caller was not granted looks uncommitted: naming
    // another owner's manifest id must not make it the job owner's.
    if !may_read(state, caller, code).await? || !state.store.has_manifest(code).await? {
        return Err(ApiError::invalid(format!(
            "the code snapshot {code} is not committed on this server: upload it and commit its manifest first"
        )));
    }
    let mut inputs = Vec::with_capacity(data.len());
    for d in &data {
        inputs.push(resolve::input(state, caller, d).await?);
    }
    Ok(JobSpec {
        code,
        command: req.command,
        setup: req.setup,
        params: req.params,
        inputs,
        env: req.env,
        timeout_secs: req.timeout_secs,
        retries: req.retries,
        queue,
        environment: None,
        resources: req.resources,
        build: None,
    })
}

/// Lets the job's owner read its code and inputs, creates the queued job
/// and wakes the agents of its queue. (A grant left by a failed create is
/// harmless: the spec was built from manifests the caller may read.)
async fn enqueue(state: &AppState, new: NewJob) -> ApiResult<JobRecord> {
    let spec = &new.spec;
    let manifests: Vec<_> = std::iter::once(spec.code).chain(spec.inputs.iter().map(|i| i.manifest)).collect();
    state.meta.grant_manifests(&new.owner, &manifests).await?;
    let rec = state.meta.create_job(new).await?;
    state.queues.wake(&rec.job.spec.queue);
    Ok(rec)
}

async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project)): Path<(Name, Name)>,
    Json(req): Json<SubmitJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    auth::project(&state, &caller, &owner, &project).await?;
    let message = req.message.clone();
    // From the code check to the job's creation, no collection may run.
    let _hold = state.grace.hold().await;
    let spec = build_spec(&state, &caller, req).await?;
    let new = NewJob { owner, project, spec, message, restarted_from: None, now: now_ms() };
    let rec = enqueue(&state, new).await?;
    Ok((StatusCode::CREATED, Json(rec.job)))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project)): Path<(Name, Name)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    auth::project(&state, &caller, &owner, &project).await?;
    let limit = q.limit.unwrap_or(LIST_DEFAULT).min(LIST_MAX);
    Ok(Json(state.meta.list_jobs(&owner, &project, limit).await?))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, n)): Path<(Name, Name, u64)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(auth::job(&state, &caller, &owner, &project, n).await?.job))
}

async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, n)): Path<(Name, Name, u64)>,
) -> ApiResult<Json<Job>> {
    auth::check_job_access(&caller, &owner, &project, n)?;
    let rec = state
        .meta
        .request_stop(&owner, &project, n, now_ms())
        .await
        .map_err(|e| auth::hide_job(e, &owner, &project, n))?;
    state.job_changed(&rec);
    Ok(Json(rec.job))
}

async fn restart(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, n)): Path<(Name, Name, u64)>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let old = auth::job(&state, &caller, &owner, &project, n).await?;
    let _hold = state.grace.hold().await;
    let new = NewJob {
        owner,
        project,
        spec: old.job.spec,
        message: old.job.message,
        restarted_from: Some(old.job.job_ref),
        now: now_ms(),
    };
    let rec = enqueue(&state, new).await?;
    Ok((StatusCode::CREATED, Json(rec.job)))
}
