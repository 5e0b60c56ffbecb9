//! `run_agent` against an in-memory stand-in for the server: whole jobs,
//! shared inputs, stop, lost leases, timeouts, preparation failures and
//! shutdown.

mod docker;
mod envs;
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
    url: String,
    work: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    agent: tokio::task::JoinHandle<anyhow::Result<()>>,
    code: ManifestId,
    data: ManifestId,
}

type Agent = (oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>);

/// Starts an agent on `work` against the server at `url`.
fn start_agent(url: &str, work: &Path, slots: usize, cache_bytes: Option<u64>) -> Agent {
    start_agent_with(url, work, |c| {
        c.slots = slots;
        c.cache_bytes = cache_bytes;
    })
}

/// Starts an agent with the test settings, changed by `tweak`.
fn start_agent_with(url: &str, work: &Path, tweak: impl FnOnce(&mut AgentConfig)) -> Agent {
    let mut config = AgentConfig::new("test-agent", work);
    config.stop_grace = Duration::from_secs(2);
    config.lease_wait_ms = 500;
    config.sandbox = SandboxMode::Auto;
    tweak(&mut config);
    let client = podder_client::Client::new(url, "token").unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run_agent(client, config, async move {
        let _ = rx.await;
    }));
    (tx, agent)
}

async fn setup(slots: usize) -> Setup {
    setup_with(slots, None).await
}

async fn setup_with(slots: usize, cache_bytes: Option<u64>) -> Setup {
    setup_agent(|c| {
        c.slots = slots;
        c.cache_bytes = cache_bytes;
    })
    .await
}

/// A mock server with code (`run.sh`) and a dataset, and an agent set up by `tweak`.
async fn setup_agent(tweak: impl FnOnce(&mut AgentConfig)) -> Setup {
    let mock = Arc::new(Mock::default());
    let url = mock.start().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("run.sh"), "echo from run.sh\n").unwrap();
    let code = mock.put_tree(src.path());
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::write(data_dir.path().join("data.txt"), "dataset bytes").unwrap();
    let data = mock.put_tree(data_dir.path());
    let work = tempfile::tempdir().unwrap();
    let (tx, agent) = start_agent_with(&url, work.path(), tweak);
    Setup { mock, url, work, stop: Some(tx), agent, code, data }
}

/// Uploads a dataset: `data.txt` holding `name`, and `files` files of
/// `size` bytes each.
fn dataset(mock: &Mock, name: &str, files: usize, size: usize) -> ManifestId {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), name).unwrap();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    let mut x: u64 = name.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| h.rotate_left(5) ^ b as u64);
    for f in 0..files {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.path().join("files").join(format!("{f}.bin")), bytes).unwrap();
    }
    mock.put_tree(dir.path())
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
        environment: None,
        resources: Default::default(),
        build: None,
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
        gpus: vec![],
        build_result: None,
    };
    Lease {
        lease_id: format!("L{n}"),
        job,
        lease_ms: 3000,
        server_url: Some("http://podder.test:8600".into()),
        finish_with_logs: true,
    }
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
    // A job that ends within 50 ms is never reported `running`: its run
    // time comes with the finish. One that takes longer (this one can, on a
    // loaded machine) is reported `running`, and its finish carries none.
    match r.ran_ms {
        Some(ms) => {
            assert!(ms < 1000, "{ms}");
            assert_eq!(r.states, [JobState::Preparing], "ran {ms} ms");
        }
        None => assert_eq!(r.states, [JobState::Preparing, JobState::Running]),
    }
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
    assert!(r.states.contains(&JobState::Running), "a job that runs on is reported running: {:?}", r.states);
    assert_eq!(r.ran_ms, None);
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

/// A lease mounting `data` at `/data/d`.
fn lease_on(s: &Setup, n: u64, command: &str, data: ManifestId) -> Lease {
    let mut l = lease(s, n, &[command], true);
    l.job.spec.inputs[0].manifest = data;
    l
}

fn manifest_gets(s: &Setup, id: &ManifestId) -> u32 {
    s.mock.manifest_gets.lock().unwrap().get(id).copied().unwrap_or(0)
}

/// The ready trees in the agent's cache.
fn cached_trees(work: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(work.join("cache/trees"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

fn files_under(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_trees_are_built_again() {
    // Room for the code's chunks and one of the two 10 kB datasets.
    let s = setup_with(1, Some(15_000)).await;
    let (a, b) = (dataset(&s.mock, "alpha", 1, 10_000), dataset(&s.mock, "beta", 1, 10_000));
    for (n, d, name) in [(1, a, "alpha"), (2, b, "beta"), (3, a, "alpha")] {
        s.mock.enqueue(lease_on(&s, n, "cat $PODDER_MOUNT_DATA_D/data.txt", d));
        let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
        assert!(stdout(&r).contains(&name.to_string()), "{r:#?}");
        assert!(system(&r).iter().any(|l| l.ends_with("(downloaded)")), "{r:#?}");
        assert_eq!(cached_trees(s.work.path()), [d.to_hex()]);
    }
    assert_eq!((manifest_gets(&s, &a), manifest_gets(&s, &b)), (2, 1));
    // The datasets' chunks were not kept besides their trees.
    let code_chunks = s.mock.manifest_of(&s.code).unwrap().chunk_ids().len();
    assert_eq!(files_under(&s.work.path().join("cache/chunks/chunks")), code_chunks);
    assert_eq!(files_under(&s.work.path().join("cache/staging")), 0);
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_in_use_are_not_evicted() {
    // A limit nothing fits in: every tree goes as soon as no job uses it.
    let s = setup_with(2, Some(1)).await;
    let (a, b) = (dataset(&s.mock, "alpha", 1, 1000), dataset(&s.mock, "beta", 1, 1000));
    s.mock.enqueue(lease_on(&s, 1, "sleep 2; cat $PODDER_MOUNT_DATA_D/data.txt", a));
    s.mock.wait_for("L1", "running", |r| r.states.contains(&JobState::Running)).await;
    s.mock.enqueue(lease_on(&s, 2, "cat $PODDER_MOUNT_DATA_D/data.txt", b));
    let r = s.mock.wait_for("L2", "finish", finished).await;
    assert!(stdout(&r).contains(&"beta".to_string()), "{r:#?}");
    assert!(cached_trees(s.work.path()).contains(&a.to_hex()), "job 1 still uses its tree");
    let r = s.mock.wait_for("L1", "finish", finished).await;
    assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
    assert!(stdout(&r).contains(&"alpha".to_string()), "{r:#?}");
    eventually("the released trees' eviction", || cached_trees(s.work.path()).is_empty()).await;
    shut_down(s).await;
}

/// An unsandboxed job (`--sandbox none`) can write its mounted input; the
/// next job that mounts it gets it rebuilt from the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsandboxed_job_cannot_change_what_later_jobs_mount() {
    let s = setup_agent(|c| c.sandbox = SandboxMode::None).await;
    let tamper = "chmod -R u+w $PODDER_MOUNT_DATA_D; echo tampered > $PODDER_MOUNT_DATA_D/data.txt; \
                  cat $PODDER_MOUNT_DATA_D/data.txt";
    s.mock.enqueue(lease(&s, 1, &[tamper], true));
    let r = s.mock.wait_for("L1", "finish", finished).await;
    assert!(stdout(&r).contains(&"tampered".to_string()), "{r:#?}");
    eventually("the exposed tree's removal", || cached_trees(s.work.path()).is_empty()).await;
    s.mock.enqueue(lease(&s, 2, &["cat $PODDER_MOUNT_DATA_D/data.txt"], true));
    let r = s.mock.wait_for("L2", "finish", finished).await;
    assert!(stdout(&r).contains(&"dataset bytes".to_string()), "{r:#?}");
    assert!(system(&r).iter().any(|l| l.ends_with("(downloaded)")), "{r:#?}");
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_survives_a_restart() {
    let s = setup(1).await;
    s.mock.enqueue(lease(&s, 1, &["cat $PODDER_MOUNT_DATA_D/data.txt"], true));
    let r = s.mock.wait_for("L1", "finish", finished).await;
    assert!(system(&r).iter().any(|l| l.ends_with("(downloaded)")), "{r:#?}");
    let mut s = shut_down(s).await;
    // The stopped agent's last lease request may still wait in the mock and
    // would take the next job: let it end first.
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Leftovers of a crash.
    let w = s.work.path().to_path_buf();
    for d in ["cache/trees/.tmp-abc-1/x", "cache/staging/abc-1/chunks", "cache/trash/abc-1", "jobs/lease-old/code"] {
        std::fs::create_dir_all(w.join(d)).unwrap();
    }
    let (tx, agent) = start_agent(&s.url, &w, 1, None);
    (s.stop, s.agent) = (Some(tx), agent);
    s.mock.enqueue(lease(&s, 2, &["cat $PODDER_MOUNT_DATA_D/data.txt"], true));
    let r = s.mock.wait_for("L2", "finish", finished).await;
    assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
    assert!(stdout(&r).contains(&"dataset bytes".to_string()), "{r:#?}");
    assert!(system(&r).iter().any(|l| l.ends_with("(cached)")), "{r:#?}");
    assert_eq!(manifest_gets(&s, &s.data), 1);
    assert!(!w.join("cache/trees/.tmp-abc-1").exists());
    assert_eq!(std::fs::read_dir(w.join("cache/staging")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(w.join("cache/trash")).unwrap().count(), 0);
    assert!(w.join("cache/index.json").is_file());
    shut_down(s).await;
}

/// How long from handing out the lease until the job's command runs, for
/// a job with a cached large input and for one with none: the input adds
/// only a read-only bind (see `sandbox::tests`), so well under 50 ms.
/// `ROUNDS=n` (default 5) runs more jobs of each kind; `--nocapture` shows
/// the times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_input_barely_delays_the_start() {
    let s = setup(1).await;
    let big = dataset(&s.mock, "big", 512, 32 * 1024); // 16 MiB in 512 files
    s.mock.enqueue(lease_on(&s, 1, "true", big));
    assert_eq!(s.mock.wait_for("L1", "finish", finished).await.finish.unwrap().outcome, Outcome::Succeeded);
    let now_ns = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
    let (mut cached, mut none) = (Vec::new(), Vec::new());
    for round in 0..std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5u64) {
        for with_input in [true, false] {
            let n = 10 + 2 * round + u64::from(with_input);
            let mut l = lease_on(&s, n, "date +%s%N", big);
            if !with_input {
                l.job.spec.inputs.clear();
            }
            let t0 = now_ns();
            s.mock.enqueue(l);
            let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
            let started: i128 = stdout(&r).last().and_then(|l| l.trim().parse().ok()).expect("the start time");
            let ms = (started - t0) as f64 / 1e6;
            if with_input { cached.push(ms) } else { none.push(ms) }
        }
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (c, n) = (min(&cached), min(&none));
    eprintln!("job start: {c:.1} ms with a cached 16 MiB input, {n:.1} ms without (best of 5): {cached:?} {none:?}");
    assert!(c - n < 50.0, "a cached input added {:.1} ms", c - n);
    assert_eq!(manifest_gets(&s, &big), 1);
    shut_down(s).await;
}
