//! Checks of job numbering, the job lifecycle, claims and stops.

use super::*;

pub(super) async fn job_numbers(store: &dyn MetaStore) {
    project(store, "carol", "nums").await;
    let (carol, nums) = (name("carol"), name("nums"));
    for n in 1..=3 {
        let rec = store.create_job(new_job("carol", "nums", spec("q-nums", 0))).await.unwrap();
        assert_eq!(rec.job.job_ref.number, n);
        assert_eq!(rec.job.state, JobState::Queued);
        assert_eq!(rec.job.attempt, 1);
        assert_eq!(rec.job.spec, spec("q-nums", 0));
    }
    let one = || store.create_job(new_job("carol", "nums", spec("q-nums", 0)));
    let (a, b, c, d, e, f, g, h) = tokio::join!(one(), one(), one(), one(), one(), one(), one(), one());
    let mut numbers: Vec<u64> = [a, b, c, d, e, f, g, h].into_iter().map(|r| r.unwrap().job.job_ref.number).collect();
    numbers.sort();
    assert_eq!(numbers, (4..=11).collect::<Vec<u64>>());
    assert_eq!(store.get_project(&carol, &nums).await.unwrap().jobs, 11);

    let listed = store.list_jobs(&carol, &nums, 3).await.unwrap();
    let listed: Vec<u64> = listed.iter().map(|j| j.job_ref.number).collect();
    assert_eq!(listed, [11, 10, 9]);

    let mut restart = new_job("carol", "nums", spec("q-nums", 0));
    restart.restarted_from = Some("carol/nums#2".parse::<JobRef>().unwrap());
    restart.message = Some("again".into());
    let rec = store.create_job(restart).await.unwrap();
    let got = store.get_job(&carol, &nums, rec.job.job_ref.number).await.unwrap();
    assert_eq!(got.job.restarted_from.unwrap().to_string(), "carol/nums#2");
    assert_eq!(got.job.message.as_deref(), Some("again"));
    assert_eq!(got.job.job_ref.to_string(), "carol/nums#12");
    assert_eq!(store.get_job_by_id(got.id).await.unwrap().job.job_ref.number, 12);

    assert!(matches!(store.get_job(&carol, &nums, 99).await, Err(MetaError::NotFound(_))));
    let missing = store.create_job(new_job("carol", "nope", spec("q-nums", 0))).await;
    assert!(matches!(missing, Err(MetaError::NotFound(_))));
}

pub(super) async fn job_lifecycle(store: &dyn MetaStore) {
    project(store, "dave", "life").await;
    assert!(store.claim_job(&claim("q-life", "l-0", 100_000)).await.unwrap().is_none());
    store.create_job(new_job("dave", "life", spec("q-other", 0))).await.unwrap();
    let created = store.create_job(new_job("dave", "life", spec("q-life", 0))).await.unwrap();

    let rec = store.claim_job(&claim("q-life", "l-1", 100_000)).await.unwrap().unwrap();
    assert_eq!(rec.id, created.id);
    assert_eq!(rec.job.state, JobState::Assigned);
    assert_eq!(rec.job.agent.as_deref(), Some("box-1"));
    assert_eq!((rec.lease_id.as_deref(), rec.lease_expires_at), (Some("l-1"), Some(100_000)));
    assert!(store.claim_job(&claim("q-life", "l-2", 100_000)).await.unwrap().is_none());

    let rec = store.set_progress("l-1", JobState::Preparing, 3000).await.unwrap();
    assert_eq!((rec.job.state, rec.job.started_at), (JobState::Preparing, None));
    store.set_progress("l-1", JobState::Preparing, 3001).await.unwrap();
    let rec = store.set_progress("l-1", JobState::Running, 3002).await.unwrap();
    assert_eq!((rec.job.state, rec.job.started_at), (JobState::Running, Some(3002)));
    assert!(matches!(store.set_progress("l-1", JobState::Queued, 1).await, Err(MetaError::Invalid(_))));
    assert!(is_conflict(store.set_progress("l-1", JobState::Preparing, 1).await));
    assert!(is_conflict(store.set_progress("l-nope", JobState::Running, 1).await));

    let rec = store.heartbeat("l-1", 200_000).await.unwrap();
    assert_eq!(rec.lease_expires_at, Some(200_000));
    assert!(!rec.stop_requested);
    assert!(is_conflict(store.heartbeat("l-nope", 1).await));

    let output = ManifestId::of(b"out");
    let done = FinishJob { exit_code: Some(0), output: Some(output), output_bytes: 3, ..finish(Outcome::Succeeded) };
    let rec = store.finish_job("l-1", &done).await.unwrap();
    assert_eq!(rec.job.state, JobState::Succeeded);
    assert_eq!((rec.job.exit_code, rec.job.output, rec.job.finished_at), (Some(0), Some(output), Some(9000)));
    assert_eq!(store.finish_job("l-1", &done).await.unwrap().job.state, JobState::Succeeded, "resent finish");
    assert!(is_conflict(store.finish_job("l-1", &finish(Outcome::Failed)).await));
    assert!(is_conflict(store.heartbeat("l-1", 1).await));
    assert!(is_conflict(store.set_progress("l-1", JobState::Running, 1).await));
    assert!(is_conflict(store.append_logs("l-1", &[line(0, "late")]).await));
    assert!(is_conflict(store.finish_job("l-nope", &done).await));
}

pub(super) async fn claims(store: &dyn MetaStore) {
    project(store, "erin", "claims").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(store.create_job(new_job("erin", "claims", spec("q-claims", 0))).await.unwrap().id);
    }
    let first = store.claim_job(&claim("q-claims", "c-0", 100_000)).await.unwrap().unwrap();
    assert_eq!(first.id, ids[0], "the oldest queued job goes first");
    let c = |lease: &'static str| async move { store.claim_job(&claim("q-claims", lease, 100_000)).await.unwrap() };
    let (a, b, d, e, f) = tokio::join!(c("c-1"), c("c-2"), c("c-3"), c("c-4"), c("c-5"));
    let mut got: Vec<_> = [a, b, d, e, f].into_iter().flatten().map(|r| r.id).collect();
    got.sort();
    assert_eq!(got, ids[1..], "every job is claimed exactly once");
}

pub(super) async fn stops(store: &dyn MetaStore) {
    project(store, "frank", "stops").await;
    let (frank, stops) = (name("frank"), name("stops"));
    let queued = store.create_job(new_job("frank", "stops", spec("q-stops", 0))).await.unwrap();
    let n = queued.job.job_ref.number;
    let rec = store.request_stop(&frank, &stops, n, 4000).await.unwrap();
    assert_eq!((rec.job.state, rec.job.finished_at), (JobState::Stopped, Some(4000)));
    match store.request_stop(&frank, &stops, n, 4001).await {
        Err(MetaError::Conflict(m)) => assert!(m.contains("already stopped"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(store.claim_job(&claim("q-stops", "s-0", 100_000)).await.unwrap().is_none(), "a stopped job is not run");

    let running = store.create_job(new_job("frank", "stops", spec("q-stops", 3))).await.unwrap();
    store.claim_job(&claim("q-stops", "s-1", 100_000)).await.unwrap().unwrap();
    store.set_progress("s-1", JobState::Running, 3000).await.unwrap();
    let rec = store.request_stop(&frank, &stops, running.job.job_ref.number, 4000).await.unwrap();
    assert_eq!(rec.job.state, JobState::Running);
    assert!(rec.stop_requested);
    assert!(store.heartbeat("s-1", 100_000).await.unwrap().stop_requested);
    let rec = store.finish_job("s-1", &finish(Outcome::Failed)).await.unwrap();
    assert_eq!(rec.job.state, JobState::Stopped, "a killed job that was asked to stop is stopped");
    assert_eq!(rec.job.reason.as_deref(), Some("stopped by request"));
    assert!(matches!(store.request_stop(&frank, &stops, 99, 1).await, Err(MetaError::NotFound(_))));

    // A stop requested on a job whose agent then vanishes is not retried.
    let vanished = store.create_job(new_job("frank", "stops", spec("q-stops", 3))).await.unwrap();
    store.claim_job(&claim("q-stops", "s-2", 5000)).await.unwrap().unwrap();
    store.request_stop(&frank, &stops, vanished.job.job_ref.number, 4000).await.unwrap();
    let changed = store.expire_leases(6000).await.unwrap();
    let rec = changed.iter().find(|r| r.id == vanished.id).unwrap();
    assert_eq!(rec.job.state, JobState::Lost);
}
