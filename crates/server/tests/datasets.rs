//! Datasets over HTTP: create, list, show, versions (numbering, latest,
//! deleting), refusals while a job mounts a version, versions from job
//! outputs, submits that resolve dataset refs, and storage quotas.

mod common;

use common::{TestServer, assert_error, assert_invalid, error, job};
use podder_core::api::{Dataset, DatasetVersion, Finish, Job};
use podder_core::{JobState, ManifestId, Outcome};
use reqwest::StatusCode;

async fn versions(ts: &TestServer, token: &str, path: &str) -> Vec<u32> {
    let r = ts.get(token, &format!("/datasets/{path}/versions")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Vec<DatasetVersion>>().await.unwrap().into_iter().map(|v| v.version).collect()
}

async fn show_version(ts: &TestServer, token: &str, path: &str) -> DatasetVersion {
    let r = ts.get(token, &format!("/datasets/{path}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

/// Submits a job of alice/mnist mounting `data`.
async fn submit_with(ts: &TestServer, token: &str, code: ManifestId, data: &[&str]) -> reqwest::Response {
    let mut req = job(code);
    req.data = data.iter().map(|d| d.to_string()).collect();
    ts.submit(token, "alice", "mnist", &req).await
}

/// Leases the next job of the default queue and finishes it.
async fn run_to_end(ts: &TestServer, outcome: Outcome, output: Option<ManifestId>) -> reqwest::Response {
    let lease = ts.lease(&ts.admin, "default", 0).await.expect("a queued job");
    let finish = Finish { outcome, exit_code: Some(0), output, reason: None, build: None };
    ts.post(&ts.admin, &format!("/agent/leases/{}/finish", lease.lease_id)).json(&finish).send().await.unwrap()
}

#[tokio::test]
async fn datasets_are_created_listed_unique_and_private() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let r = ts.post(&alice, "/datasets").json(&serde_json::json!({"name": "cifar", "description": "images"})).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let d: Dataset = r.json().await.unwrap();
    assert_eq!((d.owner.as_str(), d.name.as_str(), d.description.as_str()), ("alice", "cifar", "images"));
    assert_eq!((d.versions, d.latest, d.bytes), (0, None, 0));
    let r = ts.post(&alice, "/datasets").json(&serde_json::json!({"name": "cifar"})).send().await.unwrap();
    let body = assert_error(r, StatusCode::CONFLICT, "dataset alice/cifar already exists").await;
    assert_eq!(body.kind, "conflict");
    let r = ts.post(&alice, "/datasets").json(&serde_json::json!({"name": "Bad Name"})).send().await.unwrap();
    assert_invalid(r, "Bad Name").await;
    ts.create_dataset(&alice, "alpha").await;
    let list: Vec<Dataset> = ts.get(&alice, "/datasets").send().await.unwrap().json().await.unwrap();
    assert_eq!(list.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["alpha", "cifar"]);
    let one: Dataset = ts.get(&alice, "/datasets/alice/cifar").send().await.unwrap().json().await.unwrap();
    assert_eq!(one.description, "images");

    // bob sees nothing of alice's: every route answers like for a missing dataset.
    let bob = ts.token("bob").await;
    let list: Vec<Dataset> = ts.get(&bob, "/datasets").send().await.unwrap().json().await.unwrap();
    assert!(list.is_empty());
    let code = ts.code(&alice).await;
    let tree = ts.commit_tree(&alice, &[("a.txt", b"a")]).await;
    ts.version(&alice, "alice", "cifar", tree).await;
    let bob_code = ts.code(&bob).await;
    let calls = |name: &str| {
        let p = format!("/datasets/alice/{name}");
        [
            ts.get(&bob, &p),
            ts.delete(&bob, &p),
            ts.get(&bob, &format!("{p}/versions")),
            ts.get(&bob, &format!("{p}/versions/1")),
            ts.get(&bob, &format!("{p}/versions/latest")),
            ts.delete(&bob, &format!("{p}/versions/1")),
            ts.post(&bob, &format!("{p}/versions")).json(&serde_json::json!({"manifest": tree})),
            ts.post(&bob, &format!("{p}/from-output")).json(&serde_json::json!({"job": "bob/x#1"})),
        ]
    };
    for (foreign, missing) in calls("cifar").into_iter().zip(calls("nothing")) {
        let (fs, fb) = error(foreign.send().await.unwrap()).await;
        let (ms, mb) = error(missing.send().await.unwrap()).await;
        assert_eq!((fs, ms), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND), "{} / {}", fb.error, mb.error);
        assert_eq!(fb.error.replace("cifar", "nothing"), mb.error);
        assert!(fb.error.contains("there is no dataset alice/cifar that you can see"), "{}", fb.error);
    }
    ts.create_project(&bob, "mine").await;
    let mut sneaky = job(bob_code);
    sneaky.data = vec!["alice/cifar".into()];
    let r = ts.submit(&bob, "bob", "mine", &sneaky).await;
    assert_error(r, StatusCode::NOT_FOUND, "there is no dataset alice/cifar that you can see").await;
    assert_eq!(versions(&ts, &alice, "alice/cifar").await, [1], "nothing of bob's calls changed it");
    // An admin sees and mounts every owner's datasets.
    assert_eq!(show_version(&ts, &ts.admin, "alice/cifar/versions/latest").await.manifest, tree);
    ts.create_project(&alice, "mnist").await;
    let mut admins = job(code);
    admins.data = vec!["alice/cifar".into()];
    assert_eq!(ts.submit(&ts.admin, "alice", "mnist", &admins).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn versions_are_numbered_once_and_latest_is_the_newest() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_dataset(&alice, "cifar").await;
    let trees: Vec<ManifestId> = {
        let mut t = Vec::new();
        for i in 0..12u8 {
            t.push(ts.commit_tree(&alice, &[("x.bin", &[i; 10]), ("dir/y.bin", &[i; 5])]).await);
        }
        t
    };
    assert_eq!(ts.version(&alice, "alice", "cifar", trees[0]).await, 1);
    assert_eq!(ts.version(&alice, "alice", "cifar", trees[1]).await, 2);
    let racing = trees[2..].iter().map(|t| ts.add_version(&alice, "alice", "cifar", *t));
    let mut numbers = Vec::new();
    for r in futures_util::future::join_all(racing).await {
        assert_eq!(r.status(), StatusCode::CREATED);
        numbers.push(r.json::<DatasetVersion>().await.unwrap().version);
    }
    numbers.sort();
    assert_eq!(numbers, (3..=12).collect::<Vec<u32>>(), "concurrent creates get distinct numbers");
    assert_eq!(versions(&ts, &alice, "alice/cifar").await, (1..=12).collect::<Vec<u32>>(), "ascending");

    let v2 = show_version(&ts, &alice, "alice/cifar/versions/2").await;
    assert_eq!((v2.manifest, v2.files, v2.bytes, v2.message.as_deref()), (trees[1], 2, 15, Some("test")));
    assert_eq!((v2.owner.as_str(), v2.dataset.as_str(), v2.source.as_deref()), ("alice", "cifar", None));
    assert_eq!(show_version(&ts, &alice, "alice/cifar/versions/v2").await.version, 2);
    assert_eq!(show_version(&ts, &alice, "alice/cifar/versions/latest").await.version, 12);
    let r = ts.get(&alice, "/datasets/alice/cifar/versions/99").send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "dataset alice/cifar has no version 99; see `podder data versions cifar`")
        .await;
    for bad in ["x", "0", "v", "-1", "+3"] {
        let r = ts.get(&alice, &format!("/datasets/alice/cifar/versions/{bad}")).send().await.unwrap();
        assert_invalid(r, "is not a dataset version").await;
    }
    let d: Dataset = ts.get(&alice, "/datasets/alice/cifar").send().await.unwrap().json().await.unwrap();
    assert_eq!((d.versions, d.latest, d.bytes), (12, Some(12), 15));

    // Deleting the newest never frees its number for reuse.
    let r = ts.delete(&alice, "/datasets/alice/cifar/versions/12").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = ts.delete(&alice, "/datasets/alice/cifar/versions/12").send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "has no version 12").await;
    assert_eq!(show_version(&ts, &alice, "alice/cifar/versions/latest").await.version, 11);
    assert_eq!(ts.version(&alice, "alice", "cifar", trees[0]).await, 13);
    let r = ts.delete(&alice, "/datasets/alice/cifar/versions/latest").send().await.unwrap();
    assert_invalid(r, "by its number").await;

    // Only committed manifests become versions.
    let r = ts.add_version(&alice, "alice", "cifar", ManifestId::of(b"never committed")).await;
    assert_invalid(r, "upload its chunks and commit it first").await;
    ts.create_dataset(&alice, "empty").await;
    let r = ts.get(&alice, "/datasets/alice/empty/versions/latest").send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "dataset alice/empty has no versions yet").await;
    assert!(versions(&ts, &alice, "alice/empty").await.is_empty());

    let r = ts.delete(&alice, "/datasets/alice/cifar").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(error(ts.get(&alice, "/datasets/alice/cifar").send().await.unwrap()).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_version_mounted_by_a_queued_job_cannot_be_deleted_until_it_stops() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.create_dataset(&alice, "cifar").await;
    let t1 = ts.commit_tree(&alice, &[("one", b"1")]).await;
    let t2 = ts.commit_tree(&alice, &[("two", b"2")]).await;
    ts.version(&alice, "alice", "cifar", t1).await;
    ts.version(&alice, "alice", "cifar", t2).await;
    let r = submit_with(&ts, &alice, code, &["cifar@1"]).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let msg = "alice/cifar@1 is mounted by alice/mnist#1, which is queued: stop it or wait";
    let r = ts.delete(&alice, "/datasets/alice/cifar/versions/1").send().await.unwrap();
    assert_eq!(assert_error(r, StatusCode::CONFLICT, msg).await.kind, "conflict");
    let r = ts.delete(&alice, "/datasets/alice/cifar").send().await.unwrap();
    assert_error(r, StatusCode::CONFLICT, msg).await;
    let r = ts.delete(&alice, "/datasets/alice/cifar/versions/2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "a version no job mounts can go");
    assert_eq!(versions(&ts, &alice, "alice/cifar").await, [1]);

    let stopped: Job = ts.post(&alice, "/jobs/alice/mnist/1/stop").send().await.unwrap().json().await.unwrap();
    assert_eq!(stopped.state, JobState::Stopped);
    let r = ts.delete(&alice, "/datasets/alice/cifar/versions/1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Restarting the job would mount a version that is gone: refused, naming it.
    let r = ts.post(&alice, "/jobs/alice/mnist/1/restart").send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "the dataset version alice/cifar@1 no longer exists").await;
    let r = ts.delete(&alice, "/datasets/alice/cifar").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn submits_resolve_dataset_refs_to_concrete_versions() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.create_dataset(&alice, "cifar").await;
    ts.create_dataset(&alice, "empty").await;
    let t1 = ts.commit_tree(&alice, &[("one", b"1")]).await;
    let t2 = ts.commit_tree(&alice, &[("two", b"2")]).await;
    ts.version(&alice, "alice", "cifar", t1).await;
    ts.version(&alice, "alice", "cifar", t2).await;

    let r = submit_with(&ts, &alice, code, &["cifar", "cifar@1:/old", "alice/cifar@latest:/new", "cifar@v2:/v"]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let j: Job = r.json().await.unwrap();
    let got: Vec<(&str, ManifestId, &str)> =
        j.spec.inputs.iter().map(|i| (i.source.as_str(), i.manifest, i.mount.as_str())).collect();
    assert_eq!(
        got,
        [
            ("alice/cifar@2", t2, "/data/cifar"),
            ("alice/cifar@1", t1, "/old"),
            ("alice/cifar@2", t2, "/new"),
            ("alice/cifar@2", t2, "/v"),
        ],
        "@latest is resolved at submit and recorded as the concrete version"
    );
    // A later version does not change what the job mounts.
    ts.version(&alice, "alice", "cifar", t1).await;
    let again: Job = ts.get(&alice, "/jobs/alice/mnist/1").send().await.unwrap().json().await.unwrap();
    assert_eq!(again.spec.inputs[0].source, "alice/cifar@2");

    let cases = [
        (vec!["cifar@9"], "dataset alice/cifar has no version 9; see `podder data versions cifar`"),
        (vec!["nope"], "there is no dataset alice/nope that you can see: list your datasets with `podder data list`"),
        (vec!["empty"], "dataset alice/empty has no versions yet"),
    ];
    for (data, needle) in cases {
        assert_error(submit_with(&ts, &alice, code, &data).await, StatusCode::NOT_FOUND, needle).await;
    }
    let jobs: Vec<Job> = ts.get(&alice, "/projects/alice/mnist/jobs").send().await.unwrap().json().await.unwrap();
    assert_eq!(jobs.len(), 1, "refused submits create no job");
}

#[tokio::test]
async fn a_job_output_becomes_a_version_without_moving_a_byte() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.create_dataset(&alice, "models").await;
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    let output = ts.commit_tree(&alice, &[("model/w.bin", b"weights"), ("log.txt", b"ok")]).await;
    assert_eq!(run_to_end(&ts, Outcome::Succeeded, Some(output)).await.status(), StatusCode::OK);

    let stats_before: podder_core::api::Stats =
        ts.get(&ts.admin, "/admin/stats").send().await.unwrap().json().await.unwrap();
    let body = serde_json::json!({"job": "mnist#1", "message": "best so far"});
    let r = ts.post(&alice, "/datasets/alice/models/from-output").json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: DatasetVersion = r.json().await.unwrap();
    assert_eq!((v.version, v.manifest, v.files, v.bytes), (1, output, 2, 9));
    assert_eq!((v.source.as_deref(), v.message.as_deref()), (Some("alice/mnist#1"), Some("best so far")));
    let stats_after: podder_core::api::Stats =
        ts.get(&ts.admin, "/admin/stats").send().await.unwrap().json().await.unwrap();
    assert_eq!(stats_after.chunks_received, stats_before.chunks_received, "no bytes moved");
    // The version mounts like any other.
    let r = submit_with(&ts, &alice, code, &["models"]).await;
    let j: Job = r.json().await.unwrap();
    assert_eq!((j.spec.inputs[0].source.as_str(), j.spec.inputs[0].manifest), ("alice/models@1", output));

    // Job 2 is queued (has not ended); job 3 fails without an output.
    let r = ts.post(&alice, "/datasets/alice/models/from-output").json(&serde_json::json!({"job": "mnist#2"})).send();
    assert_invalid(r.await.unwrap(), "job alice/mnist#2 is queued").await;
    ts.post(&alice, "/jobs/alice/mnist/2/stop").send().await.unwrap();
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    run_to_end(&ts, Outcome::Failed, None).await;
    let r = ts.post(&alice, "/datasets/alice/models/from-output").json(&serde_json::json!({"job": "mnist#3"})).send();
    assert_invalid(r.await.unwrap(), "job alice/mnist#3 ended (failed) without an output").await;
    let r = ts.post(&alice, "/datasets/alice/models/from-output").json(&serde_json::json!({"job": "mnist#9"})).send();
    assert_error(r.await.unwrap(), StatusCode::NOT_FOUND, "there is no job alice/mnist#9").await;
    let r = ts.post(&alice, "/datasets/alice/nope/from-output").json(&serde_json::json!({"job": "mnist#1"})).send();
    assert_error(r.await.unwrap(), StatusCode::NOT_FOUND, "there is no dataset alice/nope").await;
    // bob cannot take alice's output into a dataset of his.
    let bob = ts.token("bob").await;
    ts.create_dataset(&bob, "stolen").await;
    let r = ts.post(&bob, "/datasets/bob/stolen/from-output").json(&serde_json::json!({"job": "alice/mnist#1"})).send();
    assert_error(r.await.unwrap(), StatusCode::NOT_FOUND, "there is no job alice/mnist#1 that you can see").await;
}

#[tokio::test]
async fn the_storage_quota_refuses_versions_and_fails_jobs_with_outputs_over_it() {
    let ts = TestServer::with_config(|c| c.quota_bytes = Some(100)).await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.create_dataset(&alice, "d").await;
    let big = ts.commit_tree(&alice, &[("a", &[1u8; 60])]).await;
    let other = ts.commit_tree(&alice, &[("b", &[2u8; 60])]).await;
    assert_eq!(ts.version(&alice, "alice", "d", big).await, 1);
    let r = ts.add_version(&alice, "alice", "d", other).await;
    let body = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "storage quota of 100 bytes exceeded").await;
    assert_eq!(body.kind, "quota_exceeded");
    assert!(
        body.error.contains("podder data delete NAME@vN") && body.error.contains("podder admin gc"),
        "{}",
        body.error
    );
    assert_eq!(ts.version(&alice, "alice", "d", big).await, 2, "the same tree again costs nothing");

    // An agent's output over the quota: 413, and the job is kept as failed.
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    let r = run_to_end(&ts, Outcome::Succeeded, Some(other)).await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "storage quota of 100 bytes exceeded").await;
    let j: Job = ts.get(&alice, "/jobs/alice/mnist/1").send().await.unwrap().json().await.unwrap();
    assert_eq!((j.state, j.output), (JobState::Failed, None));
    assert!(j.reason.as_deref().unwrap().contains("storage quota of 100 bytes exceeded"), "{:?}", j.reason);

    // Deleting versions makes room.
    for v in [1, 2] {
        let r = ts.delete(&alice, &format!("/datasets/alice/d/versions/{v}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(ts.version(&alice, "alice", "d", other).await, 3);
    // Other owners have their own quota.
    let bob = ts.token("bob").await;
    ts.create_dataset(&bob, "d").await;
    let bobs = ts.commit_tree(&bob, &[("c", &[3u8; 90])]).await;
    assert_eq!(ts.version(&bob, "bob", "d", bobs).await, 1);
}
