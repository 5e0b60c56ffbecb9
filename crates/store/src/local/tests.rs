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

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    getrandom::fill(&mut v).unwrap();
    v
}

#[test]
fn incompressible_chunks_are_stored_raw() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap().with_fsync(false);
    let file = |id: &ChunkId| {
        let hex = id.to_hex();
        dir.path().join("chunks").join(&hex[..2]).join(&hex)
    };
    // Random bytes, small and large (probed), are kept as they are...
    for len in [100, 20_000, 300_000] {
        let data = random(len);
        let id = ChunkId::of(&data);
        assert!(store.put_chunk_sync(id, &data).unwrap());
        let stored = fs::read(file(&id)).unwrap();
        assert_eq!(&stored[..4], &RAW_MAGIC, "len {len}");
        assert_eq!(&stored[4..], &data[..]);
        assert_eq!(store.get_chunk_sync(id).unwrap(), data);
        assert_eq!(store.chunk_size_sync(id).unwrap(), len as u64 + 4);
    }
    // ...text is compressed, also when it follows a random header...
    let mut mixed = random(10_000);
    mixed.extend(b"a line of text, and another line of text\n".repeat(10_000));
    let id = ChunkId::of(&mixed);
    store.put_chunk_sync(id, &mixed).unwrap();
    assert!(fs::metadata(file(&id)).unwrap().len() < mixed.len() as u64 / 10);
    assert_eq!(store.get_chunk_sync(id).unwrap(), mixed);
    // ...and a raw file that is damaged is reported.
    let data = random(1000);
    let id = ChunkId::of(&data);
    store.put_chunk_sync(id, &data).unwrap();
    let mut damaged = fs::read(file(&id)).unwrap();
    damaged[10] ^= 1;
    fs::write(file(&id), &damaged).unwrap();
    assert!(matches!(store.get_chunk_sync(id), Err(StoreError::Corrupt { .. })));
}

#[test]
fn chunks_written_compressed_before_raw_storage_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    // Random data stored the old way: a zstd frame, whatever its size.
    let data = random(200_000);
    let id = ChunkId::of(&data);
    let hex = id.to_hex();
    fs::create_dir_all(dir.path().join("chunks").join(&hex[..2])).unwrap();
    fs::write(dir.path().join("chunks").join(&hex[..2]).join(&hex), zstd::bulk::compress(&data, 1).unwrap()).unwrap();
    assert_eq!(store.get_chunk_sync(id).unwrap(), data);
    assert!(!store.put_chunk_sync(id, &data).unwrap());
}

#[test]
fn failed_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    // The temp file is written, then placing it fails: its "directory" is a file.
    let blocker = dir.path().join("chunks").join("zz");
    fs::write(&blocker, b"").unwrap();
    let err = store.write_atomic(&blocker.join("obj"), &[b"data"], true).unwrap_err();
    assert!(err.to_string().contains("zz"), "{err}");
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}
