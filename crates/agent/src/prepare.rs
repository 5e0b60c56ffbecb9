//! The agent's work directory: the chunk cache, the cache of materialized
//! input trees, and each job's own directory (code and output).
//!
//! Layout under `work_dir`:
//!
//! - `cache/chunks/`: a [`LocalStore`] of the chunks of code snapshots;
//! - `cache/trees/<manifest id>/`: an input tree, materialized once,
//!   read-only on disk, and bound read-only into every job that mounts it;
//!   built in `cache/trees/.tmp-*` and renamed into place, under a
//!   per-tree lock so that concurrent jobs never build the same tree twice;
//! - `cache/staging/`, `cache/trash/`, `cache/index.json`: see the
//!   `cache` module, which accounts for the trees and the chunks against
//!   the cache's limit and evicts them;
//! - `jobs/<lease id>/{code,output}/`: one job's directories, removed when
//!   it ends (leftovers of a crashed agent are removed at start).
//!
//! Every byte is kept once. A code snapshot is copied into each job (the
//! job may write to it), so its chunks stay in the chunk cache: they are
//! small and used again by the next job of the same code. An input tree is
//! the cached copy of its data, so the chunks fetched to build it are
//! staged in `cache/staging/<id>-<pid>/` and deleted once the tree is
//! built; chunks the chunk cache already holds are read from there and not
//! fetched again. An evicted tree is therefore fetched again in full.
//!
//! The manifests of code snapshots are kept in memory (a few, see
//! [`CODE_MANIFESTS`]): a manifest is named by the hash of its content, so
//! the next job of the same code asks the server nothing before it runs.
//!
//! A job whose inputs are all cached costs, per input, one lookup in the
//! in-memory index, one `stat` of the tree and one small index write: the
//! manifest is not fetched and the tree is not walked. The tree is then
//! bound read-only into the job's sandbox (one `--ro-bind`), never copied.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use podder_client::Client;
use podder_client::transfer::{NoProgress, fetch_into};
use podder_core::{ChunkId, Manifest, ManifestId};
use podder_store::materialize::materialize;
use podder_store::{BlobStore, LocalStore, StoreError};

use crate::cache::{Cache, TreePin, default_cache_bytes};

/// How many code manifests are kept in memory.
const CODE_MANIFESTS: usize = 64;

pub(crate) struct Workspace {
    root: PathBuf,
    jobs: PathBuf,
    cache: Cache,
    chunks: Arc<dyn BlobStore>,
    locks: Mutex<HashMap<ManifestId, Arc<tokio::sync::Mutex<()>>>>,
    /// Code manifests already materialized once (so their chunks were in
    /// the chunk cache then).
    code_manifests: Mutex<HashMap<ManifestId, Arc<Manifest>>>,
}

/// One job's directories.
pub(crate) struct JobDirs {
    pub root: PathBuf,
    pub code: PathBuf,
    pub output: PathBuf,
}

impl Workspace {
    /// Opens (creating) the work directory, with a cache of at most
    /// `cache_bytes` (by default [`default_cache_bytes`]), and clears what a
    /// previous agent left half-done: job directories, unfinished trees and
    /// staged chunks (see [`Cache::open`]). Blocking.
    pub(crate) fn open(work_dir: &Path, cache_bytes: Option<u64>) -> anyhow::Result<Workspace> {
        let root = std::path::absolute(work_dir)
            .with_context(|| format!("the work directory {} is not usable", work_dir.display()))?;
        let jobs = root.join("jobs");
        std::fs::create_dir_all(&jobs).with_context(|| format!("cannot create {}", jobs.display()))?;
        for entry in std::fs::read_dir(&jobs)?.flatten() {
            if let Err(e) = remove_tree(&entry.path()) {
                tracing::warn!("cannot remove the leftover {}: {e}", entry.path().display());
            }
        }
        let chunks = LocalStore::open(root.join("cache").join("chunks"))
            .context("cannot open the agent's chunk cache")?
            .with_fsync(false);
        let limit = cache_bytes.unwrap_or_else(|| default_cache_bytes(&root));
        let cache = Cache::open(&root.join("cache"), limit).context("cannot open the agent's cache")?;
        Ok(Workspace {
            root,
            jobs,
            cache,
            chunks: Arc::new(chunks),
            locks: Mutex::new(HashMap::new()),
            code_manifests: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The cache's limit in bytes.
    pub(crate) fn cache_limit(&self) -> u64 {
        self.cache.limit()
    }

    /// The directories of the job holding `lease_id` (not created).
    pub(crate) fn job_dirs(&self, lease_id: &str) -> JobDirs {
        let safe: String =
            lease_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let root = self.jobs.join(format!("lease-{safe}"));
        JobDirs { code: root.join("code"), output: root.join("output"), root }
    }

    /// Whether a job of code `code` and inputs `inputs` can most likely be
    /// prepared without the server: the code's manifest is known and every
    /// input tree is cached (no I/O).
    pub(crate) fn ready<'a>(&self, code: &ManifestId, mut inputs: impl Iterator<Item = &'a ManifestId>) -> bool {
        self.code_manifests.lock().expect("code manifests").contains_key(code) && inputs.all(|i| self.cache.has_tree(i))
    }

    /// The manifest of code snapshot `id`: from memory, else from the server.
    async fn code_manifest(&self, client: &Client, id: &ManifestId) -> anyhow::Result<Arc<Manifest>> {
        if let Some(m) = self.code_manifests.lock().expect("code manifests").get(id) {
            return Ok(m.clone());
        }
        Ok(Arc::new(client.manifest(id).await?))
    }

    /// Downloads the code snapshot into `dest` (which must not exist),
    /// through the chunk cache, whose chunks it keeps.
    pub(crate) async fn materialize_code(&self, client: &Client, id: &ManifestId, dest: &Path) -> anyhow::Result<()> {
        async {
            let manifest = self.code_manifest(client, id).await?;
            let ids: Vec<ChunkId> = manifest.chunk_ids().into_iter().collect();
            {
                let _in_use = self.cache.chunks_in_use().await;
                let (c, i) = (self.cache.clone(), ids.clone());
                let fetched = tokio::task::spawn_blocking(move || c.missing_chunks(&i)).await?;
                self.download(client, &manifest, &self.chunks, dest).await?;
                let c = self.cache.clone();
                tokio::task::spawn_blocking(move || c.chunks_used(&ids, &fetched)).await?;
            }
            let mut known = self.code_manifests.lock().expect("code manifests");
            if known.len() >= CODE_MANIFESTS {
                known.clear();
            }
            known.insert(*id, manifest);
            drop(known);
            if self.cache.over_limit() {
                self.cache.enforce_later();
            }
            anyhow::Ok(())
        }
        .await
        .with_context(|| format!("cannot download the code snapshot {}", id.short()))
    }

    /// Fetches what `store` lacks of `manifest` and writes its tree into
    /// `dest` (which must not exist). When that fails, stored chunks found
    /// damaged (the caches are not flushed to disk, so a crash may damage
    /// some) are dropped and the whole is tried once more.
    async fn download(
        &self,
        client: &Client,
        manifest: &Manifest,
        store: &Arc<dyn BlobStore>,
        dest: &Path,
    ) -> anyhow::Result<()> {
        let mut repaired = false;
        loop {
            fetch_into(client, manifest, store, &NoProgress).await?;
            match materialize(store.as_ref(), manifest, dest).await {
                Ok(()) => break,
                Err(e) if !repaired && drop_damaged(store.as_ref(), manifest).await > 0 => {
                    tracing::warn!("damaged chunks in the cache were dropped, fetching them again: {e}");
                    remove_tree(dest)?;
                    repaired = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        std::fs::create_dir_all(dest)?;
        Ok(())
    }

    /// The cached, read-only tree of manifest `id`, pinned in the cache
    /// until the pin is dropped; built first when it is not cached (after
    /// evicting what must go to make room for it). Returns the pin and
    /// whether the tree was built now.
    pub(crate) async fn tree(&self, client: &Client, id: &ManifestId) -> anyhow::Result<(TreePin, bool)> {
        // The cached path: no lock, no manifest, no walk.
        if let Some(pin) = self.cache.pin_ready(id) {
            return Ok((pin, false));
        }
        let lock = self.locks.lock().expect("tree lock map").entry(*id).or_default().clone();
        let res = async {
            let _guard = lock.lock().await;
            if let Some(pin) = self.cache.pin_ready(id) {
                return Ok((pin, false));
            }
            let bytes = self
                .build(client, id)
                .await
                .with_context(|| format!("cannot prepare the input tree {}", id.short()))?;
            Ok((self.cache.publish(id, bytes), true))
        }
        .await;
        drop(lock);
        self.locks.lock().expect("tree lock map").retain(|_, l| Arc::strong_count(l) > 1);
        res
    }

    /// Builds the tree of `id` at its place in the cache; returns its size.
    async fn build(&self, client: &Client, id: &ManifestId) -> anyhow::Result<u64> {
        let (dest, tmp, staging) =
            (self.cache.tree_path(id), self.cache.tree_tmp_path(id), self.cache.staging_path(id));
        for leftover in [&tmp, &staging] {
            if leftover.exists() {
                remove_tree(leftover)?;
            }
        }
        let built = async {
            let manifest = client.manifest(id).await?;
            let bytes = manifest.total_size();
            let c = self.cache.clone();
            tokio::task::spawn_blocking(move || c.enforce(bytes)).await?;
            let store: Arc<dyn BlobStore> =
                Arc::new(Staged { staging: LocalStore::open(&staging)?.with_fsync(false), cache: self.chunks.clone() });
            {
                let _in_use = self.cache.chunks_in_use().await;
                self.download(client, &manifest, &store, &tmp).await?;
            }
            let t = tmp.clone();
            tokio::task::spawn_blocking(move || make_read_only(&t)).await??;
            if let Err(e) = std::fs::rename(&tmp, &dest) {
                // A tree left there that the index does not know (it is
                // adopted at start, so this is unlikely): keep it.
                if !dest.is_dir() {
                    return Err(e.into());
                }
                remove_tree(&tmp)?;
            }
            anyhow::Ok(bytes)
        }
        .await;
        let s = staging.clone();
        let staged = tokio::task::spawn_blocking(move || remove_tree(&s)).await;
        if !matches!(staged, Ok(Ok(()))) {
            tracing::warn!("cannot remove the staged chunks in {}", staging.display());
        }
        if built.is_err() {
            let _ = remove_tree(&tmp);
        }
        built
    }
}

/// Removes the chunks of `manifest` that `store` cannot read back intact;
/// returns how many.
async fn drop_damaged(store: &dyn BlobStore, manifest: &Manifest) -> usize {
    let mut dropped = 0;
    for chunk in manifest.chunk_ids() {
        let damaged = match store.get_chunk(chunk).await {
            Ok(_) | Err(StoreError::NotFound(_)) => false,
            Err(StoreError::Corrupt { .. }) => true,
            Err(StoreError::Io(e)) => e.kind() == std::io::ErrorKind::InvalidData,
            Err(_) => false,
        };
        if damaged && store.delete_chunk(chunk).await.is_ok() {
            dropped += 1;
        }
    }
    dropped
}

/// The store a tree is built through: chunks the chunk cache holds are read
/// from it, the others are fetched into a staging store that is deleted
/// once the tree is built.
struct Staged {
    staging: LocalStore,
    cache: Arc<dyn BlobStore>,
}

#[async_trait]
impl BlobStore for Staged {
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError> {
        self.staging.put_chunk(id, data).await
    }

    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, StoreError> {
        match self.staging.get_chunk(id).await {
            Err(StoreError::NotFound(_)) => self.cache.get_chunk(id).await,
            r => r,
        }
    }

    async fn has_chunk(&self, id: ChunkId) -> Result<bool, StoreError> {
        Ok(self.staging.has_chunk(id).await? || self.cache.has_chunk(id).await?)
    }

    async fn delete_chunk(&self, id: ChunkId) -> Result<(), StoreError> {
        self.staging.delete_chunk(id).await?;
        self.cache.delete_chunk(id).await
    }

    async fn list_chunks(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut all = self.staging.list_chunks().await?;
        all.extend(self.cache.list_chunks().await?);
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn put_manifest(&self, id: ManifestId, bytes: Bytes) -> Result<(), StoreError> {
        self.staging.put_manifest(id, bytes).await
    }

    async fn get_manifest(&self, id: ManifestId) -> Result<Bytes, StoreError> {
        self.staging.get_manifest(id).await
    }

    async fn has_manifest(&self, id: ManifestId) -> Result<bool, StoreError> {
        self.staging.has_manifest(id).await
    }
}

/// Removes every write permission in a tree (symlinks are left alone).
fn make_read_only(root: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            make_read_only(&entry?.path())?;
        }
    }
    if !meta.file_type().is_symlink() {
        let mode = meta.permissions().mode() & !0o222;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Removes a tree even where its directories are read-only.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            std::fs::remove_dir_all(path)
        }
    }
}

fn make_writable(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700));
        if let Ok(rd) = std::fs::read_dir(path) {
            for entry in rd.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_trees_can_be_removed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("tree");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("b/f", root.join("a/l")).unwrap();
        make_read_only(&root).unwrap();
        let mode = std::fs::metadata(root.join("a/b/f")).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0);
        remove_tree(&root).unwrap();
        assert!(!root.exists());
    }
}
