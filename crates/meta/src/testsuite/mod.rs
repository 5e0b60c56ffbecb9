//! The test suite every [`MetaStore`] backend must pass.
//!
//! Run [`run_all`] on a fresh, empty store (a temp-file SQLite database, a
//! scratch PostgreSQL schema). It panics on the first failed check. It is
//! compiled into the library so that backends in other crates can run it.

use std::collections::BTreeMap;

use podder_core::api::{JobSpec, LogLine, Stream};
use podder_core::{JobRef, JobState, ManifestId, Name, Outcome};

use crate::{Claim, FinishJob, MetaError, MetaStore, NewJob, TokenHash};

mod datasets;
mod jobs;
mod leases;
mod pipelines;
mod placement;

use datasets::{datasets, mounts, storage};
use jobs::{claims, job_lifecycle, job_numbers, stops};
use leases::{lease_expiry, logs};
use pipelines::pipelines;
use placement::{agents, builds_and_tasks, environments, placement};

/// Runs every check against one store.
pub async fn run_all(store: &dyn MetaStore) {
    assert!(!store.has_admin().await.unwrap(), "run the suite on a fresh store");
    owners_and_tokens(store).await;
    projects(store).await;
    job_numbers(store).await;
    job_lifecycle(store).await;
    claims(store).await;
    stops(store).await;
    lease_expiry(store).await;
    logs(store).await;
    datasets(store).await;
    mounts(store).await;
    storage(store).await;
    manifest_readers(store).await;
    environments(store).await;
    agents(store).await;
    placement(store).await;
    builds_and_tasks(store).await;
    pipelines(store).await;
}

pub(super) fn name(s: &str) -> Name {
    s.parse().unwrap()
}

pub(super) fn spec(queue: &str, retries: u32) -> JobSpec {
    JobSpec {
        code: ManifestId::of(b"code"),
        command: vec!["python".into(), "train.py".into()],
        setup: vec![],
        params: BTreeMap::from([("lr".to_string(), "0.1".to_string())]),
        inputs: vec![],
        env: None,
        timeout_secs: Some(60),
        retries,
        queue: queue.into(),
        environment: None,
        resources: Default::default(),
        build: None,
    }
}

pub(super) fn new_job(owner: &str, project: &str, spec: JobSpec) -> NewJob {
    NewJob { owner: name(owner), project: name(project), spec, message: None, restarted_from: None, now: 1000 }
}

pub(super) fn claim(queue: &str, lease: &str, expires_at: i64) -> Claim {
    Claim {
        queue: queue.into(),
        agent: "box-1".into(),
        lease_id: lease.into(),
        now: 2000,
        expires_at,
        inventory: Default::default(),
    }
}

pub(super) fn line(seq: u64, text: &str) -> LogLine {
    LogLine { seq, ts: 5000 + seq as i64, stream: Stream::Stdout, text: text.into() }
}

pub(super) fn finish(outcome: Outcome) -> FinishJob {
    FinishJob {
        outcome,
        exit_code: Some(1),
        output: None,
        output_bytes: 0,
        reason: None,
        quota: None,
        build: None,
        started_at: None,
        now: 9000,
    }
}

/// A project of its own for each check, so checks do not see each other's jobs.
pub(super) async fn project(store: &dyn MetaStore, owner: &str, project: &str) {
    store.ensure_owner(&name(owner), false, 1).await.unwrap();
    store.create_project(&name(owner), &name(project), "", 1).await.unwrap();
}

pub(super) fn is_conflict<T: std::fmt::Debug>(r: Result<T, MetaError>) -> bool {
    matches!(r, Err(MetaError::Conflict(_)))
}
async fn owners_and_tokens(store: &dyn MetaStore) {
    let alice = name("alice");
    assert!(!store.ensure_owner(&alice, false, 1).await.unwrap().admin);
    assert!(store.ensure_owner(&alice, true, 2).await.unwrap().admin);
    assert!(store.ensure_owner(&alice, false, 3).await.unwrap().admin, "admin is never taken away");
    assert!(store.has_admin().await.unwrap());

    let hash = TokenHash::of("pdr_secret");
    assert!(matches!(store.add_token(&name("nobody"), &hash, 1).await, Err(MetaError::NotFound(_))));
    store.add_token(&alice, &hash, 1).await.unwrap();
    store.add_token(&alice, &hash, 1).await.unwrap();
    let owner = store.owner_by_token(&hash).await.unwrap().unwrap();
    assert_eq!(owner.name, alice);
    assert!(owner.admin);
    assert!(store.owner_by_token(&TokenHash::of("pdr_other")).await.unwrap().is_none());
}

async fn projects(store: &dyn MetaStore) {
    let bob = name("bob");
    store.ensure_owner(&bob, false, 1).await.unwrap();
    let p = store.create_project(&bob, &name("zeta"), "last", 10).await.unwrap();
    assert_eq!((p.jobs, p.created_at, p.description.as_str()), (0, 10, "last"));
    store.create_project(&bob, &name("alpha"), "", 11).await.unwrap();
    assert!(is_conflict(store.create_project(&bob, &name("zeta"), "", 12).await));
    let missing = store.create_project(&name("nobody"), &name("x"), "", 1).await;
    assert!(matches!(missing, Err(MetaError::NotFound(_))));

    let got = store.get_project(&bob, &name("zeta")).await.unwrap();
    assert_eq!((got.owner.as_str(), got.name.as_str(), got.description.as_str()), ("bob", "zeta", "last"));
    assert!(matches!(store.get_project(&bob, &name("nope")).await, Err(MetaError::NotFound(_))));
    let names: Vec<String> = store.list_projects(&bob).await.unwrap().into_iter().map(|p| p.name.to_string()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert!(store.list_projects(&name("nobody")).await.unwrap().is_empty());
}

async fn manifest_readers(store: &dyn MetaStore) {
    let (carol, dave) = (name("carol"), name("dave"));
    store.ensure_owner(&carol, false, 1).await.unwrap();
    store.ensure_owner(&dave, false, 1).await.unwrap();
    let (a, b) = (ManifestId::of(b"readers a"), ManifestId::of(b"readers b"));
    assert!(!store.may_read_manifest(&carol, a).await.unwrap());

    store.grant_manifests(&carol, &[a, b]).await.unwrap();
    store.grant_manifests(&carol, &[a]).await.unwrap();
    store.grant_manifests(&carol, &[]).await.unwrap();
    assert!(store.may_read_manifest(&carol, a).await.unwrap());
    assert!(store.may_read_manifest(&carol, b).await.unwrap());
    assert!(!store.may_read_manifest(&dave, a).await.unwrap(), "a grant is per owner");

    store.grant_manifests(&dave, &[a]).await.unwrap();
    assert!(store.may_read_manifest(&dave, a).await.unwrap());
    assert!(!store.may_read_manifest(&dave, b).await.unwrap());
    assert!(store.may_read_manifest(&carol, a).await.unwrap(), "another owner's grant keeps carol's");

    assert!(matches!(store.grant_manifests(&name("nobody"), &[a]).await, Err(MetaError::NotFound(_))));
    assert!(!store.may_read_manifest(&name("nobody"), a).await.unwrap());
}
