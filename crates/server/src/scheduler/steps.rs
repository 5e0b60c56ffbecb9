//! A step's job, built exactly like an ordinary job: an inline step runs
//! its command on the pipeline version's code in its environment (resolved
//! like `run --env`), a task step runs like `POST .../tasks/{name}/runs`.
//! Inputs from upstream steps mount the exact manifest the upstream step
//! left (a directory inside it stored as its own manifest, like
//! `mnist#12/path` sources); datasets resolve like `--data`, to a concrete
//! version now. With `cache: true` the step's cache key (code, environment,
//! command, setup, parameters, inputs with their mounts) may find an earlier
//! output still present: the step is then `Cached` and no job runs.

use std::collections::BTreeMap;

use podder_core::api::{Input, JobSpec};
use podder_core::{DataSpec, ManifestId, Resources};
use podder_meta::{JobId, NewJob, RunRecord, StartSteps, StepStart};
use podder_pipeline::dag;
use podder_pipeline::spec::{self, StepSpec};

use super::Working;
use crate::auth::Caller;
use crate::error::{ApiResult, Kind};
use crate::jobs::{DEFAULT_QUEUE, check_param, check_placeable, empty_code};
use crate::state::{AppState, now_ms};
use crate::tasks::{BoundInput, task_job_spec};
use crate::{envs, resolve};

/// The cache key of a job's spec.
pub fn cache_key(job: &JobSpec) -> String {
    let inputs: Vec<_> = job.inputs.iter().map(|i| (i.manifest, i.mount.clone())).collect();
    spec::cache_key(&job.code, job.environment.as_ref(), &job.command, &job.setup, &job.params, &inputs)
}

/// A cached step's job succeeded: remembers its output under its key.
pub async fn remember(state: &AppState, run: &RunRecord, job: JobId) {
    let rec = match state.meta.get_job_by_id(job).await {
        Ok(rec) => rec,
        Err(e) => return tracing::error!(job = job.0, error = %e, "reading a cached step's job failed"),
    };
    let job = &rec.job;
    let Some(output) = job.output else { return };
    let key = cache_key(&job.spec);
    let now = state.clock.now_ms();
    if let Err(e) = state.meta.put_cache(&run.owner, &run.project, &key, output, job.job_ref.number, now).await {
        tracing::error!(job = %job.job_ref, error = %e, "recording a step's output in the cache failed");
    }
}

/// Carries out the `Action::Start`s of one decision: each step's job is
/// built (or a cache hit found), then every job is created and recorded on
/// the run in one transaction. A step whose job cannot be built (a dataset
/// gone, an upstream output missing, no agent could run it) fails with the
/// reason, like a job that failed.
pub async fn start(state: &AppState, w: &mut Working, starts: Vec<(String, u32)>, now: i64) -> ApiResult<()> {
    // From storing sub-trees and the empty code to the jobs' creation, no collection.
    let _hold = state.grace.hold().await;
    let mut batch = Vec::with_capacity(starts.len());
    for (step, attempt) in starts {
        if let Some(job) = prepare(state, w, &step, attempt, now).await? {
            let message = format!("pipeline {} run {} step {step}", w.run.pipeline, w.run.number);
            let job = NewJob {
                owner: w.run.owner.clone(),
                project: w.run.project.clone(),
                spec: job,
                message: Some(message),
                restarted_from: None,
                now: now_ms(),
            };
            batch.push(StepStart { step, attempt, job });
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    let mut manifests: Vec<ManifestId> = Vec::new();
    for b in &batch {
        manifests.push(b.job.spec.code);
        manifests.extend(b.job.spec.inputs.iter().map(|i| i.manifest));
    }
    manifests.sort();
    manifests.dedup();
    state.meta.grant_manifests(&w.run.owner, &manifests).await?;
    let start = StartSteps { run_id: w.run.id, revision: w.revision, state: w.state.clone(), steps: batch, now };
    let (jobs, run) = state.meta.start_steps(start).await?;
    w.revision = run.revision;
    w.state = run.state;
    w.dirty = false;
    state.runs.wake(&w.run.id);
    let mut queues: Vec<&str> = jobs.iter().map(|j| j.job.spec.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    for q in queues {
        state.queues.wake(&q.to_string());
    }
    Ok(())
}

/// The job of one step attempt; `None` when the step was settled without
/// one (a cache hit, or it could not start and failed).
async fn prepare(state: &AppState, w: &mut Working, step: &str, attempt: u32, now: i64) -> ApiResult<Option<JobSpec>> {
    let spec = w.version.spec.clone();
    let Some(s) = spec.step(step) else {
        fail(w, step, attempt, format!("the pipeline has no step '{step}'"), now);
        return Ok(None);
    };
    let caller = Caller { owner: w.run.owner.clone(), admin: false };
    let job = match job_spec(state, &caller, w, s).await {
        Ok(job) => job,
        Err(e) if e.kind == Kind::Internal => return Err(e),
        Err(e) => {
            fail(w, step, attempt, e.message, now);
            return Ok(None);
        }
    };
    if s.cache && w.state.may_use_cache(step) {
        let key = cache_key(&job);
        if let Some(hit) = state.meta.get_cache(&w.run.owner, &w.run.project, &key).await?
            && state.store.has_manifest(hit.output).await?
        {
            dag::cached(&mut w.state, step, hit.output, now);
            // A cached step's job is the one whose result it reused.
            if let Some(sr) = w.state.steps.get_mut(step) {
                sr.job = Some(hit.job);
            }
            w.dirty = true;
            return Ok(None);
        }
    }
    Ok(Some(job))
}

/// The step attempt could not even start: it fails (and may retry) like a
/// job that failed.
fn fail(w: &mut Working, step: &str, attempt: u32, reason: String, now: i64) {
    tracing::info!(pipeline = %w.run.pipeline, run = w.run.number, step, reason, "step could not start");
    dag::started(&mut w.state, step, attempt, 0, now);
    if let Some(sr) = w.state.steps.get_mut(step) {
        sr.job = None;
    }
    dag::on_job_end(&w.version.spec, &mut w.state, step, false, None, Some(reason), now);
    w.dirty = true;
}

/// The job of a step, with every input resolved.
async fn job_spec(state: &AppState, caller: &Caller, w: &Working, s: &StepSpec) -> ApiResult<JobSpec> {
    let run = &w.run;
    let params = &run.params;
    let sub = |t: &str| spec::substitute(t, params);
    let mut bound = Vec::new();
    let mut data = Vec::new();
    for input in &s.inputs {
        if let Some(from) = &input.from {
            let up = w.state.steps.get(from);
            let Some(output) = up.and_then(|u| u.output) else {
                return Err(crate::error::ApiError::invalid(format!(
                    "step '{from}' left no output for step '{}' to mount",
                    s.name
                )));
            };
            let origin = match up.and_then(|u| u.job) {
                Some(n) => format!("{}/{}#{n}", run.owner, run.project),
                None => format!("{}/{}/{}:{from}", run.owner, run.project, run.pipeline),
            };
            let path = input.path.as_deref().map(sub);
            let (source, manifest) = match path.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
                Some(path) => {
                    let what = format!("the output of step '{from}'");
                    (format!("{origin}/{path}"), resolve::subtree(state, output, path, &what).await?)
                }
                None => (origin, output),
            };
            bound.push(BoundInput { input: input.input.clone(), mount: input.mount.clone(), source, manifest });
        } else if let Some(ds) = &input.dataset {
            let ds = sub(ds);
            let text = match (&input.input, &input.mount) {
                (Some(name), _) if s.task.is_some() => format!("{name}={ds}"),
                (_, Some(mount)) => format!("{ds}:{mount}"),
                _ => ds,
            };
            data.push(text);
        }
    }
    let timeout_secs =
        s.timeout.as_deref().map(spec::parse_duration).transpose().map_err(crate::error::ApiError::invalid)?;
    let resources = Resources { gpus: s.gpu, ..Resources::default() };
    let step_params: BTreeMap<String, String> = s.params.iter().map(|(k, v)| (k.clone(), sub(v))).collect();

    if let Some(task) = &s.task {
        let name = task.parse().map_err(|e: podder_core::Error| crate::error::ApiError::invalid(e.to_string()))?;
        let task = state.meta.get_task(&run.owner, &run.project, &name).await?;
        return task_job_spec(
            state,
            caller,
            &task,
            &step_params,
            &data,
            bound,
            resources,
            DEFAULT_QUEUE.to_string(),
            timeout_secs,
        )
        .await;
    }

    // An inline step: the pipeline's code, its command, its environment.
    let code = match w.version.code {
        Some(c) => c,
        None => empty_code(state).await?,
    };
    let mut inputs = Vec::with_capacity(bound.len() + data.len());
    for b in bound {
        let Some(mount) = b.mount else {
            return Err(crate::error::ApiError::invalid(format!(
                "the input {} of step '{}' needs a mount path (mount: /data/...)",
                b.source, s.name
            )));
        };
        inputs.push(Input { source: b.source, manifest: b.manifest, mount });
    }
    for d in &data {
        let d: DataSpec = d.parse()?;
        inputs.push(resolve::input(state, caller, &d).await?);
    }
    podder_core::refs::check_mounts(inputs.iter().map(|i| &i.mount))?;
    // The run's parameters (those that can be variables), then the step's own.
    let mut params: BTreeMap<String, String> =
        run.params.iter().filter(|(k, _)| check_param(k).is_ok()).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in step_params {
        check_param(&k)?;
        params.insert(k, v);
    }
    let environment = match &s.env {
        Some(e) => Some(envs::resolve(state, caller, &sub(e)).await?),
        None => None,
    };
    let job = JobSpec {
        code,
        command: s.command.iter().map(|c| sub(c)).collect(),
        setup: s.setup.iter().map(|c| sub(c)).collect(),
        params,
        inputs,
        env: s.env.as_deref().map(sub),
        timeout_secs,
        retries: 0,
        queue: DEFAULT_QUEUE.to_string(),
        environment,
        resources,
        build: None,
    };
    check_placeable(state, &job).await?;
    Ok(job)
}
