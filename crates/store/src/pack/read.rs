//! Reads and look-ups, answered from the index (a record is read from its
//! pack, checked and decompressed), and deletes, which only drop the id from
//! the index.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use podder_core::ChunkId;

use super::format::{decode_header, unpack};
use super::{Inner, Loc, OPEN_FILES, RECORD_HEADER, damaged, read, write};
use crate::at;
use crate::blob::StoreError;

impl Inner {
    pub(super) fn get(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
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

    pub(super) fn has(&self, id: ChunkId) -> Result<bool, StoreError> {
        if read(&self.index).contains_key(&id) {
            return Ok(true);
        }
        Ok(self.has_loose && self.loose.has_chunk_sync(id)?)
    }

    pub(super) fn size(&self, id: ChunkId) -> Result<u64, StoreError> {
        if let Some(loc) = read(&self.index).get(&id) {
            return Ok(loc.stored_len as u64);
        }
        if self.has_loose {
            return self.loose.chunk_size_sync(id);
        }
        Err(StoreError::NotFound(format!("chunk {id}")))
    }

    pub(super) fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut ids: Vec<ChunkId> = read(&self.index).keys().copied().collect();
        if self.has_loose {
            ids.extend(self.loose.list_chunks_sync()?);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    pub(super) fn delete(&self, id: ChunkId) -> Result<(), StoreError> {
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
