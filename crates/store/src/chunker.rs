//! Content-defined chunking: cutting bytes and files into chunks (FastCDC,
//! 2020 variant) and naming each by the BLAKE3 hash of its bytes.
//!
//! Cut points depend only on content, so an insertion in the middle of a
//! file changes only the chunks around it, and every client and server cuts
//! the same bytes the same way. Changing the sizes below changes every chunk
//! id, so they are part of the storage format.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;

use fastcdc::v2020::{FastCDC, StreamCDC};
use podder_core::ChunkId;

/// Smallest chunk (except a file's last one).
pub const MIN_SIZE: usize = 64 * 1024;
/// Target average chunk size.
pub const AVG_SIZE: usize = 256 * 1024;
/// Largest chunk.
pub const MAX_SIZE: usize = 1024 * 1024;

/// Files up to this size are read whole; larger ones are streamed.
const READ_WHOLE: u64 = 4 * 1024 * 1024;

/// A chunk of a file: its id and where its bytes lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub offset: u64,
    pub len: u32,
}

/// Cuts `data` into chunks; empty input gives no chunks.
pub fn chunk_bytes(data: &[u8]) -> Vec<(ChunkId, Range<usize>)> {
    FastCDC::new(data, MIN_SIZE, AVG_SIZE, MAX_SIZE)
        .map(|c| {
            let range = c.offset..c.offset + c.length;
            (ChunkId::of(&data[range.clone()]), range)
        })
        .collect()
}

/// Cuts a file into chunks without holding more than about one chunk of it
/// in memory (small files are read whole). An empty file gives no chunks.
pub fn chunk_file(path: &Path) -> io::Result<Vec<ChunkRef>> {
    let mut file = File::open(path)?;
    if file.metadata()?.len() <= READ_WHOLE {
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        return Ok(chunk_bytes(&data)
            .into_iter()
            .map(|(id, r)| ChunkRef { id, offset: r.start as u64, len: r.len() as u32 })
            .collect());
    }
    chunk_reader(file)
}

/// Cuts everything `reader` yields into chunks, streaming.
pub fn chunk_reader(reader: impl Read) -> io::Result<Vec<ChunkRef>> {
    let mut out = Vec::new();
    for chunk in StreamCDC::new(reader, MIN_SIZE, AVG_SIZE, MAX_SIZE) {
        let chunk = chunk?;
        out.push(ChunkRef { id: ChunkId::of(&chunk.data), offset: chunk.offset, len: chunk.length as u32 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn random(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        getrandom::fill(&mut v).unwrap();
        v
    }

    fn refs(data: &[u8]) -> Vec<ChunkRef> {
        chunk_bytes(data)
            .into_iter()
            .map(|(id, r)| ChunkRef { id, offset: r.start as u64, len: r.len() as u32 })
            .collect()
    }

    #[test]
    fn empty_and_small_inputs() {
        assert!(chunk_bytes(b"").is_empty());
        assert!(chunk_reader(&b""[..]).unwrap().is_empty());
        let one = chunk_bytes(b"tiny");
        assert_eq!(one, vec![(ChunkId::of(b"tiny"), 0..4)]);
    }

    #[test]
    fn deterministic_contiguous_and_bounded() {
        let data = random(6 * 1024 * 1024);
        let a = chunk_bytes(&data);
        assert_eq!(a, chunk_bytes(&data));
        let mut next = 0;
        for (i, (id, r)) in a.iter().enumerate() {
            assert_eq!(r.start, next);
            assert!(r.len() <= MAX_SIZE);
            assert!(r.len() >= MIN_SIZE || i == a.len() - 1);
            assert_eq!(*id, ChunkId::of(&data[r.clone()]));
            next = r.end;
        }
        assert_eq!(next, data.len());
        // Streaming cuts exactly where whole-buffer chunking does.
        assert_eq!(chunk_reader(&data[..]).unwrap(), refs(&data));
    }

    #[test]
    fn insertion_changes_only_nearby_chunks() {
        let data = random(10 * 1024 * 1024);
        let mut edited = data.clone();
        let at = data.len() / 2;
        edited.splice(at..at, random(100));
        let before: HashSet<ChunkId> = chunk_bytes(&data).into_iter().map(|(id, _)| id).collect();
        let after: Vec<ChunkId> = chunk_bytes(&edited).into_iter().map(|(id, _)| id).collect();
        let new = after.iter().filter(|id| !before.contains(id)).count();
        assert!(before.len() > 20, "{} chunks", before.len());
        assert!(new <= 3, "{new} of {} chunks changed", after.len());
    }

    #[test]
    fn files_small_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1000, READ_WHOLE as usize + 12_345] {
            let data = random(len);
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            assert_eq!(chunk_file(&path).unwrap(), refs(&data), "len {len}");
        }
        assert!(chunk_file(&dir.path().join("missing")).is_err());
    }
}
