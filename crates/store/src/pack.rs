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
//! **Durability** is what [`LocalStore`] gives: chunks are not flushed per
//! put; putting a manifest flushes the whole file system (`syncfs`) first,
//! so the chunks a stored manifest names are on disk.
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
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use podder_core::{ChunkId, Digest, ManifestId};

use crate::blob::{BlobStore, CompactReport, StoreError, check_chunk};
use crate::local::{LocalStore, compress};
use crate::{at, blocking};

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

/// A pack being appended to; owned by one writer at a time.
struct Active {
    id: u32,
    file: File,
    /// Holds only padded records (large ones), so its end stays aligned.
    padded: bool,
    /// Opened with `O_DIRECT` (a padded pack, where the file system allows).
    direct: bool,
    end: u64,
    meta: Arc<PackMeta>,
    /// Every record written, for the index file at sealing.
    entries: Vec<(ChunkId, Loc)>,
}

impl Active {
    /// Writes `parts` at the pack's end, as one record. On failure the pack
    /// is truncated back to where the record started (see
    /// [`Inner::retire_or_reuse`]) by the caller.
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<u64> {
        let offset = self.end;
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        let mut at = offset;
        while !rest.is_empty() {
            match rustix::io::pwritev(&self.file, rest, at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    IoSlice::advance_slices(&mut rest, n);
                    at += n as u64;
                }
                Err(rustix::io::Errno::INTR) => {}
                // The file system takes no direct write of this alignment:
                // write through the page cache from now on.
                Err(rustix::io::Errno::INVAL) if self.direct && at == offset => {
                    let flags = rustix::fs::fcntl_getfl(&self.file)?;
                    rustix::fs::fcntl_setfl(&self.file, flags - rustix::fs::OFlags::DIRECT)?;
                    self.direct = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.end = offset + total;
        Ok(offset)
    }
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

/// Takes the exclusive lock of a store's root, waiting up to `wait`, or
/// says who holds it.
fn lock_root(root: &Path, wait: Duration) -> Result<File, StoreError> {
    use rustix::fs::FlockOperation;
    let path = root.join("lock");
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| at(&path, e))?;
    let deadline = Instant::now() + wait;
    let mut locked = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive);
    while locked == Err(rustix::io::Errno::WOULDBLOCK) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        locked = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive);
    }
    match locked {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            let pid = if pid.trim().is_empty() { "unknown".to_string() } else { pid.trim().to_string() };
            return Err(StoreError::Invalid(format!(
                "the object store {} is in use by another podder server (pid {pid}): stop that server, or give \
                 this one another data directory",
                root.display()
            )));
        }
        Err(e) => return Err(at(&path, e.into()).into()),
    }
    file.set_len(0)
        .and_then(|()| file.write_all_at(std::process::id().to_string().as_bytes(), 0))
        .map_err(|e| at(&path, e))?;
    Ok(file)
}

/// Whether a sharded tree (`dir/ab/<file>`) holds any file.
fn has_files(dir: &Path) -> io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for shard in entries {
        let shard = shard?.path();
        if !shard.is_dir() {
            continue;
        }
        if fs::read_dir(&shard)?.next().is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn encode_header(id: &ChunkId, stored_len: u32, raw_len: u32, kind: Kind, padded: bool) -> [u8; RECORD_HEADER] {
    let mut h = [0u8; RECORD_HEADER];
    h[..4].copy_from_slice(&RECORD_MAGIC);
    h[4..36].copy_from_slice(&id.0.0);
    h[36..40].copy_from_slice(&stored_len.to_le_bytes());
    h[40..44].copy_from_slice(&raw_len.to_le_bytes());
    h[44] = kind as u8 | if padded { PADDED } else { 0 };
    let sum = blake3::hash(&h[..48]);
    h[48..].copy_from_slice(&sum.as_bytes()[..4]);
    h
}

/// A header's id, stored length, raw length, kind and padding; `None` when
/// it is not a whole, undamaged header.
fn decode_header(h: &[u8; RECORD_HEADER]) -> Option<(ChunkId, u32, u32, Kind, bool)> {
    if h[..4] != RECORD_MAGIC || h[45..48] != [0, 0, 0] || blake3::hash(&h[..48]).as_bytes()[..4] != h[48..] {
        return None;
    }
    let id = ChunkId(Digest(h[4..36].try_into().expect("32 bytes")));
    let stored = u32::from_le_bytes(h[36..40].try_into().expect("4 bytes"));
    let raw = u32::from_le_bytes(h[40..44].try_into().expect("4 bytes"));
    Some((id, stored, raw, Kind::from_u8(h[44] & !PADDED)?, h[44] & PADDED != 0))
}

/// The raw bytes of a record's stored bytes, checked against `id`.
fn unpack(id: ChunkId, kind: Kind, stored: Vec<u8>, raw_len: u32) -> Result<Vec<u8>, StoreError> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let data = match kind {
        Kind::Raw => stored,
        Kind::Zstd => DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().expect("set above").decompress(&stored, raw_len as usize)
            })
            .map_err(|e| damaged(format!("chunk {id} is damaged and cannot be decompressed: {e}")))?,
    };
    check_chunk(id, &data)?;
    Ok(data)
}

impl Inner {
    fn pack_path(&self, pack: u32) -> PathBuf {
        self.packs_dir.join(format!("{pack:06}.pack"))
    }

    fn idx_path(&self, pack: u32) -> PathBuf {
        self.packs_dir.join(format!("{pack:06}.idx"))
    }

    // ---- writes ----

    fn put(&self, id: ChunkId, data: &[u8]) -> Result<bool, StoreError> {
        check_chunk(id, data)?;
        let raw_len = u32::try_from(data.len())
            .map_err(|_| StoreError::Invalid(format!("chunk {id} is {} bytes, more than 4 GiB", data.len())))?;
        if read(&self.index).contains_key(&id) || (self.has_loose && self.loose.has_chunk_sync(id)?) {
            return Ok(false);
        }
        let Some(_claim) = self.claim(id) else { return Ok(false) };
        let compressed = compress(data)?;
        let (kind, stored) = match &compressed {
            Some(c) => (Kind::Zstd, c.as_slice()),
            None => (Kind::Raw, data),
        };
        let stored_len = stored.len() as u32; // never more than the raw length
        let direct = stored.len() >= DIRECT_MIN;
        let header = encode_header(&id, stored_len, raw_len, kind, direct);
        let mut pack = self.take_active(direct)?;
        let appended = match direct {
            true => with_padded_record(&header, stored, |record| pack.append(&[record])),
            false => pack.append(&[&header, stored]),
        };
        let offset = match appended {
            Ok(offset) => offset,
            Err(e) => {
                let start = pack.end;
                self.retire_or_reuse(pack, start);
                return Err(e.into());
            }
        };
        let loc = Loc { offset, pack: pack.id, stored_len, raw_len, kind, padded: direct };
        pack.entries.push((id, loc));
        let new = {
            let mut index = write(&self.index);
            match index.entry(id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                    true
                }
                std::collections::hash_map::Entry::Occupied(_) => false,
            }
        };
        if !new {
            pack.meta.dead.fetch_add(loc.record_len(), Ordering::Relaxed);
        }
        self.give_back(pack);
        Ok(new)
    }

    /// Marks `id` as being written by this caller, waiting while another
    /// writer has it; `None` when the chunk turned out to be stored.
    fn claim(&self, id: ChunkId) -> Option<Claim<'_>> {
        let mut writing = lock(&self.writing);
        loop {
            if read(&self.index).contains_key(&id) {
                return None;
            }
            if writing.insert(id) {
                return Some(Claim { inner: self, id });
            }
            writing = self.written.wait(writing).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A free active pack of the kind asked for (direct or not), or a new one.
    fn take_active(&self, direct: bool) -> io::Result<Active> {
        if let Some(pack) = lock(self.pool_of(direct)).pop() {
            return Ok(pack);
        }
        self.new_pack(direct)
    }

    fn pool_of(&self, direct: bool) -> &Mutex<Vec<Active>> {
        if direct { &self.direct_pool } else { &self.pool }
    }

    /// Creates an empty pack, registered (so reads may open it) but in no
    /// pool; `direct`: for padded records, opened with `O_DIRECT` where the
    /// file system allows it.
    fn new_pack(&self, direct: bool) -> io::Result<Active> {
        let id = self.next_pack.fetch_add(1, Ordering::Relaxed);
        let path = self.pack_path(id);
        let open = |flags: rustix::fs::OFlags| {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new().read(true).write(true).create_new(true).custom_flags(flags.bits() as i32).open(&path)
        };
        let (file, direct_io) = match direct {
            true => match open(rustix::fs::OFlags::DIRECT) {
                Ok(f) => (f, true),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    (open(rustix::fs::OFlags::empty())?, false)
                }
                Err(e) => return Err(e),
            },
            false => (open(rustix::fs::OFlags::empty())?, false),
        };
        let meta = Arc::new(PackMeta::default());
        write(&self.packs).insert(id, meta.clone());
        Ok(Active { id, file, direct: direct_io, end: 0, meta, entries: Vec::new(), padded: direct })
    }

    /// After a record was written: the pack goes back to the pool, or is
    /// sealed once it is long enough.
    fn give_back(&self, pack: Active) {
        if pack.end < self.seal_bytes {
            lock(self.pool_of(pack.padded)).push(pack);
            return;
        }
        let id = pack.id;
        if let Err(e) = self.seal(pack) {
            // Its records are written and indexed; the next open scans it.
            tracing::warn!(pack = id, error = %e, "cannot seal a full pack; it is scanned at the next start");
        }
    }

    /// After a failed write: cut the pack back to `start` and reuse it, or,
    /// when even that fails, never write to it again (the next open finds
    /// the partial record at its tail and ignores it).
    fn retire_or_reuse(&self, pack: Active, start: u64) {
        match pack.file.set_len(start) {
            Ok(()) => lock(self.pool_of(pack.padded)).push(pack),
            Err(e) => {
                tracing::warn!(pack = pack.id, error = %e, "cannot cut a failed write off a pack; it is closed");
                pack.meta.closed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Flushes a pack, writes its index (temp file, flush, rename) and
    /// closes it for good. On failure it is closed all the same.
    fn seal(&self, pack: Active) -> io::Result<()> {
        pack.meta.closed.store(true, Ordering::Relaxed);
        pack.file.sync_data().map_err(|e| at(&self.pack_path(pack.id), e))?;
        write_idx(&self.packs_dir, &self.idx_path(pack.id), &pack.entries, pack.end)
    }

    // ---- reads ----

    fn get(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        let mut last: Option<Loc> = None;
        loop {
            let Some(loc) = read(&self.index).get(&id).copied() else {
                return self.get_loose(id);
            };
            match self.read_record(id, loc) {
                // The pack is gone: a compaction moved the record meanwhile.
                Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound && last != Some(loc) => {
                    last = Some(loc);
                }
                other => return other,
            }
        }
    }

    fn get_loose(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        if self.has_loose {
            return self.loose.get_chunk_sync(id);
        }
        Err(StoreError::NotFound(format!("chunk {id}")))
    }

    fn read_record(&self, id: ChunkId, loc: Loc) -> Result<Vec<u8>, StoreError> {
        let file = self.pack_file(loc.pack)?;
        let mut header = [0u8; RECORD_HEADER];
        let mut stored = vec![0u8; loc.stored_len as usize];
        let where_ = || format!("pack {} at offset {}", self.pack_path(loc.pack).display(), loc.offset);
        read_exact_vectored_at(&file, &mut header, &mut stored, loc.offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                damaged(format!("the record of chunk {id} in {} is cut short", where_()))
            } else {
                StoreError::Io(e)
            }
        })?;
        if decode_header(&header) != Some((id, loc.stored_len, loc.raw_len, loc.kind, loc.padded)) {
            return Err(damaged(format!("the record of chunk {id} in {} is damaged", where_())));
        }
        unpack(id, loc.kind, stored, loc.raw_len)
    }

    /// An open pack file for reads (cached).
    fn pack_file(&self, pack: u32) -> io::Result<Arc<File>> {
        if let Some(f) = read(&self.files).get(&pack) {
            return Ok(f.clone());
        }
        let path = self.pack_path(pack);
        let file = Arc::new(File::open(&path).map_err(|e| at(&path, e))?);
        let mut files = write(&self.files);
        // A pack that a compaction removed meanwhile is not cached: its
        // file would hold its disk space for as long as it is open.
        if !read(&self.packs).contains_key(&pack) {
            return Ok(file);
        }
        if files.len() >= OPEN_FILES
            && let Some(victim) = files.keys().copied().find(|k| *k != pack)
        {
            files.remove(&victim);
        }
        Ok(files.entry(pack).or_insert(file).clone())
    }

    fn has(&self, id: ChunkId) -> Result<bool, StoreError> {
        if read(&self.index).contains_key(&id) {
            return Ok(true);
        }
        Ok(self.has_loose && self.loose.has_chunk_sync(id)?)
    }

    fn size(&self, id: ChunkId) -> Result<u64, StoreError> {
        if let Some(loc) = read(&self.index).get(&id) {
            return Ok(loc.stored_len as u64);
        }
        if self.has_loose {
            return self.loose.chunk_size_sync(id);
        }
        Err(StoreError::NotFound(format!("chunk {id}")))
    }

    fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut ids: Vec<ChunkId> = read(&self.index).keys().copied().collect();
        if self.has_loose {
            ids.extend(self.loose.list_chunks_sync()?);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn delete(&self, id: ChunkId) -> Result<(), StoreError> {
        let removed = write(&self.index).remove(&id);
        if let Some(loc) = removed
            && let Some(meta) = read(&self.packs).get(&loc.pack)
        {
            meta.dead.fetch_add(loc.record_len(), Ordering::Relaxed);
        }
        if self.has_loose {
            self.loose.delete_chunk_sync(id)?;
        }
        Ok(())
    }

    // ---- open ----

    /// Loads every pack's index, scanning (and then sealing) packs that
    /// have none or a damaged one.
    fn load(&self) -> Result<(), StoreError> {
        let dir = &self.packs_dir;
        let (mut packs, mut idxs) = (Vec::new(), HashSet::new());
        let mut max = 0;
        for entry in fs::read_dir(dir).map_err(|e| at(dir, e))? {
            let path = entry.map_err(|e| at(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if name.ends_with(".tmp") {
                // An index whose writer died before the rename.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some((stem, ext)) = name.split_once('.') else { continue };
            let Ok(id) = stem.parse::<u32>() else { continue };
            max = max.max(id);
            match ext {
                "pack" => packs.push(id),
                "idx" => {
                    idxs.insert(id);
                }
                _ => {}
            }
        }
        self.next_pack.store(max + 1, Ordering::Relaxed);
        packs.sort_unstable();
        for stray in idxs.iter().filter(|id| packs.binary_search(id).is_err()) {
            // The pack was removed by a compaction that then stopped.
            let _ = fs::remove_file(self.idx_path(*stray));
        }

        let mut index = write(&self.index);
        let mut live: HashMap<u32, u64> = HashMap::new();
        let mut lens: HashMap<u32, u64> = HashMap::new();
        for pack in packs {
            let path = self.pack_path(pack);
            let len = fs::metadata(&path).map_err(|e| at(&path, e))?.len();
            let loaded = if idxs.contains(&pack) {
                match read_idx(&self.idx_path(pack), pack, len) {
                    Ok(entries) => Some(entries),
                    Err(e) => {
                        tracing::warn!(pack = %path.display(), error = %e, "a pack index is damaged; scanning the pack");
                        None
                    }
                }
            } else {
                None
            };
            let entries = match loaded {
                Some(entries) => entries,
                None if len == 0 => {
                    // Made, never written (the first write failed).
                    let _ = fs::remove_file(&path);
                    continue;
                }
                None => self.recover(pack, &path, len)?,
            };
            for (id, loc) in entries {
                if let std::collections::hash_map::Entry::Vacant(v) = index.entry(id) {
                    v.insert(loc);
                    *live.entry(pack).or_default() += loc.record_len();
                }
            }
            lens.insert(pack, len);
        }
        drop(index);
        let mut metas = write(&self.packs);
        for (pack, len) in lens {
            let dead = len.saturating_sub(live.get(&pack).copied().unwrap_or(0));
            let meta = PackMeta { dead: AtomicU64::new(dead), closed: AtomicBool::new(true) };
            metas.insert(pack, Arc::new(meta));
        }
        Ok(())
    }

    /// Scans a pack that has no (good) index, keeps its good records and
    /// seals it with an index of them.
    fn recover(&self, pack: u32, path: &Path, len: u64) -> Result<Vec<(ChunkId, Loc)>, StoreError> {
        let scan = scan_pack(path, pack, len)?;
        if scan.end < len || scan.skipped > 0 {
            tracing::warn!(
                pack = %path.display(),
                records = scan.entries.len(),
                damaged_records = scan.skipped,
                ignored_tail_bytes = len - scan.end,
                "recovered a pack that was being written: damaged records and a partial tail are ignored"
            );
        }
        let file = OpenOptions::new().write(true).open(path).map_err(|e| at(path, e))?;
        file.sync_data().map_err(|e| at(path, e))?;
        write_idx(&self.packs_dir, &self.idx_path(pack), &scan.entries, len)?;
        Ok(scan.entries)
    }

    // ---- compaction ----

    fn compact(&self) -> Result<CompactReport, StoreError> {
        let _one = lock(&self.compacting);
        let mut report = CompactReport::default();
        // Active packs that hold dead records are sealed, so they can be rewritten.
        let to_seal: Vec<Active> = [&self.pool, &self.direct_pool]
            .into_iter()
            .flat_map(|pool| lock(pool).extract_if(.., |p| p.meta.dead.load(Ordering::Relaxed) > 0).collect::<Vec<_>>())
            .collect();
        for pack in to_seal {
            self.seal(pack)?;
        }
        let mut candidates: Vec<u32> = read(&self.packs)
            .iter()
            .filter(|(_, m)| m.closed.load(Ordering::Relaxed) && m.dead.load(Ordering::Relaxed) > 0)
            .map(|(id, _)| *id)
            .collect();
        if candidates.is_empty() {
            return Ok(report);
        }
        candidates.sort_unstable();
        let mut live: HashMap<u32, Vec<(ChunkId, Loc)>> = candidates.iter().map(|p| (*p, Vec::new())).collect();
        for (id, loc) in read(&self.index).iter() {
            if let Some(v) = live.get_mut(&loc.pack) {
                v.push((*id, *loc));
            }
        }

        let mut out: Option<Active> = None;
        let mut done = Done::default();
        let result = (|| -> Result<(), StoreError> {
            for pack in candidates {
                let mut records = live.remove(&pack).unwrap_or_default();
                records.sort_unstable_by_key(|(_, loc)| loc.offset);
                let path = self.pack_path(pack);
                let src = if records.is_empty() { None } else { Some(File::open(&path).map_err(|e| at(&path, e))?) };
                for (id, loc) in records {
                    let src = src.as_ref().expect("opened for its records");
                    let mut record = vec![0u8; loc.record_len() as usize];
                    src.read_exact_at(&mut record, loc.offset).map_err(|e| at(&path, e))?;
                    let header: &[u8; RECORD_HEADER] = record[..RECORD_HEADER].try_into().expect("header");
                    if decode_header(header) != Some((id, loc.stored_len, loc.raw_len, loc.kind, loc.padded)) {
                        // Copying it would not make it readable; dropping it
                        // lets the next upload of the chunk store it again.
                        tracing::error!(chunk = %id, pack = %path.display(), offset = loc.offset,
                            "compaction drops a damaged record");
                        done.moved.push((id, loc, None));
                        continue;
                    }
                    if out.is_none() {
                        out = Some(self.new_pack(false)?);
                    }
                    let dest = out.as_mut().expect("made above");
                    let offset = dest.append(&[&record])?;
                    let new = Loc { offset, pack: dest.id, ..loc };
                    dest.entries.push((id, new));
                    done.moved.push((id, loc, Some(new)));
                }
                done.copied.push(pack);
                if out.as_ref().is_some_and(|o| o.end >= self.seal_bytes) {
                    self.commit(out.take(), &mut done)?;
                }
            }
            self.commit(out.take(), &mut done)
        })();
        if let Err(e) = result {
            // The index never pointed at the unfinished copy: drop it.
            if let Some(unfinished) = out {
                self.discard(unfinished.id);
            }
            return Err(e);
        }
        report.packs_rewritten = done.removed_packs;
        report.packs_written = done.written_packs;
        report.bytes_reclaimed = done.removed_bytes.saturating_sub(done.written_bytes);
        Ok(report)
    }

    /// Seals a compaction's output (the pack and its index flushed), then
    /// points the index at the copies and removes the packs they came from.
    fn commit(&self, out: Option<Active>, done: &mut Done) -> Result<(), StoreError> {
        if let Some(out) = out {
            let (id, written) = (out.id, out.end);
            if let Err(e) = self.seal(out) {
                self.discard(id);
                return Err(e.into());
            }
            done.written_packs += 1;
            done.written_bytes += written;
        }
        {
            let mut index = write(&self.index);
            let packs = read(&self.packs);
            for (id, old, new) in done.moved.drain(..) {
                match (index.get(&id).copied(), new) {
                    (Some(loc), Some(new)) if loc == old => {
                        index.insert(id, new);
                    }
                    (Some(loc), None) if loc == old => {
                        index.remove(&id);
                    }
                    // Deleted (or stored again elsewhere) while it was
                    // copied: the copy is dead.
                    (_, Some(new)) => {
                        if let Some(m) = packs.get(&new.pack) {
                            m.dead.fetch_add(new.record_len(), Ordering::Relaxed);
                        }
                    }
                    (_, None) => {}
                }
            }
        }
        for pack in done.copied.drain(..) {
            write(&self.packs).remove(&pack);
            write(&self.files).remove(&pack);
            let path = self.pack_path(pack);
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            // The pack first: an index without its pack is removed at open,
            // a pack without its index would be scanned.
            match fs::remove_file(&path) {
                Ok(()) => {
                    done.removed_bytes += len;
                    done.removed_packs += 1;
                }
                Err(e) => tracing::warn!(pack = %path.display(), error = %e, "cannot remove a compacted pack"),
            }
            let _ = fs::remove_file(self.idx_path(pack));
        }
        Ok(())
    }

    /// Forgets and removes a pack that nothing in the index points at.
    fn discard(&self, pack: u32) {
        write(&self.packs).remove(&pack);
        let _ = fs::remove_file(self.pack_path(pack));
        let _ = fs::remove_file(self.idx_path(pack));
    }
}

/// A compaction's progress: records copied but not yet in the index, packs
/// copied but not yet removed, and the tallies of the report.
#[derive(Default)]
struct Done {
    /// (id, old place, new place; `None`: a damaged record, dropped).
    moved: Vec<(ChunkId, Loc, Option<Loc>)>,
    copied: Vec<u32>,
    written_packs: u64,
    written_bytes: u64,
    removed_packs: u64,
    removed_bytes: u64,
}

/// Ends a [`Inner::claim`]: the id is no longer being written.
struct Claim<'a> {
    inner: &'a Inner,
    id: ChunkId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.inner.writing).remove(&self.id);
        self.inner.written.notify_all();
    }
}

impl Drop for Inner {
    /// Seals the active packs, so the next open need not scan them.
    fn drop(&mut self) {
        let mut pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        pool.extend(std::mem::take(self.direct_pool.get_mut().unwrap_or_else(|e| e.into_inner())));
        for pack in pool {
            if pack.end == 0 {
                let _ = fs::remove_file(self.pack_path(pack.id));
                continue;
            }
            let id = pack.id;
            if let Err(e) = self.seal(pack) {
                tracing::warn!(pack = id, error = %e, "cannot seal a pack at close; it is scanned at the next start");
            }
        }
    }
}

/// The bytes a record of `stored` bytes takes in a pack: large ones are
/// padded to whole blocks (see "Direct writes").
pub fn record_len(stored: usize) -> u64 {
    let len = (RECORD_HEADER + stored) as u64;
    if stored >= DIRECT_MIN { len.next_multiple_of(ALIGN as u64) } else { len }
}

/// Calls `f` with the record of `header` and `stored` padded with zeros to a
/// whole number of [`ALIGN`] bytes, in a buffer aligned for `O_DIRECT` (one
/// per thread, kept: copying into it costs far less than the page cache).
fn with_padded_record<R>(header: &[u8; RECORD_HEADER], stored: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        let len = (RECORD_HEADER + stored.len()).next_multiple_of(ALIGN);
        if b.len() < len + ALIGN {
            b.resize(len + ALIGN, 0);
        }
        let start = b.as_ptr().align_offset(ALIGN);
        let record = &mut b[start..start + len];
        record[..RECORD_HEADER].copy_from_slice(header);
        record[RECORD_HEADER..RECORD_HEADER + stored.len()].copy_from_slice(stored);
        record[RECORD_HEADER + stored.len()..].fill(0);
        f(record)
    })
}

/// Reads a record's header and stored bytes in (usually) one system call.
fn read_exact_vectored_at(file: &File, header: &mut [u8], data: &mut [u8], offset: u64) -> io::Result<()> {
    let n = loop {
        let mut bufs = [IoSliceMut::new(header), IoSliceMut::new(data)];
        match rustix::io::preadv(file, &mut bufs, offset) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    let h = header.len();
    if n < h {
        file.read_exact_at(&mut header[n..], offset + n as u64)?;
        file.read_exact_at(data, offset + h as u64)?;
    } else if n < h + data.len() {
        file.read_exact_at(&mut data[n - h..], offset + n as u64)?;
    }
    Ok(())
}

/// What a scan of a pack found.
struct Scanned {
    entries: Vec<(ChunkId, Loc)>,
    /// Where the last good record ends: what follows is ignored.
    end: u64,
    /// Records with a good header but damaged bytes, skipped.
    skipped: usize,
}

/// Reads a pack record by record, checking each one's hash, up to the first
/// damaged header or a record that runs past `len`.
fn scan_pack(path: &Path, pack: u32, len: u64) -> Result<Scanned, StoreError> {
    let file = File::open(path).map_err(|e| at(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut out = Scanned { entries: Vec::new(), end: 0, skipped: 0 };
    let mut offset = 0u64;
    while offset + RECORD_HEADER as u64 <= len {
        let mut header = [0u8; RECORD_HEADER];
        r.read_exact(&mut header).map_err(|e| at(path, e))?;
        let Some((id, stored_len, raw_len, kind, padded)) = decode_header(&header) else { break };
        let loc = Loc { offset, pack, stored_len, raw_len, kind, padded };
        let end = offset + loc.record_len();
        if end > len {
            break;
        }
        let mut stored = vec![0u8; stored_len as usize];
        r.read_exact(&mut stored).map_err(|e| at(path, e))?;
        let padding = end - offset - RECORD_HEADER as u64 - stored_len as u64;
        io::copy(&mut (&mut r).take(padding), &mut io::sink()).map_err(|e| at(path, e))?;
        match unpack(id, kind, stored, raw_len) {
            Ok(_) => out.entries.push((id, loc)),
            Err(_) => out.skipped += 1,
        }
        offset = end;
        out.end = end;
    }
    Ok(out)
}

/// Writes a pack's index file: temp file, flush, rename, flush the directory.
fn write_idx(dir: &Path, dest: &Path, entries: &[(ChunkId, Loc)], pack_len: u64) -> io::Result<()> {
    let mut buf = Vec::with_capacity(IDX_HEAD + entries.len() * IDX_ENTRY + IDX_SUM);
    buf.extend_from_slice(&IDX_MAGIC);
    buf.extend_from_slice(&pack_len.to_le_bytes());
    buf.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (id, loc) in entries {
        buf.extend_from_slice(&id.0.0);
        buf.extend_from_slice(&loc.offset.to_le_bytes());
        buf.extend_from_slice(&loc.stored_len.to_le_bytes());
        buf.extend_from_slice(&loc.raw_len.to_le_bytes());
        buf.push(loc.kind as u8 | if loc.padded { PADDED } else { 0 });
    }
    let sum = blake3::hash(&buf);
    buf.extend_from_slice(sum.as_bytes());
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(|e| at(dest, e))
}

/// Reads a pack's index file, checking it whole against its checksum and
/// every entry against the pack's length.
fn read_idx(path: &Path, pack: u32, file_len: u64) -> io::Result<Vec<(ChunkId, Loc)>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    let buf = fs::read(path)?;
    if buf.len() < IDX_HEAD + IDX_SUM || buf[..8] != IDX_MAGIC {
        return Err(bad("not a pack index"));
    }
    let (body, sum) = buf.split_at(buf.len() - IDX_SUM);
    if blake3::hash(body).as_bytes()[..] != *sum {
        return Err(bad("checksum mismatch"));
    }
    let pack_len = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
    if (body.len() - IDX_HEAD) as u64 != count.saturating_mul(IDX_ENTRY as u64) {
        return Err(bad("wrong length"));
    }
    if pack_len > file_len {
        return Err(bad("the pack is shorter than its index says"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for e in body[IDX_HEAD..].chunks_exact(IDX_ENTRY) {
        let id = ChunkId(Digest(e[..32].try_into().expect("32 bytes")));
        let offset = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
        let stored_len = u32::from_le_bytes(e[40..44].try_into().expect("4 bytes"));
        let raw_len = u32::from_le_bytes(e[44..48].try_into().expect("4 bytes"));
        let kind = Kind::from_u8(e[48] & !PADDED).ok_or_else(|| bad("unknown record kind"))?;
        let loc = Loc { offset, pack, stored_len, raw_len, kind, padded: e[48] & PADDED != 0 };
        if offset + loc.record_len() > pack_len {
            return Err(bad("an entry lies past the pack's end"));
        }
        out.push((id, loc));
    }
    Ok(out)
}

#[async_trait]
impl BlobStore for PackStore {
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<bool, StoreError> {
        let s = self.clone();
        blocking(move || s.inner.put(id, &data)).await
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
        self.inner.loose.put_manifest(id, bytes).await
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

#[cfg(test)]
mod tests;
