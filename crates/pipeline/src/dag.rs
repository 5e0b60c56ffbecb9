//! The state machine of one pipeline run: pure, so it is tested without
//! I/O or clocks. The scheduler persists [`RunState`] after every change.

use std::collections::{BTreeMap, BTreeSet};

use podder_core::{ManifestId, MountPath};
use serde::{Deserialize, Serialize};

use crate::spec::{PipelineSpec, TriggerRule, substitute};

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
        matches!(
            self,
            StepState::Succeeded | StepState::Cached | StepState::Failed | StepState::Skipped | StepState::Cancelled
        )
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
    /// Steps a retry `--from` runs again: they run even when the step cache
    /// holds a result for them (see [`retry_from`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub rerun: BTreeSet<String>,
}

impl RunState {
    /// A new run: every step Pending, not cancelled, no outcome.
    pub fn new(spec: &PipelineSpec) -> RunState {
        RunState {
            steps: spec.steps.iter().map(|s| (s.name.clone(), StepRun::pending())).collect(),
            cancelled: false,
            outcome: None,
            rerun: BTreeSet::new(),
        }
    }

    /// Whether the scheduler may reuse a cached result for `step`: not for
    /// the steps a retry from a step runs again.
    pub fn may_use_cache(&self, step: &str) -> bool {
        !self.rerun.contains(step)
    }

    /// Whether every step is done (see [`StepState::is_done`]).
    pub fn all_done(&self) -> bool {
        self.steps.values().all(|s| s.state.is_done())
    }

    fn state(&self, step: &str) -> Option<StepState> {
        self.steps.get(step).map(|s| s.state)
    }
}

/// What the scheduler must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the step's job (attempt `attempt`), then record it with
    /// [`started`]. The scheduler checks the cache first when the step has
    /// `cache: true`, and calls [`cached`] instead on a hit.
    Start { step: String, attempt: u32 },
    /// Mark the step skipped (its trigger rule cannot hold any more), with [`skip`].
    Skip { step: String, reason: String },
    /// Wake up at this instant (a retry is due then).
    WakeAt { at: i64 },
    /// Cancel this step's running job (after [`cancel`]).
    StopJob { step: String, job: u64 },
    /// The run is over: record it with [`finish`].
    Finish { outcome: RunOutcome },
}

/// What a trigger rule says, given the upstream steps' states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The rule holds: the step runs.
    Run,
    /// The rule can never hold: the step is skipped, for this reason.
    Skip(String),
    /// Not yet decided.
    Wait,
}

fn failed(s: StepState) -> bool {
    matches!(s, StepState::Failed | StepState::Cancelled)
}

/// Airflow's trigger rules over the upstream steps' states (`needs`):
///
/// - `all_success`: runs when every upstream step succeeded (or was
///   cached); skipped as soon as one ended otherwise (failed or skipped).
/// - `all_done`: runs when every upstream step is done, however it ended.
/// - `one_success`: runs as soon as one upstream step succeeded; skipped
///   when all are done and none succeeded.
/// - `one_failed`: runs as soon as one upstream step failed; skipped when
///   all are done and none failed.
/// - `none_failed`: runs when every upstream step is done and none failed
///   (skipped ones are fine); skipped as soon as one failed.
///
/// A step without upstream steps runs at once, whatever its rule. Skipped
/// upstream steps count as done and not successful, and not as failed
/// (podder has no separate `upstream_failed` state). A Cancelled upstream
/// step counts as failed.
pub fn trigger(rule: TriggerRule, upstream: &[(&str, StepState)]) -> Verdict {
    if upstream.is_empty() {
        return Verdict::Run;
    }
    let all_done = upstream.iter().all(|(_, s)| s.is_done());
    let success = upstream.iter().find(|(_, s)| s.is_success());
    let fail = upstream.iter().find(|(_, s)| failed(*s));
    let not_success = upstream.iter().find(|(_, s)| s.is_done() && !s.is_success());
    let why = |(n, s): &(&str, StepState)| match s {
        StepState::Skipped => format!("upstream step '{n}' was skipped"),
        StepState::Cancelled => format!("upstream step '{n}' was cancelled"),
        _ => format!("upstream step '{n}' failed"),
    };
    match rule {
        TriggerRule::AllSuccess => match not_success {
            Some(u) => Verdict::Skip(format!("all_success: {}", why(u))),
            None if upstream.iter().all(|(_, s)| s.is_success()) => Verdict::Run,
            None => Verdict::Wait,
        },
        TriggerRule::AllDone => {
            if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::OneSuccess => match (success, all_done) {
            (Some(_), _) => Verdict::Run,
            (None, true) => Verdict::Skip("one_success: no upstream step succeeded".into()),
            (None, false) => Verdict::Wait,
        },
        TriggerRule::OneFailed => match (fail, all_done) {
            (Some(_), _) => Verdict::Run,
            (None, true) => Verdict::Skip("one_failed: no upstream step failed".into()),
            (None, false) => Verdict::Wait,
        },
        TriggerRule::NoneFailed => match (fail, all_done) {
            (Some(u), _) => Verdict::Skip(format!("none_failed: {}", why(u))),
            (None, true) => Verdict::Run,
            (None, false) => Verdict::Wait,
        },
    }
}

/// How a run ends once every step is done: Cancelled when it was cancelled;
/// else Failed when any step ended Failed (or Cancelled), even if a
/// downstream step's rule (`all_done`, `one_failed`) handled it; else
/// Succeeded (skipped steps do not fail a run).
pub fn outcome(run: &RunState) -> RunOutcome {
    if run.cancelled {
        RunOutcome::Cancelled
    } else if run.steps.values().any(|s| failed(s.state)) {
        RunOutcome::Failed
    } else {
        RunOutcome::Succeeded
    }
}

/// The decisions for a run at `now`, in the steps' topological order:
///
/// - a Pending step whose trigger rule holds starts (attempt 1); one whose
///   rule can no longer hold is skipped ([`trigger`]). Skips decided in this
///   call count for the steps after them, so one call skips a whole
///   branch and starts what those skips unblock;
/// - a Retrying step whose `retry_at` is at or before `now` starts again
///   (next attempt); the earliest later `retry_at` gives one `WakeAt`;
/// - when every step is done (counting this call's skips), `Finish` with
///   [`outcome`]: Failed iff some step ended Failed.
///
/// A cancelled run starts and skips nothing (it finishes once every step is
/// done); a finished run (outcome set) answers nothing. Applying the
/// actions (`started` for each Start, `skip`, `finish`) and calling
/// `decide` again answers only the same `WakeAt` or nothing: a fixed point.
pub fn decide(spec: &PipelineSpec, run: &RunState, now: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    if run.outcome.is_some() {
        return actions;
    }
    let mut states: BTreeMap<&str, StepState> = run.steps.iter().map(|(k, v)| (k.as_str(), v.state)).collect();
    if !run.cancelled {
        let mut wake: Option<i64> = None;
        let by_name: BTreeMap<&str, &crate::spec::StepSpec> =
            spec.steps.iter().rev().map(|s| (s.name.as_str(), s)).collect();
        for name in spec.topo_order() {
            let Some(step) = by_name.get(name.as_str()).copied() else { continue };
            let Some(sr) = run.steps.get(&name) else { continue };
            match sr.state {
                StepState::Pending => {
                    let ups: Vec<(&str, StepState)> = step
                        .needs
                        .iter()
                        .map(|n| (n.as_str(), states.get(n.as_str()).copied().unwrap_or(StepState::Skipped)))
                        .collect();
                    match trigger(step.trigger_rule, &ups) {
                        Verdict::Run => actions.push(Action::Start { step: name.clone(), attempt: sr.attempt + 1 }),
                        Verdict::Skip(reason) => {
                            states.insert(step.name.as_str(), StepState::Skipped);
                            actions.push(Action::Skip { step: name.clone(), reason });
                        }
                        Verdict::Wait => {}
                    }
                }
                StepState::Retrying => match sr.retry_at {
                    Some(t) if t > now => wake = Some(wake.map_or(t, |w| w.min(t))),
                    _ => actions.push(Action::Start { step: name.clone(), attempt: sr.attempt + 1 }),
                },
                _ => {}
            }
        }
        if let Some(at) = wake {
            actions.push(Action::WakeAt { at });
        }
    }
    let started = actions.iter().any(|a| matches!(a, Action::Start { .. }));
    if !started && states.values().all(|s| s.is_done()) {
        let cancelled = run.cancelled;
        let any_failed = states.values().any(|s| failed(*s));
        let outcome = if cancelled {
            RunOutcome::Cancelled
        } else if any_failed {
            RunOutcome::Failed
        } else {
            RunOutcome::Succeeded
        };
        actions.push(Action::Finish { outcome });
    }
    actions
}

/// Records that a step's job was created: Running, with its attempt and job.
pub fn started(run: &mut RunState, step: &str, attempt: u32, job: u64, now: i64) {
    if let Some(s) = run.steps.get_mut(step) {
        s.state = StepState::Running;
        s.attempt = attempt;
        s.job = Some(job);
        s.retry_at = None;
        s.started_at = Some(now);
        s.finished_at = None;
        s.reason = None;
    }
}

/// Records a cache hit: the step is `Cached` with that output (its attempt
/// and job stay as they were: no job ran).
pub fn cached(run: &mut RunState, step: &str, output: ManifestId, now: i64) {
    if let Some(s) = run.steps.get_mut(step) {
        s.state = StepState::Cached;
        s.output = Some(output);
        s.retry_at = None;
        s.started_at = Some(now);
        s.finished_at = Some(now);
        s.reason = None;
    }
}

/// The delay before the retry that follows a failed `attempt` (1-based), in
/// ms: `retry_delay * 2^(attempt-1)` (0 without `retry_delay`), saturating.
pub fn retry_delay_ms(spec: &PipelineSpec, step: &str, attempt: u32) -> i64 {
    let base = spec.step(step).map_or(0, |s| s.retry_delay_secs()).saturating_mul(1000);
    let factor = 1u64.checked_shl(attempt.saturating_sub(1)).unwrap_or(u64::MAX);
    i64::try_from(base.saturating_mul(factor)).unwrap_or(i64::MAX)
}

/// Records that a step's job ended. A failure with retries left (attempt
/// <= retries) makes the step `Retrying` with `retry_at = now + delay *
/// 2^(attempt-1)` (delay from `retry_delay`, 0 by default: due at once);
/// else it is Failed. The output is kept in either case (a failed job's
/// `/output` is captured too).
///
/// Only a Running step changes: a late or repeated report (the step was
/// cancelled, or the end was already recorded) is ignored. The caller
/// checks that the job is the step's current one (`StepRun::job`).
pub fn on_job_end(
    spec: &PipelineSpec,
    run: &mut RunState,
    step: &str,
    succeeded: bool,
    output: Option<ManifestId>,
    reason: Option<String>,
    now: i64,
) {
    let retries = spec.step(step).map_or(0, |s| s.retries);
    let delay = retry_delay_ms(spec, step, run.steps.get(step).map_or(1, |s| s.attempt));
    let Some(s) = run.steps.get_mut(step) else { return };
    if s.state != StepState::Running {
        return;
    }
    if output.is_some() {
        s.output = output;
    }
    if succeeded {
        s.state = StepState::Succeeded;
        s.finished_at = Some(now);
        s.reason = None;
    } else if s.attempt <= retries {
        s.state = StepState::Retrying;
        s.retry_at = Some(now.saturating_add(delay));
        s.finished_at = Some(now);
        s.reason = reason;
    } else {
        s.state = StepState::Failed;
        s.finished_at = Some(now);
        s.reason = reason;
    }
}

/// Applies a Skip action (only to a Pending step).
pub fn skip(run: &mut RunState, step: &str, reason: &str, now: i64) {
    if let Some(s) = run.steps.get_mut(step)
        && s.state == StepState::Pending
    {
        s.state = StepState::Skipped;
        s.reason = Some(reason.to_string());
        s.finished_at = Some(now);
    }
}

/// Applies a Finish action: records the run's outcome.
pub fn finish(run: &mut RunState, outcome: RunOutcome) {
    run.outcome = Some(outcome);
}

/// Marks the run cancelled: pending and retrying steps become Cancelled;
/// answers StopJob actions for the running ones (which become Cancelled).
/// A finished run does not change and answers nothing. The next
/// [`decide`] finishes the run as Cancelled.
pub fn cancel(run: &mut RunState, now: i64) -> Vec<Action> {
    let mut out = Vec::new();
    if run.outcome.is_some() {
        return out;
    }
    run.cancelled = true;
    for (name, s) in run.steps.iter_mut() {
        match s.state {
            StepState::Pending | StepState::Retrying => {}
            StepState::Running => {
                if let Some(job) = s.job {
                    out.push(Action::StopJob { step: name.clone(), job });
                }
            }
            _ => continue,
        }
        s.state = StepState::Cancelled;
        s.retry_at = None;
        s.finished_at = Some(now);
        s.reason = Some("the run was cancelled".into());
    }
    out
}

/// A run again from `from` (or from its failed steps when None): steps
/// before it keep their results (as Cached, with their outputs); `from` and
/// everything downstream of it become Pending again with attempt 0.
///
/// With `None`, the steps to run again are every step that did not
/// succeed (Failed, Skipped, Cancelled, or not done) and everything
/// downstream of them; it is an error when every step succeeded. With
/// `Some(step)`, steps outside `step` and its downstream keep a success
/// (as Cached) or a Failed/Skipped end as it was; steps that never ended
/// become Pending; `step` and its downstream are recorded in
/// [`RunState::rerun`], so they run again even where the step cache holds
/// their result (asking to run a step again means running it).
pub fn retry_from(spec: &PipelineSpec, old: &RunState, from: Option<&str>) -> Result<RunState, String> {
    let mut again: BTreeSet<String> = BTreeSet::new();
    match from {
        Some(f) => {
            if spec.step(f).is_none() {
                let names: Vec<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
                return Err(format!("pipeline '{}' has no step '{f}' (its steps: {})", spec.name, names.join(", ")));
            }
            again.insert(f.to_string());
            again.extend(spec.downstream_of(f));
        }
        None => {
            for s in &spec.steps {
                let ok = old.state(&s.name).is_some_and(|st| st.is_success());
                if !ok {
                    again.insert(s.name.clone());
                    again.extend(spec.downstream_of(&s.name));
                }
            }
            if again.is_empty() {
                return Err("every step of this run succeeded: give --from STEP to run steps again".into());
            }
        }
    }
    let mut run = RunState::new(spec);
    if from.is_some() {
        run.rerun = again.clone();
    }
    for (name, s) in run.steps.iter_mut() {
        if again.contains(name) {
            continue;
        }
        let Some(prev) = old.steps.get(name) else { continue };
        match prev.state {
            StepState::Succeeded | StepState::Cached => {
                *s = prev.clone();
                s.state = StepState::Cached;
                s.retry_at = None;
                s.reason = Some("kept from the previous run".into());
            }
            StepState::Failed | StepState::Skipped => {
                *s = prev.clone();
                s.retry_at = None;
            }
            _ => {}
        }
    }
    Ok(run)
}

/// A run of one step alone: the step Pending, its upstream steps Cached
/// with the given outputs (the latest successful ones), the others Skipped.
/// Every step that `step` needs directly must be in `upstream`; steps
/// further up are Cached when `upstream` has them, else Skipped.
pub fn only(spec: &PipelineSpec, step: &str, upstream: &BTreeMap<String, ManifestId>) -> Result<RunState, String> {
    let Some(target) = spec.step(step) else {
        let names: Vec<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
        return Err(format!("pipeline '{}' has no step '{step}' (its steps: {})", spec.name, names.join(", ")));
    };
    let missing: Vec<&str> =
        target.needs.iter().filter(|n| !upstream.contains_key(n.as_str())).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(format!(
            "step '{step}' needs {}, which {} no successful run yet: run the pipeline once, or use --from",
            missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
            if missing.len() == 1 { "has" } else { "have" }
        ));
    }
    let ancestors = spec.upstream_of(step);
    let mut run = RunState::new(spec);
    for (name, s) in run.steps.iter_mut() {
        if name == step {
            continue;
        }
        match upstream.get(name) {
            Some(out) if ancestors.contains(name) => {
                s.state = StepState::Cached;
                s.output = Some(*out);
                s.reason = Some("the latest successful output".into());
            }
            _ => {
                s.state = StepState::Skipped;
                s.reason = Some(format!("not part of --only {step}"));
            }
        }
    }
    Ok(run)
}

/// Where one input of a step comes from in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// An upstream step's output (None when that step left no output, e.g.
    /// it was skipped), or a directory inside it.
    Step { step: String, output: Option<ManifestId>, path: Option<String> },
    /// A data source as `run --data` takes it (`cifar@2`, `mnist#12/model`).
    Data(String),
}

/// One input of a step, resolved against a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedInput {
    pub source: InputSource,
    /// Where it is mounted; None for a task step's input without an
    /// explicit mount (mounted where the task declares `input`).
    pub mount: Option<MountPath>,
    /// The task's input it feeds (task steps).
    pub input: Option<String>,
}

/// A step's inputs in a run: edges from upstream outputs resolved to their
/// manifests, with `${params.NAME}` substituted in datasets and paths.
pub fn inputs_of(
    spec: &PipelineSpec,
    run: &RunState,
    step: &str,
    params: &BTreeMap<String, String>,
) -> Vec<ResolvedInput> {
    let Some(s) = spec.step(step) else { return Vec::new() };
    s.inputs
        .iter()
        .map(|i| {
            let source = match (&i.from, &i.dataset) {
                (Some(f), _) => InputSource::Step {
                    step: f.clone(),
                    output: run.steps.get(f).and_then(|r| r.output),
                    path: i.path.as_deref().map(|p| substitute(p, params)),
                },
                (None, d) => InputSource::Data(substitute(d.as_deref().unwrap_or_default(), params)),
            };
            ResolvedInput { source, mount: i.mount.clone(), input: i.input.clone() }
        })
        .collect()
}
