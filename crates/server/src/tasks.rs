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
use podder_core::api::{DeployTask, Input, Job, JobSpec, RunTask, Task};
use podder_core::task::TaskSpec;
use podder_core::{DataSpec, EnvSpec, JobState, ManifestId, MountPath, Name, Resources, SourceRef};
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
fn task_data(
    spec: &TaskSpec,
    given: &[String],
    bound: &mut HashSet<Name>,
    problems: &mut Vec<String>,
) -> Vec<DataSpec> {
    let mut data = Vec::new();
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
    data
}

/// An input of a task run resolved by the caller (a pipeline edge): bound
/// to the task's input `input` (mounted where the task declares it), or
/// mounted at `mount`.
#[derive(Clone, Debug)]
pub struct BoundInput {
    pub input: Option<String>,
    pub mount: Option<MountPath>,
    pub source: String,
    pub manifest: ManifestId,
}

/// The job spec of a task run: the task's command in its image, the
/// parameters checked by type with defaults filled in, `data` (`INPUT=SRC`
/// or `SRC[:MOUNT]`) resolved and `bound` inputs placed; every problem at
/// once. Call it under `grace.hold()` (the empty code may be committed).
#[allow(clippy::too_many_arguments)]
pub async fn task_job_spec(
    state: &AppState,
    caller: &Caller,
    task: &Task,
    params: &BTreeMap<String, String>,
    data: &[String],
    bound: Vec<BoundInput>,
    resources: Resources,
    queue: String,
    timeout_secs: Option<u64>,
) -> ApiResult<JobSpec> {
    let (owner, project, name) = (&task.owner, &task.project, &task.name);
    let spec = &task.spec;
    let mut problems = Vec::new();
    let params = spec.resolve_params(params).unwrap_or_else(|e| {
        problems.push(e.to_string());
        BTreeMap::new()
    });
    let mut bound_names = HashSet::new();
    let mut pre = Vec::with_capacity(bound.len());
    for b in bound {
        let mount = match (&b.input, b.mount) {
            (Some(input), _) => match spec.inputs.iter().find(|i| i.name.as_str() == input) {
                Some(decl) => {
                    bound_names.insert(decl.name.clone());
                    decl.mount.clone()
                }
                None => {
                    let known = spec.inputs.iter().map(|i| i.name.to_string()).collect::<Vec<_>>().join(", ");
                    problems.push(format!("task '{}' has no input '{input}' (it has: {known})", spec.name));
                    continue;
                }
            },
            (None, Some(mount)) => {
                if let Some(decl) = spec.inputs.iter().find(|i| i.mount == mount) {
                    bound_names.insert(decl.name.clone());
                }
                mount
            }
            (None, None) => {
                problems
                    .push(format!("the input {} of a run of task '{}' names no input or mount", b.source, spec.name));
                continue;
            }
        };
        pre.push(Input { source: b.source, manifest: b.manifest, mount });
    }
    let data = task_data(spec, data, &mut bound_names, &mut problems);
    for i in &spec.inputs {
        if !i.optional && !bound_names.contains(&i.name) {
            problems.push(format!(
                "task '{}' needs its input '{}' (mounted at {}): give --data {}=SOURCE",
                spec.name, i.name, i.mount, i.name
            ));
        }
    }
    if let Err(e) = podder_core::refs::check_mounts(data.iter().map(|d| &d.mount).chain(pre.iter().map(|i| &i.mount))) {
        problems.push(e.to_string());
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(format!("cannot run task {owner}/{project}/{name}:\n{}", problems.join("\n"))));
    }
    resources.check()?;
    check_queue(&queue)?;
    let code = empty_code(state).await?;
    let mut inputs = pre;
    for d in &data {
        inputs.push(resolve::input(state, caller, d).await?);
    }
    let spec = JobSpec {
        code,
        command: task.spec.command.clone(),
        setup: vec![],
        params,
        inputs,
        env: Some(task.environment.name.clone()),
        timeout_secs,
        retries: 0,
        queue,
        environment: Some(task.environment.clone()),
        resources,
        build: None,
    };
    check_placeable(state, &spec).await?;
    Ok(spec)
}

async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, name)): Path<(Name, Name, Name)>,
    Json(req): Json<RunTask>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    auth::project(&state, &caller, &owner, &project).await?;
    let task = state.meta.get_task(&owner, &project, &name).await?;
    let queue = req.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    // From committing the empty code to the job's creation, no collection may run.
    let _hold = state.grace.hold().await;
    let spec =
        task_job_spec(&state, &caller, &task, &req.params, &req.data, vec![], req.resources, queue, None).await?;
    let new = NewJob { owner, project, spec, message: req.message, restarted_from: None, now: now_ms() };
    let rec = enqueue(&state, new).await?;
    Ok((StatusCode::CREATED, Json(rec.job)))
}
