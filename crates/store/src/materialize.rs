//! Materializing a manifest: writing the tree it describes into a local
//! directory from a store's chunks, and finding which chunks a store lacks.
//!
//! The manifest is validated first, and the tree is written so that nothing
//! lands outside the destination: directories and files are created while
//! the destination holds no symlinks (files with `create_new`, which never
//! follows one), symlinks are created last, and modes (which may make files
//! and directories read-only) are applied at the very end.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use podder_core::{ChunkId, EntryKind, Manifest};
use tokio::sync::mpsc;

use crate::blob::{BlobStore, StoreError, check_chunk};
use crate::{at, blocking};

/// Chunks fetched ahead of the writer (at most this many MiB in flight).
const PIPELINE: usize = 8;

/// The chunks of `manifest` that `store` does not hold, in id order.
pub async fn missing_chunks(store: &dyn BlobStore, manifest: &Manifest) -> Result<Vec<ChunkId>, StoreError> {
    let mut missing = Vec::new();
    for id in manifest.chunk_ids() {
        if !store.has_chunk(id).await? {
            missing.push(id);
        }
    }
    Ok(missing)
}

/// Writes the tree `manifest` describes into `dest`, which must not exist or
/// be an empty directory. Chunks are fetched from `store` while a blocking
/// thread writes. On error, `dest` is removed if this call created it (an
/// existing empty `dest` may be left partly written): to publish a tree
/// atomically, materialize into a temporary directory and rename it.
pub async fn materialize(store: &dyn BlobStore, manifest: &Manifest, dest: &Path) -> Result<(), StoreError> {
    manifest.validate().map_err(|e| StoreError::Invalid(format!("cannot materialize an invalid manifest: {e}")))?;
    let (tx, rx) = mpsc::channel(PIPELINE);
    let (m, d) = (manifest.clone(), dest.to_path_buf());
    let writer = blocking(move || write_tree(&m, &d, rx));
    let (written, fed) = tokio::join!(writer, feed(store, manifest, tx));
    // A failed fetch is the cause; the writer then only saw the feed stop.
    fed?;
    written
}

/// Sends every file's chunks, in manifest order, to the writer. A chunk
/// that repeats the one before (a run of zeros in a sparse file) is not
/// read again.
async fn feed(store: &dyn BlobStore, manifest: &Manifest, tx: mpsc::Sender<Bytes>) -> Result<(), StoreError> {
    let mut last: Option<(ChunkId, Bytes)> = None;
    for e in &manifest.entries {
        if let EntryKind::File { chunks, .. } = &e.kind {
            for id in chunks {
                let data = match &last {
                    Some((l, data)) if l == id => data.clone(),
                    _ => {
                        let data = store.get_chunk(*id).await?;
                        last = Some((*id, data.clone()));
                        data
                    }
                };
                if tx.send(data).await.is_err() {
                    return Ok(()); // The writer stopped; its error is the one to report.
                }
            }
        }
    }
    Ok(())
}

fn write_tree(m: &Manifest, dest: &Path, rx: mpsc::Receiver<Bytes>) -> Result<(), StoreError> {
    let created = prepare_dest(dest)?;
    let res = write_entries(m, dest, rx);
    if res.is_err() && created {
        let _ = fs::remove_dir_all(dest);
    }
    res
}

/// Checks or creates `dest`; true when it was created.
fn prepare_dest(dest: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            if fs::read_dir(dest).map_err(|e| at(dest, e))?.next().is_some() {
                return Err(StoreError::Invalid(format!(
                    "cannot materialize into '{}': it is not empty; give a new or empty directory",
                    dest.display()
                )));
            }
            Ok(false)
        }
        Ok(_) => Err(StoreError::Invalid(format!(
            "cannot materialize into '{}': it exists and is not a directory",
            dest.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|e| at(dest, e))?;
            Ok(true)
        }
        Err(e) => Err(at(dest, e).into()),
    }
}

fn write_entries(m: &Manifest, dest: &Path, mut rx: mpsc::Receiver<Bytes>) -> Result<(), StoreError> {
    // The chunk checked last: a run of one chunk (zeros) is hashed once.
    let mut verified: Option<ChunkId> = None;
    let mut links: Vec<(PathBuf, &str)> = Vec::new();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for e in &m.entries {
        let path = dest.join(&e.path);
        match &e.kind {
            EntryKind::Dir { mode } => {
                mkdirs(&path)?;
                dirs.push((path, *mode));
            }
            EntryKind::File { mode, size, chunks } => {
                mkdirs(path.parent().expect("entries lie under dest"))?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| at(&path, e))?;
                let mut written = 0u64;
                for want in chunks {
                    let Some(data) = rx.blocking_recv() else {
                        return Err(io::Error::other("the chunk feed stopped early").into());
                    };
                    if verified != Some(*want) {
                        check_chunk(*want, &data)?;
                        verified = Some(*want);
                    }
                    // Zeros become a hole: a sparse file stays sparse.
                    if is_zeros(&data) {
                        f.seek(SeekFrom::Current(data.len() as i64)).map_err(|e| at(&path, e))?;
                    } else {
                        f.write_all(&data).map_err(|e| at(&path, e))?;
                    }
                    written += data.len() as u64;
                }
                // A file that ends in a hole gets its length.
                f.set_len(written).map_err(|e| at(&path, e))?;
                if written != *size {
                    return Err(StoreError::Invalid(format!(
                        "manifest entry '{}' says {size} bytes but its chunks hold {written}",
                        e.path
                    )));
                }
                f.set_permissions(fs::Permissions::from_mode(mode & 0o777)).map_err(|e| at(&path, e))?;
            }
            EntryKind::Symlink { target } => {
                mkdirs(path.parent().expect("entries lie under dest"))?;
                links.push((path, target));
            }
        }
    }
    for (path, target) in links {
        symlink(target, &path).map_err(|e| at(&path, e))?;
    }
    // Deepest first, so a read-only directory is not needed writable again.
    for (path, mode) in dirs.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777)).map_err(|e| at(path, e))?;
    }
    Ok(())
}

/// Are these bytes all zero? Looks at 8 bytes at a time; most data fails
/// at once.
fn is_zeros(data: &[u8]) -> bool {
    let (words, rest) = data.as_chunks::<8>();
    words.iter().all(|w| u64::from_ne_bytes(*w) == 0) && rest.iter().all(|&b| b == 0)
}

fn mkdirs(path: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(path).map_err(|e| at(path, e).into())
}

#[cfg(test)]
mod tests;
