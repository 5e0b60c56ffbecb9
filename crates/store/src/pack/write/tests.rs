//! Tests of writes: the record layout, puts of stored and concurrent ids,
//! padded direct records, `put_copied`, and what a manifest commit flushes.

use std::sync::atomic::Ordering;

use super::super::tests::{pack_bytes, pack_files, put, random, remove_idx_files, text};
use super::super::*;

#[test]
fn records_are_laid_out_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let raw = random(1000);
    let zipped = text(0, 100_000);
    let (a, b) = (put(&store, &raw), put(&store, &zipped));
    assert_eq!(store.inner.size(a).unwrap(), 1000);
    let zsize = store.inner.size(b).unwrap();
    assert!(zsize < 10_000, "{zsize}");
    let files = pack_files(dir.path());
    assert_eq!(files.len(), 1, "one writer at a time uses one pack");
    let bytes = fs::read(&files[0]).unwrap();
    assert_eq!(bytes.len(), 2 * RECORD_HEADER + 1000 + zsize as usize);
    assert_eq!(&bytes[..4], b"pdk1");
    assert_eq!(&bytes[4..36], &a.0.0);
    assert_eq!(u32::from_le_bytes(bytes[36..40].try_into().unwrap()), 1000);
    assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 1000);
    assert_eq!(bytes[44], 0, "random bytes are stored raw");
    assert_eq!(&bytes[RECORD_HEADER..RECORD_HEADER + 1000], &raw[..]);
    let second = RECORD_HEADER + 1000;
    assert_eq!(&bytes[second + 4..second + 36], &b.0.0);
    assert_eq!(bytes[second + 44], 1, "text is stored as a zstd frame");
    assert_eq!(store.get_chunk_sync(b).unwrap(), zipped);
    // No file per chunk.
    assert!(!has_files(&dir.path().join("chunks")).unwrap());
}

#[test]
fn concurrent_puts_of_one_chunk_write_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let data = random(300_000);
    let id = ChunkId::of(&data);
    let new: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| store.put_chunk_sync(id, &data).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap() as usize).sum()
    });
    assert_eq!(new, 1);
    // A large record, padded to whole blocks (see below).
    assert_eq!(pack_bytes(dir.path()), (RECORD_HEADER + data.len()).next_multiple_of(ALIGN) as u64);
}

#[test]
fn putting_a_stored_chunk_returns_false_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let data = text(1, 50_000);
    let id = put(&store, &data);
    let before = pack_bytes(dir.path());
    assert!(!store.put_chunk_sync(id, &data).unwrap());
    assert_eq!(pack_bytes(dir.path()), before);
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert!(!store.put_chunk_sync(id, &data).unwrap(), "also after a reopen");
    assert_eq!(pack_bytes(dir.path()), before);
}

#[tokio::test]
async fn manifests_are_kept_as_files_and_flush_the_chunks_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let data = Bytes::from(text(3, 1000));
    let id = ChunkId::of(&data);
    store.put_chunk(id, data.clone()).await.unwrap();
    let m = podder_core::Manifest::new(vec![podder_core::Entry {
        path: "f".into(),
        kind: podder_core::EntryKind::File { mode: 0o644, size: data.len() as u64, chunks: vec![id] },
    }]);
    store.put_manifest(m.id(), Bytes::from(m.canonical_bytes())).await.unwrap();
    let hex = m.id().to_hex();
    assert!(dir.path().join("manifests").join(&hex[..2]).join(&hex).exists());
    assert_eq!(store.get_manifest(m.id()).await.unwrap(), Bytes::from(m.canonical_bytes()));
}

#[test]
fn large_records_are_padded_to_whole_blocks_and_survive_a_scan_and_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let bigs: Vec<Vec<u8>> = (0..3).map(|i| random(DIRECT_MIN + 1000 * i)).collect();
    let tiny = random(100);
    let ids: Vec<ChunkId> = bigs.iter().map(|b| put(&store, b)).collect();
    let tiny_id = put(&store, &tiny);
    let padded = |len: usize| (RECORD_HEADER + len).next_multiple_of(ALIGN) as u64;
    let files = pack_files(dir.path());
    assert_eq!(files.len(), 2, "large records go to a pack of their own");
    let lens: Vec<u64> = files.iter().map(|p| fs::metadata(p).unwrap().len()).collect();
    let want: u64 = bigs.iter().map(|b| padded(b.len())).sum();
    assert!(lens.contains(&want), "{lens:?} vs {want}");
    assert!(lens.contains(&(RECORD_HEADER as u64 + 100)), "small records are not padded: {lens:?}");
    let big_pack = &files[lens.iter().position(|l| *l == want).unwrap()];
    let bytes = fs::read(big_pack).unwrap();
    assert_eq!(bytes[44], PADDED, "raw, padded");
    let second = padded(bigs[0].len()) as usize;
    assert_eq!(&bytes[second + 4..second + 36], &ids[1].0.0, "the next record starts at the next block");
    assert!(bytes[RECORD_HEADER + bigs[0].len()..second].iter().all(|b| *b == 0), "padding is zeros");
    for (id, b) in ids.iter().zip(&bigs) {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), b);
    }

    // Scanned (no index), the padded records are found whole.
    drop(store);
    remove_idx_files(dir.path());
    let store = PackStore::open(dir.path()).unwrap();
    for (id, b) in ids.iter().zip(&bigs) {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), b);
    }
    assert_eq!(store.get_chunk_sync(tiny_id).unwrap(), tiny);

    // A compaction copies them, padding and all, and reclaims the deleted one whole.
    store.delete_chunk_sync(ids[1]).unwrap();
    store.compact_sync().unwrap();
    let live = padded(bigs[0].len()) + padded(bigs[2].len()) + RECORD_HEADER as u64 + 100;
    assert_eq!(pack_bytes(dir.path()), live);
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.get_chunk_sync(ids[0]).unwrap(), bigs[0]);
    assert_eq!(store.get_chunk_sync(ids[2]).unwrap(), bigs[2]);
    assert!(!store.has_chunk_sync(ids[1]).unwrap());
}

#[tokio::test]
async fn a_commit_flushes_the_packs_written_since_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let unsynced = |s: &PackStore| lock(&s.inner.unsynced).keys().copied().collect::<Vec<_>>();
    let commit = |s: &PackStore, data: &[u8]| {
        let m = podder_core::Manifest::new(vec![podder_core::Entry {
            path: "a".into(),
            kind: podder_core::EntryKind::File {
                mode: 0o644,
                size: data.len() as u64,
                chunks: vec![ChunkId::of(data)],
            },
        }]);
        let s = s.clone();
        async move { s.put_manifest(m.id(), Bytes::from(m.canonical_bytes())).await }
    };
    assert!(unsynced(&store).is_empty());
    // A small record and a large (direct) one: two packs, both new.
    let (a, b) = (random(1000), random(200_000));
    put(&store, &a);
    put(&store, &b);
    assert_eq!(unsynced(&store).len(), 2);
    assert!(store.inner.dir_unsynced.load(Ordering::SeqCst));
    commit(&store, &a).await.unwrap();
    assert!(unsynced(&store).is_empty(), "the commit flushed both packs");
    assert!(!store.inner.dir_unsynced.load(Ordering::SeqCst), "and the directory that names them");
    // A chunk stored already writes nothing, so leaves nothing to flush.
    put(&store, &b);
    assert!(unsynced(&store).is_empty());
    // A new chunk in an existing pack: that pack, not the directory.
    let c = random(2000);
    put(&store, &c);
    assert_eq!(unsynced(&store).len(), 1);
    assert!(!store.inner.dir_unsynced.load(Ordering::SeqCst));
    commit(&store, &c).await.unwrap();
    assert!(unsynced(&store).is_empty());
    assert_eq!(store.get_chunk_sync(ChunkId::of(&c)).unwrap(), c);
}

#[test]
fn put_copied_stores_the_copy_under_the_id_of_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    for data in [random(300_000), text(1, 300_000), random(1000)] {
        let mut calls = 0;
        let mut fill = |dst: &mut [u8]| {
            calls += 1;
            dst.copy_from_slice(&data);
            ChunkId::of(dst)
        };
        let (id, new) = store.inner.put_copied(data.len(), &mut fill).unwrap();
        assert_eq!((id, new), (ChunkId::of(&data), true));
        let (again, new) = store.inner.put_copied(data.len(), &mut fill).unwrap();
        assert_eq!((again, new), (id, false), "stored once");
        assert_eq!(calls, 2);
        assert_eq!(store.get_chunk_sync(id).unwrap(), data);
    }
    // Whatever `fill` copies, the id it returns names what is stored.
    let (id, _) = store
        .inner
        .put_copied(200_000, &mut |dst| {
            dst.fill(9);
            ChunkId::of(dst)
        })
        .unwrap();
    assert_eq!(store.get_chunk_sync(id).unwrap(), vec![9; 200_000]);
    // And all of it survives a reopen (the raw large record was written
    // from the copy's buffer, header and padding included).
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.get_chunk_sync(id).unwrap(), vec![9; 200_000]);
    remove_idx_files(dir.path());
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.list_chunks_sync().unwrap().len(), 4, "a scan finds every record whole");
}
