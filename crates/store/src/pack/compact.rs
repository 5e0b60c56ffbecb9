//! Compaction: the live records of packs that hold dead bytes are copied
//! into fresh packs, then the index points at the copies and the old packs
//! are removed.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use podder_core::ChunkId;

use super::format::decode_header;
use super::write::Active;
use super::{Inner, Loc, RECORD_HEADER, lock, read, write};
use crate::at;
use crate::blob::{CompactReport, StoreError};

impl Inner {
    pub(super) fn compact(&self) -> Result<CompactReport, StoreError> {
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
