//! The bytes on disk: record headers, a record's stored bytes, and pack
//! index files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use podder_core::{ChunkId, Digest};

use super::{IDX_ENTRY, IDX_HEAD, IDX_MAGIC, IDX_SUM, Kind, Loc, PADDED, RECORD_HEADER, RECORD_MAGIC, damaged};
use crate::at;
use crate::blob::{StoreError, check_chunk};

pub(super) fn encode_header(
    id: &ChunkId,
    stored_len: u32,
    raw_len: u32,
    kind: Kind,
    padded: bool,
) -> [u8; RECORD_HEADER] {
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
pub(super) fn decode_header(h: &[u8; RECORD_HEADER]) -> Option<(ChunkId, u32, u32, Kind, bool)> {
    if h[..4] != RECORD_MAGIC || h[45..48] != [0, 0, 0] || blake3::hash(&h[..48]).as_bytes()[..4] != h[48..] {
        return None;
    }
    let id = ChunkId(Digest(h[4..36].try_into().expect("32 bytes")));
    let stored = u32::from_le_bytes(h[36..40].try_into().expect("4 bytes"));
    let raw = u32::from_le_bytes(h[40..44].try_into().expect("4 bytes"));
    Some((id, stored, raw, Kind::from_u8(h[44] & !PADDED)?, h[44] & PADDED != 0))
}

/// The raw bytes of a record's stored bytes, checked against `id`.
pub(super) fn unpack(id: ChunkId, kind: Kind, stored: Vec<u8>, raw_len: u32) -> Result<Vec<u8>, StoreError> {
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

/// Writes a pack's index file: temp file, flush, rename, flush the directory.
pub(super) fn write_idx(dir: &Path, dest: &Path, entries: &[(ChunkId, Loc)], pack_len: u64) -> io::Result<()> {
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
pub(super) fn read_idx(path: &Path, pack: u32, file_len: u64) -> io::Result<Vec<(ChunkId, Loc)>> {
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
