//! Checks of lease expiry, retries and log lines.

use super::*;

pub(super) async fn lease_expiry(store: &dyn MetaStore) {
    project(store, "gina", "expiry").await;
    let job = store.create_job(new_job("gina", "expiry", spec("q-exp", 1))).await.unwrap();
    store.claim_job(&claim("q-exp", "e-1", 10_000)).await.unwrap().unwrap();
    store.append_logs("e-1", &[line(0, "a0"), line(1, "a1"), line(2, "a2")]).await.unwrap();
    assert!(store.expire_leases(9_999).await.unwrap().is_empty(), "a live lease does not expire");
    store.heartbeat("e-1", 20_000).await.unwrap();
    assert!(store.expire_leases(15_000).await.unwrap().is_empty(), "a heartbeat extends the lease");

    let changed = store.expire_leases(20_001).await.unwrap();
    assert_eq!(changed.len(), 1);
    let rec = &changed[0];
    assert_eq!((rec.id, rec.job.state, rec.job.attempt), (job.id, JobState::Queued, 2));
    assert!(rec.job.reason.as_deref().unwrap().contains("lease expired on agent box-1"));
    assert_eq!((rec.lease_id.as_deref(), rec.job.agent.as_deref()), (None, None));
    assert!(is_conflict(store.heartbeat("e-1", 1).await), "the old lease is gone");
    assert!(is_conflict(store.append_logs("e-1", &[line(3, "late")]).await));

    let again = store.claim_job(&claim("q-exp", "e-2", 30_000)).await.unwrap().unwrap();
    assert_eq!((again.id, again.job.attempt, again.job.job_ref.number), (job.id, 2, job.job.job_ref.number));
    // The second attempt numbers its lines from 0 again; none is lost.
    store.append_logs("e-2", &[line(0, "b0"), line(1, "b1")]).await.unwrap();
    let texts: Vec<String> = store.read_logs(job.id, 0, 100).await.unwrap().into_iter().map(|l| l.text).collect();
    assert_eq!(texts, ["a0", "a1", "a2", "b0", "b1"]);

    let changed = store.expire_leases(30_001).await.unwrap();
    let rec = &changed[0];
    assert_eq!((rec.job.state, rec.job.attempt, rec.job.finished_at), (JobState::Lost, 2, Some(30_001)));
    assert!(store.claim_job(&claim("q-exp", "e-3", 40_000)).await.unwrap().is_none());
    assert!(store.expire_leases(50_000).await.unwrap().is_empty(), "a lost job stays lost");
}

pub(super) async fn logs(store: &dyn MetaStore) {
    project(store, "hank", "logs").await;
    let job = store.create_job(new_job("hank", "logs", spec("q-logs", 0))).await.unwrap();
    store.claim_job(&claim("q-logs", "g-1", 100_000)).await.unwrap().unwrap();
    assert_eq!(store.append_logs("g-1", &[]).await.unwrap(), job.id);
    let first: Vec<LogLine> = (0..4).map(|i| line(i, &format!("line {i}"))).collect();
    store.append_logs("g-1", &first).await.unwrap();
    let resent: Vec<LogLine> = (2..6).map(|i| line(i, &format!("again {i}"))).collect();
    store.append_logs("g-1", &resent).await.unwrap();

    let all = store.read_logs(job.id, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|l| l.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(all[2].text, "line 2", "a resent line does not replace the first");
    assert_eq!(all[0], first[0]);
    let tail = store.read_logs(job.id, 3, 2).await.unwrap();
    assert_eq!(tail.iter().map(|l| l.seq).collect::<Vec<_>>(), [3, 4]);
    assert!(store.read_logs(job.id, 6, 10).await.unwrap().is_empty());
    assert!(is_conflict(store.append_logs("g-nope", &first).await));
}
