//! The agent's work directory: the chunk cache, the cache of materialized
//! input trees, and each job's own directory (code and output).
//!
//! Layout under `work_dir`:
//!
//! - `cache/chunks/`: a [`LocalStore`] of every chunk fetched so far;
//! - `cache/trees/<manifest id>/`: an input tree, materialized once,
//!   read-only on disk, and bound read-only into every job that mounts it;
//!   built in `cache/trees/.tmp-*` and renamed into place, under a
//!   per-tree lock so that concurrent jobs never build the same tree twice;
//! - `jobs/<lease id>/{code,output}/`: one job's directories, removed when
//!   it ends (leftovers of a crashed agent are removed at start).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use podder_client::Client;
use podder_client::transfer::{NoProgress, fetch_into};
use podder_core::{Manifest, ManifestId};
use podder_store::materialize::materialize;
use podder_store::{BlobStore, LocalStore, StoreError};

pub(crate) struct Workspace {
    root: PathBuf,
    jobs: PathBuf,
    trees: PathBuf,
    chunks: Arc<dyn BlobStore>,
    locks: Mutex<HashMap<ManifestId, Arc<tokio::sync::Mutex<()>>>>,
}

/// One job's directories.
pub(crate) struct JobDirs {
    pub root: PathBuf,
    pub code: PathBuf,
    pub output: PathBuf,
}

impl Workspace {
    /// Opens (creating) the work directory and clears what a previous agent
    /// left half-done: job directories and unfinished trees.
    pub(crate) fn open(work_dir: &Path) -> anyhow::Result<Workspace> {
        let root = std::path::absolute(work_dir)
            .with_context(|| format!("the work directory {} is not usable", work_dir.display()))?;
        let (jobs, trees) = (root.join("jobs"), root.join("cache").join("trees"));
        for d in [&jobs, &trees] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let chunks = LocalStore::open(root.join("cache").join("chunks"))
            .context("cannot open the agent's chunk cache")?
            .with_fsync(false);
        for dir in [&jobs, &trees] {
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name();
                let leftover = dir == &jobs || name.to_string_lossy().starts_with(".tmp-");
                if leftover && let Err(e) = remove_tree(&entry.path()) {
                    tracing::warn!("cannot remove the leftover {}: {e}", entry.path().display());
                }
            }
        }
        Ok(Workspace { root, jobs, trees, chunks: Arc::new(chunks), locks: Mutex::new(HashMap::new()) })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The directories of the job holding `lease_id` (not created).
    pub(crate) fn job_dirs(&self, lease_id: &str) -> JobDirs {
        let safe: String =
            lease_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let root = self.jobs.join(format!("lease-{safe}"));
        JobDirs { code: root.join("code"), output: root.join("output"), root }
    }

    /// Downloads the code snapshot into `dest` (which must not exist).
    pub(crate) async fn materialize_code(&self, client: &Client, id: &ManifestId, dest: &Path) -> anyhow::Result<()> {
        self.download(client, id, dest)
            .await
            .with_context(|| format!("cannot download the code snapshot {}", id.short()))
    }

    /// Fetches what the chunk cache lacks of manifest `id` and writes its
    /// tree into `dest` (which must not exist). When that fails, cached
    /// chunks found damaged (the cache is not flushed to disk, so a crash
    /// may damage some) are dropped and the whole is tried once more.
    async fn download(&self, client: &Client, id: &ManifestId, dest: &Path) -> anyhow::Result<()> {
        let manifest = client.manifest(id).await?;
        let mut repaired = false;
        loop {
            fetch_into(client, &manifest, &self.chunks, &NoProgress).await?;
            match materialize(self.chunks.as_ref(), &manifest, dest).await {
                Ok(()) => break,
                Err(e) if !repaired && self.drop_damaged(&manifest).await > 0 => {
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

    /// Removes the chunks of `manifest` that the cache cannot read back
    /// intact; returns how many.
    async fn drop_damaged(&self, manifest: &Manifest) -> usize {
        let mut dropped = 0;
        for chunk in manifest.chunk_ids() {
            let damaged = match self.chunks.get_chunk(chunk).await {
                Ok(_) | Err(StoreError::NotFound(_)) => false,
                Err(StoreError::Corrupt { .. }) => true,
                Err(StoreError::Io(e)) => e.kind() == std::io::ErrorKind::InvalidData,
                Err(_) => false,
            };
            if damaged && self.chunks.delete_chunk(chunk).await.is_ok() {
                dropped += 1;
            }
        }
        dropped
    }

    /// The cached, read-only tree of manifest `id`, building it first when
    /// this is its first use. Returns the path and whether it was built now.
    pub(crate) async fn tree(&self, client: &Client, id: &ManifestId) -> anyhow::Result<(PathBuf, bool)> {
        let dest = self.trees.join(id.to_hex());
        let lock = self.locks.lock().expect("tree lock map").entry(*id).or_default().clone();
        let _guard = lock.lock().await;
        if dest.is_dir() {
            return Ok((dest, false));
        }
        let tmp = self.trees.join(format!(".tmp-{}-{}", id.to_hex(), std::process::id()));
        if tmp.exists() {
            remove_tree(&tmp)?;
        }
        let built = async {
            self.download(client, id, &tmp).await?;
            let t = tmp.clone();
            tokio::task::spawn_blocking(move || make_read_only(&t)).await??;
            if let Err(e) = std::fs::rename(&tmp, &dest) {
                // Another process may have published the same tree meanwhile.
                if !dest.is_dir() {
                    return Err(e.into());
                }
                remove_tree(&tmp)?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = built {
            let _ = remove_tree(&tmp);
            return Err(e.context(format!("cannot prepare the input tree {}", id.short())));
        }
        Ok((dest, true))
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
