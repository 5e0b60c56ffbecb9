//! Tests of the pack store: the shared suite, concurrent writers, recovery
//! of packs cut short or followed by garbage, sealed indexes, compaction,
//! the lock, and loose chunks of older data directories (writes themselves:
//! `write/tests.rs`). The helpers here serve both.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::*;

pub(super) fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    getrandom::fill(&mut v).unwrap();
    v
}

/// Text that compresses, different for each `i`.
pub(super) fn text(i: usize, len: usize) -> Vec<u8> {
    let line = format!("line {i} of some text that zstd shrinks well\n");
    line.repeat(len / line.len() + 1).into_bytes()[..len].to_vec()
}

pub(super) fn small(seal_bytes: u64) -> PackOptions {
    PackOptions { seal_bytes, ..PackOptions::default() }
}

/// The pack files under a store's root, sorted.
pub(super) fn pack_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    out.sort();
    out
}

pub(super) fn pack_bytes(root: &Path) -> u64 {
    pack_files(root).iter().map(|p| fs::metadata(p).unwrap().len()).sum()
}

pub(super) fn remove_idx_files(root: &Path) {
    for p in pack_files(root) {
        let _ = fs::remove_file(p.with_extension("idx"));
    }
}

pub(super) fn put(store: &PackStore, data: &[u8]) -> ChunkId {
    let id = ChunkId::of(data);
    store.put_chunk_sync(id, data).unwrap();
    id
}

#[tokio::test]
async fn passes_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path().join("store")).unwrap();
    crate::suite::suite(&store).await;
    // And again with every record sealed in a pack of its own.
    let store = PackStore::open_with(dir.path().join("sealed"), small(1)).unwrap();
    crate::suite::suite(&store).await;
}

#[test]
fn concurrent_writers_then_reopen_find_every_chunk_whole() {
    let dir = tempfile::tempdir().unwrap();
    let written: Vec<(ChunkId, Vec<u8>)> = {
        // Small packs, so that sealing happens while others write.
        let store = PackStore::open_with(dir.path(), small(256 * 1024)).unwrap();
        let all = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let store = store.clone();
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        for i in 0..150 {
                            let n = t * 1000 + i;
                            let data = if n % 3 == 0 { random(100 + n % 5000) } else { text(n, 200 + n % 9000) };
                            let id = ChunkId::of(&data);
                            assert!(store.put_chunk_sync(id, &data).unwrap());
                            mine.push((id, data));
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>()
        });
        for (id, data) in &all {
            assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
        }
        all
    };
    assert!(pack_files(dir.path()).len() > 1);
    let check = |store: &PackStore| {
        let mut want: Vec<ChunkId> = written.iter().map(|(id, _)| *id).collect();
        want.sort();
        assert_eq!(store.list_chunks_sync().unwrap(), want);
        for (id, data) in &written {
            assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
        }
    };
    check(&PackStore::open(dir.path()).unwrap());
    // As after a crash: no pack has an index, every one is scanned.
    remove_idx_files(dir.path());
    check(&PackStore::open(dir.path()).unwrap());
    // The scan sealed them: the next open reads indexes.
    assert!(pack_files(dir.path()).iter().all(|p| p.with_extension("idx").exists()));
    check(&PackStore::open(dir.path()).unwrap());
}

/// A store (closed) whose one pack holds `n` records, without an index as
/// if the server had crashed; returns the chunks.
fn crashed_pack(root: &Path, n: usize) -> Vec<(ChunkId, Vec<u8>)> {
    let store = PackStore::open(root).unwrap();
    let chunks: Vec<(ChunkId, Vec<u8>)> = (0..n)
        .map(|i| {
            let data = if i % 2 == 0 { random(2000 + i) } else { text(i, 20_000) };
            (put(&store, &data), data)
        })
        .collect();
    drop(store);
    remove_idx_files(root);
    assert_eq!(pack_files(root).len(), 1);
    chunks
}

#[test]
fn a_pack_cut_short_keeps_exactly_its_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = crashed_pack(dir.path(), 5);
    let pack = pack_files(dir.path()).remove(0);
    let len = fs::metadata(&pack).unwrap().len();
    // The last record lost its last 100 bytes.
    OpenOptions::new().write(true).open(&pack).unwrap().set_len(len - 100).unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let mut want: Vec<ChunkId> = chunks[..4].iter().map(|(id, _)| *id).collect();
    want.sort();
    assert_eq!(store.list_chunks_sync().unwrap(), want);
    for (id, data) in &chunks[..4] {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
    assert!(matches!(store.get_chunk_sync(chunks[4].0), Err(StoreError::NotFound(_))));
    assert!(pack.with_extension("idx").exists(), "the recovered pack is sealed");
    // New writes go to a new pack: nothing is written after the cut tail.
    let cut_len = fs::metadata(&pack).unwrap().len();
    let (id, data) = &chunks[4];
    assert!(store.put_chunk_sync(*id, data).unwrap(), "the lost chunk can be sent again");
    assert_eq!(fs::metadata(&pack).unwrap().len(), cut_len);
    assert_eq!(pack_files(dir.path()).len(), 2);
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert_eq!(store.list_chunks_sync().unwrap().len(), 5);
    assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
}

#[test]
fn garbage_after_the_last_record_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = crashed_pack(dir.path(), 4);
    let pack = pack_files(dir.path()).remove(0);
    let clean_len = fs::metadata(&pack).unwrap().len();
    // Garbage, then something that starts like a record but is not one.
    let mut tail = random(3000);
    tail.extend_from_slice(b"pdk1");
    tail.extend_from_slice(&random(100));
    let mut f = OpenOptions::new().append(true).open(&pack).unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    let store = PackStore::open(dir.path()).unwrap();
    let mut want: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
    want.sort();
    assert_eq!(store.list_chunks_sync().unwrap(), want);
    for (id, data) in &chunks {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
    // The tail counts as dead: a compaction rewrites the pack without it.
    let report = store.compact_sync().unwrap();
    assert_eq!((report.packs_rewritten, report.packs_written), (1, 1));
    assert_eq!(report.bytes_reclaimed, tail.len() as u64);
    assert_eq!(pack_bytes(dir.path()), clean_len);
    for (id, data) in &chunks {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
}

#[test]
fn a_record_with_damaged_bytes_is_skipped_by_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = crashed_pack(dir.path(), 3);
    let pack = pack_files(dir.path()).remove(0);
    let mut bytes = fs::read(&pack).unwrap();
    // The first record's stored bytes (random, so stored raw) change.
    bytes[RECORD_HEADER + 10] ^= 0xff;
    fs::write(&pack, &bytes).unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    assert!(!store.has_chunk_sync(chunks[0].0).unwrap());
    for (id, data) in &chunks[1..] {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
}

#[test]
fn a_sealed_pack_is_loaded_from_its_index_not_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (random(1000), text(7, 30_000));
    let (ida, idb) = {
        // Every record fills its pack: each is sealed as soon as written.
        let store = PackStore::open_with(dir.path(), small(1)).unwrap();
        (put(&store, &a), put(&store, &b))
    };
    let files = pack_files(dir.path());
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|p| p.with_extension("idx").exists()));
    // Damage the stored bytes of a's record and the header of b's.
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[RECORD_HEADER + 5] ^= 1;
    fs::write(&files[0], &bytes).unwrap();
    let mut bytes = fs::read(&files[1]).unwrap();
    bytes[40] ^= 1;
    fs::write(&files[1], &bytes).unwrap();

    let store = PackStore::open(dir.path()).unwrap();
    // A scan would have dropped both; the indexes still list them...
    assert!(store.has_chunk_sync(ida).unwrap() && store.has_chunk_sync(idb).unwrap());
    assert_eq!(store.inner.size(idb).unwrap(), fs::metadata(&files[1]).unwrap().len() - RECORD_HEADER as u64);
    // ...and reading them reports the damage instead of serving it.
    let err = store.get_chunk_sync(ida).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { ref expected, .. } if *expected == ida.to_hex()), "{err}");
    let err = store.get_chunk_sync(idb).unwrap_err();
    assert!(matches!(err, StoreError::Io(ref e) if e.kind() == io::ErrorKind::InvalidData), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");

    // A damaged index is not trusted: the pack is scanned instead.
    drop(store);
    let idx = files[0].with_extension("idx");
    let mut bytes = fs::read(&idx).unwrap();
    bytes[30] ^= 1;
    fs::write(&idx, &bytes).unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    assert!(!store.has_chunk_sync(ida).unwrap(), "the scan checked the record and dropped it");
    assert!(store.has_chunk_sync(idb).unwrap());
}

#[test]
fn delete_then_compact_gives_space_back_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = small(128 * 1024);
    let store = PackStore::open_with(dir.path(), options.clone()).unwrap();
    let chunks: Vec<(ChunkId, Vec<u8>)> = (0..120)
        .map(|i| {
            let data = random(8000 + i);
            (put(&store, &data), data)
        })
        .collect();
    let (gone, kept): (Vec<_>, Vec<_>) = chunks.iter().enumerate().partition(|(i, _)| i % 3 != 0);
    let before = pack_bytes(dir.path());
    for (_, (id, _)) in &gone {
        store.delete_chunk_sync(*id).unwrap();
    }
    assert_eq!(pack_bytes(dir.path()), before, "a delete alone frees nothing on disk");
    assert_eq!(store.list_chunks_sync().unwrap().len(), kept.len());

    let report = store.compact_sync().unwrap();
    let after = pack_bytes(dir.path());
    let live: u64 = kept.iter().map(|(_, (_, d))| (RECORD_HEADER + d.len()) as u64).sum();
    assert_eq!(after, live, "the packs hold exactly the live records");
    assert_eq!(report.bytes_reclaimed, before - after);
    assert!(report.packs_rewritten > 0 && report.packs_written > 0, "{report:?}");
    for (_, (id, data)) in &kept {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
    for (_, (id, _)) in &gone {
        assert!(!store.has_chunk_sync(*id).unwrap());
    }
    assert_eq!(store.compact_sync().unwrap(), CompactReport::default(), "nothing is left to compact");
    // The store keeps working: new writes, and a reopen.
    let fresh = random(5000);
    let fresh_id = put(&store, &fresh);
    drop(store);
    let store = PackStore::open_with(dir.path(), options).unwrap();
    assert_eq!(store.list_chunks_sync().unwrap().len(), kept.len() + 1);
    for (_, (id, data)) in &kept {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
    for (_, (id, _)) in &gone {
        assert!(!store.has_chunk_sync(*id).unwrap(), "a compacted delete stays deleted");
    }
    assert_eq!(store.get_chunk_sync(fresh_id).unwrap(), fresh);
    // Every pack file has its index, and no stray file is left.
    let names: Vec<String> = fs::read_dir(dir.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".pack") || n.ends_with(".idx")), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".idx")).count(), pack_files(dir.path()).len());
}

#[test]
fn a_delete_not_followed_by_a_compaction_is_lost_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open(dir.path()).unwrap();
    let (a, b) = (put(&store, &random(100)), put(&store, &random(200)));
    store.delete_chunk_sync(a).unwrap();
    assert!(!store.has_chunk_sync(a).unwrap());
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert!(store.has_chunk_sync(a).unwrap(), "documented: the chunk comes back as garbage for the next GC");
    assert!(store.has_chunk_sync(b).unwrap());
}

#[test]
fn compaction_and_a_crash_in_its_middle_keep_every_live_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open_with(dir.path(), small(1)).unwrap();
    let chunks: Vec<(ChunkId, Vec<u8>)> = (0..6).map(|i| text(i, 5000)).map(|d| (put(&store, &d), d)).collect();
    drop(store);
    // As if a compaction had written its copy of pack 1 and died before
    // removing the original: the same record in two sealed packs.
    let files = pack_files(dir.path());
    let copy = dir.path().join("packs").join("000100.pack");
    fs::copy(&files[0], &copy).unwrap();
    let store = PackStore::open_with(dir.path(), small(1)).unwrap();
    assert_eq!(store.list_chunks_sync().unwrap().len(), 6);
    for (id, data) in &chunks {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
    // The later copy is dead; the next compaction removes it.
    let before = pack_bytes(dir.path());
    let report = store.compact_sync().unwrap();
    let copy_len = fs::metadata(&files[0]).unwrap().len();
    assert_eq!(report, CompactReport { packs_rewritten: 1, packs_written: 0, bytes_reclaimed: copy_len });
    assert_eq!(pack_bytes(dir.path()), before - copy_len);
    assert!(!copy.exists() && !copy.with_extension("idx").exists());
    assert_eq!(pack_files(dir.path()).len(), 6);
    for (id, data) in &chunks {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
}

#[test]
fn reads_go_on_while_a_compaction_moves_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = PackStore::open_with(dir.path(), small(64 * 1024)).unwrap();
    let chunks: Vec<(ChunkId, Vec<u8>)> = (0..300).map(|i| random(3000 + i)).map(|d| (put(&store, &d), d)).collect();
    for (id, _) in chunks.iter().step_by(2) {
        store.delete_chunk_sync(*id).unwrap();
    }
    let kept: Vec<&(ChunkId, Vec<u8>)> = chunks.iter().skip(1).step_by(2).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut reads = 0;
                    while !stop.load(Ordering::Relaxed) || reads == 0 {
                        for (id, data) in &kept {
                            assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        let report = store.compact_sync().unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(report.packs_rewritten > 1, "{report:?}");
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
}

#[test]
fn a_second_open_of_the_same_root_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().unwrap();
    let first = PackStore::open(dir.path()).unwrap();
    let started = Instant::now();
    let err = PackStore::open_with(
        dir.path(),
        PackOptions { lock_wait: Duration::from_millis(200), ..PackOptions::default() },
    )
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited for the holder to go");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Invalid(_)), "{msg}");
    assert!(msg.contains("in use by another podder server"), "{msg}");
    assert!(msg.contains(&format!("(pid {})", std::process::id())), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    drop(first);
    PackStore::open(dir.path()).unwrap();
    // A holder that goes away while the next one waits.
    let first = PackStore::open(dir.path()).unwrap();
    let root = dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || PackStore::open(root).map(|_| ()));
    std::thread::sleep(Duration::from_millis(100));
    drop(first);
    waiter.join().unwrap().unwrap();
}

#[test]
fn loose_chunks_of_an_older_data_directory_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (old_a, old_b) = (text(1, 40_000), random(3000));
    let (ida, idb) = {
        let legacy = LocalStore::open(dir.path()).unwrap();
        let (ida, idb) = (ChunkId::of(&old_a), ChunkId::of(&old_b));
        legacy.put_chunk_sync(ida, &old_a).unwrap();
        legacy.put_chunk_sync(idb, &old_b).unwrap();
        (ida, idb)
    };
    let store = PackStore::open(dir.path()).unwrap();
    assert!(store.has_chunk_sync(ida).unwrap());
    assert_eq!(store.get_chunk_sync(ida).unwrap(), old_a);
    assert_eq!(store.get_chunk_sync(idb).unwrap(), old_b);
    assert_eq!(store.inner.size(idb).unwrap(), 3004, "a loose raw chunk: its magic and its bytes");
    // Stored already: not written again.
    assert!(!store.put_chunk_sync(ida, &old_a).unwrap());
    assert_eq!(pack_bytes(dir.path()), 0);
    // New chunks go to packs; listing shows both kinds.
    let new = random(500);
    let idn = put(&store, &new);
    assert!(pack_bytes(dir.path()) > 0);
    let mut want = vec![ida, idb, idn];
    want.sort();
    assert_eq!(store.list_chunks_sync().unwrap(), want);
    // Deletes reach loose chunks too.
    store.delete_chunk_sync(ida).unwrap();
    assert!(!store.has_chunk_sync(ida).unwrap());
    assert!(matches!(store.get_chunk_sync(ida), Err(StoreError::NotFound(_))));
    drop(store);
    let store = PackStore::open(dir.path()).unwrap();
    assert!(!store.has_chunk_sync(ida).unwrap(), "a loose delete is immediate");
    assert_eq!(store.list_chunks_sync().unwrap().len(), 2);
}
