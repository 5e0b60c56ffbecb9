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

use bytes::Bytes;
use fastcdc::v2020::FastCDC;
use podder_core::ChunkId;

use crate::pool::BufPool;

/// Smallest chunk (except a file's last one) of files under [`LARGE_FILE`].
pub const MIN_SIZE: usize = 64 * 1024;
/// Target average chunk size of files under [`LARGE_FILE`].
pub const AVG_SIZE: usize = 256 * 1024;
/// Largest chunk of files under [`LARGE_FILE`].
pub const MAX_SIZE: usize = 1024 * 1024;

/// Files of this size and more are cut into larger chunks ([`LARGE`]): a
/// quarter as many chunks, so half as many objects to store and requests
/// to make per GiB, and a changed region still costs little beside the
/// file's size (one 1 MiB write into a 256 MiB file sends about 2 MiB).
pub const LARGE_FILE: u64 = 64 * 1024 * 1024;

/// How FastCDC cuts: smallest chunk (except the last), target average,
/// largest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

/// Chunk sizes of files under [`LARGE_FILE`].
pub const SMALL: Sizes = Sizes { min: MIN_SIZE, avg: AVG_SIZE, max: MAX_SIZE };
/// Chunk sizes of files of [`LARGE_FILE`] and more.
pub const LARGE: Sizes = Sizes { min: 256 * 1024, avg: 512 * 1024, max: 2 * 1024 * 1024 };

/// The chunk sizes for a file of `len` bytes.
pub fn sizes_for(len: u64) -> Sizes {
    if len >= LARGE_FILE { LARGE } else { SMALL }
}

/// Files up to this size are read whole; larger ones are streamed.
const READ_WHOLE: u64 = 4 * 1024 * 1024;
/// A streamed input is read this much at a time.
const WINDOW: usize = 8 * 1024 * 1024;

/// A chunk of a file: its id and where its bytes lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub offset: u64,
    pub len: u32,
}

/// Cuts `data` (a whole file) into chunks; empty input gives no chunks.
pub fn chunk_bytes(data: &[u8]) -> Vec<(ChunkId, Range<usize>)> {
    let z = sizes_for(data.len() as u64);
    FastCDC::new(data, z.min, z.avg, z.max)
        .map(|c| {
            let range = c.offset..c.offset + c.length;
            (ChunkId::of(&data[range.clone()]), range)
        })
        .collect()
}

/// The chunk cut at the start of at least `z.max` zero bytes: its length
/// and id. A cut depends only on the `z.max` bytes after a chunk's start,
/// so in a run of zeros (a hole in a sparse file) every chunk that starts
/// a whole `z.max` before the run's end is this one: a hole can be cut
/// without reading it.
pub fn zero_chunk(z: Sizes) -> (usize, ChunkId) {
    let zeros = vec![0u8; z.max];
    let (_, len) = FastCDC::new(&zeros, z.min, z.avg, z.max).cut(0, z.max);
    (len, ChunkId::of(&zeros[..len]))
}

/// Cuts a file into chunks without holding more than about one chunk of it
/// in memory (small files are read whole). An empty file gives no chunks.
pub fn chunk_file(path: &Path) -> io::Result<Vec<ChunkRef>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len <= READ_WHOLE {
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        return Ok(chunk_bytes(&data)
            .into_iter()
            .map(|(id, r)| ChunkRef { id, offset: r.start as u64, len: r.len() as u32 })
            .collect());
    }
    chunk_reader(file, sizes_for(len))
}

/// Cuts everything `reader` yields into chunks of sizes `z`, streaming.
pub fn chunk_reader(reader: impl Read, z: Sizes) -> io::Result<Vec<ChunkRef>> {
    let mut out = Vec::new();
    chunk_stream(reader, z, |r, _| {
        out.push(r);
        Ok(true)
    })?;
    Ok(out)
}

/// Cuts everything `reader` yields into chunks of sizes `z` (as
/// [`chunk_bytes`] would cut it whole, given the file's size), and hands
/// each to `emit` with its bytes, in order; `emit` returning false stops
/// early. The input is read [`WINDOW`] bytes at a time into pooled buffers
/// that the chunks' bytes share (no copy but the one from the kernel), so a
/// caller may keep them, e.g. to send them on.
pub fn chunk_stream(
    mut reader: impl Read,
    z: Sizes,
    mut emit: impl FnMut(ChunkRef, Bytes) -> io::Result<bool>,
) -> io::Result<()> {
    let mut carry = Bytes::new();
    let mut offset = 0u64;
    loop {
        // A new window starts with what the last one could not cut yet.
        let mut buf = Window::take(WINDOW.max(carry.len() + z.max));
        buf.buf[..carry.len()].copy_from_slice(&carry);
        buf.len = carry.len();
        let eof = buf.fill(&mut reader)?;
        if buf.len == 0 {
            return Ok(());
        }
        let window = Bytes::from_owner(buf);
        let cdc = FastCDC::new(&window, z.min, z.avg, z.max);
        let mut pos = 0;
        // A cut is final only with a whole `z.max` (or the end of the input)
        // after the chunk's start: only then is it where cutting the whole
        // input would put it. The rest waits for the next window.
        while pos < window.len() && (eof || window.len() - pos >= z.max) {
            let (_, end) = cdc.cut(pos, window.len() - pos);
            let len = end - pos;
            let r = ChunkRef { id: ChunkId::of(&window[pos..end]), offset, len: len as u32 };
            offset += len as u64;
            let start = std::mem::replace(&mut pos, end);
            if !emit(r, window.slice(start..end))? {
                return Ok(());
            }
        }
        if eof {
            return Ok(());
        }
        carry = window.slice(pos..);
    }
}

/// A window: a buffer, of which the first `len` bytes are the input's. Its
/// buffer is always initialized in full, so reading into it needs no
/// zeroing, and dropped (once every chunk that shares it is), it goes back
/// to a small pool instead of to the allocator: a fresh 8 MiB buffer costs
/// a page fault and a zeroed page per 4 KiB, which showed up as a tenth of
/// a large upload's CPU time.
struct Window {
    buf: Vec<u8>,
    len: usize,
}

/// Window buffers given back, for reuse.
static WINDOWS: BufPool = BufPool::new(48, usize::MAX);

impl Window {
    /// An empty window of at least `size` bytes.
    fn take(size: usize) -> Window {
        let mut buf = WINDOWS.take();
        if buf.len() < size {
            buf.resize(size, 0);
        }
        Window { buf, len: 0 }
    }

    /// Reads until the window is full or the input ends; true at the end.
    fn fill(&mut self, reader: &mut impl Read) -> io::Result<bool> {
        while self.len < self.buf.len() {
            match reader.read(&mut self.buf[self.len..]) {
                Ok(0) => return Ok(true),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        WINDOWS.give(std::mem::take(&mut self.buf));
    }
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
        assert!(chunk_reader(&b""[..], SMALL).unwrap().is_empty());
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
        assert_eq!(chunk_reader(&data[..], SMALL).unwrap(), refs(&data));
    }

    /// Yields its bytes a few at a time, like a pipe.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(100_003);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streaming_across_windows_cuts_as_whole() {
        for len in [WINDOW, 3 * WINDOW + 12_345] {
            let data = random(len);
            let want = refs(&data);
            assert_eq!(chunk_reader(&data[..], SMALL).unwrap(), want, "len {len}");
            let mut got = Vec::new();
            chunk_stream(Trickle(&data), SMALL, |r, bytes| {
                assert_eq!(&bytes[..], &data[r.offset as usize..r.offset as usize + r.len as usize]);
                got.push(r);
                Ok(true)
            })
            .unwrap();
            assert_eq!(got, want, "len {len}");
        }
        // Stopping early stops.
        let data = random(WINDOW);
        let mut n = 0;
        chunk_stream(&data[..], SMALL, |_, _| {
            n += 1;
            Ok(n < 3)
        })
        .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn large_files_get_large_chunks() {
        let data = random(LARGE_FILE as usize + 3 * 1024 * 1024 + 1);
        let chunks = chunk_bytes(&data);
        assert!(chunks.iter().all(|(_, r)| r.len() <= LARGE.max));
        assert!(chunks[..chunks.len() - 1].iter().all(|(_, r)| r.len() >= LARGE.min));
        let mean = data.len() / chunks.len();
        assert!((LARGE.avg / 2..=2 * LARGE.avg).contains(&mean), "mean {mean}");
        // Streamed, as a file of that size is, it is cut the same way.
        assert_eq!(chunk_reader(Trickle(&data), LARGE).unwrap(), refs(&data));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), &data).unwrap();
        assert_eq!(chunk_file(&dir.path().join("big")).unwrap(), refs(&data));
        // Just under the threshold: the small sizes.
        assert_eq!(sizes_for(LARGE_FILE - 1), SMALL);
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
