//! Tests of the local directory backend: the shared suite, on-disk layout,
//! damage detection and cleanup after failed writes.

use super::*;

#[tokio::test]
async fn passes_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    crate::suite::suite(&store).await;
}

#[test]
fn layout_compression_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap().with_fsync(false);
    let data = b"hello hello hello hello hello hello hello hello".repeat(100);
    let id = ChunkId::of(&data);
    assert!(store.put_chunk_sync(id, &data).unwrap());
    let hex = id.to_hex();
    let path = dir.path().join("chunks").join(&hex[..2]).join(&hex);
    assert!(fs::metadata(&path).unwrap().len() < data.len() as u64 / 10);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    // A file damaged on disk is reported, never served.
    fs::write(&path, b"not zstd").unwrap();
    assert!(matches!(store.get_chunk_sync(id), Err(StoreError::Io(_))));
    fs::write(&path, zstd::bulk::compress(b"other", 1).unwrap()).unwrap();
    assert!(matches!(store.get_chunk_sync(id), Err(StoreError::Corrupt { .. })));
    // Stray files in the chunk tree are not listed as chunks.
    fs::write(dir.path().join("chunks").join(&hex[..2]).join("junk"), b"").unwrap();
    assert_eq!(store.list_chunks_sync().unwrap(), vec![id]);
}

#[test]
fn failed_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    // The temp file is written, then placing it fails: its "directory" is a file.
    let blocker = dir.path().join("chunks").join("zz");
    fs::write(&blocker, b"").unwrap();
    let err = store.write_atomic(&blocker.join("obj"), b"data", true).unwrap_err();
    assert!(err.to_string().contains("zz"), "{err}");
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}
