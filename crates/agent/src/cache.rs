//! The agent's cache budget: which materialized input trees exist, how big
//! they are, when each was last used, which ones running jobs pin, and the
//! least-recently-used eviction that keeps trees and chunks under one limit.
//!
//! Layout under `work_dir/cache/` (the `prepare` module writes the trees
//! and the chunks; this module accounts for them and removes them):
//!
//! - `index.json`: every ready tree's size and last use, rewritten (to a
//!   temp file, then renamed) whenever a tree is published, used or evicted,
//!   so that the LRU order survives a restart;
//! - `trees/<manifest id>/`: the ready trees; `trees/.tmp-*` are trees being
//!   built, removed at start;
//! - `chunks/`: the chunk cache (code snapshots' chunks);
//! - `staging/`: the chunks of trees being built, removed once the tree is
//!   (and at start);
//! - `trash/`: evicted trees, moved out of `trees/` at once and deleted
//!   after (leftovers are deleted at start).
//!
//! What counts against the limit: each ready tree's apparent size (the sum
//! of its files' sizes, as its manifest gives them) and the on-disk size of
//! the chunk cache. Trees being built and their staged chunks do not count
//! until they are ready; room is made for a tree *before* it is built, from
//! its manifest's size. So while a tree is built the cache may briefly use
//! up to its limit plus that tree's compressed chunks.
//!
//! Eviction, whenever the cache is over its limit (after a tree is
//! published or a code snapshot fetched new chunks, when a job releases a
//! tree, and at start):
//!
//! 1. ready trees that no job pins, least recently used first;
//! 2. then chunks, oldest last use first (a chunk's mtime is set to the
//!    time of each use). Chunk eviction waits for no one: it is skipped
//!    while any download relies on the chunk cache, and runs again at the
//!    next check.
//!
//! A tree pinned by a preparing or running job ([`TreePin`]) is never
//! evicted, even when that leaves the cache over its limit: that is logged
//! (once until it is under its limit again). The pin is released when the
//! job ends, and the tree becomes an eviction candidate like any other.
//!
//! Only one agent may use a work directory at a time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use podder_core::{ChunkId, ManifestId};
use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;

/// The most the cache holds by default (see [`default_cache_bytes`]).
pub const DEFAULT_CACHE_MAX: u64 = 50 * GIB;

/// The cache limit used when none is configured: the smaller of 50 GiB and
/// a quarter of the filesystem holding `work_dir` (of its nearest existing
/// ancestor). 50 GiB when the filesystem's size is unknown.
pub fn default_cache_bytes(work_dir: &Path) -> u64 {
    let mut p = std::path::absolute(work_dir).unwrap_or_else(|_| work_dir.to_path_buf());
    loop {
        match rustix::fs::statvfs(&p) {
            Ok(s) => {
                let total = s.f_blocks.saturating_mul(s.f_frsize);
                return if total == 0 { DEFAULT_CACHE_MAX } else { (total / 4).min(DEFAULT_CACHE_MAX) };
            }
            Err(_) if p.pop() => {}
            Err(_) => return DEFAULT_CACHE_MAX,
        }
    }
}

/// The cache of one work directory. Cheap to clone; clones share it.
#[derive(Clone)]
pub(crate) struct Cache(Arc<Inner>);

struct Inner {
    trees: PathBuf,
    staging: PathBuf,
    trash: PathBuf,
    /// Where [`podder_store::LocalStore`] keeps the chunk cache's chunks.
    chunk_files: PathBuf,
    index: PathBuf,
    limit: u64,
    state: Mutex<State>,
    /// Held shared by every download that relies on chunks being in the
    /// chunk cache; chunk eviction needs it exclusively (and only tries).
    chunks_in_use: tokio::sync::RwLock<()>,
}

#[derive(Default)]
struct State {
    trees: HashMap<ManifestId, Tree>,
    tree_bytes: u64,
    chunk_bytes: u64,
    /// The last use stamp handed out (ms since the epoch, strictly rising).
    clock: u64,
    /// Whether being over the limit has been logged.
    warned: bool,
    /// Names evicted trees apart in `trash/`.
    evictions: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.clock = now.max(self.clock + 1);
        self.clock
    }
}

struct Tree {
    bytes: u64,
    last_used: u64,
    pins: u32,
    /// An unsandboxed job could write it: it is dropped once no job uses
    /// it, and never served again (see [`TreePin::expose`]).
    exposed: bool,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    trees: Vec<IndexEntry>,
}

#[derive(Serialize, Deserialize)]
struct IndexEntry {
    id: ManifestId,
    bytes: u64,
    /// Milliseconds since the epoch.
    last_used: u64,
    /// Given to an unsandboxed job: not to be trusted after a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    exposed: bool,
}

/// Keeps a ready tree in the cache while it lives; a job holds one for
/// each of its inputs from preparation to its end.
pub(crate) struct TreePin {
    cache: Cache,
    id: ManifestId,
    path: PathBuf,
}

impl TreePin {
    /// The tree, read-only.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the tree as given to a job that runs unsandboxed, which could
    /// change it: it is removed once no job uses it (and at the next start,
    /// should the agent die first), so a later job never reads a tree that
    /// may differ from its manifest.
    pub(crate) fn expose(&self) {
        let mut st = self.cache.state();
        if let Some(t) = st.trees.get_mut(&self.id)
            && !t.exposed
        {
            t.exposed = true;
            self.cache.persist(&st);
        }
    }
}

impl Drop for TreePin {
    fn drop(&mut self) {
        let (over, drop_exposed) = {
            let mut st = self.cache.state();
            let mut drop_exposed = false;
            if let Some(t) = st.trees.get_mut(&self.id) {
                t.pins = t.pins.saturating_sub(1);
                drop_exposed = t.exposed && t.pins == 0;
            }
            (st.tree_bytes + st.chunk_bytes > self.cache.0.limit, drop_exposed)
        };
        if drop_exposed {
            self.cache.discard(&self.id);
        }
        if over {
            self.cache.enforce_later();
        }
    }
}

impl Cache {
    /// Opens the cache in `dir` (creating it) with a limit of `limit` bytes:
    /// removes what a previous agent left half-done (trees being built,
    /// staged chunks, evicted trees not yet deleted), reloads the index,
    /// adopts ready trees the index misses (sized by walking them, last used
    /// at their mtime), forgets entries whose tree is gone, and evicts down
    /// to the limit. Blocking.
    pub(crate) fn open(dir: &Path, limit: u64) -> anyhow::Result<Cache> {
        let inner = Inner {
            trees: dir.join("trees"),
            staging: dir.join("staging"),
            trash: dir.join("trash"),
            chunk_files: dir.join("chunks").join("chunks"),
            index: dir.join("index.json"),
            limit,
            state: Mutex::new(State::default()),
            chunks_in_use: tokio::sync::RwLock::new(()),
        };
        for d in [&inner.trees, &inner.staging, &inner.trash] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        for (d, all) in [(&inner.trees, false), (&inner.staging, true), (&inner.trash, true)] {
            for entry in std::fs::read_dir(d)?.flatten() {
                if (all || entry.file_name().to_string_lossy().starts_with(".tmp-"))
                    && let Err(e) = crate::prepare::remove_tree(&entry.path())
                {
                    tracing::warn!("cannot remove the leftover {}: {e}", entry.path().display());
                }
            }
        }
        let mut known: HashMap<ManifestId, IndexEntry> = HashMap::new();
        match std::fs::read(&inner.index) {
            Ok(bytes) => match serde_json::from_slice::<IndexFile>(&bytes) {
                Ok(idx) => known.extend(idx.trees.into_iter().map(|e| (e.id, e))),
                Err(e) => tracing::warn!("the cache index {} is unreadable, rebuilding it: {e}", inner.index.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot read the cache index {}, rebuilding it: {e}", inner.index.display()),
        }
        let mut st = State::default();
        for entry in std::fs::read_dir(&inner.trees)?.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<ManifestId>().ok()) else { continue };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let (bytes, last_used) = match known.get(&id) {
                Some(e) if e.exposed => {
                    tracing::info!(tree = %id.short(), "dropping a cached tree an unsandboxed job may have changed");
                    if let Err(e) = crate::prepare::remove_tree(&entry.path()) {
                        tracing::warn!("cannot remove the cached tree {}: {e}", entry.path().display());
                    }
                    continue;
                }
                Some(e) => (e.bytes, e.last_used),
                None => {
                    let mtime = entry.metadata().and_then(|m| m.modified()).ok();
                    let ms = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64);
                    (tree_size(&entry.path()), ms)
                }
            };
            st.tree_bytes += bytes;
            st.clock = st.clock.max(last_used);
            st.trees.insert(id, Tree { bytes, last_used, pins: 0, exposed: false });
        }
        st.chunk_bytes = chunk_files(&inner.chunk_files).iter().map(|c| c.bytes).sum();
        let cache = Cache(Arc::new(inner));
        {
            let st2 = &mut *cache.state();
            *st2 = st;
            cache.persist(st2);
        }
        cache.enforce(0);
        Ok(cache)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn limit(&self) -> u64 {
        self.0.limit
    }

    /// Where the ready tree of `id` lies (whether or not it exists).
    pub(crate) fn tree_path(&self, id: &ManifestId) -> PathBuf {
        self.0.trees.join(id.to_hex())
    }

    /// Where a tree being built by this process is written before it is
    /// published.
    pub(crate) fn tree_tmp_path(&self, id: &ManifestId) -> PathBuf {
        self.0.trees.join(format!(".tmp-{}-{}", id.to_hex(), std::process::id()))
    }

    /// Where the chunks of a tree being built are staged.
    pub(crate) fn staging_path(&self, id: &ManifestId) -> PathBuf {
        self.0.staging.join(format!("{}-{}", id.to_hex(), std::process::id()))
    }

    /// Whether the index lists the tree of `id` as ready (no I/O).
    pub(crate) fn has_tree(&self, id: &ManifestId) -> bool {
        self.state().trees.contains_key(id)
    }

    /// Pins the ready tree of `id`, and marks it used now; `None` when it
    /// is not in the cache. Costs one `stat` and an index write: the tree
    /// is neither walked nor checked against its manifest.
    pub(crate) fn pin_ready(&self, id: &ManifestId) -> Option<TreePin> {
        let path = self.tree_path(id);
        let mut st = self.state();
        let present = st.trees.contains_key(id);
        if !present {
            return None;
        }
        if !path.is_dir() {
            // Removed behind the agent's back: forget it, so it is built again.
            tracing::warn!("the cached tree {} is gone; it will be built again", path.display());
            let t = st.trees.remove(id).expect("checked");
            st.tree_bytes -= t.bytes;
            self.persist(&st);
            return None;
        }
        let now = st.tick();
        let t = st.trees.get_mut(id).expect("checked");
        t.pins += 1;
        t.last_used = now;
        self.persist(&st);
        Some(TreePin { cache: self.clone(), id: *id, path })
    }

    /// Records that the tree of `id` (`bytes` in size) is now ready at
    /// [`tree_path`](Self::tree_path), and pins it.
    pub(crate) fn publish(&self, id: &ManifestId, bytes: u64) -> TreePin {
        let mut st = self.state();
        let now = st.tick();
        let old = st.trees.insert(*id, Tree { bytes, last_used: now, pins: 1, exposed: false });
        if let Some(old) = old {
            st.tree_bytes -= old.bytes;
            st.trees.get_mut(id).expect("just inserted").pins += old.pins;
        }
        st.tree_bytes += bytes;
        self.persist(&st);
        drop(st);
        TreePin { cache: self.clone(), id: *id, path: self.tree_path(id) }
    }

    /// Waits until no chunk eviction runs, and keeps chunk eviction off
    /// while the guard lives: hold it while a download relies on chunks
    /// being in the chunk cache.
    pub(crate) async fn chunks_in_use(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.0.chunks_in_use.read().await
    }

    /// Of `ids`, those the chunk cache lacks. Blocking.
    pub(crate) fn missing_chunks(&self, ids: &[ChunkId]) -> Vec<ChunkId> {
        ids.iter().copied().filter(|id| std::fs::symlink_metadata(self.chunk_path(id)).is_err()).collect()
    }

    /// After a download through the chunk cache: counts the chunks of
    /// `fetched` (new in it) against the limit, and marks every chunk of
    /// `used` as used now. Blocking.
    pub(crate) fn chunks_used(&self, used: &[ChunkId], fetched: &[ChunkId]) {
        let mut added = 0;
        for id in fetched {
            added += std::fs::symlink_metadata(self.chunk_path(id)).map_or(0, |m| m.len());
        }
        let fetched: HashSet<&ChunkId> = fetched.iter().collect();
        for id in used.iter().filter(|id| !fetched.contains(id)) {
            touch(&self.chunk_path(id));
        }
        self.state().chunk_bytes += added;
    }

    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.0.chunk_files.join(&hex[..2]).join(hex)
    }

    /// Whether the cache holds more than its limit.
    pub(crate) fn over_limit(&self) -> bool {
        let st = self.state();
        st.tree_bytes + st.chunk_bytes > self.0.limit
    }

    /// [`enforce`](Self::enforce)`(0)` on a blocking thread, not waited
    /// for (when there is a runtime).
    pub(crate) fn enforce_later(&self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let c = self.clone();
            rt.spawn_blocking(move || c.enforce(0));
        }
    }

    /// Evicts until the cache plus `incoming` bytes fits its limit (see the
    /// module's doc for the order), or nothing more may go. Blocking: it
    /// returns once the evicted trees and chunks are deleted.
    pub(crate) fn enforce(&self, incoming: u64) {
        let limit = self.0.limit;
        let mut victims = Vec::new();
        {
            let mut st = self.state();
            if st.tree_bytes + st.chunk_bytes + incoming > limit {
                let mut lru: Vec<(u64, ManifestId)> =
                    st.trees.iter().filter(|(_, t)| t.pins == 0).map(|(id, t)| (t.last_used, *id)).collect();
                lru.sort();
                for (_, id) in lru {
                    if st.tree_bytes + st.chunk_bytes + incoming <= limit {
                        break;
                    }
                    st.evictions += 1;
                    let to = self.0.trash.join(format!("{}-{}", id.to_hex(), st.evictions));
                    match std::fs::rename(self.tree_path(&id), &to) {
                        Ok(()) => victims.push((id, to)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!("cannot evict the cached tree {}: {e}", id.short());
                            continue;
                        }
                    }
                    let t = st.trees.remove(&id).expect("listed");
                    st.tree_bytes -= t.bytes;
                }
                if !victims.is_empty() {
                    self.persist(&st);
                }
            }
        }
        for (id, path) in &victims {
            tracing::info!(tree = %id.short(), "evicted a cached tree");
            if let Err(e) = crate::prepare::remove_tree(path) {
                tracing::warn!("cannot remove the evicted tree {}: {e}", path.display());
            }
        }
        if self.over(incoming) {
            self.evict_chunks(incoming);
        }
        let mut st = self.state();
        let (used, over) = (st.tree_bytes + st.chunk_bytes, st.tree_bytes + st.chunk_bytes + incoming > limit);
        if over && !st.warned {
            let pinned = st.trees.values().filter(|t| t.pins > 0).count();
            tracing::warn!(
                used,
                incoming,
                limit,
                pinned,
                "the agent's cache is over its limit: the trees that jobs are using are never evicted"
            );
        }
        st.warned = over;
    }

    /// Removes the unpinned tree of `id` now (an exposed one).
    fn discard(&self, id: &ManifestId) {
        let to = {
            let mut st = self.state();
            if st.trees.get(id).is_none_or(|t| t.pins > 0) {
                return;
            }
            st.evictions += 1;
            let to = self.0.trash.join(format!("{}-{}", id.to_hex(), st.evictions));
            if let Err(e) = std::fs::rename(self.tree_path(id), &to) {
                tracing::warn!("cannot drop the exposed tree {}: {e}", id.short());
                return;
            }
            let t = st.trees.remove(id).expect("checked");
            st.tree_bytes -= t.bytes;
            self.persist(&st);
            to
        };
        if let Err(e) = crate::prepare::remove_tree(&to) {
            tracing::warn!("cannot remove the exposed tree {}: {e}", to.display());
        }
    }

    fn over(&self, incoming: u64) -> bool {
        let st = self.state();
        st.tree_bytes + st.chunk_bytes + incoming > self.0.limit
    }

    /// Deletes the least recently used chunks until the cache plus
    /// `incoming` fits its limit; skipped while a download relies on them.
    /// Also recounts the chunk cache's size.
    fn evict_chunks(&self, incoming: u64) {
        let Ok(_alone) = self.0.chunks_in_use.try_write() else {
            tracing::debug!("chunk eviction skipped: a download is using the chunk cache");
            return;
        };
        let mut files = chunk_files(&self.0.chunk_files);
        files.sort_by_key(|c| c.mtime);
        let mut bytes: u64 = files.iter().map(|c| c.bytes).sum();
        let target = self.0.limit.saturating_sub(self.state().tree_bytes + incoming);
        let mut evicted = 0;
        for c in files {
            if bytes <= target {
                break;
            }
            match std::fs::remove_file(&c.path) {
                Ok(()) => {
                    bytes -= c.bytes;
                    evicted += 1;
                }
                Err(e) => tracing::warn!("cannot evict the cached chunk {}: {e}", c.path.display()),
            }
        }
        if evicted > 0 {
            tracing::info!(chunks = evicted, "evicted cached chunks");
        }
        self.state().chunk_bytes = bytes;
    }

    /// Rewrites the index from `st` (errors are logged: the index is only
    /// a hint, rebuilt from the trees when lost).
    fn persist(&self, st: &State) {
        let mut trees: Vec<IndexEntry> = st
            .trees
            .iter()
            .map(|(id, t)| IndexEntry { id: *id, bytes: t.bytes, last_used: t.last_used, exposed: t.exposed })
            .collect();
        trees.sort_by_key(|e| (e.last_used, e.id));
        let body = serde_json::to_vec(&IndexFile { version: 1, trees }).expect("the index serializes");
        let tmp = self.0.index.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &self.0.index)) {
            tracing::warn!("cannot write the cache index {}: {e}", self.0.index.display());
        }
    }

    /// What the cache holds now, for tests and logs.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> Usage {
        let st = self.state();
        let mut trees: Vec<(u64, ManifestId)> = st.trees.iter().map(|(id, t)| (t.last_used, *id)).collect();
        trees.sort();
        Usage {
            tree_bytes: st.tree_bytes,
            chunk_bytes: st.chunk_bytes,
            trees: trees.into_iter().map(|(_, id)| id).collect(),
        }
    }
}

#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    pub tree_bytes: u64,
    pub chunk_bytes: u64,
    /// Least recently used first.
    pub trees: Vec<ManifestId>,
}

struct ChunkFile {
    path: PathBuf,
    bytes: u64,
    mtime: SystemTime,
}

/// Every file of the chunk cache.
fn chunk_files(dir: &Path) -> Vec<ChunkFile> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(dir) else { return out };
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
        for f in files.flatten() {
            if let Ok(m) = f.metadata()
                && m.is_file()
            {
                let mtime = m.modified().unwrap_or(UNIX_EPOCH);
                out.push(ChunkFile { path: f.path(), bytes: m.len(), mtime });
            }
        }
    }
    out
}

/// Sets a file's mtime to now (errors are ignored: it only orders eviction).
fn touch(path: &Path) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT, utimensat};
    let times = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: 0, tv_nsec: UTIME_NOW },
    };
    let _ = utimensat(CWD, path, &times, AtFlags::empty());
}

/// The sum of the sizes of the regular files in a tree.
fn tree_size(root: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(root) else { return 0 };
    if meta.is_dir() {
        std::fs::read_dir(root).map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum()).unwrap_or(0)
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
