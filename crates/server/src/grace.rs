//! What keeps garbage collection away from uploads in flight: the grace
//! memory of recently uploaded objects, and the lock that orders every
//! reference-creating write against a collection.
//!
//! An upload runs in steps: chunks (after asking which are missing), then
//! the manifest commit, then the record that refers to the manifest (a
//! dataset version, a job, a job's output). Until the last step nothing
//! refers to the uploaded objects, so a collection in between would free
//! them. Two rules prevent that:
//!
//! 1. **Grace.** The server remembers, in memory with a timestamp, every
//!    chunk it received or reported present to a `missing` check, and every
//!    manifest it committed; a collection keeps whatever was touched within
//!    `gc_grace`. After a restart the server knows nothing of earlier
//!    uploads, so until `gc_grace` has passed since it started, a collection
//!    frees nothing at all.
//! 2. **Lock.** Each step that stores objects or creates a reference holds
//!    [`Grace::hold`] (shared) while it checks and writes; a collection holds
//!    [`Grace::exclusive`] while it computes and deletes. A step therefore
//!    sees either the store before a collection or after it, never half, and
//!    a reference created under the shared lock is seen by the next
//!    collection.
//!
//! An upload that pauses longer than `gc_grace` between its steps may lose
//! its unreferenced objects; the steps are idempotent, so running it again
//! (which re-sends what is missing) finishes it.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use podder_core::{ChunkId, ManifestId};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;

/// The lock and the memory of recent uploads; one per server.
pub struct Grace {
    lock: RwLock<()>,
    window: Duration,
    started: Instant,
    recent: Mutex<Recent>,
}

struct Recent {
    chunks: HashMap<ChunkId, Instant>,
    manifests: HashMap<ManifestId, Instant>,
    pruned: Instant,
}

/// What a collection must keep besides what records refer to.
pub struct Spared {
    pub chunks: HashSet<ChunkId>,
    pub manifests: HashSet<ManifestId>,
    /// The server started less than `gc_grace` ago: spare everything.
    pub everything: bool,
}

impl Grace {
    pub fn new(window: Duration) -> Grace {
        let now = Instant::now();
        Grace {
            lock: RwLock::new(()),
            window,
            started: now,
            recent: Mutex::new(Recent { chunks: HashMap::new(), manifests: HashMap::new(), pruned: now }),
        }
    }

    /// Held (shared) by every step that stores objects or refers to them.
    pub async fn hold(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// [`Grace::hold`] from a thread outside the async runtime.
    pub fn hold_blocking(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.blocking_read()
    }

    /// Held by a collection while it computes and deletes.
    pub async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock.write().await
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // Inserting timestamps cannot leave the maps inconsistent.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers chunks just received or reported present.
    pub fn chunks(&self, ids: impl IntoIterator<Item = ChunkId>) {
        if self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut r = self.recent();
        r.chunks.extend(ids.into_iter().map(|id| (id, now)));
        self.prune_now_and_then(&mut r, now);
    }

    /// Remembers a manifest just committed.
    pub fn manifest(&self, id: ManifestId) {
        if self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut r = self.recent();
        r.manifests.insert(id, now);
        self.prune_now_and_then(&mut r, now);
    }

    /// Drops what is older than the window, at most every quarter window
    /// (and at most once a second), so memory follows recent traffic only.
    fn prune_now_and_then(&self, r: &mut Recent, now: Instant) {
        if now.duration_since(r.pruned) < (self.window / 4).max(Duration::from_secs(1)) {
            return;
        }
        prune(&mut r.chunks, now, self.window);
        prune(&mut r.manifests, now, self.window);
        r.pruned = now;
    }

    /// What a collection starting now must spare.
    pub fn spared(&self) -> Spared {
        let now = Instant::now();
        let mut r = self.recent();
        prune(&mut r.chunks, now, self.window);
        prune(&mut r.manifests, now, self.window);
        r.pruned = now;
        Spared {
            chunks: r.chunks.keys().copied().collect(),
            manifests: r.manifests.keys().copied().collect(),
            everything: now.duration_since(self.started) < self.window,
        }
    }
}

fn prune<K: Hash + Eq>(map: &mut HashMap<K, Instant>, now: Instant, window: Duration) {
    map.retain(|_, at| now.duration_since(*at) < window);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remembers_within_the_window_only() {
        let g = Grace::new(Duration::from_secs(60));
        let (a, b) = (ChunkId::of(b"a"), ChunkId::of(b"b"));
        let m = ManifestId::of(b"m");
        assert!(g.spared().everything, "a fresh server spares everything");
        g.chunks([a]);
        tokio::time::advance(Duration::from_secs(40)).await;
        g.chunks([b]);
        g.manifest(m);
        let s = g.spared();
        assert_eq!((s.chunks.len(), s.manifests.len()), (2, 1));
        tokio::time::advance(Duration::from_secs(30)).await;
        let s = g.spared();
        assert!(!s.everything);
        assert_eq!(s.chunks, HashSet::from([b]), "a is older than the window");
        assert!(s.manifests.contains(&m));
        tokio::time::advance(Duration::from_secs(60)).await;
        let s = g.spared();
        assert!(s.chunks.is_empty() && s.manifests.is_empty());
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let g = Grace::new(Duration::ZERO);
        g.chunks([ChunkId::of(b"a")]);
        g.manifest(ManifestId::of(b"m"));
        let s = g.spared();
        assert!(!s.everything && s.chunks.is_empty() && s.manifests.is_empty());
    }
}
