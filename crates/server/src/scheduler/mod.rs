//! The pipeline scheduler: a thin layer over `podder_pipeline::dag`.
//!
//! Processing a run (`process`) reads it, reconciles the steps whose job
//! has ended (`dag::on_job_end`), and applies what `dag::decide` answers
//! until nothing changes: a step starts by creating its job *and* recording
//! it in the run in one transaction (`MetaStore::start_steps`, every start
//! of one decision together), a cached step reuses an earlier output
//! (`dag::cached`), a retry due later sets a timer, the run finishes. Every write names the run's revision it read,
//! so a concurrent writer (cancel, a second server) makes the loser read
//! again instead of overwriting; every write wakes the run's long-polls.
//!
//! Nothing polls: an ended job wakes its run at once (`AppState::job_changed`
//! → [`job_ended`]), a route that changes a run wakes it ([`wake`]), a retry
//! delay is a timer. Wakes of a run being processed are coalesced into one
//! more pass. At start, every active run is processed ([`recover`]), which
//! picks up whatever ended while the server was down. The cron loop is in
//! [`cron`].

pub mod cron;
mod steps;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use podder_core::JobState;
use podder_meta::{JobId, MetaError, PipelineVersion, RunRecord, RunUpdate, StepJob};
use podder_pipeline::{Action, RunState, StepState, dag};
use tokio::sync::{Notify, watch};

use crate::error::{ApiError, ApiResult, Kind};
use crate::state::{AppState, now_ms};

/// How often one pass re-reads a run that another writer changed.
const CONFLICT_RETRIES: usize = 20;
/// A bound on decide rounds in one pass (each round changes the state).
const MAX_ROUNDS: usize = 10_000;

/// The scheduler's shared state (one per server).
pub struct Scheduler {
    /// Runs being processed; `true`: woken again meanwhile (one more pass).
    busy: Mutex<HashMap<i64, bool>>,
    /// Retry timers set, by run: the instant each fires.
    timers: Mutex<HashMap<i64, i64>>,
    /// Pipeline versions never change: read once.
    versions: Mutex<HashMap<(i64, u32), Arc<PipelineVersion>>>,
    /// Wakes the cron loop (a pipeline was applied, paused or resumed).
    pub(crate) cron_wake: Notify,
    /// `(generation, checked)`: every schedule instant up to `checked` has
    /// been handled; a change of pipelines bumps the generation and resets
    /// `checked` until the cron loop has looked again.
    pub(crate) checked: watch::Sender<(u64, i64)>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            busy: Mutex::new(HashMap::new()),
            timers: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            cron_wake: Notify::new(),
            checked: watch::channel((0, i64::MIN)).0,
        }
    }
}

impl Scheduler {
    /// Pipelines changed: the cron loop looks again (and `checked` waits for it).
    pub fn cron_changed(&self) {
        self.checked.send_modify(|c| {
            c.0 += 1;
            c.1 = i64::MIN;
        });
        self.cron_wake.notify_one();
    }
}

/// A pipeline version, read once.
pub async fn version(state: &AppState, pipeline_id: i64, version: u32) -> ApiResult<Arc<PipelineVersion>> {
    if let Some(v) = state.scheduler.versions.lock().expect("versions lock").get(&(pipeline_id, version)) {
        return Ok(v.clone());
    }
    let v = Arc::new(state.meta.pipeline_version(pipeline_id, version).await?);
    state.scheduler.versions.lock().expect("versions lock").insert((pipeline_id, version), v.clone());
    Ok(v)
}

/// Processes a run soon (now, or once more after the pass in progress).
pub fn wake(state: &AppState, run_id: i64) {
    {
        let mut busy = state.scheduler.busy.lock().expect("busy lock");
        if let Some(again) = busy.get_mut(&run_id) {
            *again = true;
            return;
        }
        busy.insert(run_id, false);
    }
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            // In a task of its own, so that even a panic leaves the run wakeable.
            let pass = tokio::spawn({
                let state = state.clone();
                async move { process(&state, run_id).await }
            });
            match pass.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(run = run_id, error = %e.message, "processing a pipeline run failed"),
                Err(e) => tracing::error!(run = run_id, error = %e, "processing a pipeline run panicked"),
            }
            let mut busy = state.scheduler.busy.lock().expect("busy lock");
            match busy.get_mut(&run_id) {
                Some(again) if *again => *again = false,
                _ => {
                    busy.remove(&run_id);
                    return;
                }
            }
        }
    });
}

/// A job ended: if it is a step of a run, that run is processed at once.
pub fn job_ended(state: &AppState, job: JobId) {
    let state = state.clone();
    tokio::spawn(async move {
        match state.meta.run_of_job(job).await {
            Ok(Some(run)) => wake(&state, run),
            Ok(None) => {}
            Err(e) => tracing::error!(job = job.0, error = %e, "finding the pipeline run of a job failed"),
        }
    });
}

/// At server start: every active run is processed (what ended while the
/// server was down is recorded, what is due starts, timers are set again).
pub async fn recover(state: &AppState) {
    match state.meta.active_runs().await {
        Ok(runs) => {
            if !runs.is_empty() {
                tracing::info!(runs = runs.len(), "resuming active pipeline runs");
            }
            for r in runs {
                wake(state, r.id);
            }
        }
        Err(e) => tracing::error!(error = %e, "reading the active pipeline runs failed"),
    }
}

/// One run as it is being processed: the state read (and changed since),
/// and the revision it was read at.
pub(crate) struct Working {
    pub run: RunRecord,
    pub version: Arc<PipelineVersion>,
    pub state: RunState,
    pub revision: u64,
    /// Changes not written yet.
    pub dirty: bool,
}

impl Working {
    /// Writes the state if it changed; `Conflict` if another writer was first.
    async fn flush(&mut self, app: &AppState) -> ApiResult<()> {
        if !self.dirty {
            return Ok(());
        }
        let update = RunUpdate {
            run_id: self.run.id,
            revision: self.revision,
            state: self.state.clone(),
            now: app.clock.now_ms(),
        };
        let rec = app.meta.update_run(update).await?;
        self.revision = rec.revision;
        self.dirty = false;
        app.runs.wake(&self.run.id);
        Ok(())
    }
}

/// Processes a run until `decide` has nothing more to do, reading it again
/// when another writer changed it meanwhile.
pub async fn process(state: &AppState, run_id: i64) -> ApiResult<()> {
    for _ in 0..CONFLICT_RETRIES {
        if *state.shutdown.borrow() {
            return Ok(());
        }
        match pass(state, run_id).await {
            Err(e) if e.kind == Kind::Conflict => continue,
            other => return other,
        }
    }
    Err(ApiError::internal(format!("pipeline run {run_id} kept changing under the scheduler")))
}

/// Why a step's job did not succeed, for the step.
fn reason_of(run: &RunRecord, job: &StepJob) -> Option<String> {
    if job.state == JobState::Succeeded {
        return None;
    }
    let why = job.reason.clone().or_else(|| job.exit_code.map(|c| format!("exit code {c}")));
    let r = format!("{}/{}#{}", run.owner, run.project, job.number);
    Some(match why {
        Some(w) => format!("job {r} {}: {w}", job.state),
        None => format!("job {r} {}", job.state),
    })
}

async fn pass(state: &AppState, run_id: i64) -> ApiResult<()> {
    let run = state.meta.get_run_by_id(run_id).await?;
    if !run.is_active() {
        return Ok(());
    }
    let version = version(state, run.pipeline_id, run.version).await?;
    let mut w = Working { state: run.state.clone(), revision: run.revision, run, version, dirty: false };
    let spec = w.version.spec.clone();

    // What ended since the last pass (or while the server was down).
    let jobs = state.meta.run_jobs(run_id).await?;
    let names: Vec<String> = w.state.steps.keys().cloned().collect();
    for name in names {
        let step = &w.state.steps[&name];
        let Some(number) = step.job else { continue };
        let Some(job) = jobs.iter().find(|j| j.step == name && j.number == number) else { continue };
        match step.state {
            StepState::Running if job.state.is_terminal() => {
                let ok = job.state == JobState::Succeeded;
                if ok && spec.step(&name).is_some_and(|s| s.cache) {
                    steps::remember(state, &w.run, job.job).await;
                }
                let now = state.clock.now_ms();
                dag::on_job_end(&spec, &mut w.state, &name, ok, job.output, reason_of(&w.run, job), now);
                w.dirty = true;
            }
            StepState::Cancelled if !job.state.is_terminal() && !job.stop_requested => {
                // Cancelled, but the stop was not asked (a crash in between).
                stop_job(state, &w.run, number).await;
            }
            _ => {}
        }
    }

    for _ in 0..MAX_ROUNDS {
        let now = state.clock.now_ms();
        let actions = dag::decide(&spec, &w.state, now);
        let before = w.state.clone();
        let mut starts = Vec::new();
        for action in actions {
            match action {
                Action::Start { step, attempt } => starts.push((step, attempt)),
                Action::Skip { step, reason } => {
                    dag::skip(&mut w.state, &step, &reason, now);
                    w.dirty = true;
                }
                Action::WakeAt { at } => set_timer(state, run_id, at),
                Action::StopJob { job, .. } => stop_job(state, &w.run, job).await,
                Action::Finish { outcome } => {
                    if w.state.outcome.is_none() {
                        dag::finish(&mut w.state, outcome);
                        w.dirty = true;
                        tracing::info!(
                            pipeline = %w.run.pipeline, run = w.run.number, ?outcome, "pipeline run finished"
                        );
                    }
                }
            }
        }
        // Every step this decision starts, in one transaction.
        if !starts.is_empty() {
            steps::start(state, &mut w, starts, now).await?;
        }
        if w.state == before {
            break;
        }
    }
    w.flush(state).await
}

/// Asks a step's job to stop; one that already ended is left alone.
pub(crate) async fn stop_job(state: &AppState, run: &RunRecord, number: u64) {
    match state.meta.request_stop(&run.owner, &run.project, number, now_ms()).await {
        Ok(rec) => state.job_changed(&rec),
        Err(MetaError::Conflict(_)) => {}
        Err(e) => tracing::error!(job = number, error = %e, "stopping a step's job failed"),
    }
}

/// Processes the run again at `at` (a retry is due): one timer per run, the
/// earliest wins (a later one is set by the pass the earlier one starts).
fn set_timer(state: &AppState, run_id: i64, at: i64) {
    {
        let mut timers = state.scheduler.timers.lock().expect("timers lock");
        if timers.get(&run_id).is_some_and(|&t| t <= at) {
            return;
        }
        timers.insert(run_id, at);
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut shutdown = state.shutdown_signal();
        tokio::select! {
            _ = state.clock.sleep_until(at) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        {
            let mut timers = state.scheduler.timers.lock().expect("timers lock");
            if timers.get(&run_id) == Some(&at) {
                timers.remove(&run_id);
            }
        }
        wake(&state, run_id);
    });
}

/// Starts processing, in the background, a run just created or changed.
pub fn changed(state: &AppState, run: &RunRecord) {
    state.runs.wake(&run.id);
    wake(state, run.id);
}
