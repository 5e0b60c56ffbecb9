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
    assert!(matches!(err, ScanError::Problems(_)), "{err}");
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
        let job = FileJob { rel: "gone".into(), abs: r.join("gone"), mode: 0o644, size: 1 };
        let res = hash_files(&[job], 2);
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
