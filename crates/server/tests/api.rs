//! Tokens, projects, chunks, manifests and submit validation, over HTTP.

mod common;

use common::{TestServer, assert_invalid, error, job};
use podder_core::api::{ChunkList, ChunksStored, ErrorBody, Job, Project, Stats, WhoAmI, frames};
use podder_core::{ChunkId, Entry, EntryKind, Manifest};
use reqwest::StatusCode;

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let ts = TestServer::start().await;
    let r = ts.client.get(format!("{}/api/v1/whoami", ts.base)).send().await.unwrap();
    let (status, body) = error(r).await;
    assert_eq!((status, body.kind.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert!(body.error.contains("Authorization: Bearer"), "{}", body.error);

    let r = ts.get("pdr_wrong", "/projects").send().await.unwrap();
    assert_eq!(error(r).await.0, StatusCode::UNAUTHORIZED);
    let r = ts.post("pdr_wrong", "/agent/lease").json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(error(r).await.0, StatusCode::UNAUTHORIZED);

    let who: WhoAmI = ts.get(&ts.admin, "/whoami").send().await.unwrap().json().await.unwrap();
    assert_eq!((who.owner.as_str(), who.admin), ("admin", true));
    let alice = ts.token("alice").await;
    assert!(alice.starts_with("pdr_") && alice.len() == 68);
    let who: WhoAmI = ts.get(&alice, "/whoami").send().await.unwrap().json().await.unwrap();
    assert_eq!((who.owner.as_str(), who.admin), ("alice", false));

    let r = ts.get(&alice, "/no/such/route").send().await.unwrap();
    assert_eq!(error(r).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn projects_are_created_listed_and_unique() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let r = ts.post(&alice, "/projects").json(&serde_json::json!({"name": "cifar", "description": "d"})).send();
    let created: Project = r.await.unwrap().json().await.unwrap();
    assert_eq!((created.owner.as_str(), created.description.as_str(), created.jobs), ("alice", "d", 0));

    let r = ts.post(&alice, "/projects").json(&serde_json::json!({"name": "mnist"})).send().await.unwrap();
    let (status, body) = error(r).await;
    assert_eq!((status, body.kind.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert!(body.error.contains("alice/mnist already exists"), "{}", body.error);
    let r = ts.post(&alice, "/projects").json(&serde_json::json!({"name": "Bad Name"})).send().await.unwrap();
    assert_invalid(r, "Bad Name").await;

    let list: Vec<Project> = ts.get(&alice, "/projects").send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cifar", "mnist"]);
    let one: Project = ts.get(&alice, "/projects/alice/mnist").send().await.unwrap().json().await.unwrap();
    assert_eq!(one.name.as_str(), "mnist");
    let bob = ts.token("bob").await;
    let list: Vec<Project> = ts.get(&bob, "/projects").send().await.unwrap().json().await.unwrap();
    assert!(list.is_empty(), "a caller lists only their own projects");
}

#[tokio::test]
async fn a_foreign_project_looks_missing() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "secret").await;
    let code = ts.code(&alice).await;
    assert_eq!(ts.submit(&alice, "alice", "secret", &job(code)).await.status(), StatusCode::CREATED);
    let bob = ts.token("bob").await;

    let body_of = |path: String| {
        let req = ts.get(&bob, &path);
        async move {
            let (status, body) = error(req.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            body
        }
    };
    let foreign: ErrorBody = body_of("/projects/alice/secret".into()).await;
    let missing: ErrorBody = body_of("/projects/alice/nothing".into()).await;
    assert_eq!(foreign.error.replace("secret", "nothing"), missing.error);
    assert_eq!(foreign.kind, missing.kind);
    body_of("/projects/alice/secret/jobs".into()).await;
    let foreign = body_of("/jobs/alice/secret/1".into()).await;
    let missing = body_of("/jobs/alice/secret/2".into()).await;
    assert_eq!(foreign.error.replace("#1", "#2"), missing.error);
    body_of("/jobs/alice/secret/1/logs".into()).await;
    for path in ["/jobs/alice/secret/1/stop", "/jobs/alice/secret/1/restart"] {
        let r = ts.post(&bob, path).send().await.unwrap();
        assert_eq!(error(r).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    let bob_code = ts.code(&bob).await;
    let r = ts.submit(&bob, "alice", "secret", &job(bob_code)).await;
    assert_eq!(error(r).await.0, StatusCode::NOT_FOUND);
    // Nor can bob mount alice's output by naming it.
    ts.create_project(&bob, "mine").await;
    let mut sneaky = job(bob_code);
    sneaky.data = vec!["alice/secret#1".into()];
    let r = ts.submit(&bob, "bob", "mine", &sneaky).await;
    assert_eq!(error(r).await.0, StatusCode::NOT_FOUND);

    // An admin sees everything.
    let r = ts.get(&ts.admin, "/jobs/alice/secret/1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn framed(chunks: &[(ChunkId, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, data) in chunks {
        body.extend_from_slice(&frames::header(id, data.len()));
        body.extend_from_slice(data);
    }
    body
}

#[tokio::test]
async fn chunks_upload_missing_fetch_and_stats() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let (a, b): (&[u8], &[u8]) = (b"first chunk", b"second chunk, longer");
    let (ia, ib) = (ChunkId::of(a), ChunkId::of(b));
    let r = ts.post(&alice, "/chunks").body(framed(&[(ia, a), (ib, b)])).send().await.unwrap();
    let stored: ChunksStored = r.json().await.unwrap();
    assert_eq!((stored.received, stored.stored, stored.bytes), (2, 2, (a.len() + b.len()) as u64));
    let r = ts.post(&alice, "/chunks").body(framed(&[(ia, a)])).send().await.unwrap();
    let again: ChunksStored = r.json().await.unwrap();
    assert_eq!((again.received, again.stored), (1, 0), "a known chunk is stored once");

    let unknown = ChunkId::of(b"never sent");
    let r = ts.post(&alice, "/chunks/missing").json(&ChunkList { chunks: vec![ia, unknown, ib] }).send();
    let missing: ChunkList = r.await.unwrap().json().await.unwrap();
    assert_eq!(missing.chunks, [unknown]);

    let r = ts.post(&alice, "/chunks").body(framed(&[(ia, b"not the bytes")])).send().await.unwrap();
    assert_invalid(r, &ia.to_string()).await;
    let mut huge = frames::header(&ia, frames::MAX_CHUNK + 1).to_vec();
    huge.extend_from_slice(b"x");
    let (status, body) = error(ts.post(&alice, "/chunks").body(huge).send().await.unwrap()).await;
    assert_eq!((status, body.kind.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    assert!(body.error.contains(&format!("limit of {} bytes", frames::MAX_CHUNK)), "{}", body.error);
    let mut cut = framed(&[(ib, b)]);
    cut.truncate(cut.len() - 3);
    assert_invalid(ts.post(&alice, "/chunks").body(cut).send().await.unwrap(), "ended inside chunk").await;
    assert_invalid(ts.post(&alice, "/chunks").body(vec![1u8; 10]).send().await.unwrap(), "frame header").await;

    let r = ts.post(&alice, "/chunks/fetch").json(&ChunkList { chunks: vec![ib, ia] }).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), framed(&[(ib, b), (ia, a)]));
    let r = ts.post(&alice, "/chunks/fetch").json(&ChunkList { chunks: vec![ia, unknown] }).send().await.unwrap();
    let (status, body) = error(r).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.error.contains(&unknown.to_string()));

    let r = ts.get(&alice, "/admin/stats").send().await.unwrap();
    assert_eq!(error(r).await.0, StatusCode::FORBIDDEN);
    let stats: Stats = ts.get(&ts.admin, "/admin/stats").send().await.unwrap().json().await.unwrap();
    assert_eq!(stats.chunks_stored, 2);
    assert!(stats.chunks_received >= 4, "{stats:?}");
    assert!(stats.chunk_bytes_received >= (2 * a.len() + b.len()) as u64);
}

fn file(path: &str, chunks: Vec<ChunkId>) -> Entry {
    Entry { path: path.into(), kind: EntryKind::File { mode: 0o644, size: 1, chunks } }
}

#[tokio::test]
async fn manifests_are_checked_before_they_are_committed() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let ids = ts.upload(&alice, &[b"x"]).await;
    let unsafe_trees = [
        (vec![file("/etc/passwd", ids.clone())], "absolute"),
        (vec![file("a/../b", ids.clone())], "'..'"),
        (vec![file("a", ids.clone()), file("a", ids.clone())], "twice"),
        (vec![Entry { path: "l".into(), kind: EntryKind::Symlink { target: "../x".into() } }], "outside the tree"),
    ];
    for (entries, needle) in unsafe_trees {
        let m = Manifest { version: 1, entries };
        assert_invalid(ts.post(&alice, "/manifests").json(&m).send().await.unwrap(), needle).await;
    }
    let absent = ChunkId::of(b"absent");
    let m = Manifest::new(vec![file("a", vec![ids[0], absent]), file("b", vec![absent])]);
    let r = ts.post(&alice, "/manifests").json(&m).send().await.unwrap();
    assert_invalid(r, &format!("1 chunks are missing, e.g. {absent}: upload them first")).await;

    let id = ts.commit_tree(&alice, &[("dir/a.txt", b"x"), ("b.txt", b"y")]).await;
    let again = ts.commit_tree(&alice, &[("dir/a.txt", b"x"), ("b.txt", b"y")]).await;
    assert_eq!(id, again, "committing is idempotent");
    let back: Manifest = ts.get(&alice, &format!("/manifests/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(back.id(), id);
    assert_eq!(back.file_count(), 2);
    let r = ts.get(&alice, &format!("/manifests/{}", ChunkId::of(b"nope"))).send().await.unwrap();
    assert_eq!(error(r).await.0, StatusCode::NOT_FOUND);
    assert_invalid(ts.get(&alice, "/manifests/xyz").send().await.unwrap(), "digest").await;
}

#[tokio::test]
async fn bad_submits_are_rejected_and_create_no_job() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    let with = |f: &dyn Fn(&mut podder_core::api::SubmitJob)| {
        let mut j = job(code);
        f(&mut j);
        j
    };
    let cases = [
        (with(&|j| j.command = vec![]), "the command is empty: give one after --"),
        (with(&|j| j.code = None), "no code snapshot"),
        (with(&|j| j.code = Some(podder_core::ManifestId::of(b"never"))), "not committed"),
        (with(&|j| j.data = vec!["mnist#1:data".into()]), "relative"),
        (with(&|j| j.data = vec!["mnist#1:/code".into()]), "/code belongs to the job"),
        (with(&|j| j.data = vec!["mnist#1:/data/x".into(), "mnist#2:/data/x".into()]), "overlap"),
        (with(&|j| j.data = vec!["mnist#x".into()]), "mnist#x"),
        (with(&|j| j.data = vec!["cifar@3".into()]), "there is no dataset alice/cifar that you can see"),
        (with(&|j| j.data = vec!["mnist#1".into()]), "there is no job alice/mnist#1"),
        (with(&|j| j.params = [("9lives".to_string(), "1".to_string())].into()), "9lives"),
        (with(&|j| j.queue = Some("GPU queue".into())), "queue"),
    ];
    for (req, needle) in cases {
        let r = ts.submit(&alice, "alice", "mnist", &req).await;
        if needle.starts_with("there is no") {
            let (status, body) = error(r).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(body.error.contains(needle), "{}", body.error);
        } else {
            assert_invalid(r, needle).await;
        }
    }
    let r = ts.post(&alice, "/projects/alice/mnist/jobs").body("{not json").send().await.unwrap();
    assert_eq!(error(r).await.0, StatusCode::BAD_REQUEST);

    let jobs: Vec<Job> = ts.get(&alice, "/projects/alice/mnist/jobs").send().await.unwrap().json().await.unwrap();
    assert!(jobs.is_empty());
    let p: Project = ts.get(&alice, "/projects/alice/mnist").send().await.unwrap().json().await.unwrap();
    assert_eq!(p.jobs, 0, "no number was used up");
}

#[tokio::test]
async fn shutdown_answers_open_long_polls() {
    let mut ts = TestServer::start().await;
    let poll = {
        let req = serde_json::json!({"agent": "a", "queue": "default", "wait_ms": 60_000});
        let send = ts.post(&ts.admin, "/agent/lease").json(&req).send();
        tokio::spawn(async move { send.await.unwrap().status() })
    };
    // Let the poll start waiting, so that shutdown is what ends it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    ts.shutdown().await;
    assert_eq!(poll.await.unwrap(), StatusCode::NO_CONTENT);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_manifest_is_read_only_by_owners_it_was_granted_to() {
    use podder_core::api::Finish;
    use podder_core::{ManifestId, Outcome};

    let ts = TestServer::start().await;
    let (alice, bob, admin) = (ts.token("alice").await, ts.token("bob").await, ts.admin.clone());
    let get = |token: &str, id: ManifestId| ts.get(token, &format!("/manifests/{id}")).send();
    // The answer for a manifest that does not exist at all, to compare with.
    let missing = ManifestId::of(b"never committed");
    let (status, absent) = error(get(&bob, missing).await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let hidden = |id: ManifestId| absent.error.replace(&missing.to_string(), &id.to_string());

    let files: &[(&str, &[u8])] = &[("secret/plan.txt", b"alice's plan"), ("b.txt", b"y")];
    let tree = ts.commit_tree(&alice, files).await;
    let (status, body) = error(get(&bob, tree).await.unwrap()).await;
    assert_eq!((status, body.kind.as_str(), body.error), (StatusCode::NOT_FOUND, absent.kind.as_str(), hidden(tree)));
    assert_eq!(get(&alice, tree).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(&admin, tree).await.unwrap().status(), StatusCode::OK, "admins read every manifest");

    // Naming alice's id does not make it bob's: not as code, not as a version.
    ts.create_project(&bob, "p").await;
    assert_invalid(ts.submit(&bob, "bob", "p", &job(tree)).await, "not committed").await;
    ts.create_dataset(&bob, "d").await;
    assert_invalid(ts.add_version(&bob, "bob", "d", tree).await, "not committed").await;
    assert_eq!(get(&bob, tree).await.unwrap().status(), StatusCode::NOT_FOUND);

    // A job's output is granted to the job's owner when the agent finishes.
    ts.create_project(&alice, "p").await;
    assert_eq!(ts.submit(&alice, "alice", "p", &job(tree)).await.status(), StatusCode::CREATED);
    let lease = ts.lease(&admin, "default", 0).await.expect("the job is queued");
    let output = ts.commit_tree(&admin, &[("model.bin", b"alice's weights")]).await;
    let done =
        Finish { outcome: Outcome::Succeeded, exit_code: Some(0), output: Some(output), reason: None, build: None };
    let r = ts.post(&admin, &format!("/agent/leases/{}/finish", lease.lease_id)).json(&done).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let (status, body) = error(get(&bob, output).await.unwrap()).await;
    assert_eq!((status, body.error), (StatusCode::NOT_FOUND, hidden(output)));
    let back: Manifest = get(&alice, output).await.unwrap().json().await.unwrap();
    assert_eq!(back.id(), output);
    assert_eq!(get(&admin, output).await.unwrap().status(), StatusCode::OK);

    // Bob committing the same bytes himself shows he has the tree: he may read it.
    assert_eq!(ts.commit_tree(&bob, files).await, tree);
    let back: Manifest = get(&bob, tree).await.unwrap().json().await.unwrap();
    assert_eq!(back.id(), tree);
    assert_eq!(get(&bob, output).await.unwrap().status(), StatusCode::NOT_FOUND, "a grant is per manifest");
}

#[tokio::test]
async fn only_agents_may_use_agent_routes() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "p").await;
    let code = ts.code(&alice).await;
    assert_eq!(ts.submit(&alice, "alice", "p", &job(code)).await.status(), StatusCode::CREATED);
    let bob = ts.token("bob").await;
    let body = serde_json::json!({"agent": "sneaky", "queue": "default", "wait_ms": 0});
    let r = ts.post(&bob, "/agent/lease").json(&body).send().await.unwrap();
    let (status, err) = error(r).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(err.error.contains("agent"), "{}", err.error);
    // the job was not handed out: a real agent (admin token) still gets it
    let lease = ts.lease(&ts.admin, "default", 1000).await.expect("the job is still queued");
    let bodies = [
        ("heartbeat?wait_ms=0", serde_json::json!({})),
        ("logs", serde_json::json!({"lines": []})),
        ("finish", serde_json::json!({"outcome": "succeeded", "exit_code": 0, "output": null, "reason": null})),
        ("state", serde_json::json!({"state": "running"})),
    ];
    for (path, body) in bodies {
        let r = ts.post(&bob, &format!("/agent/leases/{}/{path}", lease.lease_id)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
}
