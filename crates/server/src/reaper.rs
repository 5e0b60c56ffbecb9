//! The lease reaper: a background task that turns jobs whose agent stopped
//! heartbeating into `lost` (or queues them again when retries remain) and
//! wakes whoever waits on them.

use std::time::Duration;

use tokio::sync::watch;

use crate::state::{AppState, now_ms};

/// How often leases are checked: a quarter of a lease, at most a second.
pub fn period(lease_ms: u64) -> Duration {
    Duration::from_millis((lease_ms / 4).clamp(5, 1000))
}

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(period(state.config.lease_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match state.meta.expire_leases(now_ms()).await {
            Ok(changed) => {
                for rec in &changed {
                    tracing::warn!(
                        job = %rec.job.job_ref,
                        state = %rec.job.state,
                        reason = rec.job.reason.as_deref().unwrap_or(""),
                        "lease expired"
                    );
                    state.job_changed(rec);
                }
            }
            Err(e) => tracing::error!(error = %e, "expiring leases failed"),
        }
        state.queues.prune();
        state.job_events.prune();
        state.job_control.prune();
    }
}
