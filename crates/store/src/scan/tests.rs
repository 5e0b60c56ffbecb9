//! Tests of tree scanning: ignore files, entry kinds, modes, names, problem
//! reports and size limits.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};

use super::*;

fn put(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

fn paths(tree: &ScannedTree) -> Vec<&str> {
    tree.manifest.entries.iter().map(|e| e.path.as_str()).collect()
}

fn opts(respect_ignore: bool) -> ScanOptions {
    ScanOptions { respect_ignore, max_bytes: None, threads: 3 }
}

fn problems(err: ScanError) -> String {
    assert!(matches!(err, ScanError::Problems { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("nothing was uploaded"), "{msg}");
    msg
}

#[test]
fn ignore_files_hidden_files_and_git() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    put(r, ".gitignore", b"*.log\nbuild/\n", 0o644);
    put(r, ".podderignore", b"data/\n", 0o644);
    put(r, ".env", b"X=1", 0o600);
    put(r, "src/main.py", b"print(1)", 0o644);
    put(r, "src/x.log", b"log", 0o644);
    put(r, "src/.gitignore", b"gen.py\n", 0o644);
    put(r, "src/gen.py", b"", 0o644);
    put(r, "build/out.o", b"obj", 0o644);
    put(r, "data/big.bin", b"big", 0o644);
    put(r, ".git/HEAD", b"ref", 0o644);
    put(r, "sub/.git", b"gitdir: ../.git/modules/sub", 0o644);

    let tree = scan_tree(r, &opts(true)).unwrap();
    let want = [".env", ".gitignore", ".podderignore", "src", "src/.gitignore", "src/main.py", "sub"];
    assert_eq!(paths(&tree), want);
    let env = &tree.manifest.entries[0];
    assert!(matches!(env.kind, EntryKind::File { mode: 0o600, size: 3, .. }), "{env:?}");

    let all = scan_tree(r, &opts(false)).unwrap();
    let p = paths(&all);
    for want in ["build/out.o", "data/big.bin", "src/x.log", "src/gen.py"] {
        assert!(p.contains(&want), "{want} missing from {p:?}");
    }
    assert!(!p.iter().any(|p| p.starts_with(".git") && *p != ".gitignore" || p.ends_with("/.git")), "{p:?}");
}

#[test]
fn directories_podder_downloaded_into_are_left_out_of_code() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    put(r, "train.py", b"print(1)", 0o644);
    put(r, "snapshot/train.py", b"print(0)", 0o644);
    put(r, &format!("snapshot/{DOWNLOAD_MARKER}"), b"", 0o644);
    put(r, "out/model.bin", b"weights", 0o644);
    put(r, &format!("out/{DOWNLOAD_MARKER}"), b"", 0o644);
    put(r, "mine/.podder-download/x", b"a directory of that name is the user's", 0o644);
    let tree = scan_tree(r, &opts(true)).unwrap();
    assert_eq!(paths(&tree), ["mine", "mine/.podder-download", "mine/.podder-download/x", "train.py"]);
    // A data upload (no ignore rules) takes them, but never the marker.
    let all = scan_tree(r, &opts(false)).unwrap();
    assert!(paths(&all).contains(&"out/model.bin"));
    assert!(!paths(&all).iter().any(|p| p.ends_with(DOWNLOAD_MARKER) && !p.starts_with("mine")), "{:?}", paths(&all));
    // Scanned from inside a downloaded directory, its own files are kept.
    let inner = scan_tree(&r.join("snapshot"), &opts(true)).unwrap();
    assert_eq!(paths(&inner), ["train.py"]);
}

#[test]
fn dirs_modes_names_symlinks_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    fs::create_dir_all(r.join("empty")).unwrap();
    fs::create_dir_all(r.join("a/b/deep")).unwrap();
    put(r, "run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    put(r, "données/é.txt", "bonjour".as_bytes(), 0o644);
    let mut big = vec![0u8; 5 * 1024 * 1024 + 7];
    getrandom::fill(&mut big).unwrap();
    put(r, "big.bin", &big, 0o640);
    put(r, "copy.bin", &big, 0o644);
    put(r, "empty.txt", b"", 0o644);
    symlink("run.sh", r.join("latest")).unwrap();
    symlink("../../run.sh", r.join("a/b/up")).unwrap();
    symlink("missing", r.join("dangling")).unwrap();

    let tree = scan_tree(r, &ScanOptions::default()).unwrap();
    let m = &tree.manifest;
    m.validate().unwrap();
    let want = [
        "a",
        "a/b",
        "a/b/deep",
        "a/b/up",
        "big.bin",
        "copy.bin",
        "dangling",
        "données",
        "données/é.txt",
        "empty",
        "empty.txt",
        "latest",
        "run.sh",
    ];
    assert_eq!(paths(&tree), want);
    let kind = |p: &str| m.entries.iter().find(|e| e.path == p).unwrap().kind.clone();
    assert!(matches!(kind("run.sh"), EntryKind::File { mode: 0o755, size: 18, .. }));
    assert!(matches!(kind("big.bin"), EntryKind::File { mode: 0o640, .. }));
    assert!(matches!(kind("empty.txt"), EntryKind::File { size: 0, ref chunks, .. } if chunks.is_empty()));
    assert!(matches!(kind("empty"), EntryKind::Dir { .. }));
    assert_eq!(kind("a/b/up"), EntryKind::Symlink { target: "../../run.sh".into() });
    assert_eq!(m.total_size(), 2 * big.len() as u64 + 18 + 7);

    // Identical files share chunks; every chunk can be read back.
    assert_eq!(kind("big.bin").clone_chunks(), kind("copy.bin").clone_chunks());
    assert_eq!(tree.sources.len(), m.chunk_ids().len());
    for (id, src) in &tree.sources {
        assert_eq!(ChunkId::of(&read_chunk(src).unwrap()), *id);
    }
}

trait Chunks {
    fn clone_chunks(&self) -> Vec<ChunkId>;
}
impl Chunks for EntryKind {
    fn clone_chunks(&self) -> Vec<ChunkId> {
        match self {
            EntryKind::File { chunks, .. } => chunks.clone(),
            _ => panic!("not a file"),
        }
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    put(r, "ok.txt", b"fine", 0o644);
    symlink("../outside", r.join("out")).unwrap();
    symlink("/etc/passwd", r.join("abs")).unwrap();
    fs::create_dir(r.join("d")).unwrap();
    symlink("..", r.join("d/up")).unwrap();
    symlink("d/up/..", r.join("sneaky")).unwrap();
    symlink("loop2", r.join("loop1")).unwrap();
    symlink("loop1", r.join("loop2")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(r.join("agent.sock")).unwrap();
    fs::write(r.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"").unwrap();

    let msg = problems(scan_tree(r, &opts(true)).unwrap_err());
    for want in ["out: ", "abs: ", "sneaky: ", "loop1: ", "loop2: ", "agent.sock: is a socket", "bad\u{fffd}name: "] {
        assert!(msg.contains(want), "missing '{want}' in:\n{msg}");
    }
    assert!(!msg.contains("ok.txt"), "{msg}");
    assert!(!msg.contains("\n  d/up:"), "{msg}");
    assert!(!msg.contains(&r.display().to_string()), "absolute paths in:\n{msg}");
}

#[test]
fn unreadable_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    put(r, "secret", b"x", 0o000);
    if File::open(r.join("secret")).is_ok() {
        // Running as root: permissions do not stop reads. A file that
        // vanishes between the walk and hashing is reported the same way.
        let stat = crate::statcache::FileStat { size: 1, mtime_ns: 0, ctime_ns: 0, inode: 0, dev: 0 };
        let job = FileJob { rel: "gone".into(), abs: r.join("gone"), mode: 0o644, size: 1, stat };
        let res = hash_files(&[job], &[0], 2, &());
        assert!(res[0].is_err());
        return;
    }
    let msg = problems(scan_tree(r, &opts(true)).unwrap_err());
    assert!(msg.contains("secret: cannot be read"), "{msg}");
}

#[test]
fn size_limit_and_bad_roots() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "a", &[1u8; 2000], 0o644);
    put(dir.path(), "b", &[2u8; 2000], 0o644);
    let opts = ScanOptions { max_bytes: Some(3000), ..ScanOptions::default() };
    let err = scan_tree(dir.path(), &opts).unwrap_err();
    assert!(matches!(err, ScanError::TooLarge { size: 4000, limit: 3000 }), "{err}");
    assert!(err.to_string().contains(".podderignore"), "{err}");
    let ok = ScanOptions { max_bytes: Some(4000), ..ScanOptions::default() };
    assert_eq!(scan_tree(dir.path(), &ok).unwrap().manifest.file_count(), 2);

    assert!(matches!(scan_tree(&dir.path().join("nope"), &ok), Err(ScanError::Root { .. })));
    assert!(matches!(scan_tree(&dir.path().join("a"), &ok), Err(ScanError::Root { .. })));
    assert_eq!(human(1536), "1.5 KiB");
    assert_eq!(human(12), "12 B");
}

#[test]
fn empty_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = scan_tree(dir.path(), &ScanOptions::default()).unwrap();
    assert!(tree.manifest.entries.is_empty());
    assert!(tree.sources.is_empty());
}

/// Sets a file's mtime `secs_ago` seconds in the past.
fn age(path: &Path, secs_ago: u64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
    File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

fn file_chunks(tree: &ScannedTree, rel: &str) -> Vec<ChunkId> {
    tree.manifest.entries.iter().find(|e| e.path == rel).unwrap().kind.clone_chunks()
}

#[test]
fn stat_cache_skips_unchanged_files_and_rehashes_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("tree");
    let cache = dir.path().join("cache/stat");
    for i in 0..2000 {
        put(&r, &format!("d{}/f{i}.txt", i % 20), format!("file number {i:05}").as_bytes(), 0o644);
    }
    let mut big = vec![0u8; 6 * 1024 * 1024];
    getrandom::fill(&mut big).unwrap();
    put(&r, "big.bin", &big, 0o644);
    for e in fs::read_dir(&r).unwrap().flatten() {
        if e.path().is_dir() {
            fs::read_dir(e.path()).unwrap().flatten().for_each(|f| age(&f.path(), 3600));
        } else {
            age(&e.path(), 3600);
        }
    }

    let first = scan_tree_with(&r, &opts(false), Some(&cache), &()).unwrap();
    assert_eq!((first.stats.files, first.stats.cached_files, first.stats.hashed_files), (2001, 0, 2001));
    assert!(first.stats.cache_error.is_none(), "{:?}", first.stats.cache_error);

    // Unchanged: nothing is opened or read, and the result is the same.
    let second = scan_tree_with(&r, &opts(false), Some(&cache), &()).unwrap();
    assert_eq!((second.stats.cached_files, second.stats.hashed_files, second.stats.hashed_bytes), (2001, 0, 0));
    assert_eq!(second.manifest, first.manifest);
    assert_eq!(second.sources.len(), first.sources.len());
    for (id, src) in &second.sources {
        assert_eq!(ChunkId::of(&read_chunk(src).unwrap()), *id);
    }

    // Same size, new mtime: hashed again. Same size and the old mtime put
    // back: the ctime still moved, so hashed again too.
    let f1 = r.join("d1/f1.txt");
    let f2 = r.join("d2/f2.txt");
    let before = fs::metadata(&f2).unwrap().modified().unwrap();
    fs::write(&f1, b"file number XXXXX").unwrap();
    age(&f1, 1800);
    fs::write(&f2, b"file number YYYYY").unwrap();
    File::options().write(true).open(&f2).unwrap().set_modified(before).unwrap();
    let third = scan_tree_with(&r, &opts(false), Some(&cache), &()).unwrap();
    assert_eq!((third.stats.cached_files, third.stats.hashed_files), (1999, 2));
    assert_eq!(file_chunks(&third, "d1/f1.txt"), vec![ChunkId::of(b"file number XXXXX")]);
    assert_eq!(file_chunks(&third, "d2/f2.txt"), vec![ChunkId::of(b"file number YYYYY")]);

    // A file modified just now is not trusted (nor stored) until it is older.
    fs::write(r.join("d3/f3.txt"), b"file number ZZZZZ").unwrap();
    for _ in 0..2 {
        let t = scan_tree_with(&r, &opts(false), Some(&cache), &()).unwrap();
        assert_eq!((t.stats.cached_files, t.stats.hashed_files), (2000, 1));
        assert_eq!(file_chunks(&t, "d3/f3.txt"), vec![ChunkId::of(b"file number ZZZZZ")]);
    }
    // Without a cache file, everything is hashed, and a removed file drops out.
    fs::remove_file(r.join("d4/f4.txt")).unwrap();
    let t = scan_tree_with(&r, &opts(false), Some(&cache), &()).unwrap();
    assert_eq!((t.stats.files, t.stats.hashed_files), (2000, 1));
    assert_eq!(scan_tree(&r, &opts(false)).unwrap().stats.hashed_files, 2000);
}

#[derive(Default)]
struct Recorder {
    walked: std::sync::Mutex<(usize, u64)>,
    chunks: std::sync::Mutex<Vec<ChunkRef>>,
    done: std::sync::Mutex<(usize, u64)>,
}

impl ScanObserver for Recorder {
    fn walked(&self, files: usize, bytes: u64) {
        *self.walked.lock().unwrap() = (files, bytes);
    }
    fn chunks(&self, _path: &Path, chunks: &[ChunkRef], data: &[bytes::Bytes], cached: bool) {
        // Hashed chunks come with their bytes, cached ones without.
        assert_eq!(data.len(), if cached { 0 } else { chunks.len() });
        for (c, d) in chunks.iter().zip(data) {
            assert_eq!(ChunkId::of(d), c.id);
        }
        self.chunks.lock().unwrap().extend_from_slice(chunks);
    }
    fn file_done(&self, size: u64, _cached: bool) {
        let mut d = self.done.lock().unwrap();
        d.0 += 1;
        d.1 += size;
    }
}

#[test]
fn observer_sees_every_chunk_of_small_and_streamed_files() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let mut big = vec![0u8; 9 * 1024 * 1024 + 3];
    getrandom::fill(&mut big).unwrap();
    put(r, "big.bin", &big, 0o644);
    put(r, "small.txt", b"small", 0o644);
    put(r, "empty", b"", 0o644);
    let rec = Recorder::default();
    let tree = scan_tree_with(r, &opts(false), None, &rec).unwrap();
    assert_eq!(*rec.walked.lock().unwrap(), (3, big.len() as u64 + 5));
    assert_eq!(*rec.done.lock().unwrap(), (3, big.len() as u64 + 5));
    let seen: std::collections::BTreeSet<ChunkId> = rec.chunks.lock().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(seen, tree.manifest.chunk_ids());
    // Streamed and whole-buffer chunking cut the same way.
    let want: Vec<ChunkId> = crate::chunker::chunk_bytes(&big).into_iter().map(|(id, _)| id).collect();
    assert_eq!(file_chunks(&tree, "big.bin"), want);

    struct Stop;
    impl ScanObserver for Stop {
        fn stopped(&self) -> bool {
            true
        }
    }
    assert!(matches!(scan_tree_with(r, &opts(false), None, &Stop), Err(ScanError::Stopped)));
}

/// Takes files as a server on this machine would (cutting them with the
/// same chunker), refuses them, or fails, as told.
struct Handoff {
    mode: &'static str,
    taken: std::sync::Mutex<Vec<String>>,
    ingested: std::sync::Mutex<Vec<ChunkRef>>,
    progress: std::sync::Mutex<Vec<(String, u64)>>,
}

impl Ingest for Handoff {
    fn ingest(&self, file: &File, len: u64, rel: &str, progress: &dyn Fn(u64)) -> io::Result<Option<Ingested>> {
        match self.mode {
            "refuse" => Ok(None),
            "fail" => Err(io::Error::other(IngestError("no space is left on the device".into()))),
            _ => {
                self.taken.lock().unwrap().push(rel.to_string());
                let reader = crate::ingest::PositionalReader::new(file, len);
                let chunks = crate::chunker::chunk_reader(reader, sizes_for(len))?;
                progress(len / 2);
                Ok(Some(Ingested { chunks, new_chunks: 0, new_bytes: 0 }))
            }
        }
    }
}

impl ScanObserver for Handoff {
    fn ingest(&self) -> Option<&dyn Ingest> {
        Some(self)
    }
    fn ingested(&self, _path: &Path, got: &Ingested) {
        self.ingested.lock().unwrap().extend_from_slice(&got.chunks);
    }
    fn ingesting(&self, path: &Path, done: u64) {
        self.progress.lock().unwrap().push((path.file_name().unwrap().to_str().unwrap().to_string(), done));
    }
}

#[test]
fn large_files_are_handed_over_when_the_observer_can() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let mut big = vec![0u8; crate::ingest::MIN_FILE as usize + 1000];
    getrandom::fill(&mut big).unwrap();
    put(r, "d/big.bin", &big, 0o644);
    put(r, "small.txt", &big[..100_000], 0o644);
    let plain = scan_tree(r, &opts(false)).unwrap();
    let handoff =
        |mode| Handoff { mode, taken: Default::default(), ingested: Default::default(), progress: Default::default() };

    let h = handoff("take");
    let tree = scan_tree_with(r, &opts(false), None, &h).unwrap();
    assert_eq!(tree.manifest, plain.manifest, "the same manifest as hashing here");
    assert_eq!(*h.taken.lock().unwrap(), ["d/big.bin"], "only the large file");
    assert_eq!(*h.progress.lock().unwrap(), [("big.bin".to_string(), big.len() as u64 / 2)], "progress is passed on");
    let ids: Vec<ChunkId> = h.ingested.lock().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, file_chunks(&tree, "d/big.bin"));
    assert_eq!((tree.stats.hashed_files, tree.stats.hashed_bytes), (2, big.len() as u64 + 100_000));

    // Refused: hashed here instead, same result.
    let h = handoff("refuse");
    assert_eq!(scan_tree_with(r, &opts(false), None, &h).unwrap().manifest, plain.manifest);
    assert!(h.ingested.lock().unwrap().is_empty());

    // A failure of the server's side stops the scan with its reason.
    let err = scan_tree_with(r, &opts(false), None, &handoff("fail")).unwrap_err();
    assert!(matches!(&err, ScanError::Ingest { path, .. } if path == "d/big.bin"), "{err}");
    assert!(err.to_string().contains("no space is left"), "{err}");
}
