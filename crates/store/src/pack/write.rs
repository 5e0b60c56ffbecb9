//! Writes: active packs and their pools, appending a record, claims on ids
//! being written, and sealing (when a pack is full and when the store is
//! dropped).

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use podder_core::ChunkId;

use super::format::{encode_header, write_idx};
use super::{ALIGN, DIRECT_MIN, Inner, Kind, Loc, PackMeta, RECORD_HEADER, lock, read, write as write_lock};
use crate::at;
use crate::blob::{StoreError, check_chunk};
use crate::local::compress;

/// A pack being appended to; owned by one writer at a time.
pub(super) struct Active {
    pub(super) id: u32,
    /// Shared with [`Inner::unsynced`] once written to, for the next commit
    /// to flush.
    file: Arc<File>,
    /// Holds only padded records (large ones), so its end stays aligned.
    padded: bool,
    /// Opened with `O_DIRECT` (a padded pack, where the file system allows).
    direct: bool,
    pub(super) end: u64,
    pub(super) meta: Arc<PackMeta>,
    /// Every record written, for the index file at sealing.
    pub(super) entries: Vec<(ChunkId, Loc)>,
}

impl Active {
    /// Writes `parts` at the pack's end, as one record. On failure the pack
    /// is truncated back to where the record started (see
    /// [`Inner::retire_or_reuse`]) by the caller.
    pub(super) fn append(&mut self, parts: &[&[u8]]) -> io::Result<u64> {
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

impl Inner {
    pub(super) fn put(&self, id: ChunkId, data: &[u8]) -> Result<bool, StoreError> {
        check_chunk(id, data)?;
        self.put_unchecked(id, data)
    }

    /// [`Inner::put`] of bytes the caller hashed into `id` itself.
    pub(super) fn put_unchecked(&self, id: ChunkId, data: &[u8]) -> Result<bool, StoreError> {
        let raw_len = raw_len(id, data.len())?;
        if self.stored(id)? {
            return Ok(false);
        }
        let Some(_claim) = self.claim(id) else { return Ok(false) };
        self.write_claimed(id, data, raw_len)
    }

    /// Stores a chunk of `len` bytes that `fill` copies into the record's
    /// own buffer and names (by hashing that copy): the id always names the
    /// bytes written, whatever the source did meanwhile, and large chunks
    /// are copied once instead of twice. Returns the id, and whether the
    /// chunk was new.
    pub(super) fn put_copied(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> ChunkId,
    ) -> Result<(ChunkId, bool), StoreError> {
        if len < DIRECT_MIN {
            let mut data = vec![0; len];
            let id = fill(&mut data);
            return Ok((id, self.put_unchecked(id, &data)?));
        }
        thread_local! {
            static COPY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        COPY.with(|b| {
            let mut b = b.borrow_mut();
            let record = aligned(&mut b, RECORD_HEADER + len);
            let id = fill(&mut record[RECORD_HEADER..RECORD_HEADER + len]);
            let raw_len = raw_len(id, len)?;
            if self.stored(id)? {
                return Ok((id, false));
            }
            let Some(_claim) = self.claim(id) else { return Ok((id, false)) };
            let data = &record[RECORD_HEADER..RECORD_HEADER + len];
            if let Some(zipped) = compress(data)? {
                return Ok((id, self.append_record(id, &zipped, raw_len, Kind::Zstd)?));
            }
            // Raw, and large: the record is written from this buffer as it is.
            let header = encode_header(&id, raw_len, raw_len, Kind::Raw, true);
            record[..RECORD_HEADER].copy_from_slice(&header);
            record[RECORD_HEADER + len..].fill(0);
            let new = self.append_with(id, raw_len, raw_len, Kind::Raw, true, |pack| pack.append(&[record]))?;
            Ok((id, new))
        })
    }

    /// Whether the index (or, in older data directories, a loose file) has `id`.
    fn stored(&self, id: ChunkId) -> Result<bool, StoreError> {
        Ok(read(&self.index).contains_key(&id) || (self.has_loose && self.loose.has_chunk_sync(id)?))
    }

    /// Writes a claimed chunk, compressed where that pays.
    fn write_claimed(&self, id: ChunkId, data: &[u8], raw_len: u32) -> Result<bool, StoreError> {
        match compress(data)? {
            Some(zipped) => self.append_record(id, &zipped, raw_len, Kind::Zstd),
            None => self.append_record(id, data, raw_len, Kind::Raw),
        }
    }

    /// Appends the record of `stored` (padded when large) to an active pack.
    fn append_record(&self, id: ChunkId, stored: &[u8], raw_len: u32, kind: Kind) -> Result<bool, StoreError> {
        let stored_len = stored.len() as u32; // never more than the raw length
        let direct = stored.len() >= DIRECT_MIN;
        let header = encode_header(&id, stored_len, raw_len, kind, direct);
        self.append_with(id, stored_len, raw_len, kind, direct, |pack| match direct {
            true => with_padded_record(&header, stored, |record| pack.append(&[record])),
            false => pack.append(&[&header, stored]),
        })
    }

    /// Takes an active pack, appends a claimed chunk's record with `write`,
    /// and indexes it; returns whether it was new.
    fn append_with(
        &self,
        id: ChunkId,
        stored_len: u32,
        raw_len: u32,
        kind: Kind,
        direct: bool,
        write: impl FnOnce(&mut Active) -> io::Result<u64>,
    ) -> Result<bool, StoreError> {
        let mut pack = self.take_active(direct)?;
        let offset = match write(&mut pack) {
            Ok(offset) => offset,
            Err(e) => {
                let start = pack.end;
                self.retire_or_reuse(pack, start);
                return Err(e.into());
            }
        };
        // Known as unflushed before the index names the chunk: a commit that
        // finds the chunk stored also finds its pack to flush (see `sync_written`).
        lock(&self.unsynced).entry(pack.id).or_insert_with(|| pack.file.clone());
        let loc = Loc { offset, pack: pack.id, stored_len, raw_len, kind, padded: direct };
        pack.entries.push((id, loc));
        let new = {
            let mut index = write_lock(&self.index);
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
    pub(super) fn new_pack(&self, direct: bool) -> io::Result<Active> {
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
        write_lock(&self.packs).insert(id, meta.clone());
        // Its name is not on disk until the directory is flushed.
        self.dir_unsynced.store(true, Ordering::SeqCst);
        Ok(Active { id, file: Arc::new(file), direct: direct_io, end: 0, meta, entries: Vec::new(), padded: direct })
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
    pub(super) fn seal(&self, pack: Active) -> io::Result<()> {
        // Flushed below; a commit meanwhile flushes it too (harmless).
        pack.meta.closed.store(true, Ordering::Relaxed);
        pack.file.sync_data().map_err(|e| at(&self.pack_path(pack.id), e))?;
        write_idx(&self.packs_dir, &self.idx_path(pack.id), &pack.entries, pack.end)
    }

    /// Puts on disk every chunk written so far: flushes the packs written
    /// to since the last call, and the packs directory when a pack was
    /// created. What a manifest commit waits for, instead of flushing the
    /// whole file system (which waits for every other program's writes
    /// too: 1.1 s behind 2 GiB that another program had just written).
    ///
    /// One call at a time: a second caller must not return while the
    /// first still flushes a pack that holds the second's chunks, so it
    /// waits, then flushes what was written since.
    pub(super) fn sync_written(&self) -> io::Result<()> {
        let _one = lock(&self.syncing);
        let files = std::mem::take(&mut *lock(&self.unsynced));
        let dir = self.dir_unsynced.swap(false, Ordering::SeqCst);
        let flushed = files
            .values()
            .try_for_each(|f| f.sync_data())
            .and_then(|()| if dir { File::open(&self.packs_dir)?.sync_all() } else { Ok(()) });
        if flushed.is_err() {
            // Left for the next commit to try again.
            let mut unsynced = lock(&self.unsynced);
            for (id, f) in files {
                unsynced.entry(id).or_insert(f);
            }
            if dir {
                self.dir_unsynced.store(true, Ordering::SeqCst);
            }
        }
        flushed.map_err(|e| at(&self.packs_dir, e))
    }
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

/// Calls `f` with the record of `header` and `stored` padded with zeros to a
/// whole number of [`ALIGN`] bytes, in a buffer aligned for `O_DIRECT` (one
/// per thread, kept: copying into it costs far less than the page cache).
fn with_padded_record<R>(header: &[u8; RECORD_HEADER], stored: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        let record = aligned(&mut b, RECORD_HEADER + stored.len());
        record[..RECORD_HEADER].copy_from_slice(header);
        record[RECORD_HEADER..RECORD_HEADER + stored.len()].copy_from_slice(stored);
        record[RECORD_HEADER + stored.len()..].fill(0);
        f(record)
    })
}

/// `len` bytes rounded up to whole [`ALIGN`] blocks, at an aligned address
/// in `buf` (grown as needed, and kept by its owner for the next record).
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let len = len.next_multiple_of(ALIGN);
    if buf.len() < len + ALIGN {
        buf.resize(len + ALIGN, 0);
    }
    let start = buf.as_ptr().align_offset(ALIGN);
    &mut buf[start..start + len]
}

fn raw_len(id: ChunkId, len: usize) -> Result<u32, StoreError> {
    u32::try_from(len).map_err(|_| StoreError::Invalid(format!("chunk {id} is {len} bytes, more than 4 GiB")))
}

#[cfg(test)]
mod tests;
