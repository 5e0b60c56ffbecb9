//! Local ingest (files handed over by descriptor on a Unix socket): who may
//! use it, what the server refuses, and that what it stores is what a
//! client would have cut and sent.

mod common;

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use common::TestServer;
use common::ingest::*;
use podder_core::ChunkId;
use podder_core::api::{ChunkList, LocalIngest};
use podder_store::chunker::chunk_file;
use podder_store::ingest::{Request, recv, send};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_named_only_to_callers_with_a_token() {
    let ts = ingest_server().await;
    let r = ts.client.get(format!("{}/api/v1/chunks/local", ts.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let alice = ts.token("alice").await;
    let info: LocalIngest = ts.get(&alice, "/chunks/local").send().await.unwrap().json().await.unwrap();
    assert!(info.socket.ends_with("ingest.sock"), "{}", info.socket);
    assert_eq!(info.instance.len(), 32);

    // A server without a socket says so.
    let plain = TestServer::start().await;
    let r = plain.get(&plain.admin, "/chunks/local").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_must_say_hello_with_a_valid_token_first() {
    let (_server, alice, info) = setup().await;
    let path = PathBuf::from(&info.socket);
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "f", 100_000);
    blocking(move || {
        // A file before hello: refused, and the connection is closed.
        let sock = UnixStream::connect(&path).unwrap();
        let f = File::open(&file).unwrap();
        let reply = ask(&sock, &Request::File { size: 100_000, path: "f".into() }, Some(&f));
        assert!(reply.error.unwrap().contains("first message must be a hello"));
        assert!(recv(&sock).unwrap().is_none(), "closed after the refusal");

        let (sock, reply) = hello(&path, "not-a-token");
        assert!(reply.error.unwrap().contains("API token is not valid"));
        assert!(recv(&sock).unwrap().is_none());

        let (_, reply) = hello(&path, &alice);
        assert_eq!(reply.error, None);
        assert_eq!(reply.owner.as_deref(), Some("alice"));
        assert_eq!(reply.instance, Some(info.instance));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_file_is_stored_as_a_client_would_cut_it() {
    let (ts, alice, info) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "big.bin", 5 * 1024 * 1024 + 17);
    let expected = chunk_file(&file).unwrap();
    let (path, token) = (PathBuf::from(&info.socket), alice.clone());
    let (first, second) = blocking(move || {
        let (sock, _) = hello(&path, &token);
        let f = File::open(&file).unwrap();
        let size = f.metadata().unwrap().len();
        let first = ask(&sock, &Request::File { size, path: "big.bin".into() }, Some(&f));
        // The same file again, on the same connection: nothing new.
        let second = ask(&sock, &Request::File { size, path: "big.bin".into() }, Some(&f));
        (first, second)
    })
    .await;
    assert_eq!(first.error, None);
    assert_eq!(first.chunk_refs().unwrap(), expected, "the same cuts and ids as the client's chunker");
    assert_eq!(first.new_chunks, expected.len() as u64);
    assert_eq!(first.new_bytes, 5 * 1024 * 1024 + 17);
    assert_eq!((second.new_chunks, second.new_bytes), (0, 0));
    assert_eq!(second.ids, first.ids);

    // The store holds every chunk, and they read back as the file's bytes.
    let ids: Vec<ChunkId> = expected.iter().map(|r| r.id).collect();
    let r = ts.post(&alice, "/chunks/missing").json(&ChunkList { chunks: ids.clone() }).send().await.unwrap();
    assert!(r.json::<ChunkList>().await.unwrap().chunks.is_empty());
    let fetched = fetch(&ts, &alice, ids).await;
    assert!(fetched == std::fs::read(dir.path().join("big.bin")).unwrap(), "the chunks read back as the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_regular_file_of_the_stated_size_is_refused() {
    let (_server, alice, info) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "f.bin", 300_000);
    let fifo = dir.path().join("fifo");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::RUSR, 0).unwrap();
    let (path, d) = (PathBuf::from(&info.socket), dir.path().to_path_buf());
    let replies = blocking(move || {
        let (sock, _) = hello(&path, &alice);
        let req = |size: u64, name: &str| Request::File { size, path: name.into() };
        let f = File::open(&file).unwrap();
        let wrong_size = ask(&sock, &req(1000, "f.bin"), Some(&f));
        let directory = ask(&sock, &req(0, "d"), Some(&File::open(&d).unwrap()));
        // Opened without blocking, so that the test itself does not wait
        // for a writer; the server must not read it either.
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .unwrap();
        let pipe = ask(&sock, &req(0, "fifo"), Some(&fifo));
        let no_fd = ask(&sock, &req(300_000, "f.bin"), None);
        // The connection still works after the refusals.
        let fine = ask(&sock, &req(300_000, "f.bin"), Some(&f));
        [wrong_size, directory, pipe, no_fd, fine]
    })
    .await;
    let errors: Vec<String> = replies.iter().map(|r| r.error.clone().unwrap_or_default()).collect();
    assert!(errors[0].contains("f.bin: it changed during the upload"), "{}", errors[0]);
    assert!(errors[1].contains("not a regular file"), "{}", errors[1]);
    assert!(errors[2].contains("not a regular file"), "{}", errors[2]);
    assert!(errors[3].contains("needs exactly one descriptor"), "{}", errors[3]);
    assert_eq!(errors[4], "");
    assert_eq!(replies[4].new_bytes, 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_reports_progress_before_its_answer() {
    let (_server, alice, info) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 70 * 1024 * 1024;
    let file = random_file(dir.path(), "huge.bin", size);
    let (reply, progress) = hand_over(&info, &alice, &file).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.new_bytes, size as u64);
    // Cut across the server's 64 MiB segments exactly as the client cuts it.
    assert_eq!(reply.chunk_refs().unwrap(), chunk_file(&file).unwrap());
    // One report past each 32 MiB, rising, all before the end.
    assert_eq!(progress.len(), 2, "{progress:?}");
    assert!(progress[0] >= 32 << 20 && progress[0] < progress[1] && progress[1] < size as u64, "{progress:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_the_read_of_its_file() {
    let (ts, alice, info) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 200 * 1024 * 1024;
    let file = random_file(dir.path(), "huge.bin", size);
    let total = chunk_file(&file).unwrap().len() as u64;
    let path = PathBuf::from(&info.socket);
    blocking(move || {
        let (sock, _) = hello(&path, &alice);
        let f = File::open(&file).unwrap();
        send(&sock, &Request::File { size: size as u64, path: "huge.bin".into() }, Some(f.as_fd())).unwrap();
        // Gone before the answer.
    })
    .await;
    let stored = || async {
        let stats: serde_json::Value = ts.get(&ts.admin, "/admin/stats").send().await.unwrap().json().await.unwrap();
        stats["chunks_stored"].as_u64().unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stored().await == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing was stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut last = stored().await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = stored().await;
        if now == last {
            break;
        }
        last = now;
    }
    assert!(last > 0 && last < total, "stored {last} of {total} chunks after the client left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_during_its_upload_fails_and_stores_nothing_false() {
    let (ts, alice, info) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 96 * 1024 * 1024;
    let file = random_file(dir.path(), "shrinks.bin", size);
    let original = std::fs::read(&file).unwrap();
    let (path, token, f2) = (PathBuf::from(&info.socket), alice.clone(), file.clone());
    let reply = blocking(move || shrink_during_upload(&path, &token, &f2, size as u64)).await;
    let error = reply.error.expect("the upload fails");
    // The server read the file through a map, and the pages past the new end
    // raised SIGBUS: it is still here, and says what happened.
    assert!(error.contains("shrinks.bin: it changed during the upload"), "{error}");
    assert!(error.contains("became shorter"), "read through a map: {error}");

    // Every chunk stored meanwhile holds the bytes its id names: the file
    // as it was, uploaded again, reads back whole.
    std::fs::write(&file, &original).unwrap();
    let (again, _) = hand_over(&info, &alice, &file).await;
    assert_eq!(again.error, None);
    assert_eq!(again.chunk_refs().unwrap(), chunk_file(&file).unwrap());
    assert!(fetch(&ts, &alice, again.ids.clone()).await == original, "the stored chunks read back as the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holes_of_a_sparse_file_are_cut_as_the_client_cuts_them_without_being_read() {
    let (ts, alice, info) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.bin");
    let mib = 1024 * 1024;
    // Data, a 27 MiB hole, a little data, a hole of 1 MiB (shorter than a
    // largest chunk), data, and a hole to the end of 80 MiB.
    let mut random = vec![0u8; 5 * mib];
    getrandom::fill(&mut random).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = File::create(&path).unwrap();
        f.write_all_at(&random[..3 * mib], 0).unwrap();
        f.write_all_at(&random[3 * mib..4 * mib + 5], 30 * mib as u64).unwrap();
        f.write_all_at(&random[4 * mib + 5..], 32 * mib as u64).unwrap();
        f.set_len(80 * mib as u64).unwrap();
        f.sync_all().unwrap();
    }
    let (reply, _) = hand_over(&info, &alice, &path).await;
    assert_eq!(reply.error, None);
    // The holes were not read: none of their pages came into the page cache.
    let resident = resident_pages(&path, 40 * mib, 40 * mib);
    assert_eq!(resident, 0, "pages of the last hole read");
    // The client reads the zeros; both cut the same.
    let expected = chunk_file(&path).unwrap();
    assert_eq!(reply.chunk_refs().unwrap(), expected);
    let zero_runs = expected.windows(2).filter(|w| w[0].id == w[1].id).count();
    assert!(zero_runs >= 10, "{zero_runs}: the holes give repeated chunks of zeros");
    assert!(fetch(&ts, &alice, reply.ids.clone()).await == std::fs::read(&path).unwrap());
}

/// How many pages of `path` in `len` bytes from `offset` are in the page cache.
fn resident_pages(path: &std::path::Path, offset: usize, len: usize) -> usize {
    use rustix::mm::{MapFlags, ProtFlags, mmap};
    let f = File::open(path).unwrap();
    // SAFETY: a read-only map of a file this test holds, never read through.
    unsafe {
        let p = mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, &f, offset as u64).unwrap();
        let mut vec = vec![0u8; len.div_ceil(4096)];
        assert_eq!(libc_mincore(p, len, vec.as_mut_ptr()), 0);
        rustix::mm::munmap(p, len).unwrap();
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }
}

unsafe extern "C" {
    #[link_name = "mincore"]
    fn libc_mincore(addr: *mut std::ffi::c_void, len: usize, vec: *mut u8) -> i32;
}
