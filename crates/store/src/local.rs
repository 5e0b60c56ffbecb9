//! [`LocalStore`]: a [`BlobStore`] kept as plain files under one directory.
//!
//! Layout under the root:
//!
//! - `chunks/ab/<hex>`: a chunk, named by the BLAKE3 hex digest of its
//!   uncompressed bytes (`ab` = the first two hex digits): a zstd frame, or,
//!   where compression would not pay (random data: images, video, archives),
//!   [`RAW_MAGIC`] followed by the bytes as they are. The first four bytes
//!   tell which (a zstd frame starts with its own magic number), so chunks
//!   written before raw storage existed read as before;
//! - `manifests/ab/<hex>`: a manifest's canonical JSON bytes, as sent;
//! - objects are written as unnamed files (`O_TMPFILE`) in their shard
//!   directory and linked into place once complete, so a reader never sees a
//!   partial object and a crash or a failed write (disk full, ...) leaves
//!   nothing behind;
//! - `tmp/`: the fallback on file systems without `O_TMPFILE`: a fresh file
//!   here, renamed into place (removed on failure).
//!
//! Reads check the bytes against their id, so a damaged file is reported as
//! [`StoreError::Corrupt`] instead of being served.
//!
//! Durability is paid once per commit, not once per chunk: chunks are written
//! without a flush (an fsync per chunk made uploads of many small files ten
//! times slower), and putting a manifest first flushes the whole filesystem
//! (`syncfs`), then writes and flushes the manifest. So once a manifest is
//! stored, every chunk written before it is on disk too — and the server
//! accepts a manifest only when its chunks are present. A chunk lost to a
//! crash before any commit is simply uploaded again (reads verify hashes).
//! [`LocalStore::with_fsync`] turns all flushing off for caches that can refetch.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use podder_core::{ChunkId, ManifestId};

use crate::blob::{BlobStore, StoreError, check_chunk, check_manifest};
use crate::{at, blocking};

/// zstd level for chunks: fast, and still good on text and code.
const ZSTD_LEVEL: i32 = 1;
/// The first bytes of a chunk file stored uncompressed. A zstd frame starts
/// with `28 b5 2f fd` (and skippable frames with `5? 2a 4d 18`), so the two
/// cannot be confused.
pub const RAW_MAGIC: [u8; 4] = *b"pdr\0";
/// Chunks up to this size are always compressed (probing would cost as much).
const PROBE_ABOVE: usize = 32 * 1024;
/// Bytes of each of the two samples a larger chunk is probed with.
const PROBE_SAMPLE: usize = 8 * 1024;
/// Temp files older than this are leftovers of a crash and removed on open.
const STALE_TMP: Duration = Duration::from_secs(3600);

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Dirs {
    root: PathBuf,
    chunks: PathBuf,
    manifests: PathBuf,
    tmp: PathBuf,
}

/// A content-addressed store in a local directory. Cheap to clone; clones
/// share the directory. Several processes may share one root.
#[derive(Clone, Debug)]
pub struct LocalStore {
    dirs: Arc<Dirs>,
    fsync: bool,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`, and removes
    /// temp files left by writers that died more than an hour ago.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let root = root.as_ref().to_path_buf();
        let dirs = Dirs { chunks: root.join("chunks"), manifests: root.join("manifests"), tmp: root.join("tmp"), root };
        for d in [&dirs.chunks, &dirs.manifests, &dirs.tmp] {
            fs::create_dir_all(d).map_err(|e| at(d, e))?;
        }
        remove_stale_tmp(&dirs.tmp);
        Ok(LocalStore { dirs: Arc::new(dirs), fsync: true })
    }

    /// Whether writes are flushed to disk before they return (default on).
    /// Turn it off only where losing recent writes in a crash is harmless.
    pub fn with_fsync(mut self, on: bool) -> LocalStore {
        self.fsync = on;
        self
    }

    pub fn root(&self) -> &Path {
        &self.dirs.root
    }

    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        shard_path(&self.dirs.chunks, &id.to_hex())
    }

    fn manifest_path(&self, id: &ManifestId) -> PathBuf {
        shard_path(&self.dirs.manifests, &id.to_hex())
    }

    /// [`BlobStore::put_chunk`] for blocking threads: checks the hash,
    /// compresses and writes atomically. False when the chunk was present.
    pub fn put_chunk_sync(&self, id: ChunkId, data: &[u8]) -> Result<bool, StoreError> {
        check_chunk(id, data)?;
        let path = self.chunk_path(&id);
        if exists(&path)? {
            return Ok(false);
        }
        match compress(data)? {
            Some(compressed) => self.write_atomic(&path, &[&compressed], false)?,
            None => self.write_atomic(&path, &[&RAW_MAGIC, data], false)?,
        }
        Ok(true)
    }

    /// [`BlobStore::get_chunk`] for blocking threads: the uncompressed bytes,
    /// checked against `id`.
    pub fn get_chunk_sync(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        let path = self.chunk_path(&id);
        let mut raw = read_object(&path, || format!("chunk {id}"))?;
        if raw.starts_with(&RAW_MAGIC) {
            raw.drain(..RAW_MAGIC.len());
            check_chunk(id, &raw)?;
            return Ok(raw);
        }
        let data = zstd::stream::decode_all(&raw[..]).map_err(|e| {
            let msg = format!("chunk {id} at {} is damaged and cannot be decompressed: {e}", path.display());
            io::Error::new(io::ErrorKind::InvalidData, msg)
        })?;
        check_chunk(id, &data)?;
        Ok(data)
    }

    /// [`BlobStore::has_chunk`] for blocking threads.
    pub fn has_chunk_sync(&self, id: ChunkId) -> Result<bool, StoreError> {
        exists(&self.chunk_path(&id))
    }

    pub(crate) fn delete_chunk_sync(&self, id: ChunkId) -> Result<(), StoreError> {
        remove(&self.chunk_path(&id))
    }

    pub(crate) fn list_chunks_sync(&self) -> Result<Vec<ChunkId>, StoreError> {
        list_ids(&self.dirs.chunks)
    }

    pub(crate) fn chunk_size_sync(&self, id: ChunkId) -> Result<u64, StoreError> {
        let path = self.chunk_path(&id);
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(format!("chunk {id}"))),
            Err(e) => Err(at(&path, e).into()),
        }
    }

    fn put_manifest_sync(&self, id: ManifestId, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_manifest_after(id, bytes, self.fsync)
    }

    /// Writes a manifest (flushed) without flushing the file system first:
    /// for a caller that has put its chunks on disk itself.
    pub(crate) fn put_manifest_flushed(&self, id: ManifestId, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_manifest_after(id, bytes, false)
    }

    /// Writes a manifest that is not stored yet, after flushing the whole
    /// file system (`syncfs`, so every chunk written before it is on disk)
    /// when `flush_fs`.
    fn put_manifest_after(&self, id: ManifestId, bytes: &[u8], flush_fs: bool) -> Result<(), StoreError> {
        check_manifest(id, bytes)?;
        let path = self.manifest_path(&id);
        if !exists(&path)? {
            if flush_fs {
                let root = File::open(&self.dirs.tmp).map_err(|e| at(&self.dirs.tmp, e))?;
                rustix::fs::syncfs(&root).map_err(|e| at(&self.dirs.tmp, e.into()))?;
            }
            self.write_atomic(&path, &[bytes], self.fsync)?;
        }
        Ok(())
    }

    fn delete_manifest_sync(&self, id: ManifestId) -> Result<(), StoreError> {
        remove(&self.manifest_path(&id))
    }

    fn get_manifest_sync(&self, id: ManifestId) -> Result<Vec<u8>, StoreError> {
        let bytes = read_object(&self.manifest_path(&id), || format!("manifest {id}"))?;
        check_manifest(id, &bytes)?;
        Ok(bytes)
    }

    /// Writes `parts` (one after the other) to a fresh temp file and renames
    /// it to `dest`. On any error the temp file is removed and `dest` is
    /// untouched.
    fn write_atomic(&self, dest: &Path, parts: &[&[u8]], flush: bool) -> io::Result<()> {
        let parent = dest.parent().expect("objects live in a shard directory");
        // The shard directory is made when the first write into it finds it
        // missing, not checked before every write.
        let mut written = write_unnamed(parent, dest, parts, flush);
        if matches!(&written, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            fs::create_dir_all(parent).map_err(|e| at(parent, e))?;
            written = write_unnamed(parent, dest, parts, flush);
        }
        match written {
            Err(e) if unnamed_unsupported(&e) => {}
            Err(e) if e.raw_os_error().is_some() => return Err(at(parent, e)),
            other => return other,
        }
        fs::create_dir_all(parent).map_err(|e| at(parent, e))?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let salt = getrandom::u64().unwrap_or(0);
        let tmp = TmpFile(self.dirs.tmp.join(format!("{}.{n}.{salt:016x}", std::process::id())));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp.0).map_err(|e| at(&tmp.0, e))?;
        write_parts(&mut f, parts).map_err(|e| at(&tmp.0, e))?;
        if flush {
            f.sync_data().map_err(|e| at(&tmp.0, e))?;
        }
        drop(f);
        fs::rename(&tmp.0, dest).map_err(|e| at(dest, e))?;
        std::mem::forget(tmp);
        if flush {
            File::open(parent).and_then(|d| d.sync_all()).map_err(|e| at(parent, e))?;
        }
        Ok(())
    }
}

/// The file system cannot make unnamed files: fall back to `tmp/` + rename.
fn unnamed_unsupported(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL].iter().any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// Writes an unnamed file in `dir` (`O_TMPFILE`) and links it at `dest`:
/// nothing is visible until the link, and a crash leaves nothing behind. It
/// also avoids every writer contending on one shared temp directory. An
/// existing `dest` (the same content, stored by someone else) is success.
fn write_unnamed(dir: &Path, dest: &Path, parts: &[&[u8]], flush: bool) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags};
    let fd = rustix::fs::open(dir, OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC, Mode::from_bits_truncate(0o644))
        .map_err(io::Error::from)?;
    let mut f = File::from(fd);
    write_parts(&mut f, parts).map_err(|e| at(dir, e))?;
    if flush {
        f.sync_data().map_err(|e| at(dir, e))?;
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
    match rustix::fs::linkat(CWD, proc_path.as_str(), CWD, dest, AtFlags::SYMLINK_FOLLOW) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(at(dest, e.into())),
    }
    if flush {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| at(dir, e))?;
    }
    Ok(())
}

/// Writes every part, in order, with as few system calls as the kernel
/// allows (one, usually).
fn write_parts(f: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The compressed form of a chunk, or `None` when it is better stored as it
/// is. Compressing random bytes costs as much as writing them and saves
/// nothing, so a larger chunk is first probed: two small samples (start and
/// middle) are compressed, and only if they shrink is the whole chunk. A
/// result that is not at least 1/32 smaller is not kept either. Shared by
/// both disk backends ([`crate::pack`] stores what it returns in its records).
pub(crate) fn compress(data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    // One compression context per thread: creating one per chunk showed up
    // in profiles of large uploads.
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
        }
        let c = c.as_mut().expect("set above");
        if data.len() > PROBE_ABOVE {
            let mid = data.len() / 2;
            let mut probed = 0;
            for sample in [&data[..PROBE_SAMPLE], &data[mid..mid + PROBE_SAMPLE]] {
                probed += c.compress(sample)?.len();
            }
            if probed + probed / 16 >= 2 * PROBE_SAMPLE {
                return Ok(None);
            }
        }
        let compressed = c.compress(data)?;
        Ok((compressed.len() < data.len() - data.len() / 32).then_some(compressed))
    })
}

/// A temp file that is removed when dropped (i.e. unless the write succeeded
/// and it was renamed away and forgotten).
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn shard_path(base: &Path, hex: &str) -> PathBuf {
    base.join(&hex[..2]).join(hex)
}

fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(at(path, e).into()),
    }
}

fn read_object(path: &Path, what: impl FnOnce() -> String) -> Result<Vec<u8>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(what())),
        Err(e) => Err(at(path, e).into()),
    }
}

/// Removes an object file; an absent one is fine.
fn remove(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(path, e).into()),
        _ => Ok(()),
    }
}

/// The ids of the objects in a sharded tree (`base/ab/<hex>`), sorted.
/// Anything not named by a digest (a stray file) is not an object.
fn list_ids<T: std::str::FromStr + Ord>(base: &Path) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for shard in read_dir(base)? {
        if !shard.is_dir() {
            continue;
        }
        for file in read_dir(&shard)? {
            if let Some(id) = file.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()) {
                out.push(id);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| at(dir, e))? {
        out.push(entry.map_err(|e| at(dir, e))?.path());
    }
    Ok(out)
}

fn remove_stale_tmp(tmp: &Path) {
    let Ok(entries) = read_dir(tmp) else { return };
    let now = SystemTime::now();
    for path in entries {
        let old = fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TMP);
        if old {
            let _ = fs::remove_file(&path);
        }
    }
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError> {
        let s = self.clone();
        blocking(move || s.put_chunk_sync(id, &data)).await
    }
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, StoreError> {
        let s = self.clone();
        blocking(move || s.get_chunk_sync(id).map(Bytes::from)).await
    }
    async fn has_chunk(&self, id: ChunkId) -> Result<bool, StoreError> {
        let s = self.clone();
        blocking(move || s.has_chunk_sync(id)).await
    }
    async fn delete_chunk(&self, id: ChunkId) -> Result<(), StoreError> {
        let s = self.clone();
        blocking(move || s.delete_chunk_sync(id)).await
    }
    async fn list_chunks(&self) -> Result<Vec<ChunkId>, StoreError> {
        let s = self.clone();
        blocking(move || s.list_chunks_sync()).await
    }
    async fn put_manifest(&self, id: ManifestId, bytes: Bytes) -> Result<(), StoreError> {
        let s = self.clone();
        blocking(move || s.put_manifest_sync(id, &bytes)).await
    }
    async fn get_manifest(&self, id: ManifestId) -> Result<Bytes, StoreError> {
        let s = self.clone();
        blocking(move || s.get_manifest_sync(id).map(Bytes::from)).await
    }
    async fn has_manifest(&self, id: ManifestId) -> Result<bool, StoreError> {
        let s = self.clone();
        blocking(move || exists(&s.manifest_path(&id))).await
    }
    async fn list_manifests(&self) -> Result<Vec<ManifestId>, StoreError> {
        let s = self.clone();
        blocking(move || list_ids(&s.dirs.manifests)).await
    }
    async fn delete_manifest(&self, id: ManifestId) -> Result<(), StoreError> {
        let s = self.clone();
        blocking(move || s.delete_manifest_sync(id)).await
    }
    async fn chunk_size(&self, id: ChunkId) -> Result<u64, StoreError> {
        let s = self.clone();
        blocking(move || s.chunk_size_sync(id)).await
    }
}

#[cfg(test)]
mod tests;
