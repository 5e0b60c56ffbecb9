//! [`PackStore`]: the server's [`BlobStore`]: chunks appended as records to
//! large pack files, found through an index held in memory.
//!
//! Why: a file per chunk costs an inode per chunk. Creating 100,000 of them
//! took the server about 11 s of system time (ext4 allocates inodes slowly
//! after recent deletes), and large uploads paid per-file costs too. Packs
//! turn a chunk write into one `pwritev` at the end of an open file.
//!
//! Layout under the root:
//!
//! - `packs/000001.pack`: records, one after the other. A record is a
//!   [`RECORD_HEADER`]-byte header — [`RECORD_MAGIC`], the chunk id (32
//!   bytes), the stored length and the raw length (u32 LE each), the kind
//!   (0: raw bytes, 1: a zstd frame; `local::compress` decides), 3
//!   zero bytes and the first 4 bytes of the BLAKE3 hash of the 48 before —
//!   followed by the stored bytes;
//! - `packs/000001.idx`: written when a pack is sealed: the pack's length,
//!   then per record its id, offset, stored and raw lengths and kind, then
//!   the BLAKE3 hash of all that. Written to a temp file, flushed, renamed;
//!   the pack itself is flushed first, so an index never names bytes that
//!   are not on disk;
//! - `lock`: held with an exclusive `flock` while the store is open, and
//!   holding the pid of its holder: two servers on one data directory would
//!   append to the same packs;
//! - `manifests/` and, in data directories older than packs, `chunks/` (one
//!   file per chunk): kept by an inner [`LocalStore`] on the same root. Loose
//!   chunks stay readable (and deletable); new chunks always go to packs.
//!
//! **Writes.** A put checks the hash, then (when the index lacks the id)
//! takes a free *active* pack from a pool — or opens a new pack when every
//! active one is busy — appends the whole record with one write at the
//! pack's end, and gives the pack back. Records in one pack are therefore
//! strictly sequential, and only a pack's tail can hold a partial one. The
//! id enters the index only after its bytes are written, so a reader never
//! finds an entry whose bytes are not there. A failed write (disk full, ...)
//! truncates the pack back to where the record started and returns the
//! error unchanged (its kind and OS error number, which the server maps to
//! 507). Concurrent puts of one new id wait for each other, so it is
//! written once. A pack is sealed (index written, never appended to again)
//! once it passes [`PackOptions::seal_bytes`], and when the store is
//! dropped.
//!
//! **Reads.** `has_chunk`, `chunk_size` (the stored length) and
//! `list_chunks` answer from the index; `get_chunk` reads the record at its
//! offset (open pack files are cached), checks its header, decompresses and
//! checks the hash, so damage is reported ([`StoreError::Corrupt`], or an
//! [`io::ErrorKind::InvalidData`] error) instead of served.
//!
//! **Durability**: chunks are not flushed per put (large records are
//! written with `O_DIRECT`, so little is left to flush). Putting a manifest
//! first flushes every pack written to since the last commit, and the packs
//! directory when a pack was created, so the chunks a stored manifest names
//! are on disk. Only these files: flushing the whole file system (`syncfs`,
//! as [`LocalStore`] does) also waits for every other program's writes. A
//! data directory with loose chunks keeps `syncfs`, which reaches those.
//!
//! **Open and recovery.** Every sealed pack's index is loaded (a damaged or
//! missing one: the pack is scanned instead). A pack without an index (the
//! process stopped while it was active) is scanned record by record, each
//! record's hash checked; the scan stops at the first record whose header is
//! damaged or that runs past the end of the file, and what follows is
//! ignored (a record with a good header but damaged bytes is skipped). The
//! pack is then sealed with an index of the good records; recovered packs
//! are never appended to, so nothing is written after a garbage tail.
//!
//! **Deletes and compaction.** A delete only drops the id from the index and
//! counts its record's bytes as dead in its pack (in memory). Deletes not
//! followed by a [`BlobStore::compact`] are lost on restart: the chunks come
//! back, unreferenced, and the next garbage collection finds them again.
//! `compact` copies the live records of every pack that holds dead bytes
//! into fresh packs, seals and flushes those, then points the index at the
//! copies and removes the old packs. A crash in between leaves a chunk in
//! two packs; open keeps either copy and counts the other as dead, so the
//! next compaction removes it. Bytes past a pack's last good record and
//! duplicate copies count as dead at open, too.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use podder_core::{ChunkId, ManifestId};

use crate::blob::{BlobStore, CompactReport, StoreError};
use crate::local::LocalStore;
use crate::{at, blocking};
use load::{has_files, lock_root};
use write::Active;

/// The first bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"pdk1";
/// The length of a record's header; its stored bytes follow.
pub const RECORD_HEADER: usize = 52;
/// The first bytes of a pack's index file.
const IDX_MAGIC: [u8; 8] = *b"pdkidx1\0";
/// An index file: magic, pack length, entry count, entries, checksum.
const IDX_HEAD: usize = 24;
const IDX_ENTRY: usize = 49;
const IDX_SUM: usize = 32;
/// At most this many pack files are kept open for reads.
const OPEN_FILES: usize = 256;
/// Records of at least this many stored bytes are written with `O_DIRECT`
/// (see "Direct writes" above).
const DIRECT_MIN: usize = 64 * 1024;
/// The alignment of direct writes: offsets, lengths and buffers.
const ALIGN: usize = 4096;
/// The kind byte's flag for a record followed by zeros up to a whole number
/// of [`ALIGN`] bytes (header included).
const PADDED: u8 = 0x80;

/// How a [`PackStore`] is set up.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// A pack is sealed once it is this long or longer (tests make it small).
    pub seal_bytes: u64,
    /// How long open waits for the root's lock before saying who holds it:
    /// a server that is restarted may find its predecessor still exiting.
    pub lock_wait: Duration,
}

impl PackOptions {
    pub const DEFAULT_SEAL_BYTES: u64 = 256 << 20;
    pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(3);
}

impl Default for PackOptions {
    fn default() -> PackOptions {
        PackOptions { seal_bytes: PackOptions::DEFAULT_SEAL_BYTES, lock_wait: PackOptions::DEFAULT_LOCK_WAIT }
    }
}

/// How a record's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Raw = 0,
    Zstd = 1,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Raw),
            1 => Some(Kind::Zstd),
            _ => None,
        }
    }
}

/// Where a chunk's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    /// The record's header starts here.
    offset: u64,
    pack: u32,
    stored_len: u32,
    raw_len: u32,
    kind: Kind,
    /// Followed by zeros to a whole number of [`ALIGN`] bytes.
    padded: bool,
}

impl Loc {
    /// The whole record: header, stored bytes and padding.
    fn record_len(&self) -> u64 {
        let len = RECORD_HEADER as u64 + self.stored_len as u64;
        if self.padded { len.next_multiple_of(ALIGN as u64) } else { len }
    }
}

/// Hashes chunk ids by folding their bytes: they are BLAKE3 digests already,
/// so SipHash over them would only cost time.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for word in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..word.len()].copy_from_slice(word);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(b);
        }
    }
}

type IdMap<V> = HashMap<ChunkId, V, BuildHasherDefault<IdHasher>>;

/// What the store knows of a pack besides its records.
#[derive(Debug, Default)]
struct PackMeta {
    /// Bytes of records no entry of the index points at (deleted chunks,
    /// duplicates, a damaged tail): what compaction would reclaim.
    dead: AtomicU64,
    /// Never appended to again (sealed, recovered, or retired after a
    /// failure); only such packs are compacted.
    closed: AtomicBool,
}

/// A content-addressed store of pack files under one directory, for one
/// process (see the module documentation). Cheap to clone; clones share it.
#[derive(Clone)]
pub struct PackStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    packs_dir: PathBuf,
    seal_bytes: u64,
    /// Manifests, and the loose chunks of data directories older than packs.
    loose: LocalStore,
    /// Whether `chunks/` held any loose chunk at open; if not, chunk
    /// look-ups never touch it.
    has_loose: bool,
    index: RwLock<IdMap<Loc>>,
    packs: RwLock<HashMap<u32, Arc<PackMeta>>>,
    /// Open pack files for reads, at most [`OPEN_FILES`].
    files: RwLock<HashMap<u32, Arc<File>>>,
    /// Active packs that no writer holds now.
    pool: Mutex<Vec<Active>>,
    /// The same, for large records, written with `O_DIRECT`.
    direct_pool: Mutex<Vec<Active>>,
    next_pack: AtomicU32,
    /// Ids being written now; a second writer of one waits for the first.
    writing: Mutex<HashSet<ChunkId>>,
    written: Condvar,
    /// One compaction at a time.
    compacting: Mutex<()>,
    /// Packs written to since the last [`Inner::sync_written`], by id.
    unsynced: Mutex<HashMap<u32, Arc<File>>>,
    /// A pack was created since the last [`Inner::sync_written`].
    dir_unsynced: AtomicBool,
    /// One [`Inner::sync_written`] at a time.
    syncing: Mutex<()>,
    /// Holds the `flock` on `root/lock` while the store is open.
    _lock: File,
}

impl std::fmt::Debug for PackStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackStore").field("root", &self.inner.root).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data whole, so a panic elsewhere
    // while one was held does not make it unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn damaged(msg: String) -> StoreError {
    StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, msg))
}

impl PackStore {
    /// Opens (creating if needed) a store rooted at `root`: takes the lock,
    /// loads the pack indexes and recovers packs that were being written.
    pub fn open(root: impl AsRef<Path>) -> Result<PackStore, StoreError> {
        PackStore::open_with(root, PackOptions::default())
    }

    pub fn open_with(root: impl AsRef<Path>, options: PackOptions) -> Result<PackStore, StoreError> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|e| at(&root, e))?;
        let lock = lock_root(&root, options.lock_wait)?;
        let loose = LocalStore::open(&root)?;
        let has_loose = has_files(&root.join("chunks")).map_err(|e| at(&root.join("chunks"), e))?;
        let packs_dir = root.join("packs");
        fs::create_dir_all(&packs_dir).map_err(|e| at(&packs_dir, e))?;
        let inner = Inner {
            root,
            packs_dir,
            seal_bytes: options.seal_bytes.max(1),
            loose,
            has_loose,
            index: RwLock::new(IdMap::default()),
            packs: RwLock::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
            pool: Mutex::new(Vec::new()),
            direct_pool: Mutex::new(Vec::new()),
            next_pack: AtomicU32::new(1),
            writing: Mutex::new(HashSet::new()),
            written: Condvar::new(),
            compacting: Mutex::new(()),
            unsynced: Mutex::new(HashMap::new()),
            dir_unsynced: AtomicBool::new(false),
            syncing: Mutex::new(()),
            _lock: lock,
        };
        inner.load()?;
        Ok(PackStore { inner: Arc::new(inner) })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// [`BlobStore::put_chunk`] for blocking threads.
    pub fn put_chunk_sync(&self, id: ChunkId, data: &[u8]) -> Result<bool, StoreError> {
        self.inner.put(id, data)
    }

    /// [`BlobStore::get_chunk`] for blocking threads.
    pub fn get_chunk_sync(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        self.inner.get(id)
    }

    /// [`BlobStore::has_chunk`] for blocking threads.
    pub fn has_chunk_sync(&self, id: ChunkId) -> Result<bool, StoreError> {
        self.inner.has(id)
    }

    /// [`BlobStore::delete_chunk`] for blocking threads.
    pub fn delete_chunk_sync(&self, id: ChunkId) -> Result<(), StoreError> {
        self.inner.delete(id)
    }

    /// [`BlobStore::list_chunks`] for blocking threads.
    pub fn list_chunks_sync(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.inner.list()
    }

    /// [`BlobStore::compact`] for blocking threads.
    pub fn compact_sync(&self) -> Result<CompactReport, StoreError> {
        self.inner.compact()
    }
}

impl Inner {
    fn pack_path(&self, pack: u32) -> PathBuf {
        self.packs_dir.join(format!("{pack:06}.pack"))
    }

    fn idx_path(&self, pack: u32) -> PathBuf {
        self.packs_dir.join(format!("{pack:06}.idx"))
    }
}

/// The bytes a record of `stored` bytes takes in a pack: large ones are
/// padded to whole blocks (see "Direct writes").
pub fn record_len(stored: usize) -> u64 {
    let len = (RECORD_HEADER + stored) as u64;
    if stored >= DIRECT_MIN { len.next_multiple_of(ALIGN as u64) } else { len }
}

#[async_trait]
impl BlobStore for PackStore {
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError> {
        let s = self.clone();
        blocking(move || s.inner.put(id, &data)).await
    }
    async fn put_hashed(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError> {
        let s = self.clone();
        blocking(move || s.inner.put_unchecked(id, &data)).await
    }
    fn put_copied_blocking(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> ChunkId,
    ) -> Option<Result<(ChunkId, bool), StoreError>> {
        Some(self.inner.put_copied(len, fill))
    }
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, StoreError> {
        let s = self.clone();
        blocking(move || s.inner.get(id).map(Bytes::from)).await
    }
    async fn has_chunk(&self, id: ChunkId) -> Result<bool, StoreError> {
        // The index answers without I/O; only loose chunks need a thread.
        if !self.inner.has_loose {
            return Ok(read(&self.inner.index).contains_key(&id));
        }
        let s = self.clone();
        blocking(move || s.inner.has(id)).await
    }
    async fn delete_chunk(&self, id: ChunkId) -> Result<(), StoreError> {
        let s = self.clone();
        blocking(move || s.inner.delete(id)).await
    }
    async fn list_chunks(&self) -> Result<Vec<ChunkId>, StoreError> {
        let s = self.clone();
        blocking(move || s.inner.list()).await
    }
    async fn put_manifest(&self, id: ManifestId, bytes: Bytes) -> Result<(), StoreError> {
        if self.inner.has_loose {
            // Loose chunks are written unflushed, and only a flush of the
            // whole file system reaches them.
            return self.inner.loose.put_manifest(id, bytes).await;
        }
        let s = self.clone();
        blocking(move || {
            s.inner.sync_written()?;
            s.inner.loose.put_manifest_flushed(id, &bytes)
        })
        .await
    }
    async fn get_manifest(&self, id: ManifestId) -> Result<Bytes, StoreError> {
        self.inner.loose.get_manifest(id).await
    }
    async fn has_manifest(&self, id: ManifestId) -> Result<bool, StoreError> {
        self.inner.loose.has_manifest(id).await
    }
    async fn list_manifests(&self) -> Result<Vec<ManifestId>, StoreError> {
        self.inner.loose.list_manifests().await
    }
    async fn delete_manifest(&self, id: ManifestId) -> Result<(), StoreError> {
        self.inner.loose.delete_manifest(id).await
    }
    async fn chunk_size(&self, id: ChunkId) -> Result<u64, StoreError> {
        if !self.inner.has_loose {
            return self.inner.size(id);
        }
        let s = self.clone();
        blocking(move || s.inner.size(id)).await
    }
    async fn compact(&self) -> Result<CompactReport, StoreError> {
        let s = self.clone();
        blocking(move || s.inner.compact()).await
    }
}

mod compact;
mod format;
mod load;
mod read;
mod write;

#[cfg(test)]
mod tests;
