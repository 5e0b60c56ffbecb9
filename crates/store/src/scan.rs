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

use podder_core::{ChunkId, Entry, EntryKind, Manifest};

use crate::chunker::{ChunkRef, chunk_file};
use walk::{FileJob, walk};

/// The per-directory ignore file podder reads besides `.gitignore`.
pub const IGNORE_FILE: &str = ".podderignore";

#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Skip what `.gitignore` (also outside a git repository, and the user's
    /// global git excludes) and `.podderignore` files exclude.
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
    #[error("{}", problems_message(.0))]
    Problems(Vec<String>),
}

fn problems_message(problems: &[String]) -> String {
    let mut s = format!(
        "nothing was uploaded: {} path{} in the tree cannot be stored:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  ");
        s.push_str(p);
    }
    s.push_str(&format!("\nfix them, or exclude them in {IGNORE_FILE} (same syntax as .gitignore)"));
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

/// Walks `root` into a manifest, hashing files on `opts.threads` threads.
pub fn scan_tree(root: &Path, opts: &ScanOptions) -> Result<ScannedTree, ScanError> {
    let root_err = |reason: String| ScanError::Root { path: root.to_path_buf(), reason };
    let canon = fs::canonicalize(root).map_err(|e| root_err(e.to_string()))?;
    if !canon.is_dir() {
        return Err(root_err("it is not a directory".into()));
    }
    let mut walked = walk(&canon, opts.respect_ignore);
    if !walked.problems.is_empty() {
        walked.problems.sort();
        return Err(ScanError::Problems(walked.problems));
    }
    let size: u64 = walked.files.iter().map(|f| f.size).sum();
    if let Some(limit) = opts.max_bytes
        && size > limit
    {
        return Err(ScanError::TooLarge { size, limit });
    }
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let hashed = hash_files(&walked.files, threads);
    let mut sources = HashMap::new();
    let mut problems = Vec::new();
    for (file, result) in walked.files.into_iter().zip(hashed) {
        let refs = match result {
            Ok(refs) => refs,
            Err(e) => {
                problems.push(format!("{}: cannot be read: {e}", file.rel));
                continue;
            }
        };
        for r in &refs {
            sources.entry(r.id).or_insert_with(|| ChunkSource { path: file.abs.clone(), offset: r.offset, len: r.len });
        }
        // The size is what was read, so it always matches the chunks.
        let size = refs.iter().map(|r| u64::from(r.len)).sum();
        let chunks = refs.into_iter().map(|r| r.id).collect();
        walked.entries.push(Entry { path: file.rel, kind: EntryKind::File { mode: file.mode, size, chunks } });
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(ScanError::Problems(problems));
    }
    let manifest = Manifest::new(walked.entries);
    manifest.validate().map_err(|e| ScanError::Problems(vec![e.to_string()]))?;
    Ok(ScannedTree { manifest, sources })
}

/// Reads a chunk's bytes back from its file.
pub fn read_chunk(src: &ChunkSource) -> io::Result<Vec<u8>> {
    let mut f = File::open(&src.path)?;
    f.seek(SeekFrom::Start(src.offset))?;
    let mut buf = vec![0u8; src.len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Chunks every file on `threads` threads, biggest files first; results are
/// in the order of `files`.
fn hash_files(files: &[FileJob], threads: usize) -> Vec<io::Result<Vec<ChunkRef>>> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<io::Result<Vec<ChunkRef>>>> = files.iter().map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, files.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        done.push((i, chunk_file(&files[i].abs)));
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
    results.into_iter().map(|r| r.expect("every file was hashed")).collect()
}

mod walk;

#[cfg(test)]
mod tests;
