//! Garbage collection over HTTP: exactly the chunks only deleted records
//! referred to are freed, a dry run reports the same and frees nothing,
//! jobs keep what they used, and recent uploads are spared.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestServer, assert_error, job};
use podder_core::api::{ChunkList, GcReport, GcRequest};
use podder_core::{ChunkId, Entry, EntryKind, Manifest, ManifestId};
use reqwest::StatusCode;

async fn gc(ts: &TestServer, dry_run: bool) -> GcReport {
    let r = ts.post(&ts.admin, "/admin/gc").json(&GcRequest { dry_run }).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: GcReport = r.json().await.unwrap();
    assert_eq!(report.dry_run, dry_run);
    report
}

async fn missing(ts: &TestServer, token: &str, ids: &[ChunkId]) -> BTreeSet<ChunkId> {
    let r = ts.post(token, "/chunks/missing").json(&ChunkList { chunks: ids.to_vec() }).send().await.unwrap();
    r.json::<ChunkList>().await.unwrap().chunks.into_iter().collect()
}

async fn has_manifest(ts: &TestServer, token: &str, id: ManifestId) -> bool {
    ts.get(token, &format!("/manifests/{id}")).send().await.unwrap().status() == StatusCode::OK
}

/// A tree of one file per chunk.
async fn tree(ts: &TestServer, token: &str, chunks: &[ChunkId]) -> ManifestId {
    let entries = chunks
        .iter()
        .enumerate()
        .map(|(i, id)| Entry {
            path: format!("f{i}"),
            kind: EntryKind::File { mode: 0o644, size: 1, chunks: vec![*id] },
        })
        .collect();
    let m = Manifest::new(entries);
    let r = ts.post(token, "/manifests").json(&m).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    m.id()
}

#[tokio::test]
async fn gc_frees_exactly_what_only_deleted_versions_named() {
    let ts = TestServer::with_config(|c| c.gc_grace = Duration::ZERO).await;
    let alice = ts.token("alice").await;
    let r = ts.post(&alice, "/admin/gc").json(&GcRequest::default()).send().await.unwrap();
    assert_error(r, StatusCode::FORBIDDEN, "only an admin").await;

    ts.create_dataset(&alice, "cifar").await;
    let ids = ts.upload(&alice, &[b"shared chunk", b"only in v1", b"only in v2", b"v2 also only", b"stray"]).await;
    let [shared, only1, only2a, only2b, stray] = ids[..] else { unreachable!() };
    let v1 = tree(&ts, &alice, &[shared, only1]).await;
    let v2 = tree(&ts, &alice, &[shared, only2a, only2b]).await;
    ts.version(&alice, "alice", "cifar", v1).await;
    ts.version(&alice, "alice", "cifar", v2).await;

    // Everything is referenced except the stray chunk.
    let report = gc(&ts, false).await;
    assert_eq!((report.chunks_freed, report.manifests_freed, report.chunks_kept), (1, 0, 4));
    assert_eq!(report.freed, [stray]);
    assert!(report.bytes_freed > 0);

    let r = ts.delete(&alice, "/datasets/alice/cifar/versions/2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let want: BTreeSet<ChunkId> = [only2a, only2b].into();
    let dry = gc(&ts, true).await;
    assert_eq!(dry.freed.iter().copied().collect::<BTreeSet<_>>(), want);
    assert_eq!((dry.chunks_freed, dry.manifests_freed, dry.chunks_kept), (2, 1, 2));
    assert!(missing(&ts, &alice, &ids[..4]).await.is_empty(), "a dry run frees nothing");
    assert!(has_manifest(&ts, &alice, v2).await);

    let real = gc(&ts, false).await;
    assert_eq!(real.freed.iter().copied().collect::<BTreeSet<_>>(), want);
    assert_eq!(
        (real.chunks_freed, real.manifests_freed, real.chunks_kept, real.bytes_freed),
        (dry.chunks_freed, dry.manifests_freed, dry.chunks_kept, dry.bytes_freed),
        "the dry run reported what the real run did"
    );
    assert_eq!(missing(&ts, &alice, &ids[..4]).await, want);
    assert!(!has_manifest(&ts, &alice, v2).await);
    assert!(has_manifest(&ts, &alice, v1).await, "the surviving version is whole");
    let again = gc(&ts, false).await;
    assert_eq!((again.chunks_freed, again.manifests_freed, again.chunks_kept), (0, 0, 2));

    // Deleting the whole dataset frees the rest.
    ts.delete(&alice, "/datasets/alice/cifar").send().await.unwrap();
    let last = gc(&ts, false).await;
    assert_eq!((last.chunks_freed, last.manifests_freed, last.chunks_kept), (2, 1, 0));
}

#[tokio::test]
async fn jobs_keep_their_code_inputs_and_outputs() {
    let ts = TestServer::with_config(|c| c.gc_grace = Duration::ZERO).await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    ts.create_dataset(&alice, "cifar").await;
    let code = ts.code(&alice).await;
    let ids = ts.upload(&alice, &[b"input data", b"output data"]).await;
    let input = tree(&ts, &alice, &ids[..1]).await;
    let output = tree(&ts, &alice, &ids[1..]).await;
    ts.version(&alice, "alice", "cifar", input).await;
    let mut req = job(code);
    req.data = vec!["cifar".into()];
    assert_eq!(ts.submit(&alice, "alice", "mnist", &req).await.status(), StatusCode::CREATED);
    let lease = ts.lease(&ts.admin, "default", 0).await.unwrap();
    let finish = podder_core::api::Finish {
        outcome: podder_core::Outcome::Succeeded,
        exit_code: Some(0),
        output: Some(output),
        reason: None,
        build: None,
    };
    ts.post(&ts.admin, &format!("/agent/leases/{}/finish", lease.lease_id)).json(&finish).send().await.unwrap();
    ts.delete(&alice, "/datasets/alice/cifar").send().await.unwrap();

    // The job may be restarted, so what it ran on stays.
    let report = gc(&ts, false).await;
    assert_eq!((report.chunks_freed, report.manifests_freed), (0, 0));
    for m in [code, input, output] {
        assert!(has_manifest(&ts, &alice, m).await);
    }
    assert!(missing(&ts, &alice, &ids).await.is_empty());
}

#[tokio::test]
async fn gc_spares_uploads_within_the_grace_window() {
    let grace = Duration::from_millis(1500);
    let ts = TestServer::with_config(|c| c.gc_grace = grace).await;
    let alice = ts.token("alice").await;
    let old = ts.upload(&alice, &[b"old and forgotten", b"old but checked again"]).await;
    let report = gc(&ts, false).await;
    assert_eq!((report.chunks_freed, report.chunks_kept), (0, 2), "a server younger than the window frees nothing");

    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    // An upload in flight: a chunk sent, one the client was told is present
    // (so it will not send it), and a committed manifest nothing refers to yet.
    let fresh = ts.upload(&alice, &[b"just uploaded"]).await;
    assert!(missing(&ts, &alice, &old[1..]).await.is_empty());
    let named = ts.upload(&alice, &[b"named by a fresh manifest"]).await;
    let manifest = tree(&ts, &alice, &named).await;
    let report = gc(&ts, false).await;
    assert_eq!(report.freed, [old[0]], "only what is older than the window and unreferenced goes");
    assert_eq!((report.manifests_freed, report.chunks_kept), (0, 3));
    assert!(has_manifest(&ts, &alice, manifest).await);

    // The upload finishes: its version now holds the manifest and its chunk.
    ts.create_dataset(&alice, "d").await;
    ts.version(&alice, "alice", "d", manifest).await;
    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    let report = gc(&ts, false).await;
    let freed: BTreeSet<ChunkId> = report.freed.into_iter().collect();
    assert_eq!(freed, [fresh[0], old[1]].into(), "once the window has passed, unreferenced chunks go");
    assert_eq!((report.manifests_freed, report.chunks_kept), (0, 1));
    assert!(missing(&ts, &alice, &named).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_racing_uploads_never_break_an_upload() {
    let grace = Duration::from_millis(1000);
    let ts = TestServer::with_config(|c| c.gc_grace = grace).await;
    let alice = ts.token("alice").await;
    ts.create_dataset(&alice, "race").await;
    // Garbage that the collections may free while the uploads run.
    let garbage: Vec<Vec<u8>> = (0..20u32).map(|i| format!("garbage {i}").into_bytes()).collect();
    ts.upload(&alice, &garbage.iter().map(|g| g.as_slice()).collect::<Vec<_>>()).await;
    tokio::time::sleep(grace + Duration::from_millis(100)).await;

    let uploads = (0..16u32).map(|i| {
        let (ts, alice) = (&ts, &alice);
        async move {
            // Shares a chunk with the garbage, so the missing check matters.
            let data = [format!("garbage {i}").into_bytes(), format!("upload {i}").into_bytes()];
            let ids: Vec<ChunkId> = data.iter().map(|d| ChunkId::of(d)).collect();
            let lacking = missing(ts, alice, &ids).await;
            let send: Vec<&[u8]> =
                data.iter().zip(&ids).filter(|(_, id)| lacking.contains(id)).map(|(d, _)| d.as_slice()).collect();
            if !send.is_empty() {
                ts.upload(alice, &send).await;
            }
            tokio::task::yield_now().await;
            let m = tree(ts, alice, &ids).await;
            ts.version(alice, "alice", "race", m).await;
            ids
        }
    });
    let collections = async {
        let mut freed = 0;
        for _ in 0..8 {
            freed += gc(&ts, false).await.chunks_freed;
        }
        freed
    };
    let (all, freed) = tokio::join!(futures_util::future::join_all(uploads), collections);
    let every: Vec<ChunkId> = all.into_iter().flatten().collect();
    assert!(missing(&ts, &alice, &every).await.is_empty(), "every version is whole");
    assert!(freed >= 4, "the garbage no upload reused was collected ({freed} freed)");
    let unused: Vec<ChunkId> = garbage[16..].iter().map(|g| ChunkId::of(g)).collect();
    assert_eq!(missing(&ts, &alice, &unused).await.len(), 4);
    let report = gc(&ts, false).await;
    assert_eq!((report.chunks_freed, report.chunks_kept), (0, 32), "the store holds exactly the versions");
}

/// The bytes of the object store's pack files.
fn pack_bytes(data_dir: &std::path::Path) -> u64 {
    let packs = std::fs::read_dir(data_dir.join("objects").join("packs")).unwrap();
    let packs = packs.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "pack"));
    packs.map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

#[tokio::test]
async fn freed_chunks_give_their_space_back_and_stay_freed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        podder_server::ServerConfig { gc_grace: Duration::ZERO, ..podder_server::ServerConfig::new(dir.path()) };
    let mut ts = TestServer::open(config.clone(), None, None).await;
    let alice = ts.token("alice").await;
    ts.create_dataset(&alice, "d").await;
    // 64 KiB each that zstd cannot shrink.
    let datas: Vec<Vec<u8>> = (0..40u32)
        .map(|i| {
            let mut out = vec![0u8; 64 * 1024];
            blake3::Hasher::new().update(&i.to_le_bytes()).finalize_xof().fill(&mut out);
            out
        })
        .collect();
    let ids = ts.upload(&alice, &datas.iter().map(|d| d.as_slice()).collect::<Vec<_>>()).await;
    let kept = tree(&ts, &alice, &ids[..10]).await;
    ts.version(&alice, "alice", "d", kept).await;

    let before = pack_bytes(dir.path());
    let report = gc(&ts, false).await;
    assert_eq!((report.chunks_freed, report.chunks_kept), (30, 10));
    assert_eq!(report.bytes_freed, 30 * 64 * 1024, "the stored size of the freed chunks");
    let after = pack_bytes(dir.path());
    let record = podder_store::pack::record_len(64 * 1024);
    assert_eq!(before - after, 30 * record, "the freed records (headers and padding too) left the disk");
    assert_eq!(after, 10 * record);

    // A restart neither brings the freed chunks back nor loses the kept ones.
    ts.shutdown().await;
    let admin = ts.admin.clone();
    drop(ts);
    let ts = TestServer::open(config, Some(admin), None).await;
    let want: BTreeSet<ChunkId> = ids[10..].iter().copied().collect();
    assert_eq!(missing(&ts, &alice, &ids).await, want);
    let again = gc(&ts, false).await;
    assert_eq!((again.chunks_freed, again.chunks_kept), (0, 10));
    let r = ts.post(&alice, "/chunks/fetch").json(&ChunkList { chunks: ids[..10].to_vec() }).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.unwrap();
    let mut at = 0;
    for data in &datas[..10] {
        let header: &[u8; podder_core::api::frames::HEADER] =
            body[at..at + podder_core::api::frames::HEADER].try_into().unwrap();
        let (id, len) = podder_core::api::frames::parse_header(header);
        at += podder_core::api::frames::HEADER;
        assert_eq!((id, &body[at..at + len]), (ChunkId::of(data), data.as_slice()));
        at += len;
    }
    assert_eq!(at, body.len());
}
