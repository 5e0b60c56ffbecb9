//! Jobs: submitting (validated, with every source and the environment
//! resolved, and refused when no agent of its queue could ever run it),
//! listing, showing, stopping and restarting. A submit with `build` is a
//! build job: no command; the agent builds the task image of its code (or
//! of a Git repository) and reports a `BuildResult` when it finishes.
//! Submit and restart hold the garbage collector's shared lock (see
//! `grace`) until the job exists.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use podder_core::api::{AgentInfo, Job, JobSpec, SubmitJob};
use podder_core::env::GitSource;
use podder_core::{DataSpec, ExecutorKind, ImageBuild, Manifest, ManifestId, Name};
use podder_meta::{JobRecord, NewJob};
use serde::Deserialize;

use crate::auth::{self, Caller};
use crate::envs;
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::manifests::{may_read, store_manifest};
use crate::resolve;
use crate::state::{AppState, now_ms};

pub const DEFAULT_QUEUE: &str = "default";
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
pub fn check_param(name: &str) -> ApiResult<()> {
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

/// How long after its last lease request or heartbeat an agent still counts
/// when a submit checks that some agent could ever run the job.
pub const AGENT_FRESH_MS: i64 = 10 * 60 * 1000;

/// Refuses a job that no agent seen lately on its queue could ever take:
/// more GPUs or memory than the largest has, or docker without a docker
/// agent. Without such a check the job would wait forever. A job that fits
/// some agent, but not now, is queued.
pub async fn check_placeable(state: &AppState, spec: &JobSpec) -> ApiResult<()> {
    let res = &spec.resources;
    let docker = spec.needs_docker();
    if res.gpus == 0 && !docker && res.memory_bytes.is_none() {
        return Ok(());
    }
    let since = now_ms() - AGENT_FRESH_MS;
    let agents: Vec<AgentInfo> =
        state.meta.list_agents().await?.into_iter().filter(|a| a.queue == spec.queue && a.last_seen >= since).collect();
    let q = &spec.queue;
    let able: Vec<&AgentInfo> =
        agents.iter().filter(|a| !docker || a.inventory.executor == Some(ExecutorKind::Docker)).collect();
    if docker && able.is_empty() {
        let why = match (&spec.build, &spec.environment) {
            (Some(_), _) => "a build job".to_string(),
            (None, Some(e)) => format!("the environment {} has no requirement set for the process executor", e.name),
            (None, None) => "it".to_string(),
        };
        return Err(ApiError::invalid(format!(
            "this job needs the docker executor ({why}), but no docker agent is registered on queue '{q}': \
             start an agent with --executor docker (e.g. `podder agent --executor docker --queue {q}`)"
        )));
    }
    if res.gpus > 0 {
        let most = able.iter().map(|a| a.inventory.gpus.len()).max().unwrap_or(0);
        if most == 0 {
            return Err(ApiError::invalid(format!(
                "the job asks for {} GPU(s), but no GPU agent is registered on queue '{q}': start an agent with \
                 --gpus (e.g. `podder agent --gpus auto --queue {q}`), or run it without --gpu",
                res.gpus
            )));
        }
        if most < res.gpus as usize {
            return Err(ApiError::invalid(format!(
                "the job asks for {} GPUs, but the largest agent on queue '{q}' has {most}: ask for at most {most} \
                 (--gpu {most}), or start an agent with more GPUs (--gpus)",
                res.gpus
            )));
        }
    }
    if let Some(m) = res.memory_bytes {
        let known: Vec<u64> = able.iter().map(|a| a.inventory.memory_bytes).collect();
        if !known.is_empty() && known.iter().all(|&k| k > 0 && k < m) {
            let most = known.iter().max().copied().unwrap_or(0);
            return Err(ApiError::invalid(format!(
                "the job asks for {m} bytes of memory, but the largest agent on queue '{q}' has {most}: \
                 ask for less (--memory), or start an agent on a bigger machine"
            )));
        }
    }
    Ok(())
}

/// The empty tree, committed if absent: the code of a job that brings none
/// (a task run, a build from Git). Call it under `grace.hold()`.
pub async fn empty_code(state: &AppState) -> ApiResult<ManifestId> {
    let empty = Manifest::new(vec![]);
    let id = empty.id();
    if !state.store.has_manifest(id).await? {
        store_manifest(state, &empty).await?;
    }
    Ok(id)
}

/// Turns a submit request into a spec: every check, every source resolved.
async fn build_spec(state: &AppState, caller: &Caller, req: SubmitJob) -> ApiResult<JobSpec> {
    let build_git = match &req.build {
        Some(b) => {
            if !req.command.is_empty() {
                return Err(ApiError::invalid(
                    "a build job runs no command (it builds the task's Dockerfile): send it without one",
                ));
            }
            Some(b.git.as_deref().map(str::parse::<GitSource>).transpose()?)
        }
        None => {
            if req.command.is_empty() || req.command[0].trim().is_empty() {
                return Err(ApiError::invalid(
                    "the command is empty: give one after --, e.g. podder run -- python train.py",
                ));
            }
            None
        }
    };
    let code = match (req.code, &build_git) {
        (Some(code), _) => {
            // A code snapshot the caller was not granted looks uncommitted: naming
            // another owner's manifest id must not make it the job owner's.
            if !may_read(state, caller, code).await? || !state.store.has_manifest(code).await? {
                return Err(ApiError::invalid(format!(
                    "the code snapshot {code} is not committed on this server: upload it and commit its manifest first"
                )));
            }
            code
        }
        (None, Some(Some(_))) => empty_code(state).await?,
        (None, _) => {
            return Err(ApiError::invalid(
                "no code snapshot was given: upload the project's code and name its manifest",
            ));
        }
    };
    for name in req.params.keys() {
        check_param(name)?;
    }
    let queue = req.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    check_queue(&queue)?;
    req.resources.check()?;
    let data = req.data.iter().map(|d| d.parse::<DataSpec>()).collect::<Result<Vec<_>, _>>()?;
    podder_core::refs::check_mounts(data.iter().map(|d| &d.mount))?;
    let mut inputs = Vec::with_capacity(data.len());
    for d in &data {
        inputs.push(resolve::input(state, caller, d).await?);
    }
    // A build job builds its own image; an environment means nothing to it.
    let (env, environment, build) = match (req.build, build_git) {
        (Some(b), Some(git)) => {
            let context = if git.is_none() { Some(code) } else { None };
            (None, None, Some(ImageBuild { dockerfile: None, context, git, obfuscate: b.obfuscate }))
        }
        _ => {
            let environment = match &req.env {
                Some(e) => Some(envs::resolve(state, caller, e).await?),
                None => None,
            };
            (req.env, environment, None)
        }
    };
    let spec = JobSpec {
        code,
        command: req.command,
        setup: req.setup,
        params: req.params,
        inputs,
        env,
        timeout_secs: req.timeout_secs,
        retries: req.retries,
        queue,
        environment,
        resources: req.resources,
        build,
    };
    check_placeable(state, &spec).await?;
    Ok(spec)
}

/// Lets the job's owner read its code and inputs, creates the queued job
/// and wakes the agents of its queue. (A grant left by a failed create is
/// harmless: the spec was built from manifests the caller may read.)
pub async fn enqueue(state: &AppState, new: NewJob) -> ApiResult<JobRecord> {
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
    check_placeable(&state, &old.job.spec).await?;
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
