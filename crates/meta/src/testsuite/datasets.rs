//! Checks of datasets: version numbering (also under concurrency), latest,
//! deleting, refusing to delete what an active job mounts, quotas, and the
//! manifests records refer to.

use podder_core::api::{Input, JobSpec};
use podder_core::refs::Version;

use super::*;
use crate::NewVersion;

fn new_version(owner: &str, dataset: &str, manifest: ManifestId, bytes: u64) -> NewVersion {
    NewVersion {
        owner: name(owner),
        dataset: name(dataset),
        manifest,
        files: 2,
        bytes,
        message: None,
        source: None,
        quota: None,
        now: 3000,
    }
}

fn mounting(queue: &str, source: &str, manifest: ManifestId) -> JobSpec {
    let mut s = spec(queue, 0);
    s.inputs = vec![Input { source: source.into(), manifest, mount: "/data/in".parse().unwrap() }];
    s
}

fn m(i: u32) -> ManifestId {
    ManifestId::of(format!("manifest {i}").as_bytes())
}

pub(super) async fn datasets(store: &dyn MetaStore) {
    let ivy = name("ivy");
    store.ensure_owner(&ivy, false, 1).await.unwrap();
    let d = store.create_dataset(&ivy, &name("cifar"), "images", 10).await.unwrap();
    assert_eq!((d.versions, d.latest, d.bytes, d.created_at), (0, None, 0, 10));
    match store.create_dataset(&ivy, &name("cifar"), "", 11).await {
        Err(MetaError::Conflict(m)) => assert!(m.contains("dataset ivy/cifar already exists"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let nobody = store.create_dataset(&name("nobody"), &name("x"), "", 1).await;
    assert!(matches!(nobody, Err(MetaError::NotFound(_))));
    store.create_dataset(&ivy, &name("alpha"), "", 12).await.unwrap();
    let names: Vec<String> = store.list_datasets(&ivy).await.unwrap().into_iter().map(|d| d.name.to_string()).collect();
    assert_eq!(names, ["alpha", "cifar"]);
    assert!(matches!(store.get_dataset(&ivy, &name("nope")).await, Err(MetaError::NotFound(_))));
    match store.get_version(&ivy, &name("cifar"), Version::Latest).await {
        Err(MetaError::NotFound(m)) => assert!(m.contains("no versions yet"), "{m}"),
        other => panic!("expected not found, got {other:?}"),
    }

    for n in 1..=3u32 {
        let mut new = new_version("ivy", "cifar", m(n), u64::from(n) * 10);
        new.message = Some(format!("v{n}"));
        let v = store.create_version(new).await.unwrap();
        assert_eq!((v.version, v.manifest, v.bytes, v.files), (n, m(n), u64::from(n) * 10, 2));
        assert_eq!(
            (v.owner.as_str(), v.dataset.as_str(), v.message.as_deref()),
            ("ivy", "cifar", Some(&*format!("v{n}")))
        );
    }
    let one = |i: u32| store.create_version(new_version("ivy", "cifar", m(100 + i), 5));
    let (a, b, c, d, e, f, g, h) = tokio::join!(one(0), one(1), one(2), one(3), one(4), one(5), one(6), one(7));
    let mut numbers: Vec<u32> = [a, b, c, d, e, f, g, h].into_iter().map(|r| r.unwrap().version).collect();
    numbers.sort();
    assert_eq!(numbers, (4..=11).collect::<Vec<u32>>(), "concurrent creates get distinct numbers");

    let d = store.get_dataset(&ivy, &name("cifar")).await.unwrap();
    assert_eq!((d.versions, d.latest, d.bytes, d.description.as_str()), (11, Some(11), 5, "images"));
    assert_eq!(store.get_version(&ivy, &name("cifar"), Version::Number(2)).await.unwrap().manifest, m(2));
    assert_eq!(store.get_version(&ivy, &name("cifar"), Version::Latest).await.unwrap().version, 11);

    // Deleting the newest never frees its number.
    store.delete_version(&ivy, &name("cifar"), 11).await.unwrap();
    assert_eq!(store.get_version(&ivy, &name("cifar"), Version::Latest).await.unwrap().version, 10);
    match store.delete_version(&ivy, &name("cifar"), 11).await {
        Err(MetaError::NotFound(m)) => assert!(m.contains("dataset ivy/cifar has no version 11"), "{m}"),
        other => panic!("expected not found, got {other:?}"),
    }
    match store.get_version(&ivy, &name("cifar"), Version::Number(11)).await {
        Err(MetaError::NotFound(m)) => assert!(m.contains("`podder data versions cifar`"), "{m}"),
        other => panic!("expected not found, got {other:?}"),
    }
    let mut sourced = new_version("ivy", "cifar", m(12), 7);
    sourced.source = Some("ivy/mnist#4".into());
    let v = store.create_version(sourced).await.unwrap();
    assert_eq!((v.version, v.source.as_deref()), (12, Some("ivy/mnist#4")));
    let listed: Vec<u32> =
        store.list_versions(&ivy, &name("cifar")).await.unwrap().into_iter().map(|v| v.version).collect();
    assert_eq!(listed, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12], "ascending, without the deleted one");
    assert!(store.list_versions(&ivy, &name("alpha")).await.unwrap().is_empty());
    assert!(matches!(store.list_versions(&ivy, &name("nope")).await, Err(MetaError::NotFound(_))));
    let missing = store.create_version(new_version("ivy", "nope", m(1), 1)).await;
    assert!(matches!(missing, Err(MetaError::NotFound(_))));

    store.delete_dataset(&ivy, &name("cifar")).await.unwrap();
    assert!(matches!(store.get_dataset(&ivy, &name("cifar")).await, Err(MetaError::NotFound(_))));
    assert!(matches!(store.delete_dataset(&ivy, &name("cifar")).await, Err(MetaError::NotFound(_))));
    assert!(store.list_versions(&name("ivy"), &name("alpha")).await.unwrap().is_empty());
}

pub(super) async fn mounts(store: &dyn MetaStore) {
    project(store, "jill", "train").await;
    let (jill, data) = (name("jill"), name("mnist"));
    store.create_dataset(&jill, &data, "", 1).await.unwrap();
    let v1 = store.create_version(new_version("jill", "mnist", m(201), 10)).await.unwrap();
    let v2 = store.create_version(new_version("jill", "mnist", m(202), 10)).await.unwrap();

    let queued = store.create_job(new_job("jill", "train", mounting("q-mounts", "jill/mnist@1", v1.manifest))).await;
    let queued = queued.unwrap();
    let refused = |r: Result<(), MetaError>, needle: &str| match r {
        Err(MetaError::Conflict(m)) => assert!(m.contains(needle), "'{m}' does not mention '{needle}'"),
        other => panic!("expected a conflict, got {other:?}"),
    };
    let msg = "jill/mnist@1 is mounted by jill/train#1, which is queued: stop it or wait";
    refused(store.delete_version(&jill, &data, 1).await, msg);
    refused(store.delete_dataset(&jill, &data).await, msg);
    store.delete_version(&jill, &data, 2).await.expect("a version no job mounts can go");

    // A job whose version vanished (or changed) between resolving and creating is refused.
    for (source, manifest) in [("jill/mnist@1", m(999)), ("jill/mnist@2", v2.manifest), ("jill/mnist@7", m(1))] {
        match store.create_job(new_job("jill", "train", mounting("q-mounts", source, manifest))).await {
            Err(MetaError::NotFound(m)) => assert!(m.contains(source) && m.contains("no longer exists"), "{m}"),
            other => panic!("expected not found for {source}, got {other:?}"),
        }
    }
    assert_eq!(store.get_project(&jill, &name("train")).await.unwrap().jobs, 1, "refused jobs use no number");
    // Inputs that are not concrete dataset versions are recorded unlinked.
    store.create_job(new_job("jill", "train", mounting("q-other", "jill/train#1/model", m(5)))).await.unwrap();

    // A leased job holds the version too, until it ends.
    store.request_stop(&jill, &name("train"), queued.job.job_ref.number, 2000).await.unwrap();
    let leased = store.create_job(new_job("jill", "train", mounting("q-mounts", "jill/mnist@1", v1.manifest))).await;
    let leased = leased.unwrap();
    store.claim_job(&claim("q-mounts", "mnt-1", 100_000)).await.unwrap().unwrap();
    store.set_progress("mnt-1", JobState::Running, 2500).await.unwrap();
    let n = leased.job.job_ref.number;
    refused(store.delete_version(&jill, &data, 1).await, &format!("mounted by jill/train#{n}, which is running"));
    store.finish_job("mnt-1", &finish(Outcome::Failed)).await.unwrap();
    store.delete_dataset(&jill, &data).await.expect("no active job mounts it any more");
    let gone = store.create_job(new_job("jill", "train", mounting("q-mounts", "jill/mnist@1", v1.manifest))).await;
    assert!(matches!(gone, Err(MetaError::NotFound(_))), "a deleted version cannot be mounted");
    // The jobs that mounted it are still readable.
    let old = store.get_job(&jill, &name("train"), n).await.unwrap();
    assert_eq!(old.job.spec.inputs[0].source, "jill/mnist@1");
}

pub(super) async fn storage(store: &dyn MetaStore) {
    project(store, "kim", "runs").await;
    let kim = name("kim");
    store.create_dataset(&kim, &name("d"), "", 1).await.unwrap();
    assert_eq!(store.usage(&kim).await.unwrap(), 0);
    assert_eq!(store.usage(&name("nobody")).await.unwrap(), 0);
    let with_quota = |manifest: ManifestId, bytes: u64, quota: u64| {
        let mut v = new_version("kim", "d", manifest, bytes);
        v.quota = Some(quota);
        v
    };
    store.create_version(with_quota(m(301), 100, 250)).await.unwrap();
    assert_eq!(store.usage(&kim).await.unwrap(), 100);
    let same = store.create_version(with_quota(m(301), 100, 150)).await.unwrap();
    assert_eq!(same.version, 2, "a tree the owner already holds costs nothing");
    assert_eq!(store.usage(&kim).await.unwrap(), 100);
    match store.create_version(with_quota(m(302), 200, 250)).await {
        Err(MetaError::Quota(m)) => {
            assert!(m.contains("storage quota of 250 bytes exceeded"), "{m}");
            assert!(m.contains("podder data delete NAME@vN") && m.contains("podder admin gc"), "{m}");
        }
        other => panic!("expected a quota error, got {other:?}"),
    }
    assert_eq!(store.usage(&kim).await.unwrap(), 100);
    let v = store.create_version(with_quota(m(303), 50, 250)).await.unwrap();
    assert_eq!(v.version, 3, "a refused version used no number");

    // Outputs count as well; an output over the quota fails its job.
    store.create_job(new_job("kim", "runs", spec("q-storage", 0))).await.unwrap();
    store.claim_job(&claim("q-storage", "st-1", 100_000)).await.unwrap().unwrap();
    let ok = FinishJob { output: Some(m(304)), output_bytes: 60, quota: Some(250), ..finish(Outcome::Succeeded) };
    let rec = store.finish_job("st-1", &ok).await.unwrap();
    assert_eq!((rec.job.state, rec.job.output), (JobState::Succeeded, Some(m(304))));
    assert_eq!(store.usage(&kim).await.unwrap(), 210);
    store.create_job(new_job("kim", "runs", spec("q-storage", 0))).await.unwrap();
    store.claim_job(&claim("q-storage", "st-2", 100_000)).await.unwrap().unwrap();
    let over = FinishJob { output: Some(m(305)), output_bytes: 60, quota: Some(250), ..finish(Outcome::Succeeded) };
    let rec = store.finish_job("st-2", &over).await.unwrap();
    assert_eq!((rec.job.state, rec.job.output), (JobState::Failed, None));
    assert!(rec.job.reason.as_deref().unwrap().contains("storage quota of 250 bytes exceeded"), "{:?}", rec.job.reason);
    assert_eq!(store.usage(&kim).await.unwrap(), 210);
    // A version of an output the owner holds is free.
    store.create_version(with_quota(m(304), 60, 210)).await.unwrap();
    assert_eq!(store.usage(&kim).await.unwrap(), 210);
    assert_eq!(store.usage(&name("ivy")).await.unwrap(), 0, "deleted datasets hold nothing");

    let refs = store.referenced_manifests().await.unwrap();
    for held in [ManifestId::of(b"code"), m(301), m(303), m(304), m(201), m(5)] {
        assert!(refs.contains(&held), "{held} is referenced");
    }
    for free in [m(302), m(305), m(202), m(12)] {
        assert!(!refs.contains(&free), "{free} is not referenced");
    }
}
