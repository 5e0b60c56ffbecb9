//! The stat cache: what a file's chunks were, keyed by what `stat` says
//! about it, so that scanning an unchanged tree again costs a directory walk
//! and no reading or hashing (as git's index does).
//!
//! One cache file per scanned root (see [`cache_file`]), rewritten whole
//! after each scan (temp file, then rename) with the files that scan saw.
//! An entry is trusted only when size, mtime, ctime, inode and device all
//! match and the mtime is older than [`RACY_WINDOW`] before the scan began:
//! a file written in the same clock tick as it was hashed could change
//! again without its mtime moving ("racy git"), so such files are hashed
//! again, and not stored, until they are older.
//!
//! The format is a small binary layout of its own (all integers
//! little-endian), with a BLAKE3 checksum at the end; a file that does not
//! read back exactly (another version, other chunker sizes, another root, a
//! torn write) is ignored, never trusted. This module knows nothing of HTTP
//! or uploads; a cache that cannot be read or written only costs time.
//!
//! ```text
//! magic "PDSTAT01" | min avg max chunk size: u32 x3 | root: u32 len + bytes | count: u64
//! count x [ path: u32 len + bytes | size u64 | mtime_ns i64 | ctime_ns i64 | inode u64 | dev u64
//!           | chunks: u32 n | n x [ id: 32 bytes | len u32 ] ]
//! blake3 of everything before: 32 bytes
//! ```

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podder_core::{ChunkId, Digest};

use crate::chunker::{ChunkRef, LARGE, LARGE_FILE, SMALL};

const MAGIC: &[u8; 8] = b"PDSTAT01";

/// Files modified this close to the start of a scan are not trusted.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What `stat` says about a file, as far as the cache compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub dev: u64,
}

impl FileStat {
    pub fn of(meta: &Metadata) -> FileStat {
        FileStat {
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec()),
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// One remembered file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub stat: FileStat,
    pub chunks: Vec<ChunkRef>,
}

/// The cache of one root, as loaded; [`StatCache::save`] writes a new one.
#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<String, Cached>,
}

/// Where the cache of `root` lives under `dir`: named by the BLAKE3 hash of
/// the canonical root path, so every way of naming the root finds it.
pub fn cache_file(dir: &Path, root: &Path) -> io::Result<PathBuf> {
    let canon = fs::canonicalize(root)?;
    Ok(dir.join(Digest::of(canon.as_os_str().as_encoded_bytes()).to_hex()))
}

/// Nanoseconds since the epoch of `t` (negative before it).
pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

impl StatCache {
    /// Reads the cache at `file` for `root`; empty when it is missing or
    /// does not read back exactly.
    pub fn load(file: &Path, root: &Path) -> StatCache {
        fs::read(file).ok().and_then(|bytes| decode(&bytes, root)).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The chunks of `rel`, when its stat matches and is old enough to trust
    /// (modified before `scan_start_ns` minus the racy window).
    pub fn lookup(&self, rel: &str, stat: &FileStat, scan_start_ns: i64) -> Option<&[ChunkRef]> {
        let c = self.entries.get(rel)?;
        (c.stat == *stat && trusted(stat, scan_start_ns)).then_some(c.chunks.as_slice())
    }

    /// Remembers `rel` unless its mtime is too recent to trust later.
    pub fn insert(&mut self, rel: String, stat: FileStat, chunks: Vec<ChunkRef>, scan_start_ns: i64) {
        if trusted(&stat, scan_start_ns) {
            self.entries.insert(rel, Cached { stat, chunks });
        }
    }

    /// Writes the cache for `root` to `file` atomically (temp file, rename).
    pub fn save(&self, file: &Path, root: &Path) -> io::Result<()> {
        let dir = file.parent().ok_or_else(|| io::Error::other("the stat cache file has no directory"))?;
        fs::create_dir_all(dir)?;
        let bytes = encode(self, root);
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            file.file_name().and_then(|n| n.to_str()).unwrap_or("stat"),
            std::process::id()
        ));
        let res = File::create(&tmp).and_then(|mut f| f.write_all(&bytes)).and_then(|()| fs::rename(&tmp, file));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}

fn trusted(stat: &FileStat, scan_start_ns: i64) -> bool {
    stat.mtime_ns < scan_start_ns.saturating_sub(RACY_WINDOW.as_nanos() as i64)
}

/// How files are cut, recorded in the cache: a cache written with other
/// chunk sizes holds chunks this version would not cut, and is dropped.
fn chunking() -> [u32; 7] {
    let [s, l] = [SMALL, LARGE].map(|z| [z.min, z.avg, z.max].map(|v| v as u32));
    [s[0], s[1], s[2], l[0], l[1], l[2], (LARGE_FILE >> 20) as u32]
}

fn encode(cache: &StatCache, root: &Path) -> Vec<u8> {
    let chunks: usize = cache.entries.values().map(|c| c.chunks.len()).sum();
    let mut out = Vec::with_capacity(64 + cache.entries.len() * 80 + chunks * 36);
    out.extend_from_slice(MAGIC);
    for size in chunking() {
        out.extend_from_slice(&size.to_le_bytes());
    }
    put_bytes(&mut out, root.as_os_str().as_encoded_bytes());
    out.extend_from_slice(&(cache.entries.len() as u64).to_le_bytes());
    // Sorted, so that equal caches are equal files.
    let mut paths: Vec<&String> = cache.entries.keys().collect();
    paths.sort();
    for path in paths {
        let c = &cache.entries[path];
        put_bytes(&mut out, path.as_bytes());
        for v in [c.stat.size, c.stat.mtime_ns as u64, c.stat.ctime_ns as u64, c.stat.inode, c.stat.dev] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(c.chunks.len() as u32).to_le_bytes());
        for r in &c.chunks {
            out.extend_from_slice(&r.id.0.0);
            out.extend_from_slice(&r.len.to_le_bytes());
        }
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// A cursor over the cache bytes; every read fails softly at the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn decode(bytes: &[u8], root: &Path) -> Option<StatCache> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC {
        return None;
    }
    for size in chunking() {
        if r.u32()? != size {
            return None;
        }
    }
    if r.bytes()? != root.as_os_str().as_encoded_bytes() {
        return None;
    }
    let count = r.u64()?;
    let mut entries = HashMap::with_capacity(count.min(10_000_000) as usize);
    for _ in 0..count {
        let path = std::str::from_utf8(r.bytes()?).ok()?.to_string();
        let stat = FileStat {
            size: r.u64()?,
            mtime_ns: r.u64()? as i64,
            ctime_ns: r.u64()? as i64,
            inode: r.u64()?,
            dev: r.u64()?,
        };
        let n = r.u32()? as usize;
        let mut chunks = Vec::with_capacity(n.min(r.0.len() / 36));
        let mut offset = 0u64;
        for _ in 0..n {
            let id = ChunkId(Digest(r.take(32)?.try_into().ok()?));
            let len = r.u32()?;
            chunks.push(ChunkRef { id, offset, len });
            offset += u64::from(len);
        }
        if offset != stat.size {
            return None;
        }
        entries.insert(path, Cached { stat, chunks });
    }
    r.0.is_empty().then_some(StatCache { entries })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64, mtime_ns: i64) -> FileStat {
        FileStat { size, mtime_ns, ctime_ns: mtime_ns, inode: 7, dev: 1 }
    }

    fn refs(lens: &[u32]) -> Vec<ChunkRef> {
        let mut off = 0;
        lens.iter()
            .enumerate()
            .map(|(i, &len)| {
                let r = ChunkRef { id: ChunkId::of(&[i as u8]), offset: off, len };
                off += u64::from(len);
                r
            })
            .collect()
    }

    #[test]
    fn round_trip_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let file = dir.path().join("cache/abc");
        let now = unix_ns(SystemTime::now());
        let old = now - 3_600_000_000_000;
        let mut c = StatCache::default();
        c.insert("a/b.bin".into(), stat(300, old), refs(&[100, 200]), now);
        c.insert("empty".into(), stat(0, old), vec![], now);
        c.insert("données/é".into(), stat(5, old), refs(&[5]), now);
        // Too recent: not stored.
        c.insert("fresh".into(), stat(1, now - 1_000_000_000), refs(&[1]), now);
        assert_eq!(c.len(), 3);
        c.save(&file, &root).unwrap();

        let back = StatCache::load(&file, &root);
        assert_eq!(back.entries, c.entries);
        assert_eq!(back.lookup("a/b.bin", &stat(300, old), now).unwrap(), refs(&[100, 200]).as_slice());
        assert!(back.lookup("a/b.bin", &stat(300, old + 1), now).is_none(), "mtime changed");
        assert!(back.lookup("a/b.bin", &FileStat { inode: 8, ..stat(300, old) }, now).is_none());
        assert!(back.lookup("nope", &stat(300, old), now).is_none());
        // Another root, a torn file, a flipped byte: all ignored.
        assert!(StatCache::load(&file, &dir.path().join("other")).is_empty());
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
        assert!(StatCache::load(&file, &root).is_empty());
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        fs::write(&file, &flipped).unwrap();
        assert!(StatCache::load(&file, &root).is_empty());
        assert!(StatCache::load(&dir.path().join("missing"), &root).is_empty());
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path().join("cache")).unwrap().count(), 1);
    }

    #[test]
    fn cache_file_names_the_canonical_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("r")).unwrap();
        let a = cache_file(Path::new("/c"), &dir.path().join("r")).unwrap();
        let b = cache_file(Path::new("/c"), &dir.path().join("r/../r/.")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.parent().unwrap(), Path::new("/c"));
        assert!(cache_file(Path::new("/c"), &dir.path().join("missing")).is_err());
    }
}
