//! Jobs end to end over HTTP: numbering, leases, progress, logs, finishing,
//! long-polls, lease expiry, stop and restart.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, assert_invalid, error, job};
use podder_core::api::{
    Finish, FinishWithLogs, HeartbeatReply, Job, LogBatch, LogLine, LogUpload, StateUpdate, Stream,
};
use podder_core::{JobState, Manifest, Outcome};
use reqwest::StatusCode;

fn line(seq: u64, text: &str) -> LogLine {
    LogLine { seq, ts: 1, stream: Stream::Stdout, text: text.into() }
}

async fn set_state(ts: &TestServer, token: &str, lease: &str, state: JobState) -> StatusCode {
    let r = ts.post(token, &format!("/agent/leases/{lease}/state")).json(&StateUpdate { state }).send();
    r.await.unwrap().status()
}

async fn upload_logs(ts: &TestServer, token: &str, lease: &str, lines: Vec<LogLine>) -> StatusCode {
    let r = ts.post(token, &format!("/agent/leases/{lease}/logs")).json(&LogUpload { lines }).send();
    r.await.unwrap().status()
}

async fn finish(ts: &TestServer, token: &str, lease: &str, f: &Finish) -> reqwest::Response {
    ts.post(token, &format!("/agent/leases/{lease}/finish")).json(f).send().await.unwrap()
}

async fn heartbeat(ts: &TestServer, token: &str, lease: &str, wait_ms: u64) -> reqwest::Response {
    ts.post(token, &format!("/agent/leases/{lease}/heartbeat?wait_ms={wait_ms}")).send().await.unwrap()
}

async fn logs(ts: &TestServer, token: &str, job: &str, query: &str) -> LogBatch {
    let r = ts.get(token, &format!("/jobs/{job}/logs?{query}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn get_job(ts: &TestServer, token: &str, job: &str) -> Job {
    ts.get(token, &format!("/jobs/{job}")).send().await.unwrap().json().await.unwrap()
}

fn failed() -> Finish {
    Finish { outcome: Outcome::Failed, exit_code: Some(137), output: None, reason: None, build: None }
}

#[tokio::test]
async fn job_numbers_are_sequential_under_concurrent_submits() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    let req = job(code);
    let submits = (0..20).map(|_| ts.submit(&alice, "alice", "mnist", &req));
    let mut numbers = Vec::new();
    for r in futures_util::future::join_all(submits).await {
        assert_eq!(r.status(), StatusCode::CREATED);
        let j: Job = r.json().await.unwrap();
        assert_eq!((j.state, j.spec.queue.as_str(), j.attempt), (JobState::Queued, "default", 1));
        numbers.push(j.job_ref.number);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=20).collect::<Vec<u64>>());
    let list: Vec<Job> = ts.get(&alice, "/projects/alice/mnist/jobs").send().await.unwrap().json().await.unwrap();
    assert_eq!(list.first().unwrap().job_ref.number, 20, "newest first");
    assert_eq!(list.len(), 20);
}

#[tokio::test]
async fn an_agent_runs_a_job_and_its_output_feeds_the_next() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let agent = ts.admin.clone();
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    assert!(ts.lease(&agent, "default", 0).await.is_none());
    let submitted: Job = ts.submit(&alice, "alice", "mnist", &job(code)).await.json().await.unwrap();

    let lease = ts.lease(&agent, "default", 0).await.expect("a queued job");
    let lid = lease.lease_id.as_str();
    assert_eq!(lease.job.job_ref, submitted.job_ref);
    assert_eq!((lease.job.state, lease.job.agent.as_deref()), (JobState::Assigned, Some("test-agent")));
    assert_eq!(lease.lease_ms, 30_000);
    assert_eq!(lease.server_url.as_deref(), Some(ts.base.as_str()));
    assert!(ts.lease(&agent, "default", 0).await.is_none(), "a job is leased once");

    assert_eq!(set_state(&ts, &agent, lid, JobState::Preparing).await, StatusCode::NO_CONTENT);
    assert_eq!(set_state(&ts, &agent, lid, JobState::Running).await, StatusCode::NO_CONTENT);
    assert_eq!(set_state(&ts, &agent, "nope", JobState::Running).await, StatusCode::CONFLICT);
    let running = get_job(&ts, &alice, "alice/mnist/1").await;
    assert_eq!(running.state, JobState::Running);
    assert!(running.started_at.is_some());

    let first = vec![line(0, "epoch 0"), line(1, "epoch 1"), line(2, "epoch 2")];
    assert_eq!(upload_logs(&ts, &agent, lid, first).await, StatusCode::NO_CONTENT);
    let resent = vec![line(1, "dup"), line(2, "dup"), line(3, "epoch 3")];
    assert_eq!(upload_logs(&ts, &agent, lid, resent).await, StatusCode::NO_CONTENT);
    let batch = logs(&ts, &alice, "alice/mnist/1", "from=0").await;
    let texts: Vec<&str> = batch.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["epoch 0", "epoch 1", "epoch 2", "epoch 3"]);
    assert!(!batch.done);
    assert_eq!(logs(&ts, &alice, "alice/mnist/1", "from=2&limit=1").await.lines[0].seq, 2);
    assert_eq!(logs(&ts, &alice, "alice/mnist/1", "after=2").await.lines.len(), 1);

    let beat: HeartbeatReply = heartbeat(&ts, &agent, lid, 0).await.json().await.unwrap();
    assert!(!beat.stop);

    let uncommitted =
        Finish { outcome: Outcome::Succeeded, exit_code: Some(0), output: Some(code), reason: None, build: None };
    let bogus = Finish { output: Some(podder_core::ManifestId::of(b"nothing")), ..uncommitted.clone() };
    assert_invalid(finish(&ts, &agent, lid, &bogus).await, "not committed").await;
    let output = ts.commit_tree(&agent, &[("model/weights.bin", b"0101"), ("metrics.json", b"{}")]).await;
    let done = Finish { output: Some(output), ..uncommitted };
    let finished: Job = finish(&ts, &agent, lid, &done).await.json().await.unwrap();
    assert_eq!((finished.state, finished.exit_code, finished.output), (JobState::Succeeded, Some(0), Some(output)));
    assert!(finished.finished_at.is_some());
    assert_eq!(finish(&ts, &agent, lid, &done).await.status(), StatusCode::OK, "a resent finish is accepted");
    let (status, body) = error(heartbeat(&ts, &agent, lid, 0).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.error.contains("no longer valid"), "{}", body.error);
    assert_eq!(upload_logs(&ts, &agent, lid, vec![line(9, "late")]).await, StatusCode::CONFLICT);
    let batch = logs(&ts, &alice, "alice/mnist/1", "from=4&wait_ms=10000").await;
    assert!(batch.done && batch.lines.is_empty(), "a finished job's follower is done at once");

    // The output, or a directory of it, mounts into the next job.
    let mut next = job(code);
    next.data = vec!["mnist#1/model:/model".into(), "alice/mnist#1".into()];
    let j: Job = ts.submit(&alice, "alice", "mnist", &next).await.json().await.unwrap();
    assert_eq!(j.spec.inputs[0].source, "alice/mnist#1/model");
    assert_eq!(j.spec.inputs[0].mount.as_str(), "/model");
    assert_eq!((j.spec.inputs[1].manifest, j.spec.inputs[1].mount.as_str()), (output, "/data/mnist-1"));
    let r = ts.get(&alice, &format!("/manifests/{}", j.spec.inputs[0].manifest)).send().await.unwrap();
    let paths: Vec<String> = r.json::<Manifest>().await.unwrap().entries.into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["weights.bin"]);
    // A job without output yet cannot be a source.
    let mut early = job(code);
    early.data = vec!["mnist#2".into()];
    assert_invalid(ts.submit(&alice, "alice", "mnist", &early).await, "has no output yet").await;
    let mut nodir = job(code);
    nodir.data = vec!["mnist#1/nope".into()];
    assert_invalid(ts.submit(&alice, "alice", "mnist", &nodir).await, "no directory 'nope'").await;
}

#[tokio::test]
async fn a_waiting_agent_gets_a_submitted_job_at_once() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    let poll = {
        let (client, base, token) = (ts.client.clone(), ts.base.clone(), ts.admin.clone());
        tokio::spawn(async move {
            let req = serde_json::json!({"agent": "a", "queue": "gpu", "wait_ms": 30_000});
            let r = client.post(format!("{base}/api/v1/agent/lease")).bearer_auth(token).json(&req).send();
            let r = r.await.unwrap();
            (r.status(), Instant::now())
        })
    };
    // Give the poll time to start waiting, so that the submit must wake it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut req = job(code);
    req.queue = Some("gpu".into());
    let submitted = Instant::now();
    assert_eq!(ts.submit(&alice, "alice", "mnist", &req).await.status(), StatusCode::CREATED);
    let (status, answered) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let latency = answered.saturating_duration_since(submitted);
    assert!(latency < Duration::from_secs(2), "the lease came {latency:?} after the submit");

    let started = Instant::now();
    assert!(ts.lease(&ts.admin, "gpu", 300).await.is_none());
    assert!(started.elapsed() >= Duration::from_millis(300), "an empty queue waits out wait_ms");
}

#[tokio::test]
async fn an_expired_lease_is_retried_then_lost() {
    let ts = TestServer::with_lease_ms(300).await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    let mut req = job(code);
    req.retries = 1;
    ts.submit(&alice, "alice", "mnist", &req).await;

    let first = ts.lease(&ts.admin, "default", 0).await.unwrap();
    assert_eq!(first.job.attempt, 1);
    // The follower is woken by the state change when the reaper acts.
    let batch = logs(&ts, &alice, "alice/mnist/1", "wait_ms=10000").await;
    assert_eq!(batch.state, JobState::Queued);
    let j = get_job(&ts, &alice, "alice/mnist/1").await;
    assert_eq!((j.attempt, j.agent.as_deref()), (2, None));
    assert!(j.reason.as_deref().unwrap().contains("lease expired on agent test-agent"), "{:?}", j.reason);
    assert_eq!(heartbeat(&ts, &ts.admin, &first.lease_id, 0).await.status(), StatusCode::CONFLICT);

    let second = ts.lease(&ts.admin, "default", 0).await.expect("the job is queued again");
    assert_eq!((second.job.job_ref.number, second.job.attempt), (1, 2));
    let batch = logs(&ts, &alice, "alice/mnist/1", "wait_ms=10000").await;
    assert_eq!((batch.state, batch.done), (JobState::Lost, true));
    let j = get_job(&ts, &alice, "alice/mnist/1").await;
    assert!(j.finished_at.is_some());
    assert!(ts.lease(&ts.admin, "default", 0).await.is_none(), "no retries are left");
}

#[tokio::test]
async fn stopping_queued_and_running_jobs() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    let stopped: Job = ts.post(&alice, "/jobs/alice/mnist/1/stop").send().await.unwrap().json().await.unwrap();
    assert_eq!(stopped.state, JobState::Stopped);
    let (status, body) = error(ts.post(&alice, "/jobs/alice/mnist/1/stop").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.error.contains("already stopped"), "{}", body.error);
    assert!(ts.lease(&ts.admin, "default", 0).await.is_none(), "a stopped job never runs");

    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    let lease = ts.lease(&ts.admin, "default", 0).await.unwrap();
    set_state(&ts, &ts.admin, &lease.lease_id, JobState::Running).await;
    let beat = {
        let (client, base, token, lid) = (ts.client.clone(), ts.base.clone(), ts.admin.clone(), lease.lease_id.clone());
        tokio::spawn(async move {
            let url = format!("{base}/api/v1/agent/leases/{lid}/heartbeat?wait_ms=20000");
            let r = client.post(url).bearer_auth(token).send().await.unwrap();
            (r.json::<HeartbeatReply>().await.unwrap(), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let j: Job = ts.post(&alice, "/jobs/alice/mnist/2/stop").send().await.unwrap().json().await.unwrap();
    assert_eq!(j.state, JobState::Running, "a running job stops when its agent kills it");
    let (reply, answered) = beat.await.unwrap();
    assert!(reply.stop);
    assert!(answered.saturating_duration_since(asked) < Duration::from_secs(2));
    let again: HeartbeatReply = heartbeat(&ts, &ts.admin, &lease.lease_id, 20_000).await.json().await.unwrap();
    assert!(again.stop, "a stop request is answered at once");
    let ended: Job = finish(&ts, &ts.admin, &lease.lease_id, &failed()).await.json().await.unwrap();
    assert_eq!((ended.state, ended.exit_code), (JobState::Stopped, Some(137)));
}

#[tokio::test]
async fn restart_copies_the_spec() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    let mut req = job(code);
    req.params = [("lr".to_string(), "0.1".to_string())].into();
    req.message = Some("baseline".into());
    ts.submit(&alice, "alice", "mnist", &req).await;
    let lease = ts.lease(&ts.admin, "default", 0).await.unwrap();
    finish(&ts, &ts.admin, &lease.lease_id, &failed()).await;

    let r = ts.post(&alice, "/jobs/alice/mnist/1/restart").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let j: Job = r.json().await.unwrap();
    let old = get_job(&ts, &alice, "alice/mnist/1").await;
    assert_eq!(old.state, JobState::Failed);
    assert_eq!((j.job_ref.number, j.state), (2, JobState::Queued));
    assert_eq!(j.restarted_from.unwrap().to_string(), "alice/mnist#1");
    assert_eq!(j.spec, old.spec);
    assert_eq!(j.message.as_deref(), Some("baseline"));
    let r = ts.post(&alice, "/jobs/alice/mnist/9/restart").send().await.unwrap();
    assert_eq!(error(r).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_log_follower_is_woken_by_new_lines() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    let lease = ts.lease(&ts.admin, "default", 0).await.unwrap();
    set_state(&ts, &ts.admin, &lease.lease_id, JobState::Running).await;

    let follow = {
        let (client, base, token) = (ts.client.clone(), ts.base.clone(), alice.clone());
        tokio::spawn(async move {
            let url = format!("{base}/api/v1/jobs/alice/mnist/1/logs?from=0&wait_ms=20000");
            let batch: LogBatch = client.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            (batch, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    upload_logs(&ts, &ts.admin, &lease.lease_id, vec![line(0, "hello")]).await;
    let (batch, answered) = follow.await.unwrap();
    assert_eq!(batch.lines.len(), 1);
    assert_eq!((batch.state, batch.done), (JobState::Running, false));
    assert!(answered.saturating_duration_since(sent) < Duration::from_secs(2));
}

#[tokio::test]
async fn an_abandoned_lease_poll_takes_no_job() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    let req = serde_json::json!({"agent": "gone", "queue": "default", "wait_ms": 30_000});
    let r = ts.post(&ts.admin, "/agent/lease").json(&req).timeout(Duration::from_millis(200)).send().await;
    assert!(r.is_err(), "the client gave up");
    // The server drops the poll when the connection closes; give it a moment
    // to notice, then check that a submit does not hand the job to nobody.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get_job(&ts, &alice, "alice/mnist/1").await.state, JobState::Queued);
    let lease = ts.lease(&ts.admin, "default", 0).await.expect("the job is still there for a live agent");
    assert_eq!(lease.job.job_ref.number, 1);
}

/// A finish may carry the job's last log lines (appended before the job
/// ends, idempotently) and the empty output without a commit.
#[tokio::test]
async fn a_finish_carries_the_last_lines_and_the_empty_output() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    let agent = ts.admin.clone();
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    let lease = ts.lease(&agent, "default", 0).await.expect("a queued job");
    assert!(lease.finish_with_logs);
    let lid = lease.lease_id.as_str();
    // Straight from assigned to running: `preparing` is optional.
    assert_eq!(set_state(&ts, &agent, lid, JobState::Running).await, StatusCode::NO_CONTENT);
    assert_eq!(upload_logs(&ts, &agent, lid, vec![line(0, "first")]).await, StatusCode::NO_CONTENT);
    let empty = Manifest::empty_id();
    let f = FinishWithLogs {
        finish: Finish {
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            output: Some(empty),
            reason: None,
            build: None,
        },
        logs: vec![line(0, "dup"), line(1, "the job ended"), line(2, "output: 0 files")],
        ran_ms: None,
    };
    let r = ts.post(&agent, &format!("/agent/leases/{lid}/finish")).json(&f).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done: Job = r.json().await.unwrap();
    assert_eq!((done.state, done.output), (JobState::Succeeded, Some(empty)));
    let batch = logs(&ts, &alice, "alice/mnist/1", "from=0").await;
    let texts: Vec<&str> = batch.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["first", "the job ended", "output: 0 files"]);
    assert!(batch.done);
    let r = ts.get(&alice, &format!("/manifests/{empty}")).send().await.unwrap();
    assert!(r.json::<Manifest>().await.unwrap().entries.is_empty(), "the owner reads the empty output");
}

/// A job that ended within moments is never reported `running`: it goes from
/// assigned to its end, and `started_at` is dated from how long it ran.
#[tokio::test]
async fn a_quick_job_goes_from_assigned_to_its_end_with_its_start_dated() {
    let ts = TestServer::start().await;
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "mnist").await;
    let code = ts.code(&alice).await;
    ts.submit(&alice, "alice", "mnist", &job(code)).await;
    let lease = ts.lease(&ts.admin, "default", 0).await.expect("a queued job");
    let lid = lease.lease_id.as_str();
    assert_eq!(get_job(&ts, &alice, "alice/mnist/1").await.state, JobState::Assigned);
    let f = FinishWithLogs {
        finish: Finish { outcome: Outcome::Succeeded, exit_code: Some(0), output: None, reason: None, build: None },
        logs: vec![line(0, "quick")],
        ran_ms: Some(1500),
    };
    let r = ts.post(&ts.admin, &format!("/agent/leases/{lid}/finish")).json(&f).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let done = get_job(&ts, &alice, "alice/mnist/1").await;
    assert_eq!(done.state, JobState::Succeeded);
    let (started, finished) = (done.started_at.expect("dated"), done.finished_at.expect("finished"));
    assert_eq!(finished - started, 1500, "started_at is finished_at less the run time");
}
