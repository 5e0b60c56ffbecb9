//! The cron loop: one per server. Each pass asks, for every unpaused
//! pipeline with a schedule, which instants fell due since the last one
//! handled (`cron::due`: without catch-up only the latest), creates a run
//! for each (trigger `schedule`, `scheduled_for` the instant) unless
//! `max_active_runs` are active (the instant is then skipped), and records
//! the instant as handled in the same transaction. Then it sleeps on the
//! server's [`Clock`](crate::Clock) until the earliest next instant, or
//! until pipelines change.

use podder_meta::{MetaError, NewRun, PipelineRecord, Trigger};
use podder_pipeline::{RunState, cron};
use tokio::sync::watch;

use crate::state::AppState;

/// The most instants one pipeline catches up in one pass (`catchup: true`).
const CATCHUP_LIMIT: usize = 1000;
/// After a failed pass, the next one comes this much later.
const RETRY_MS: i64 = 5_000;

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let sched = &state.scheduler;
    loop {
        let generation = sched.checked.borrow().0;
        let now = state.clock.now_ms();
        let next = match pass(&state, now).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "the schedule pass failed");
                now + RETRY_MS
            }
        };
        // Everything before `next` is handled, unless pipelines changed meanwhile.
        sched.checked.send_if_modified(|c| {
            if c.0 == generation {
                c.1 = next.saturating_sub(1);
                true
            } else {
                false
            }
        });
        tokio::select! {
            _ = state.clock.sleep_until(next), if next < i64::MAX => {}
            _ = sched.cron_wake.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Handles what is due at `now`; answers the earliest next instant.
async fn pass(state: &AppState, now: i64) -> Result<i64, MetaError> {
    let mut next = i64::MAX;
    for p in state.meta.scheduled_pipelines().await? {
        let Some(schedule) = &p.spec.schedule else { continue };
        let due = match cron::due(schedule, p.last_scheduled, now, p.spec.catchup, CATCHUP_LIMIT) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(pipeline = %p.name, error = %e, "the pipeline's schedule is not valid");
                continue;
            }
        };
        let mut last = p.last_scheduled;
        for at in due {
            scheduled_run(state, &p, at).await?;
            last = last.max(at);
        }
        if let Ok(n) = cron::next_after(schedule, last.max(now)) {
            next = next.min(n);
        }
    }
    Ok(next)
}

/// Creates the run of one due instant, or skips the instant.
async fn scheduled_run(state: &AppState, p: &PipelineRecord, at: i64) -> Result<(), MetaError> {
    let params = match p.spec.resolve_params(&Default::default()) {
        Ok(params) => params,
        Err(problems) => {
            tracing::error!(pipeline = %p.name, %problems, "a scheduled run needs parameters it has no default for");
            return state.meta.set_last_scheduled(p.id, at).await;
        }
    };
    let new = NewRun {
        pipeline_id: p.id,
        version: p.version,
        trigger: Trigger::Schedule,
        scheduled_for: Some(at),
        params,
        state: RunState::new(&p.spec),
        retry_of: None,
        max_active: p.spec.max_active_runs,
        now: state.clock.now_ms(),
    };
    match state.meta.create_run(new).await {
        Ok(run) => {
            tracing::info!(pipeline = %p.name, run = run.number, at, "scheduled run created");
            super::changed(state, &run);
            Ok(())
        }
        Err(MetaError::Conflict(m)) => {
            tracing::info!(pipeline = %p.name, at, reason = %m, "scheduled instant skipped");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
