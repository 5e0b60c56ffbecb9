//! The server's limits: chunk size, manifest size and entry count, and a
//! disk that fills up in the middle of an upload (a real tmpfs, as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestServer, assert_error};
use podder_core::api::{DatasetVersion, frames};
use podder_core::{ChunkId, Entry, EntryKind, Manifest};
use podder_store::PackStore;
use reqwest::StatusCode;

fn file(path: &str, id: ChunkId) -> Entry {
    Entry { path: path.into(), kind: EntryKind::File { mode: 0o644, size: 1, chunks: vec![id] } }
}

#[tokio::test]
async fn chunks_and_manifests_over_the_limits_are_refused() {
    let ts = TestServer::with_config(|c| {
        c.max_chunk_bytes = 1000;
        c.max_manifest_bytes = 4000;
        c.max_manifest_entries = 3;
    })
    .await;
    let alice = ts.token("alice").await;
    let big = vec![7u8; 1001];
    let mut body = frames::header(&ChunkId::of(&big), big.len()).to_vec();
    body.extend_from_slice(&big);
    let r = ts.post(&alice, "/chunks").body(body).send().await.unwrap();
    let e = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "more than the server's limit of 1000 bytes").await;
    assert_eq!(e.kind, "too_large");
    ts.upload(&alice, &[&[7u8; 1000]]).await;

    let id = ts.upload(&alice, &[b"x"]).await[0];
    let four = Manifest::new((0..4).map(|i| file(&format!("f{i}"), id)).collect());
    let r = ts.post(&alice, "/manifests").json(&four).send().await.unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "lists 4 entries, more than the server's limit of 3").await;
    let long = Manifest::new(vec![file(&"n".repeat(4000), id)]);
    let r = ts.post(&alice, "/manifests").json(&long).send().await.unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "more than the server's limit of 4000 bytes").await;
    // Without a Content-Length the limit holds as the body streams in.
    let bytes = serde_json::to_vec(&long).unwrap();
    let stream =
        futures_util::stream::iter(bytes.chunks(512).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let r = ts.post(&alice, "/manifests").body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "limit of 4000 bytes").await;
    let three = Manifest::new((0..3).map(|i| file(&format!("f{i}"), id)).collect());
    assert_eq!(ts.post(&alice, "/manifests").json(&three).send().await.unwrap().status(), StatusCode::OK);
    let r = ts.post(&alice, "/manifests").body("{not json").send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "not a valid manifest").await;
}

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).output().unwrap();
        assert!(out.status.success(), "remount failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server's database may still be closing.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// 1 MiB that zstd cannot shrink, different for each `i`.
fn noise(i: u32) -> Vec<u8> {
    let mut out = vec![0u8; 1 << 20];
    blake3::Hasher::new().update(&i.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

fn pack_files(objects: &Path) -> Vec<PathBuf> {
    files_under(&objects.join("packs")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "pack")).collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_keeps_nothing_half_written_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fs = match Tmpfs::mount(&mnt, "40m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: a full disk needs a small tmpfs, and mounting one failed ({why}); run as root");
            return;
        }
    };
    let data_dir = mnt.join("data");
    let mut ts = TestServer::with_config(|c| {
        c.data_dir = data_dir.clone();
        c.gc_grace = Duration::ZERO;
    })
    .await;
    let alice = ts.token("alice").await;
    ts.create_dataset(&alice, "big").await;

    let mut sent = Vec::new();
    let full = loop {
        let i = sent.len() as u32;
        assert!(i < 100, "40 MiB never filled up");
        let data = noise(i);
        let id = ChunkId::of(&data);
        let mut body = frames::header(&id, data.len()).to_vec();
        body.extend_from_slice(&data);
        let r = ts.post(&alice, "/chunks").body(body).send().await.unwrap();
        sent.push(id);
        if r.status() != StatusCode::OK {
            break r;
        }
    };
    let e = assert_error(full, StatusCode::INSUFFICIENT_STORAGE, "the server's disk is full: ").await;
    assert_eq!(e.kind, "insufficient_storage");
    assert!(e.error.starts_with("the server's disk is full: "), "{}", e.error);
    assert!(!e.error.contains(mnt.to_str().unwrap()), "server paths stay on the server: {}", e.error);
    let objects = data_dir.join("objects");
    assert!(files_under(&objects.join("tmp")).is_empty(), "no temp file is left");
    assert!(files_under(&objects.join("chunks")).is_empty(), "chunks go to packs, not one file each");
    // The packs hold exactly the whole records of the chunks that fit: the
    // failed one was cut off its pack (random data is stored raw).
    let record = podder_store::pack::record_len(1 << 20);
    let packs: u64 = pack_files(&objects).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert_eq!(packs, (sent.len() as u64 - 1) * record, "every chunk but the failed one is stored, whole");
    let failed = *sent.last().unwrap();
    let r = ts.get(&alice, "/datasets/alice/big/versions").send().await.unwrap();
    assert!(r.json::<Vec<DatasetVersion>>().await.unwrap().is_empty(), "no version was created");

    // Space is back: the same upload runs again and completes.
    fs.resize("400m");
    let datas: Vec<Vec<u8>> = (0..sent.len() as u32).map(noise).collect();
    let lacking = {
        let r = ts.post(&alice, "/chunks/missing").json(&podder_core::api::ChunkList { chunks: sent.clone() }).send();
        r.await.unwrap().json::<podder_core::api::ChunkList>().await.unwrap().chunks
    };
    assert_eq!(lacking, [failed], "only the chunk that did not fit is missing");
    ts.upload(&alice, &[datas.last().unwrap().as_slice()]).await;
    let entries = sent.iter().enumerate().map(|(i, id)| Entry {
        path: format!("part-{i:03}"),
        kind: EntryKind::File { mode: 0o644, size: 1 << 20, chunks: vec![*id] },
    });
    let manifest = Manifest::new(entries.collect());
    let r = ts.post(&alice, "/manifests").json(&manifest).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(ts.version(&alice, "alice", "big", manifest.id()).await, 1);
    let r = ts.get(&alice, "/datasets/alice/big/versions/latest").send().await.unwrap();
    let v: DatasetVersion = r.json().await.unwrap();
    assert_eq!((v.files, v.bytes), (sent.len() as u64, (sent.len() as u64) << 20));

    ts.shutdown().await;
    drop(ts);
    // Reopened, the store finds every chunk, and no partial record.
    let store = PackStore::open(&objects).unwrap();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(store.list_chunks_sync().unwrap(), want);
    for (id, data) in sent.iter().zip(&datas) {
        assert_eq!(&store.get_chunk_sync(*id).unwrap(), data);
    }
    let packs: u64 = pack_files(&objects).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert_eq!(packs, sent.len() as u64 * record);
    drop(store);
    drop(fs);
}
