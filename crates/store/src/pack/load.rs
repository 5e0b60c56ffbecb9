//! Opening a store: the root's lock, loading the pack indexes, and
//! recovering (scanning, then sealing) packs that have no good index.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use podder_core::ChunkId;

use super::format::{decode_header, read_idx, unpack, write_idx};
use super::{Inner, Loc, PackMeta, RECORD_HEADER, write};
use crate::at;
use crate::blob::StoreError;

/// Takes the exclusive lock of a store's root, waiting up to `wait`, or
/// says who holds it.
pub(super) fn lock_root(root: &Path, wait: Duration) -> Result<File, StoreError> {
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
pub(super) fn has_files(dir: &Path) -> io::Result<bool> {
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
impl Inner {
    /// Loads every pack's index, scanning (and then sealing) packs that
    /// have none or a damaged one.
    pub(super) fn load(&self) -> Result<(), StoreError> {
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
