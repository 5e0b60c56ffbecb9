//! Tests of materializing: scan, upload and materialize round trips, and
//! refusals of unsafe manifests and destinations.

use std::os::unix::fs::symlink;

use podder_core::Entry;

use super::*;
use crate::scan::{ScanOptions, read_chunk, scan_tree};
use crate::{LocalStore, MemoryStore};

fn put(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

fn sample_tree(r: &Path) {
    let mut big = vec![0u8; 3 * 1024 * 1024 + 5];
    getrandom::fill(&mut big).unwrap();
    put(r, "data/big.bin", &big, 0o644);
    put(r, "data/again.bin", &big, 0o600);
    put(r, "run.sh", b"#!/bin/sh\nexit 0\n", 0o755);
    put(r, "données/é.txt", "héllo".as_bytes(), 0o644);
    put(r, "ro/frozen.txt", b"do not touch", 0o444);
    fs::set_permissions(r.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    put(r, "empty.txt", b"", 0o644);
    fs::create_dir_all(r.join("a/b/empty")).unwrap();
    symlink("../run.sh", r.join("data/run")).unwrap();
}

async fn upload(store: &dyn BlobStore, r: &Path) -> Manifest {
    let tree = scan_tree(r, &ScanOptions::default()).unwrap();
    assert_eq!(missing_chunks(store, &tree.manifest).await.unwrap().len(), tree.sources.len());
    for (id, src) in &tree.sources {
        store.put_chunk(*id, read_chunk(src).unwrap().into()).await.unwrap();
    }
    assert!(missing_chunks(store, &tree.manifest).await.unwrap().is_empty());
    tree.manifest
}

#[tokio::test]
async fn round_trip_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let local = LocalStore::open(dir.path().join("store")).unwrap().with_fsync(false);
    let stores: [(&str, &dyn BlobStore); 2] = [("memory", &MemoryStore::new()), ("local", &local)];
    for (name, store) in stores {
        let manifest = upload(store, &src).await;
        let dest = dir.path().join(format!("out-{name}"));
        materialize(store, &manifest, &dest).await.unwrap();
        // Same paths, kinds, modes, sizes and chunk ids: the same manifest.
        let again = scan_tree(&dest, &ScanOptions::default()).unwrap().manifest;
        assert_eq!(again, manifest, "{name}");
        assert_eq!(fs::read(dest.join("data/big.bin")).unwrap(), fs::read(src.join("data/big.bin")).unwrap());
        assert_eq!(fs::read_link(dest.join("data/run")).unwrap(), Path::new("../run.sh"));
        let mode = fs::metadata(dest.join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::metadata(dest.join("ro")).unwrap().permissions().mode() & 0o777, 0o555);
    }
    // An existing empty destination is fine too.
    let empty = dir.path().join("empty-dest");
    fs::create_dir(&empty).unwrap();
    let store = MemoryStore::new();
    let manifest = upload(&store, &src).await;
    materialize(&store, &manifest, &empty).await.unwrap();
    // Let the temp dir clean up the read-only directories.
    for d in [&src, &empty] {
        fs::set_permissions(d.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for name in ["memory", "local"] {
        fs::set_permissions(dir.path().join(format!("out-{name}/ro")), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn file(path: &str, data: &[u8]) -> Entry {
    let chunks = crate::chunker::chunk_bytes(data).into_iter().map(|(id, _)| id).collect();
    Entry { path: path.into(), kind: EntryKind::File { mode: 0o644, size: data.len() as u64, chunks } }
}

#[tokio::test]
async fn refuses_bad_destinations_and_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    store.put_chunk(ChunkId::of(b"hi"), Bytes::from_static(b"hi")).await.unwrap();
    let good = Manifest::new(vec![file("f", b"hi")]);

    let full = dir.path().join("full");
    put(&full, "x", b"", 0o644);
    let err = materialize(&store, &good, &full).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)) && err.to_string().contains("not empty"), "{err}");
    let err = materialize(&store, &good, &full.join("x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");

    // Paths that leave the tree are refused before anything is written.
    let escape = Manifest { version: 1, entries: vec![file("../escaped", b"hi")] };
    let dest = dir.path().join("d1");
    assert!(matches!(materialize(&store, &escape, &dest).await, Err(StoreError::Invalid(_))));
    assert!(!dest.exists() && !dir.path().join("escaped").exists());

    // A missing chunk fails the call and removes the destination it created.
    let missing = Manifest::new(vec![file("a", b"hi"), file("b", b"absent")]);
    let dest = dir.path().join("d2");
    let err = materialize(&store, &missing, &dest).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(!dest.exists());

    // A size that does not match the chunks is refused.
    let mut wrong = file("w", b"hi");
    if let EntryKind::File { size, .. } = &mut wrong.kind {
        *size = 3;
    }
    let err = materialize(&store, &Manifest::new(vec![wrong]), &dir.path().join("d3")).await.unwrap_err();
    assert!(err.to_string().contains("says 3 bytes"), "{err}");
}

#[tokio::test]
async fn never_writes_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    store.put_chunk(ChunkId::of(b"hi"), Bytes::from_static(b"hi")).await.unwrap();
    // `validate` only checks a path's direct parent, so "l/sub/f" under the
    // symlink "l" passes it; materialize must still not follow "l".
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let link = Entry { path: "l".into(), kind: EntryKind::Symlink { target: ".".into() } };
    let m = Manifest::new(vec![link, file("l/sub/f", b"hi")]);
    m.validate().unwrap();
    let dest = dir.path().join("d");
    assert!(materialize(&store, &m, &dest).await.is_err());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // Empty manifests give an empty directory.
    let dest = dir.path().join("empty");
    materialize(&store, &Manifest::new(vec![]), &dest).await.unwrap();
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
}

#[tokio::test]
async fn runs_of_zeros_become_holes() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // 8 MiB of zeros, a few bytes of data, then 3 MiB more zeros at the end.
    let mut data = vec![0u8; 11 * 1024 * 1024];
    data[8 * 1024 * 1024..8 * 1024 * 1024 + 5].copy_from_slice(b"hello");
    put(&src, "sparse.bin", &data, 0o644);
    put(&src, "zeros.bin", &vec![0u8; 3 * 1024 * 1024], 0o644);
    let store = MemoryStore::new();
    let m = upload(&store, &src).await;
    let dest = dir.path().join("out");
    materialize(&store, &m, &dest).await.unwrap();
    assert!(fs::read(dest.join("sparse.bin")).unwrap() == data, "the same bytes");
    assert_eq!(fs::read(dest.join("zeros.bin")).unwrap(), vec![0u8; 3 * 1024 * 1024]);
    // Most of both files is not allocated (file systems without holes
    // would allocate it all; this one has them).
    let allocated = |name: &str| fs::metadata(dest.join(name)).unwrap().blocks() * 512;
    assert!(allocated("sparse.bin") <= 4 * 1024 * 1024, "{} bytes allocated", allocated("sparse.bin"));
    assert_eq!(allocated("zeros.bin"), 0);
}
