//! `run_agent` against an in-memory stand-in for the server: whole jobs,
//! shared inputs, stop, lost leases, timeouts, preparation failures and
//! shutdown.

mod mock;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mock::{LeaseRecord, Mock};
use podder_agent::{AgentConfig, SandboxMode, run_agent};
use podder_core::api::{Input, Job, JobSpec, Lease, Stream};
use podder_core::{JobState, ManifestId, Outcome};
use tokio::sync::oneshot;

struct Setup {
    mock: Arc<Mock>,
    work: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    agent: tokio::task::JoinHandle<anyhow::Result<()>>,
    code: ManifestId,
    data: ManifestId,
}

async fn setup(slots: usize) -> Setup {
    let mock = Arc::new(Mock::default());
    let url = mock.start().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("run.sh"), "echo from run.sh\n").unwrap();
    let code = mock.put_tree(src.path());
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::write(data_dir.path().join("data.txt"), "dataset bytes").unwrap();
    let data = mock.put_tree(data_dir.path());
    let work = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new("test-agent", work.path());
    config.slots = slots;
    config.stop_grace = Duration::from_secs(2);
    config.lease_wait_ms = 500;
    config.sandbox = SandboxMode::Auto;
    let client = podder_client::Client::new(&url, "token").unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run_agent(client, config, async move {
        let _ = rx.await;
    }));
    Setup { mock, work, stop: Some(tx), agent, code, data }
}

fn lease(s: &Setup, n: u64, command: &[&str], inputs: bool) -> Lease {
    let spec = JobSpec {
        code: s.code,
        command: command.iter().map(|c| c.to_string()).collect(),
        setup: vec!["echo setting up".into()],
        params: BTreeMap::from([("lr".to_string(), "0.1".to_string())]),
        inputs: if inputs {
            vec![Input { source: "alice/d@1".into(), manifest: s.data, mount: "/data/d".parse().unwrap() }]
        } else {
            vec![]
        },
        env: None,
        timeout_secs: None,
        retries: 0,
        queue: "default".into(),
    };
    let job = Job {
        job_ref: format!("alice/mnist#{n}").parse().unwrap(),
        state: JobState::Assigned,
        spec,
        message: None,
        output: None,
        exit_code: None,
        reason: None,
        attempt: 1,
        agent: Some("test-agent".into()),
        restarted_from: None,
        created_at: 0,
        started_at: None,
        finished_at: None,
    };
    Lease { lease_id: format!("L{n}"), job, lease_ms: 3000, server_url: Some("http://podder.test:8600".into()) }
}

fn stdout(r: &LeaseRecord) -> Vec<String> {
    r.logs.values().filter(|l| l.stream == Stream::Stdout).map(|l| l.text.clone()).collect()
}

fn system(r: &LeaseRecord) -> Vec<String> {
    r.logs.values().filter(|l| l.stream == Stream::System).map(|l| l.text.clone()).collect()
}

fn finished(r: &LeaseRecord) -> bool {
    r.finish.is_some()
}

fn jobs_dir_empty(work: &Path) -> bool {
    std::fs::read_dir(work.join("jobs")).unwrap().next().is_none()
}

async fn shut_down(mut s: Setup) -> Setup {
    s.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), &mut s.agent).await.unwrap().unwrap().unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_job_end_to_end() {
    let s = setup(1).await;
    s.mock.fail_logs.store(2, Ordering::SeqCst);
    let script = "sh run.sh; cat $PODDER_MOUNT_DATA_D/data.txt; echo; echo $PODDER_PARAM_LR $PODDER_JOB $MLFLOW_TRACKING_URI; \
                  cp $PODDER_MOUNT_DATA_D/data.txt $PODDER_OUTPUT/copy.txt; mkdir $PODDER_OUTPUT/sub; echo x > $PODDER_OUTPUT/sub/y";
    s.mock.enqueue(lease(&s, 1, &[script], true));
    let r = s.mock.wait_for("L1", "finish", finished).await;
    let fin = r.finish.clone().unwrap();
    assert_eq!(fin.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(fin.exit_code, Some(0));
    assert_eq!(r.states, [JobState::Preparing, JobState::Running]);
    assert_eq!(
        stdout(&r),
        ["setting up", "from run.sh", "dataset bytes", "0.1 alice/mnist#1 http://podder.test:8600/"],
        "{r:#?}"
    );
    let seqs: Vec<u64> = r.logs.keys().copied().collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert!(system(&r).contains(&"setup: echo setting up".to_string()));
    let out = s.mock.manifest_of(&fin.output.unwrap()).unwrap();
    let paths: Vec<&str> = out.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["copy.txt", "sub", "sub/y"]);
    s.mock.wait_for("L1", "cleanup", |_| jobs_dir_empty(s.work.path())).await;
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_share_one_cached_input() {
    let s = setup(2).await;
    let cmd = "cat $PODDER_MOUNT_DATA_D/data.txt; echo; sleep 0.5";
    for n in 1..=3 {
        s.mock.enqueue(lease(&s, n, &[cmd], true));
    }
    for n in 1..=3 {
        let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded);
        assert!(stdout(&r).contains(&"dataset bytes".to_string()));
    }
    assert_eq!(s.mock.manifest_gets.lock().unwrap().get(&s.data).copied(), Some(1));
    let trees: Vec<_> = std::fs::read_dir(s.work.path().join("cache/trees")).unwrap().flatten().collect();
    assert_eq!(trees.len(), 1);
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_from_the_server() {
    let s = setup(1).await;
    s.mock.enqueue(lease(&s, 1, &["echo started; echo partial > $PODDER_OUTPUT/p; sleep 1000"], false));
    s.mock.wait_for("L1", "start", |r| stdout(r).contains(&"started".to_string())).await;
    let t0 = std::time::Instant::now();
    s.mock.update("L1", |r| r.stop = true);
    let r = s.mock.wait_for("L1", "finish", finished).await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let fin = r.finish.unwrap();
    assert_eq!(fin.outcome, Outcome::Stopped);
    let out = s.mock.manifest_of(&fin.output.unwrap()).unwrap();
    assert_eq!(out.entries.len(), 1, "the output is kept on stop");
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_kills_without_finishing() {
    let s = setup(1).await;
    s.mock.enqueue(lease(&s, 1, &["echo started; sleep 1000"], false));
    s.mock.wait_for("L1", "start", |r| stdout(r).contains(&"started".to_string())).await;
    s.mock.update("L1", |r| r.lost = true);
    s.mock.wait_for("L1", "cleanup", |_| jobs_dir_empty(s.work.path())).await;
    // The slot is free again: the next job runs.
    s.mock.enqueue(lease(&s, 2, &["exit 3"], false));
    let r = s.mock.wait_for("L2", "finish", finished).await;
    let fin = r.finish.unwrap();
    assert_eq!((fin.outcome, fin.exit_code), (Outcome::Failed, Some(3)));
    assert!(s.mock.record("L1").finish.is_none());
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_preparation_failure() {
    let s = setup(2).await;
    let mut l = lease(&s, 1, &["sleep 1000"], false);
    l.job.spec.timeout_secs = Some(1);
    s.mock.enqueue(l);
    let mut bad = lease(&s, 2, &["true"], true);
    bad.job.spec.inputs[0].manifest = ManifestId::of(b"no such tree");
    s.mock.enqueue(bad);
    let r = s.mock.wait_for("L1", "finish", finished).await;
    let fin = r.finish.unwrap();
    assert_eq!((fin.outcome, fin.reason.as_deref()), (Outcome::Failed, Some("timed out after 1 s")));
    let r = s.mock.wait_for("L2", "finish", finished).await;
    let fin = r.finish.clone().unwrap();
    assert_eq!(fin.outcome, Outcome::Failed);
    assert!(fin.reason.unwrap().starts_with("preparation failed"));
    assert!(system(&r).iter().any(|l| l.starts_with("error: the job could not be prepared")), "{r:#?}");
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_running_jobs() {
    let s = setup(1).await;
    s.mock.enqueue(lease(&s, 1, &["echo started; sleep 1000"], false));
    s.mock.wait_for("L1", "start", |r| stdout(r).contains(&"started".to_string())).await;
    let s = shut_down(s).await;
    let r = s.mock.record("L1");
    let fin = r.finish.unwrap();
    assert_eq!((fin.outcome, fin.reason.as_deref()), (Outcome::Failed, Some("agent shut down")));
    assert!(jobs_dir_empty(s.work.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_cached_chunks_are_fetched_again() {
    let s = setup(1).await;
    s.mock.enqueue(lease(&s, 1, &["sh run.sh"], false));
    assert_eq!(s.mock.wait_for("L1", "finish", finished).await.finish.unwrap().outcome, Outcome::Succeeded);
    let mut damaged = 0;
    for shard in std::fs::read_dir(s.work.path().join("cache/chunks/chunks")).unwrap().flatten() {
        for chunk in std::fs::read_dir(shard.path()).unwrap().flatten() {
            std::fs::write(chunk.path(), b"not zstd").unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    s.mock.enqueue(lease(&s, 2, &["sh run.sh"], false));
    let r = s.mock.wait_for("L2", "finish", finished).await;
    assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
    assert!(stdout(&r).contains(&"from run.sh".to_string()));
    shut_down(s).await;
}
