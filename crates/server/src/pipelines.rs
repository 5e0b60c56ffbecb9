//! `/projects/{owner}/{project}/pipelines`: applying pipeline files
//! (validated against the project's deployed tasks; a new version when the
//! file or the code changed), pausing and resuming schedules, starting runs
//! (parameters checked, `only` one step, at most `max_active_runs`),
//! following a run by long-poll on its revision, retrying and cancelling.
//! Only the project's owner (or an admin) may use them. The runs themselves
//! are driven by `scheduler`.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use podder_core::api::{ApplyPipeline, Pipeline, PipelineRun, RetryRun, StartRun, StepView};
use podder_core::task::TaskSpec;
use podder_core::{JobRef, ManifestId, Name};
use podder_meta::{MetaError, NewPipeline, NewRun, PipelineRecord, RunRecord, RunUpdate, Trigger};
use podder_pipeline::spec::PipelineSpec;
use podder_pipeline::{Action, RunOutcome, RunState, StepState, cron, dag};
use serde::Deserialize;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult, Json, Kind, Path, Query};
use crate::manifests::may_read;
use crate::scheduler;
use crate::state::AppState;
use crate::wait::wait_for;

/// The longest a run long-poll waits in one request.
const RUN_WAIT_MAX_MS: u64 = 60_000;
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 10_000;
/// How many earlier runs `--only` looks through for upstream outputs.
const ONLY_LOOKBACK: u32 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/projects/{owner}/{project}/pipelines", get(list).post(apply))
        .route("/projects/{owner}/{project}/pipelines/{name}", get(show))
        .route("/projects/{owner}/{project}/pipelines/{name}/pause", post(pause))
        .route("/projects/{owner}/{project}/pipelines/{name}/resume", post(resume))
        .route("/projects/{owner}/{project}/pipelines/{name}/runs", get(runs).post(start))
        .route("/projects/{owner}/{project}/pipelines/{name}/runs/{n}", get(show_run))
        .route("/projects/{owner}/{project}/pipelines/{name}/runs/{n}/retry", post(retry))
        .route("/projects/{owner}/{project}/pipelines/{name}/runs/{n}/cancel", post(cancel))
}

fn pipeline_view(state: &AppState, p: &PipelineRecord) -> Pipeline {
    let next_run_at = match (&p.spec.schedule, p.paused) {
        (Some(s), false) => cron::next_after(s, p.last_scheduled.max(state.clock.now_ms())).ok(),
        _ => None,
    };
    Pipeline {
        owner: p.owner.clone(),
        project: p.project.clone(),
        name: p.name.clone(),
        version: p.version,
        description: p.spec.description.clone(),
        spec: serde_json::to_value(&p.spec).unwrap_or(serde_json::Value::Null),
        code: p.code,
        paused: p.paused,
        next_run_at,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

fn step_state_name(s: StepState) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{s:?}").to_lowercase(),
    }
}

fn outcome_name(o: RunOutcome) -> &'static str {
    match o {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed => "failed",
        RunOutcome::Cancelled => "cancelled",
    }
}

/// A run as users see it: its steps in the file's order.
pub fn run_view(run: &RunRecord, spec: &PipelineSpec) -> PipelineRun {
    let job_ref = |n: u64| JobRef { owner: Some(run.owner.clone()), project: run.project.clone(), number: n };
    let steps = spec
        .steps
        .iter()
        .filter_map(|s| {
            let sr = run.state.steps.get(&s.name)?;
            let cached = sr.state == StepState::Cached;
            Some(StepView {
                name: s.name.clone(),
                state: step_state_name(sr.state),
                attempt: sr.attempt,
                needs: s.needs.clone(),
                job: if cached { None } else { sr.job.map(job_ref) },
                cached_from: if cached { sr.job.map(job_ref) } else { None },
                output: sr.output,
                started_at: sr.started_at,
                finished_at: sr.finished_at,
                reason: sr.reason.clone(),
            })
        })
        .collect();
    PipelineRun {
        owner: run.owner.clone(),
        project: run.project.clone(),
        pipeline: run.pipeline.clone(),
        number: run.number,
        pipeline_version: run.version,
        state: run.state.outcome.map_or("running", outcome_name).to_string(),
        trigger: run.trigger.as_str().to_string(),
        scheduled_for: run.scheduled_for,
        params: run.params.clone(),
        steps,
        retry_of: run.retry_of,
        created_at: run.created_at,
        finished_at: run.finished_at,
        revision: run.revision,
    }
}

async fn view(state: &AppState, run: &RunRecord) -> ApiResult<PipelineRun> {
    let version = scheduler::version(state, run.pipeline_id, run.version).await?;
    Ok(run_view(run, &version.spec))
}

fn pipeline_not_found(owner: &Name, project: &Name, name: &Name) -> ApiError {
    ApiError::not_found(format!(
        "there is no pipeline {name} in {owner}/{project}: apply its file with `podder pipeline apply FILE`, \
         see `podder pipeline list`"
    ))
}

/// A pipeline of a project the caller may see.
async fn pipeline(
    state: &AppState,
    caller: &Caller,
    owner: &Name,
    project: &Name,
    name: &Name,
) -> ApiResult<PipelineRecord> {
    auth::project(state, caller, owner, project).await?;
    state.meta.get_pipeline(owner, project, name).await.map_err(|e| match e {
        MetaError::NotFound(_) => pipeline_not_found(owner, project, name),
        e => e.into(),
    })
}

async fn run_of(state: &AppState, p: &PipelineRecord, n: u64) -> ApiResult<RunRecord> {
    state.meta.get_run(p.id, n).await.map_err(|e| match e {
        MetaError::NotFound(_) => {
            ApiError::not_found(format!("pipeline {} has no run {n}: see `podder pipeline runs {}`", p.name, p.name))
        }
        e => e.into(),
    })
}

async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project)): Path<(Name, Name)>,
    Json(req): Json<ApplyPipeline>,
) -> ApiResult<(StatusCode, Json<Pipeline>)> {
    auth::project(&state, &caller, &owner, &project).await?;
    let tasks: BTreeMap<String, TaskSpec> =
        state.meta.list_tasks(&owner, &project).await?.into_iter().map(|t| (t.name.to_string(), t.spec)).collect();
    let file_name = if req.file_name.trim().is_empty() { "pipeline.yaml" } else { req.file_name.as_str() };
    let spec = PipelineSpec::parse(&req.file, file_name, &tasks)
        .map_err(|problems| ApiError::invalid(format!("the pipeline file {file_name} is not valid:\n{problems}")))?;
    // From the code check to the version's record, no collection may run.
    let _hold = state.grace.hold().await;
    if let Some(code) = req.code
        && (!may_read(&state, &caller, code).await? || !state.store.has_manifest(code).await?)
    {
        return Err(ApiError::invalid(format!(
            "the code snapshot {code} is not committed on this server: upload it and commit its manifest first"
        )));
    }
    let new = NewPipeline {
        owner,
        project,
        file: req.file,
        file_name: file_name.to_string(),
        spec,
        code: req.code,
        now: state.clock.now_ms(),
    };
    let (p, added) = state.meta.apply_pipeline(new).await?;
    if added {
        tracing::info!(pipeline = %p.name, version = p.version, "pipeline applied");
        state.scheduler.cron_changed();
    }
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(pipeline_view(&state, &p))))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project)): Path<(Name, Name)>,
) -> ApiResult<Json<Vec<Pipeline>>> {
    auth::project(&state, &caller, &owner, &project).await?;
    let all = state.meta.list_pipelines(&owner, &project).await?;
    Ok(Json(all.iter().map(|p| pipeline_view(&state, p)).collect()))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
) -> ApiResult<Json<Pipeline>> {
    let p = pipeline(&state, &caller, &owner, &project, &name).await?;
    Ok(Json(pipeline_view(&state, &p)))
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    owner: &Name,
    project: &Name,
    name: &Name,
    paused: bool,
) -> ApiResult<Pipeline> {
    pipeline(state, caller, owner, project, name).await?;
    let p = state.meta.set_paused(owner, project, name, paused, state.clock.now_ms()).await?;
    state.scheduler.cron_changed();
    Ok(pipeline_view(state, &p))
}

async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(set_paused(&state, &caller, &owner, &project, &name, true).await?))
}

async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(set_paused(&state, &caller, &owner, &project, &name, false).await?))
}

/// The latest successful outputs of `step`'s direct upstream steps, with
/// the jobs that made them, from the pipeline's earlier runs.
async fn latest_outputs(
    state: &AppState,
    p: &PipelineRecord,
    spec: &PipelineSpec,
    step: &str,
) -> ApiResult<BTreeMap<String, (ManifestId, Option<u64>)>> {
    let needs = spec.step(step).map(|s| s.needs.clone()).unwrap_or_default();
    let mut found = BTreeMap::new();
    if needs.is_empty() {
        return Ok(found);
    }
    for run in state.meta.list_runs(p.id, ONLY_LOOKBACK).await? {
        for n in &needs {
            if found.contains_key(n) {
                continue;
            }
            if let Some(sr) = run.state.steps.get(n)
                && sr.state.is_success()
                && let Some(out) = sr.output
            {
                found.insert(n.clone(), (out, sr.job));
            }
        }
        if found.len() == needs.len() {
            break;
        }
    }
    Ok(found)
}

async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
    Json(req): Json<StartRun>,
) -> ApiResult<(StatusCode, Json<PipelineRun>)> {
    let p = pipeline(&state, &caller, &owner, &project, &name).await?;
    if p.paused {
        return Err(ApiError::conflict(format!(
            "pipeline {name} is paused: resume it with `podder pipeline resume {name}`, then run it"
        )));
    }
    let spec = &p.spec;
    let params = spec
        .resolve_params(&req.params)
        .map_err(|problems| ApiError::invalid(format!("cannot run pipeline {name}:\n{problems}")))?;
    let (trigger, run_state) = match &req.only {
        None => (Trigger::Manual, RunState::new(spec)),
        Some(step) => {
            if spec.step(step).is_none() {
                let names: Vec<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
                return Err(ApiError::invalid(format!(
                    "pipeline {name} has no step '{step}' (its steps: {})",
                    names.join(", ")
                )));
            }
            let found = latest_outputs(&state, &p, spec, step).await?;
            let outputs = found.iter().map(|(k, (out, _))| (k.clone(), *out)).collect();
            let mut run_state = dag::only(spec, step, &outputs).map_err(ApiError::invalid)?;
            for (k, (_, job)) in &found {
                if let Some(sr) = run_state.steps.get_mut(k) {
                    sr.job = *job;
                }
            }
            (Trigger::Only, run_state)
        }
    };
    let new = NewRun {
        pipeline_id: p.id,
        version: p.version,
        trigger,
        scheduled_for: None,
        params,
        state: run_state,
        retry_of: None,
        max_active: spec.max_active_runs,
        now: state.clock.now_ms(),
    };
    let run = state.meta.create_run(new).await?;
    scheduler::changed(&state, &run);
    Ok((StatusCode::CREATED, Json(view(&state, &run).await?)))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn runs(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<PipelineRun>>> {
    let p = pipeline(&state, &caller, &owner, &project, &name).await?;
    let limit = q.limit.unwrap_or(LIST_DEFAULT).min(LIST_MAX);
    let mut out = Vec::new();
    for run in state.meta.list_runs(p.id, limit).await? {
        out.push(view(&state, &run).await?);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct RunQuery {
    #[serde(default)]
    wait_ms: u64,
    after: Option<u64>,
}

async fn show_run(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name, n)): Path<(Name, Name, Name, u64)>,
    Query(q): Query<RunQuery>,
) -> ApiResult<Json<PipelineRun>> {
    let p = pipeline(&state, &caller, &owner, &project, &name).await?;
    let mut run = run_of(&state, &p, n).await?;
    if let Some(after) = q.after
        && run.revision <= after
        && q.wait_ms > 0
    {
        let id = run.id;
        let notify = state.runs.subscribe(&id);
        let deadline = state.deadline(q.wait_ms, RUN_WAIT_MAX_MS);
        let newer = wait_for(&notify, deadline, &state.shutdown_signal(), || async {
            let r = state.meta.get_run_by_id(id).await?;
            Ok::<_, ApiError>((r.revision > after).then_some(r))
        })
        .await?;
        run = match newer {
            Some(r) => r,
            None => state.meta.get_run_by_id(id).await?,
        };
    }
    Ok(Json(view(&state, &run).await?))
}

async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name, n)): Path<(Name, Name, Name, u64)>,
    Json(req): Json<RetryRun>,
) -> ApiResult<(StatusCode, Json<PipelineRun>)> {
    let p = pipeline(&state, &caller, &owner, &project, &name).await?;
    let old = run_of(&state, &p, n).await?;
    let version = scheduler::version(&state, p.id, old.version).await?;
    let spec = &version.spec;
    if let Some(from) = &req.from
        && spec.step(from).is_none()
    {
        let names: Vec<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::invalid(format!(
            "run {name}/{n} has no step '{from}' to retry from (its steps: {})",
            names.join(", ")
        )));
    }
    if old.is_active() {
        return Err(ApiError::conflict(format!(
            "run {name}/{n} is still running: wait for it to end, or cancel it with `podder pipeline cancel {name}/{n}`"
        )));
    }
    let run_state = dag::retry_from(spec, &old.state, req.from.as_deref()).map_err(ApiError::invalid)?;
    let new = NewRun {
        pipeline_id: p.id,
        version: old.version,
        trigger: Trigger::Retry,
        scheduled_for: None,
        params: old.params.clone(),
        state: run_state,
        retry_of: Some(old.number),
        max_active: spec.max_active_runs,
        now: state.clock.now_ms(),
    };
    let run = state.meta.create_run(new).await?;
    scheduler::changed(&state, &run);
    Ok((StatusCode::CREATED, Json(view(&state, &run).await?)))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name, n)): Path<(Name, Name, Name, u64)>,
) -> ApiResult<Json<PipelineRun>> {
    let p = pipeline(&state, &caller, &owner, &project, &name).await?;
    let mut run = run_of(&state, &p, n).await?;
    let mut stops = Vec::new();
    for _ in 0..20 {
        if let Some(o) = run.state.outcome {
            return Err(ApiError::conflict(format!(
                "run {name}/{n} is already {}: there is nothing to cancel",
                outcome_name(o)
            )));
        }
        let mut next = run.state.clone();
        stops = dag::cancel(&mut next, state.clock.now_ms());
        let update = RunUpdate { run_id: run.id, revision: run.revision, state: next, now: state.clock.now_ms() };
        match state.meta.update_run(update).await {
            Ok(r) => {
                run = r;
                break;
            }
            // The scheduler wrote the run meanwhile: read it again.
            Err(MetaError::Conflict(_)) => run = state.meta.get_run_by_id(run.id).await?,
            Err(e) => return Err(e.into()),
        }
    }
    if !run.state.cancelled {
        return Err(ApiError::new(Kind::Conflict, format!("run {name}/{n} kept changing: cancel it again")));
    }
    state.runs.wake(&run.id);
    for action in stops {
        if let Action::StopJob { job, .. } = action {
            scheduler::stop_job(&state, &run, job).await;
        }
    }
    // Finish it now, so the answer shows the run cancelled.
    scheduler::process(&state, run.id).await?;
    let run = state.meta.get_run_by_id(run.id).await?;
    Ok(Json(view(&state, &run).await?))
}
