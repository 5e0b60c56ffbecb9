//! `/projects/{owner}/{project}/tasks`: deployed tasks. Deploying registers
//! what a succeeded build job built (its image, and the `task.yaml` found in
//! its context) under the task's name, one version more each time; running
//! one submits an ordinary job in the task's image, with the task's command,
//! its parameters checked against their types, and `--data INPUT=SRC`
//! mounted where the task declares INPUT. Only the project's owner (or an
//! admin) may deploy, list, show or run its tasks.

use std::collections::{BTreeMap, HashSet};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use podder_core::api::{DeployTask, Job, JobSpec, RunTask, Task};
use podder_core::task::TaskSpec;
use podder_core::{DataSpec, EnvSpec, JobState, Name, SourceRef};
use podder_meta::{NewJob, NewTask};

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::jobs::{DEFAULT_QUEUE, check_placeable, check_queue, empty_code, enqueue};
use crate::resolve;
use crate::state::{AppState, now_ms};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/projects/{owner}/{project}/tasks", get(list).post(deploy))
        .route("/projects/{owner}/{project}/tasks/{name}", get(show))
        .route("/projects/{owner}/{project}/tasks/{name}/runs", post(run))
}

async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project)): Path<(Name, Name)>,
    Json(req): Json<DeployTask>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    auth::project(&state, &caller, &owner, &project).await?;
    let rec = match req.build_job {
        Some(n) => auth::job(&state, &caller, &owner, &project, n).await?,
        None => state.meta.latest_build_job(&owner, &project).await?.ok_or_else(|| {
            ApiError::invalid(format!(
                "the project {owner}/{project} has no succeeded build job: build the task first with `podder task build`"
            ))
        })?,
    };
    let job = &rec.job;
    let r = &job.job_ref;
    if job.spec.build.is_none() {
        return Err(ApiError::invalid(format!(
            "job {r} is not a build job: give the number of a `podder task build` job (see `podder status`)"
        )));
    }
    if job.state != JobState::Succeeded {
        return Err(ApiError::invalid(format!(
            "the build job {r} is {}, not succeeded: deploy a build that succeeded (see `podder logs {}#{}`)",
            job.state, r.project, r.number
        )));
    }
    let Some(result) = &job.build_result else {
        return Err(ApiError::invalid(format!("the build job {r} reported no build result: build the task again")));
    };
    let spec = TaskSpec::from_yaml(&result.task_yaml, "task.yaml")?;
    let environment = EnvSpec {
        name: format!("task:{owner}/{project}/{}", spec.name),
        image: Some(result.image.clone()),
        gpu_image: None,
        build: Some(result.build.clone()),
        requirements: None,
        workdir: Some(spec.workdir.clone()),
    };
    let new = NewTask {
        owner,
        project,
        commit: result.build.git.as_ref().and_then(|g| g.commit.clone()),
        obfuscated: result.build.obfuscate,
        spec,
        environment,
        build_job: r.number,
        now: now_ms(),
    };
    let task = state.meta.deploy_task(new).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project)): Path<(Name, Name)>,
) -> ApiResult<Json<Vec<Task>>> {
    auth::project(&state, &caller, &owner, &project).await?;
    Ok(Json(state.meta.list_tasks(&owner, &project).await?))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
) -> ApiResult<Json<Task>> {
    auth::project(&state, &caller, &owner, &project).await?;
    Ok(Json(state.meta.get_task(&owner, &project, &name).await?))
}

/// The `--data` of a task run: `INPUT=SRC` at the input's mount, or
/// `SRC[:MOUNT]`; every problem at once (unknown inputs, missing required
/// ones, bad sources, overlapping mounts).
fn task_data(spec: &TaskSpec, given: &[String], problems: &mut Vec<String>) -> Vec<DataSpec> {
    let mut data = Vec::new();
    let mut bound = HashSet::new();
    let known = || spec.inputs.iter().map(|i| i.name.to_string()).collect::<Vec<_>>().join(", ");
    for d in given {
        let named = d.split_once('=').filter(|(input, _)| input.parse::<Name>().is_ok());
        match named {
            Some((input, src)) => {
                let Some(decl) = spec.inputs.iter().find(|i| i.name.as_str() == input) else {
                    problems.push(format!("task '{}' has no input '{input}' (it has: {})", spec.name, known()));
                    continue;
                };
                match src.parse::<SourceRef>() {
                    Ok(source) => {
                        bound.insert(decl.name.clone());
                        data.push(DataSpec { source, mount: decl.mount.clone() });
                    }
                    Err(e) => problems.push(format!("--data {d}: {e}")),
                }
            }
            None => match d.parse::<DataSpec>() {
                Ok(ds) => {
                    if let Some(decl) = spec.inputs.iter().find(|i| i.mount == ds.mount) {
                        bound.insert(decl.name.clone());
                    }
                    data.push(ds);
                }
                Err(e) => problems.push(format!("--data {d}: {e}")),
            },
        }
    }
    for i in &spec.inputs {
        if !i.optional && !bound.contains(&i.name) {
            problems.push(format!(
                "task '{}' needs its input '{}' (mounted at {}): give --data {}=SOURCE",
                spec.name, i.name, i.mount, i.name
            ));
        }
    }
    if let Err(e) = podder_core::refs::check_mounts(data.iter().map(|d| &d.mount)) {
        problems.push(e.to_string());
    }
    data
}

async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
    Json(req): Json<RunTask>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    auth::project(&state, &caller, &owner, &project).await?;
    let task = state.meta.get_task(&owner, &project, &name).await?;
    let mut problems = Vec::new();
    let params = task.spec.resolve_params(&req.params).unwrap_or_else(|e| {
        problems.push(e.to_string());
        BTreeMap::new()
    });
    let data = task_data(&task.spec, &req.data, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::invalid(format!("cannot run task {owner}/{project}/{name}:\n{}", problems.join("\n"))));
    }
    req.resources.check()?;
    let queue = req.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    check_queue(&queue)?;
    // From committing the empty code to the job's creation, no collection may run.
    let _hold = state.grace.hold().await;
    let code = empty_code(&state).await?;
    let mut inputs = Vec::with_capacity(data.len());
    for d in &data {
        inputs.push(resolve::input(&state, &caller, d).await?);
    }
    let spec = JobSpec {
        code,
        command: task.spec.command.clone(),
        setup: vec![],
        params,
        inputs,
        env: Some(task.environment.name.clone()),
        timeout_secs: None,
        retries: 0,
        queue,
        environment: Some(task.environment.clone()),
        resources: req.resources,
        build: None,
    };
    check_placeable(&state, &spec).await?;
    let new = NewJob { owner, project, spec, message: req.message, restarted_from: None, now: now_ms() };
    let rec = enqueue(&state, new).await?;
    Ok((StatusCode::CREATED, Json(rec.job)))
}
