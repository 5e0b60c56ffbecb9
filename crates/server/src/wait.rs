//! Waking long-polls: a registry of `Notify`s keyed by what waiters watch
//! (a queue, a job), and the wait loop every long-poll uses.
//!
//! Nothing here sleeps and polls: a waiter is woken by the write that may
//! satisfy it, re-checks its condition against the database, and waits again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// `Notify`s created on first use and dropped once nobody waits on them.
pub struct Waiters<K> {
    map: Mutex<HashMap<K, Arc<Notify>>>,
}

impl<K: Hash + Eq + Clone> Waiters<K> {
    pub fn new() -> Self {
        Waiters { map: Mutex::new(HashMap::new()) }
    }

    pub fn subscribe(&self, key: &K) -> Arc<Notify> {
        let mut map = self.map.lock().expect("waiters lock");
        map.entry(key.clone()).or_insert_with(|| Arc::new(Notify::new())).clone()
    }

    /// Wakes everyone waiting on `key` now (a later waiter re-checks anyway).
    pub fn wake(&self, key: &K) {
        let map = self.map.lock().expect("waiters lock");
        if let Some(n) = map.get(key) {
            n.notify_waiters();
        }
    }

    /// Drops the entries nobody holds (called by the reaper now and then).
    pub fn prune(&self) {
        self.map.lock().expect("waiters lock").retain(|_, n| Arc::strong_count(n) > 1);
    }
}

impl<K: Hash + Eq + Clone> Default for Waiters<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `check` until it yields a value, waiting on `notify` between runs,
/// until `deadline` or server shutdown (then `Ok(None)`). The waiter is
/// registered before each check, so a wake between check and wait is not lost.
pub async fn wait_for<T, E, F, Fut>(
    notify: &Notify,
    deadline: Instant,
    shutdown: &watch::Receiver<bool>,
    mut check: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let mut shutdown = shutdown.clone();
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(v) = check().await? {
            return Ok(Some(v));
        }
        if *shutdown.borrow() {
            return Ok(None);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = shutdown.changed() => return Ok(None),
        }
    }
}
