//! Local ingest of files that cannot be mapped: the server reads them with
//! `pread` instead, with the same result. A test binary of its own, because
//! it takes every map slot of the process (where the server runs too) for
//! its whole run.

mod common;

use std::fs::File;
use std::path::PathBuf;

use common::ingest::*;
use podder_store::chunker::chunk_file;
use podder_store::mapped::{MappedFile, SLOTS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_cannot_be_mapped_are_read_instead() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = random_file(dir.path(), "tiny", 1);
    let held: Vec<MappedFile> = std::iter::from_fn(|| MappedFile::map(&File::open(&tiny).unwrap(), 1)).collect();
    assert_eq!(held.len(), SLOTS, "every slot is taken");

    let (ts, alice, info) = setup().await;
    // Past the server's 64 MiB segments, read one after the other.
    let file = random_file(dir.path(), "big.bin", 70 * 1024 * 1024 + 17);
    let (reply, _) = hand_over(&info, &alice, &file).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.chunk_refs().unwrap(), chunk_file(&file).unwrap(), "the same cuts and ids as the client's");
    assert!(fetch(&ts, &alice, reply.ids.clone()).await == std::fs::read(&file).unwrap());

    // A file cut short meanwhile: read to its new end, and refused.
    let size = 96 * 1024 * 1024;
    let file = random_file(dir.path(), "shrinks.bin", size);
    let (path, token) = (PathBuf::from(&info.socket), alice.clone());
    let reply = blocking(move || shrink_during_upload(&path, &token, &file, size as u64)).await;
    let error = reply.error.expect("the upload fails");
    assert!(error.contains("shrinks.bin: it changed during the upload"), "{error}");
    assert!(error.contains("could be read"), "read with pread: {error}");
    drop(held);
}
