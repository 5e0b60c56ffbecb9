//! The state machine of one pipeline run: pure, so it is tested without
//! I/O or clocks. The scheduler persists [`RunState`] after every change.

use std::collections::BTreeMap;

use podder_core::ManifestId;
use serde::{Deserialize, Serialize};

use crate::spec::PipelineSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for its upstream steps.
    Pending,
    /// Its job was created (queued or running).
    Running,
    /// Failed, and waits until `retry_at` to run again.
    Retrying,
    Succeeded,
    /// Reused a previous identical result; no job ran.
    Cached,
    Failed,
    /// Its trigger rule can no longer hold (e.g. an upstream step failed).
    Skipped,
    /// The run was cancelled before it ended.
    Cancelled,
}

impl StepState {
    pub fn is_done(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Cached | StepState::Failed | StepState::Skipped | StepState::Cancelled)
    }
    /// Succeeded or reused.
    pub fn is_success(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Cached)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    pub state: StepState,
    /// 0 before it first runs; 1 for the first attempt.
    pub attempt: u32,
    /// The job number of the current (or last) attempt in the project.
    pub job: Option<u64>,
    /// The output that downstream steps mount.
    pub output: Option<ManifestId>,
    /// When a retrying step runs again.
    pub retry_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
}

impl StepRun {
    pub fn pending() -> StepRun {
        StepRun {
            state: StepState::Pending,
            attempt: 0,
            job: None,
            output: None,
            retry_at: None,
            started_at: None,
            finished_at: None,
            reason: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// A run's state: every step's, plus whether it was cancelled and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub steps: BTreeMap<String, StepRun>,
    pub cancelled: bool,
    pub outcome: Option<RunOutcome>,
}

impl RunState {
    /// Every step pending. With `only`, the other steps start as Skipped
    /// unless `reuse` gives their output (a step run alone is fed by the
    /// latest successful upstream outputs: those steps are `Cached`).
    pub fn new(spec: &PipelineSpec) -> RunState {
        todo!("{spec:?}")
    }
}

/// What the scheduler must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the step's job (attempt `attempt`), then record it with
    /// [`started`]. The scheduler checks the cache first when the step has
    /// `cache: true`, and calls [`cached`] instead on a hit.
    Start { step: String, attempt: u32 },
    /// Mark the step skipped (its trigger rule cannot hold any more).
    Skip { step: String, reason: String },
    /// Wake up at this instant (a retry is due then).
    WakeAt { at: i64 },
    /// Cancel this step's running job (after [`cancel`]).
    StopJob { step: String, job: u64 },
    /// The run is over.
    Finish { outcome: RunOutcome },
}

/// The decisions for a run at `now`: steps whose trigger rule holds and that
/// are pending (or retrying and due) start; steps whose rule can no longer
/// hold are skipped; the run finishes when every step is done (failed if any
/// step failed and no downstream rule handled it — Airflow's rule: the run
/// fails when a leaf step failed or was skipped because of a failure). Applying the
/// actions and calling `decide` again reaches a fixed point.
pub fn decide(spec: &PipelineSpec, run: &RunState, now: i64) -> Vec<Action> {
    todo!("{spec:?}{run:?}{now}")
}

/// Records that a step's job was created.
pub fn started(run: &mut RunState, step: &str, attempt: u32, job: u64, now: i64) {
    todo!("{run:?}{step}{attempt}{job}{now}")
}

/// Records a cache hit: the step is `Cached` with that output.
pub fn cached(run: &mut RunState, step: &str, output: ManifestId, now: i64) {
    todo!("{run:?}{step}{output}{now}")
}

/// Records that a step's job ended. A failure with retries left makes the
/// step `Retrying` with `retry_at = now + delay * 2^(attempt-1)`.
pub fn on_job_end(
    spec: &PipelineSpec,
    run: &mut RunState,
    step: &str,
    succeeded: bool,
    output: Option<ManifestId>,
    reason: Option<String>,
    now: i64,
) {
    todo!("{spec:?}{run:?}{step}{succeeded}{output:?}{reason:?}{now}")
}

/// Applies a Skip action.
pub fn skip(run: &mut RunState, step: &str, reason: &str, now: i64) {
    todo!("{run:?}{step}{reason}{now}")
}

/// Marks the run cancelled: pending and retrying steps become Cancelled;
/// answers StopJob actions for the running ones (which become Cancelled).
pub fn cancel(run: &mut RunState, now: i64) -> Vec<Action> {
    todo!("{run:?}{now}")
}

/// A run again from `from` (or from its failed steps when None): steps
/// before it keep their results (as Cached, with their outputs); `from` and
/// everything downstream of it become Pending again with attempt 0.
pub fn retry_from(spec: &PipelineSpec, old: &RunState, from: Option<&str>) -> Result<RunState, String> {
    todo!("{spec:?}{old:?}{from:?}")
}

/// A run of one step alone: the step Pending, its upstream steps Cached
/// with the given outputs (the latest successful ones), the others Skipped.
pub fn only(spec: &PipelineSpec, step: &str, upstream: &BTreeMap<String, ManifestId>) -> Result<RunState, String> {
    todo!("{spec:?}{step}{upstream:?}")
}
