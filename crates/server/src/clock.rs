//! The clock of the pipeline scheduler: schedules (cron), retry delays and
//! run timestamps read it, so tests drive time by hand ([`ManualClock`])
//! and see runs created at exact instants without waiting. Leases, jobs and
//! log lines keep the system clock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// A boxed future of the clock (the trait is used as `dyn Clock`).
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Unix milliseconds, and sleeping until an instant of the same clock.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now_ms(&self) -> i64;
    /// Completes once `now_ms() >= at`.
    fn sleep_until(&self, at: i64) -> Sleep<'_>;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::state::now_ms()
    }

    fn sleep_until(&self, at: i64) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let now = self.now_ms();
                if now >= at {
                    return;
                }
                // The wall clock may jump; check again after each sleep.
                tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
            }
        })
    }
}

/// A clock that moves only when told to (tests).
#[derive(Default)]
pub struct ManualClock {
    now: Mutex<i64>,
    moved: Notify,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock").field("now", &self.now_ms()).finish()
    }
}

impl ManualClock {
    pub fn new(now: i64) -> ManualClock {
        ManualClock { now: Mutex::new(now), moved: Notify::new() }
    }

    /// Sets the time (it may only move forward) and wakes the sleepers due.
    pub fn set(&self, at: i64) {
        {
            let mut now = self.now.lock().expect("clock lock");
            *now = (*now).max(at);
        }
        self.moved.notify_waiters();
    }

    pub fn advance(&self, ms: i64) {
        let at = self.now_ms() + ms;
        self.set(at);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now.lock().expect("clock lock")
    }

    fn sleep_until(&self, at: i64) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let moved = self.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.now_ms() >= at {
                    return;
                }
                moved.await;
            }
        })
    }
}
