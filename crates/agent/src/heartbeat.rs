//! Keeping a lease alive and hearing what the server wants done with the job.
//!
//! One heartbeat task runs per job from the lease until the job is
//! finished. The server long-polls each heartbeat, so a stop asked by a user
//! arrives at once. What the task hears, and the agent's own shutdown,
//! become a [`Control`] that the job's driver acts on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use podder_client::Client;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use crate::retry::{MAX_BACKOFF, is_transient};

/// What should happen to a job, as far as its driver knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Carry on.
    Run,
    /// A user asked to stop it: it ends as stopped.
    Stop,
    /// The agent shuts down: it is stopped and ends as failed.
    Shutdown,
    /// The lease is no longer valid: kill it, and report nothing more.
    Lost,
}

/// The sending side of a job's [`Control`].
#[derive(Clone)]
pub(crate) struct Controller(pub watch::Sender<Control>);

impl Controller {
    pub(crate) fn new() -> (Controller, watch::Receiver<Control>) {
        let (tx, rx) = watch::channel(Control::Run);
        (Controller(tx), rx)
    }

    /// The first of Stop and Shutdown counts; Lost overrides everything.
    pub(crate) fn set(&self, to: Control) {
        self.0.send_if_modified(|c| {
            let change = to != *c && (*c == Control::Run || to == Control::Lost);
            if change {
                *c = to;
            }
            change
        });
    }
}

/// Heartbeats lease `lease` every `lease_ms / 3` (long-polled) until the
/// lease is gone or the task is aborted. Once `ending` is set (the job's end
/// is being reported, which ends the lease and wakes the beat in flight), a
/// lease the server no longer knows is what is expected, not news.
pub(crate) async fn run(client: Client, lease: String, lease_ms: u64, ctl: Controller, ending: Arc<AtomicBool>) {
    let wait_ms = (lease_ms / 3).max(100);
    let mut backoff = Duration::from_millis(250);
    let mut stop_seen = false;
    loop {
        let start = Instant::now();
        match client.heartbeat(&lease, wait_ms).await {
            Ok(reply) => {
                backoff = Duration::from_millis(250);
                if reply.stop && !stop_seen {
                    stop_seen = true;
                    tracing::info!(lease = %lease, "the server asks to stop the job");
                    ctl.set(Control::Stop);
                }
                // Once a stop is known the server answers at once: pace the
                // beats by hand. Otherwise a beat is never sooner than 1 s
                // after the last (in case the server does not long-poll).
                let gap = if stop_seen { Duration::from_millis(wait_ms) } else { Duration::from_secs(1) };
                sleep_until(start + gap).await;
            }
            Err(e) if e.status() == Some(409) && ending.load(Ordering::SeqCst) => {
                tracing::debug!(lease = %lease, "the lease ended with the job's end");
                return;
            }
            Err(e) if e.status() == Some(409) => {
                tracing::warn!(lease = %lease, "the server no longer knows this lease: {e}");
                ctl.set(Control::Lost);
                return;
            }
            Err(e) => {
                if is_transient(&e) {
                    tracing::warn!(lease = %lease, "heartbeat failed, retrying: {e}");
                } else {
                    tracing::error!(lease = %lease, "heartbeat refused, retrying: {e}");
                }
                sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_escalates_once() {
        let (c, rx) = Controller::new();
        c.set(Control::Stop);
        c.set(Control::Shutdown);
        assert_eq!(*rx.borrow(), Control::Stop);
        c.set(Control::Lost);
        assert_eq!(*rx.borrow(), Control::Lost);
        c.set(Control::Stop);
        assert_eq!(*rx.borrow(), Control::Lost);
    }
}
