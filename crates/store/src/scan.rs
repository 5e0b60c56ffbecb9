//! Scanning a local directory into a manifest, on the client side.
//!
//! [`scan_tree`] walks a tree (honoring `.gitignore` and `.podderignore`
//! when asked, never entering `.git`), chunks and hashes its files on several
//! threads, and returns the manifest plus, for every chunk, where its bytes
//! can be read back ([`read_chunk`]) to upload them. Nothing is uploaded
//! here. Every problem in the tree (unreadable files, symlinks leading out of
//! it, special files, non-UTF-8 names) is collected and reported at once.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use podder_core::{ChunkId, Entry, EntryKind, Manifest};

pub use crate::chunker::ChunkRef;
use crate::chunker::{chunk_bytes, chunk_stream, sizes_for};
use crate::ingest::{Ingest, IngestError, Ingested};
use crate::statcache::{StatCache, unix_ns};
use walk::{FileJob, walk};

/// Files larger than this are streamed (and report their chunks as they go);
/// smaller ones are read whole. Must not change where chunks are cut: both
/// ways cut the same bytes the same way.
const STREAM_ABOVE: u64 = 4 * 1024 * 1024;
/// A streamed file tells its observer about its chunks this many at a time.
const REPORT_EVERY: usize = 8;

/// The per-directory ignore file podder reads besides `.gitignore`.
pub const IGNORE_FILE: &str = ".podderignore";

/// The file podder writes into a directory it downloaded into (`clone`,
/// `output --download`) inside a project: with `respect_ignore`, a
/// directory below the root that holds one is left out, and the file
/// itself is never part of a tree.
pub const DOWNLOAD_MARKER: &str = ".podder-download";

#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Skip what `.gitignore` (also outside a git repository, and the user's
    /// global git excludes) and `.podderignore` files exclude, and
    /// directories below the root that podder downloaded into
    /// ([`DOWNLOAD_MARKER`]).
    pub respect_ignore: bool,
    /// Refuse trees whose files total more than this many bytes.
    pub max_bytes: Option<u64>,
    /// Hashing threads; 0 means one per available CPU.
    pub threads: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { respect_ignore: true, max_bytes: None, threads: 0 }
    }
}

/// A scanned tree: its manifest, and where each of its chunks can be read.
#[derive(Clone, Debug)]
pub struct ScannedTree {
    pub manifest: Manifest,
    pub sources: HashMap<ChunkId, ChunkSource>,
    pub stats: ScanStats,
}

/// Where a chunk's bytes lie in a local file.
#[derive(Clone, Debug)]
pub struct ChunkSource {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot scan '{}': {reason}", path.display())]
    Root { path: PathBuf, reason: String },
    #[error(
        "the files to upload total {}, more than the limit of {}: add large files or directories \
         to {IGNORE_FILE} (same syntax as .gitignore), or raise the limit",
        human(*size),
        human(*limit)
    )]
    TooLarge { size: u64, limit: u64 },
    /// Every path that cannot be stored, each with why; `ignore_files`
    /// says whether the scan honoured ignore files (the way out it suggests).
    #[error("{}", problems_message(problems, *ignore_files))]
    Problems { problems: Vec<String>, ignore_files: bool },
    #[error("the scan was stopped before it ended")]
    Stopped,
    /// The server on this machine could not store a file handed to it (see
    /// [`crate::ingest`]).
    #[error("the server could not store {path}: {reason}")]
    Ingest { path: String, reason: String },
}

fn problems_message(problems: &[String], ignore_files: bool) -> String {
    let mut s = format!(
        "nothing was uploaded: {} path{} in the tree cannot be stored:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  ");
        s.push_str(p);
    }
    if ignore_files {
        s.push_str(&format!("\nfix them, or exclude them in {IGNORE_FILE} (same syntax as .gitignore)"));
    } else {
        s.push_str("\nfix or remove them, then run the command again");
    }
    s
}

/// Bytes in a human unit, e.g. `1.5 GiB`.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

/// What a scan did, for reports and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub files: usize,
    /// Files whose chunks came from the stat cache: not opened, not read.
    pub cached_files: usize,
    pub hashed_files: usize,
    pub hashed_bytes: u64,
    /// Why the stat cache could not be written, if it could not (the scan
    /// itself is not affected).
    pub cache_error: Option<String>,
}

/// Watches a scan as it goes, from the scanning threads: lets an upload
/// start before the scan ends, and a progress bar move.
pub trait ScanObserver: Sync {
    /// The walk is done: this many files of this many bytes are next.
    fn walked(&self, _files: usize, _bytes: u64) {}
    /// Some chunks of the file at `path` are known: from the stat cache
    /// (`cached`: all of them, at once; `data` is empty), or as it is hashed
    /// (a large file reports its chunks in several calls, as it is read), with
    /// their bytes in `data`, one per chunk, so that an upload need not read
    /// them again (each shares the buffer its file was read into, so keep
    /// only what will be used soon).
    fn chunks(&self, _path: &Path, _chunks: &[ChunkRef], _data: &[Bytes], _cached: bool) {}
    /// A file was handed to the server on this machine (see [`Self::ingest`]),
    /// which chunked and stored it: its chunks are on the server already.
    fn ingested(&self, _path: &Path, _got: &Ingested) {}
    /// The server has stored `done` bytes of the file at `path` so far (it
    /// says so every few dozen MiB of a large file, before `ingested`).
    fn ingesting(&self, _path: &Path, _done: u64) {}
    /// Where to hand files of [`crate::ingest::MIN_FILE`] bytes and more
    /// instead of hashing them here, if anywhere.
    fn ingest(&self) -> Option<&dyn Ingest> {
        None
    }
    /// A file is done: hashed, or found in the stat cache (`cached`).
    fn file_done(&self, _size: u64, _cached: bool) {}
    /// True stops the scan early (it then fails with [`ScanError::Stopped`]).
    fn stopped(&self) -> bool {
        false
    }
}

/// Observes nothing.
impl ScanObserver for () {}

/// Walks `root` into a manifest, hashing files on `opts.threads` threads.
pub fn scan_tree(root: &Path, opts: &ScanOptions) -> Result<ScannedTree, ScanError> {
    scan_tree_with(root, opts, None, &())
}

/// [`scan_tree`], trusting and then rewriting the stat cache file
/// `stat_cache` when given (see [`crate::statcache`]), and telling `observer`
/// about every file's chunks as they become known.
pub fn scan_tree_with(
    root: &Path,
    opts: &ScanOptions,
    stat_cache: Option<&Path>,
    observer: &dyn ScanObserver,
) -> Result<ScannedTree, ScanError> {
    let start_ns = unix_ns(SystemTime::now());
    let root_err = |reason: String| ScanError::Root { path: root.to_path_buf(), reason };
    let canon = fs::canonicalize(root).map_err(|e| root_err(e.to_string()))?;
    if !canon.is_dir() {
        return Err(root_err("it is not a directory".into()));
    }
    let mut walked = walk(&canon, opts.respect_ignore);
    if !walked.problems.is_empty() {
        walked.problems.sort();
        return Err(ScanError::Problems { problems: walked.problems, ignore_files: opts.respect_ignore });
    }
    let size: u64 = walked.files.iter().map(|f| f.size).sum();
    if let Some(limit) = opts.max_bytes
        && size > limit
    {
        return Err(ScanError::TooLarge { size, limit });
    }
    let old = stat_cache.map(|f| StatCache::load(f, &canon)).unwrap_or_default();
    let mut known: Vec<Option<Vec<ChunkRef>>> =
        walked.files.iter().map(|f| old.lookup(&f.rel, &f.stat, start_ns).map(<[ChunkRef]>::to_vec)).collect();
    // Unreadable files are found before any hashing starts (or any upload).
    let mut problems: Vec<String> = walked
        .files
        .iter()
        .zip(&known)
        .filter(|(_, k)| k.is_none())
        .filter_map(|(f, _)| File::open(&f.abs).err().map(|e| format!("{}: cannot be read: {e}", f.rel)))
        .collect();
    if !problems.is_empty() {
        problems.sort();
        return Err(ScanError::Problems { problems, ignore_files: opts.respect_ignore });
    }
    observer.walked(walked.files.len(), size);
    let mut stats = ScanStats { files: walked.files.len(), ..ScanStats::default() };
    for (f, k) in walked.files.iter().zip(&known) {
        if let Some(refs) = k {
            stats.cached_files += 1;
            observer.chunks(&f.abs, refs, &[], true);
            observer.file_done(f.size, true);
        }
    }
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let todo: Vec<usize> = (0..walked.files.len()).filter(|&i| known[i].is_none()).collect();
    let hashed = hash_files(&walked.files, &todo, threads, observer);
    if observer.stopped() {
        return Err(ScanError::Stopped);
    }
    for (i, result) in todo.into_iter().zip(hashed) {
        let file = &walked.files[i];
        match result {
            Ok(refs) => {
                stats.hashed_files += 1;
                stats.hashed_bytes += refs.iter().map(|r| u64::from(r.len)).sum::<u64>();
                known[i] = Some(refs);
            }
            Err(e) => {
                if let Some(IngestError(reason)) = e.get_ref().and_then(|r| r.downcast_ref::<IngestError>()) {
                    return Err(ScanError::Ingest { path: file.rel.clone(), reason: reason.clone() });
                }
                problems.push(format!("{}: cannot be read: {e}", file.rel))
            }
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(ScanError::Problems { problems, ignore_files: opts.respect_ignore });
    }
    let mut sources = HashMap::new();
    let mut cache = StatCache::default();
    for (file, refs) in walked.files.into_iter().zip(known) {
        let refs = refs.expect("every file was looked up or hashed");
        for r in &refs {
            sources.entry(r.id).or_insert_with(|| ChunkSource { path: file.abs.clone(), offset: r.offset, len: r.len });
        }
        // The size is what was read, so it always matches the chunks.
        let size = refs.iter().map(|r| u64::from(r.len)).sum();
        let chunks = refs.iter().map(|r| r.id).collect();
        if stat_cache.is_some() && size == file.stat.size {
            cache.insert(file.rel.clone(), file.stat, refs, start_ns);
        }
        walked.entries.push(Entry { path: file.rel, kind: EntryKind::File { mode: file.mode, size, chunks } });
    }
    if let Some(f) = stat_cache {
        stats.cache_error = cache.save(f, &canon).err().map(|e| format!("{}: {e}", f.display()));
    }
    let manifest = Manifest::new(walked.entries);
    manifest
        .validate()
        .map_err(|e| ScanError::Problems { problems: vec![e.to_string()], ignore_files: opts.respect_ignore })?;
    Ok(ScannedTree { manifest, sources, stats })
}

/// Reads a chunk's bytes back from its file.
pub fn read_chunk(src: &ChunkSource) -> io::Result<Vec<u8>> {
    let mut f = File::open(&src.path)?;
    f.seek(SeekFrom::Start(src.offset))?;
    let mut buf = vec![0u8; src.len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Chunks the files `todo` (indexes into `files`) on `threads` threads,
/// biggest first; results are in the order of `todo`.
fn hash_files(
    files: &[FileJob],
    todo: &[usize],
    threads: usize,
    observer: &dyn ScanObserver,
) -> Vec<io::Result<Vec<ChunkRef>>> {
    let mut order: Vec<usize> = (0..todo.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[todo[i]].size));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<io::Result<Vec<ChunkRef>>>> = todo.iter().map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, todo.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if observer.stopped() {
                            break;
                        }
                        let file = &files[todo[i]];
                        let res = chunk_observed(file, observer);
                        if let Ok(refs) = &res {
                            observer.file_done(refs.iter().map(|r| u64::from(r.len)).sum(), false);
                        }
                        done.push((i, res));
                    }
                    done
                })
            })
            .collect();
        for w in workers {
            for (i, r) in w.join().expect("a hashing thread panicked") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::Interrupted, "the scan was stopped"))))
        .collect()
}

/// Chunks one file, telling `observer` its chunks as they are cut: a small
/// file at once, a large one every few chunks while it is streamed, or, when
/// the observer has somewhere to hand large files, all at once after the
/// server stored them.
fn chunk_observed(job: &FileJob, observer: &dyn ScanObserver) -> io::Result<Vec<ChunkRef>> {
    let path = job.abs.as_path();
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len >= crate::ingest::MIN_FILE
        && let Some(ingest) = observer.ingest()
        && let Some(got) = ingest.ingest(&file, len, &job.rel, &|done| observer.ingesting(path, done))?
    {
        observer.ingested(path, &got);
        return Ok(got.chunks);
    }
    if len <= STREAM_ABOVE {
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let data = Bytes::from(data);
        let (refs, bytes): (Vec<ChunkRef>, Vec<Bytes>) = chunk_bytes(&data)
            .into_iter()
            .map(|(id, r)| (ChunkRef { id, offset: r.start as u64, len: r.len() as u32 }, data.slice(r)))
            .unzip();
        observer.chunks(path, &refs, &bytes, false);
        return Ok(refs);
    }
    let mut out = Vec::new();
    let mut data = Vec::new();
    let mut reported = 0;
    chunk_stream(file, sizes_for(len), |r, bytes| {
        out.push(r);
        data.push(bytes);
        if out.len() - reported >= REPORT_EVERY {
            observer.chunks(path, &out[reported..], &data, false);
            data.clear();
            reported = out.len();
        }
        Ok(!observer.stopped())
    })?;
    if observer.stopped() {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "the scan was stopped"));
    }
    if reported < out.len() {
        observer.chunks(path, &out[reported..], &data, false);
    }
    Ok(out)
}

mod walk;

#[cfg(test)]
mod tests;
