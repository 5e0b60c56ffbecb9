//! The docker executor against the real Docker engine (images from
//! `scripts/test-images.sh`): the job's filesystem contract, stop, limits,
//! labels, networks, orphans, GPUs, image environments and build jobs.
//!
//! Every agent here has its own name: an agent removes the containers
//! labelled with its name when it starts.

use std::path::Path;
use std::time::Duration;

use podder_agent::docker_exec::{DockerPlan, NetworkMode, PODDER_NETWORK, container_spec, ensure_isolated_network};
use podder_agent::{JobPlan, LABEL_AGENT, LABEL_JOB, Sandbox};
use podder_core::api::Stream;
use podder_core::env::GitSource;
use podder_core::{EnvSpec, ExecutorKind, ImageBuild, JobState, Outcome, Resources};
use podder_docker::{ContainerSpec, Engine};

use super::mock::LeaseRecord;
use super::{Setup, finished, lease, setup_agent, shut_down, stdout, system};

pub const BUSYBOX: &str = "podder-test/busybox";
pub const PYTHON: &str = "podder-test/python:3.11";

fn unique(what: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{}-{n}", std::process::id())
}

/// A docker agent named `name` (unique per test), default image busybox.
async fn docker_setup(name: &str, slots: usize) -> Setup {
    let name = name.to_string();
    setup_agent(move |c| {
        c.name = name;
        c.slots = slots;
        c.executor = ExecutorKind::Docker;
        c.default_image = BUSYBOX.into();
    })
    .await
}

fn stderr(r: &LeaseRecord) -> Vec<String> {
    r.logs.values().filter(|l| l.stream == Stream::Stderr).map(|l| l.text.clone()).collect()
}

async fn containers_of(engine: &Engine, agent: &str) -> usize {
    engine.list_by_label(LABEL_AGENT, agent).await.unwrap().len()
}

async fn gone(engine: &Engine, agent: &str) {
    for _ in 0..200 {
        if containers_of(engine, agent).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the containers of {agent} are still there");
}

const LAYOUT: &str = "pwd; ls /data/d; cat /data/d/data.txt; echo; echo $PODDER_MOUNT_DATA_D $PODDER_OUTPUT $PODDER_CODE; \
    (touch /data/d/x 2>/dev/null && echo input-writable) || echo input-read-only; \
    echo $PODDER_PARAM_LR $PODDER_JOB $MLFLOW_TRACKING_URI; sh run.sh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_job_sees_the_process_executors_layout() {
    let engine = Engine::connect().await.unwrap();
    let name = unique("layout");
    let s = docker_setup(&name, 1).await;
    let script = format!(
        "{LAYOUT}; echo made > /output/made.txt; mkdir /output/sub; echo scratch > /code/new.txt; id -u; echo oops >&2; exit 4"
    );
    s.mock.enqueue(lease(&s, 1, &[&script], true));
    let r = s.mock.wait_for("L1", "finish", finished).await;
    let fin = r.finish.clone().unwrap();
    assert_eq!((fin.outcome, fin.exit_code), (Outcome::Failed, Some(4)), "{r:#?}");
    assert_eq!(fin.reason.as_deref(), Some("exited with code 4"));
    let out = stdout(&r);
    assert_eq!(out[0], "setting up");
    assert!(out.contains(&"input-read-only".to_string()), "{out:?}");
    assert_eq!(out.last().unwrap(), "1000", "a non-root user");
    assert_eq!(stderr(&r), ["oops"]);
    let made = s.mock.manifest_of(&fin.output.unwrap()).unwrap();
    let paths: Vec<&str> = made.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["made.txt", "sub"]);
    gone(&engine, &name).await;
    let docker_lines = out[1..out.len() - 1].to_vec();
    shut_down(s).await;

    // The same script on the process executor prints the same lines.
    let p = setup_agent(|_| {}).await;
    p.mock.enqueue(lease(&p, 1, &[LAYOUT], true));
    let r = p.mock.wait_for("L1", "finish", finished).await;
    let process_lines = stdout(&r)[1..].to_vec();
    if system(&r).iter().any(|l| l.contains("unsandboxed")) {
        eprintln!("no bubblewrap here: the process executor's paths differ; comparing skipped");
    } else {
        assert_eq!(docker_lines, process_lines);
    }
    shut_down(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_limits_labels_network_and_user() {
    let engine = Engine::connect().await.unwrap();
    let name = unique("limits");
    let s = docker_setup(&name, 1).await;
    let mut l = lease(&s, 1, &["echo started; sleep 1000"], false);
    l.job.spec.resources = Resources { gpus: 0, cpus: Some(0.5), memory_bytes: Some(64 << 20), no_network: true };
    s.mock.enqueue(l);
    s.mock.wait_for("L1", "start", |r| stdout(r).contains(&"started".to_string())).await;
    let list = engine.list_by_label(LABEL_AGENT, &name).await.unwrap();
    assert_eq!(list.len(), 1);
    let i = engine.inspect(list[0].id.as_deref().unwrap()).await.unwrap();
    let (config, host) = (i.config.unwrap(), i.host_config.unwrap());
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(config.working_dir.as_deref(), Some("/code"));
    let labels = config.labels.unwrap();
    assert_eq!(labels[LABEL_JOB], "alice/mnist#1");
    assert_eq!(labels[LABEL_AGENT], name);
    assert_eq!((host.nano_cpus, host.memory), (Some(500_000_000), Some(64 << 20)));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    let t0 = std::time::Instant::now();
    s.mock.update("L1", |r| r.stop = true);
    let r = s.mock.wait_for("L1", "finish", finished).await;
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Stopped, "{r:#?}");
    assert!(system(&r).iter().any(|l| l.starts_with("stop requested")), "{r:#?}");
    gone(&engine, &name).await;

    // A timeout stops the container too.
    let mut l = lease(&s, 2, &["sleep 1000"], false);
    l.job.spec.timeout_secs = Some(1);
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L2", "finish", finished).await;
    assert_eq!(r.finish.unwrap().reason.as_deref(), Some("timed out after 1 s"));
    gone(&engine, &name).await;
    shut_down(s).await;
}

/// A TCP listener on the host's 127.0.0.1 that counts its connections.
fn loopback_listener() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(c);
        }
    });
    (port, hits)
}

/// Shell text: tries the host's 127.0.0.1:`port` and says `reached` or
/// `unreachable`, then lists the network interfaces.
fn probe(port: u16) -> String {
    format!(
        "if busybox nc -w 3 127.0.0.1 {port} </dev/null >/dev/null 2>&1; then echo reached; else echo unreachable; fi; \
         echo interfaces $(ls /sys/class/net)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_jobs_get_a_network_of_their_own_and_not_the_hosts() {
    let engine = Engine::connect().await.unwrap();
    let (port, hits) = loopback_listener();
    let name = unique("network");
    let s = docker_setup(&name, 1).await;

    // The agent made its isolated network: containers on it do not reach
    // each other.
    let network = engine.networks_named(PODDER_NETWORK).await.unwrap();
    assert_eq!(network.len(), 1, "{network:?}");
    assert!(!engine.network_icc(&network[0]).await.unwrap(), "inter-container traffic is off");

    // By default a job has an interface of its own, and the host's loopback
    // (where the listener is, like a podder server on 127.0.0.1) is not
    // reachable from it.
    let script = format!("{}; echo checked; sleep 10", probe(port));
    s.mock.enqueue(lease(&s, 1, &[&script], false));
    let r = s.mock.wait_for("L1", "probe", |r| stdout(r).contains(&"checked".to_string())).await;
    let out = stdout(&r);
    assert!(out.contains(&"unreachable".to_string()), "a docker job reached the host's 127.0.0.1: {out:?}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the listener saw a connection");
    let iface = out.iter().find(|l| l.starts_with("interfaces")).unwrap();
    assert!(iface.contains("eth0") && iface.contains("lo"), "{iface}");
    let list = engine.list_by_label(LABEL_AGENT, &name).await.unwrap();
    let i = engine.inspect(list[0].id.as_deref().unwrap()).await.unwrap();
    assert_eq!(i.host_config.unwrap().network_mode.as_ref(), Some(&network[0]));
    let joined = i.network_settings.unwrap().networks.unwrap();
    assert_eq!(joined.keys().collect::<Vec<_>>(), [PODDER_NETWORK]);
    s.mock.update("L1", |r| r.stop = true);
    s.mock.wait_for("L1", "finish", finished).await;

    // --no-network: nothing but the loopback interface.
    let mut l = lease(&s, 2, &[&probe(port)], false);
    l.job.spec.resources.no_network = true;
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L2", "finish", finished).await;
    let out = stdout(&r);
    assert!(out.contains(&"unreachable".to_string()), "{out:?}");
    assert!(out.contains(&"interfaces lo".to_string()), "only lo: {out:?}");
    gone(&engine, &name).await;
    shut_down(s).await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the listener saw a connection");

    // The probe does reach the listener with host networking (only when the
    // agent is told so), so the refusals above were the network's doing.
    let dir = tempfile::tempdir().unwrap();
    let plan = JobPlan::new(probe(port), dir.path().into(), dir.path().into(), Sandbox::None);
    let label = unique("host-network");
    let docker = DockerPlan {
        image: BUSYBOX.into(),
        network: NetworkMode::Host.ensure(&engine).await.unwrap(),
        labels: [(LABEL_AGENT.to_string(), label)].into(),
        ..Default::default()
    };
    let spec = container_spec(&plan, &docker);
    assert_eq!(spec.network.as_deref(), Some("host"));
    let (code, out) = engine.run_capture(&spec).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("reached"), "{out}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_racing_to_make_the_network_make_one() {
    let engine = Engine::connect().await.unwrap();
    let name = unique("net-race");
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (e, n) = (engine.clone(), name.clone());
            tokio::spawn(async move { ensure_isolated_network(&e, &n).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for r in racers {
        got.push(r.await.unwrap());
    }
    let ids = engine.networks_named(&name).await.unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(got.iter().all(|id| id == &ids[0]), "{got:?} {ids:?}");
    assert!(!engine.network_icc(&ids[0]).await.unwrap());
    assert_eq!(ensure_isolated_network(&engine, &name).await.unwrap(), ids[0], "an existing one is kept");
    engine.client().remove_network(&ids[0]).await.unwrap();
}

#[test]
fn network_modes_parse_and_name_the_engines_network() {
    let cases = [("podder", "podder"), ("bridge", "bridge"), ("host", "host"), ("lab-net", "lab-net")];
    for (arg, engine) in cases {
        assert_eq!(NetworkMode::parse(arg).unwrap().engine_name(), engine);
    }
    assert_eq!(NetworkMode::default(), NetworkMode::Podder);
    let err = NetworkMode::parse("none").unwrap_err().to_string();
    assert!(err.contains("--no-network"), "{err}");
    assert!(NetworkMode::parse(" ").is_err());
    // no_network wins over any mode.
    let dir = tempfile::tempdir().unwrap();
    let plan = JobPlan::new("true".into(), dir.path().into(), dir.path().into(), Sandbox::None);
    let docker = DockerPlan { no_network: true, network: "host".into(), ..Default::default() };
    assert_eq!(container_spec(&plan, &docker).network.as_deref(), Some("none"));
    let docker = DockerPlan { network: "abc123".into(), ..Default::default() };
    assert_eq!(container_spec(&plan, &docker).network.as_deref(), Some("abc123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_removes_its_orphans() {
    let engine = Engine::connect().await.unwrap();
    let name = unique("orphans");
    let orphan = |agent: &str| ContainerSpec {
        image: BUSYBOX.into(),
        cmd: vec!["sleep".into(), "1000".into()],
        labels: [(LABEL_AGENT.to_string(), agent.to_string()), (LABEL_JOB.to_string(), "alice/mnist#9".into())].into(),
        ..Default::default()
    };
    let mine = engine.create(&orphan(&name)).await.unwrap();
    engine.start(&mine).await.unwrap();
    let other = unique("other-agent");
    let theirs = engine.create(&orphan(&other)).await.unwrap();
    let s = docker_setup(&name, 1).await;
    // The agent is up once it asks for work.
    for _ in 0..200 {
        if !s.mock.inventories.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(containers_of(&engine, &name).await, 0, "the orphan was removed");
    assert_eq!(containers_of(&engine, &other).await, 1, "another agent's container stays");
    engine.remove(&theirs).await.unwrap();
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gpu_inventory_and_device_requests() {
    let name = unique("gpus");
    let s = setup_agent({
        let name = name.clone();
        move |c| {
            c.name = name;
            c.executor = ExecutorKind::Docker;
            c.default_image = BUSYBOX.into();
            c.gpus = podder_agent::parse_gpus("0,1").unwrap();
            c.memory_bytes = Some(8 << 30);
        }
    })
    .await;
    // The inventory goes with every lease request.
    let inv = loop {
        if let Some(i) = s.mock.inventories.lock().unwrap().first().cloned() {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(inv.executor, Some(ExecutorKind::Docker));
    assert_eq!(inv.gpus.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!((inv.slots, inv.memory_bytes), (1, 8 << 30));
    assert!(inv.cpus >= 1);
    // A job given GPU 1: the container asks the NVIDIA runtime for it,
    // which this engine lacks, so the job fails to start, saying why.
    let mut l = lease(&s, 1, &["true"], false);
    l.job.gpus = vec![1];
    l.job.spec.resources.gpus = 1;
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L1", "finish", finished).await;
    let reason = r.finish.unwrap().reason.unwrap();
    assert!(reason.starts_with("cannot start the job"), "{reason}");
    shut_down(s).await;

    // The container's config, created and never started.
    let engine = Engine::connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = JobPlan::new("nvidia-smi".into(), dir.path().into(), dir.path().into(), Sandbox::None);
    let label = unique("fake-gpu");
    let docker = DockerPlan {
        image: BUSYBOX.into(),
        gpus: vec![0, 1],
        labels: [(LABEL_AGENT.to_string(), label.clone())].into(),
        ..Default::default()
    };
    let id = engine.create(&container_spec(&plan, &docker)).await.unwrap();
    let reqs = engine.inspect(&id).await.unwrap().host_config.unwrap().device_requests.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(reqs[0].device_ids, Some(vec!["0".to_string(), "1".to_string()]));
    assert_eq!(reqs[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
    engine.remove(&id).await.unwrap();
}

fn env(name: &str) -> EnvSpec {
    EnvSpec { name: name.into(), image: None, gpu_image: None, build: None, requirements: None, workdir: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_environment_is_built_once() {
    let engine = Engine::connect().await.unwrap();
    let name = unique("dockerfile");
    let s = docker_setup(&name, 1).await;
    let nonce = unique("n");
    let build = ImageBuild {
        dockerfile: Some(format!("FROM {BUSYBOX}\nRUN echo built {nonce} > /built.txt\n")),
        context: None,
        git: None,
        obfuscate: false,
    };
    let tag = build.tag();
    for n in 1..=2 {
        let mut l = lease(&s, n, &["cat /built.txt"], false);
        l.job.spec.environment = Some(EnvSpec { build: Some(build.clone()), ..env("alice/tools") });
        s.mock.enqueue(l);
        let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
        assert!(stdout(&r).contains(&format!("built {nonce}")), "{r:#?}");
        let sys = system(&r);
        let built = sys.iter().any(|l| l.starts_with(&format!("environment: building image {tag}")));
        let cached = sys.iter().any(|l| l.ends_with("(cached)"));
        assert_eq!((built, cached), (n == 1, n == 2), "{sys:#?}");
    }
    // A failing Dockerfile: the job fails, its log keeps the build's output.
    let mut l = lease(&s, 3, &["true"], false);
    let bad = format!("FROM {BUSYBOX}\nRUN echo about to fail {nonce} && exit 3\n");
    l.job.spec.environment =
        Some(EnvSpec { build: Some(ImageBuild { dockerfile: Some(bad), ..build.clone() }), ..env("alice/bad") });
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L3", "finish", finished).await;
    let reason = r.finish.clone().unwrap().reason.unwrap();
    assert!(reason.starts_with("environment build failed:"), "{reason}");
    assert!(system(&r).contains(&format!("about to fail {nonce}")), "{r:#?}");
    // A missing image that cannot be pulled.
    let mut l = lease(&s, 4, &["true"], false);
    l.job.spec.environment = Some(EnvSpec { image: Some("podder-test/no-such-image:7".into()), ..env("alice/gone") });
    s.mock.enqueue(l);
    let r = s.mock.wait_for("L4", "finish", finished).await;
    let reason = r.finish.clone().unwrap().reason.unwrap();
    assert!(reason.contains("'podder-test/no-such-image:7'") && reason.contains("could not be pulled"), "{reason}");
    engine.remove_image(&tag).await.unwrap();
    shut_down(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_with_requirements_is_derived_once() {
    let name = unique("derived");
    let s = docker_setup(&name, 1).await;
    // pip is installed already: pip has nothing to fetch (no network here).
    let reqs = format!("pip  # {}\n", unique("n"));
    for n in 1..=2 {
        let mut l = lease(&s, n, &["python3 -c 'import pip; print(\"pip ok\")'"], false);
        l.job.spec.environment =
            Some(EnvSpec { image: Some(PYTHON.into()), requirements: Some(reqs.clone()), ..env("alice/py") });
        s.mock.enqueue(l);
        let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
        assert_eq!(stdout(&r).last().unwrap(), "pip ok");
        let sys = system(&r);
        let built = sys.iter().any(|l| l.starts_with("environment: building image podder-env:"));
        assert_eq!(built, n == 1, "{sys:#?}");
        if n == 1 {
            assert!(sys.iter().any(|l| l.contains("Requirement already satisfied")), "{sys:#?}");
        }
        if n == 2 {
            let image = sys.iter().find_map(|l| l.strip_prefix("environment: running in image ")).unwrap();
            assert!(image.starts_with("podder-env:"), "{image}");
            Engine::connect().await.unwrap().remove_image(image).await.unwrap();
        }
    }
    shut_down(s).await;
}

const MAIN_PY: &str = r#""""The task's module docstring."""
import os


def greet():
    """A docstring that obfuscation strips."""
    return "hello from the task"


if __name__ == "__main__":
    print(greet(), greet.__doc__, os.environ.get("PODDER_PARAM_WHO", "nobody"))
"#;

/// A task directory: task.yaml, main.py, a Dockerfile.
fn task_dir(dir: &Path, nonce: &str) {
    std::fs::write(dir.join("task.yaml"), "name: greet\ncommand: [python3, -m, main]\nworkdir: /task\n").unwrap();
    std::fs::write(dir.join("main.py"), MAIN_PY).unwrap();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/helper.py"), "X = 1\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {PYTHON}\nCOPY . /task\nWORKDIR /task\nRUN echo {nonce} > /nonce\nCMD [\"python3\", \"-m\", \"main\"]\n"),
    )
    .unwrap();
}

fn build_lease(s: &Setup, n: u64, build: ImageBuild) -> podder_core::api::Lease {
    let mut l = lease(s, n, &[], false);
    l.job.spec.setup.clear();
    l.job.spec.build = Some(build);
    l
}

/// Runs `cmd` in `image`; its exit code and output.
async fn run_in(engine: &Engine, image: &str, cmd: &str) -> (i64, String) {
    let spec = ContainerSpec {
        image: image.into(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: vec![cmd.into()],
        workdir: Some("/task".into()),
        ..Default::default()
    };
    engine.run_capture(&spec).await.unwrap()
}

/// Every layer of `image` as `docker save` writes it: the paths in the
/// layer's tar (whiteouts included) and the layer's bytes.
fn saved_layers(image: &str) -> Vec<(Vec<String>, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("image.tar");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(&["docker", "save", "-o", tar.to_str().unwrap(), image]);
    let root = dir.path().join("image");
    std::fs::create_dir(&root).unwrap();
    run(&["tar", "-xf", tar.to_str().unwrap(), "-C", root.to_str().unwrap()]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    layers
        .iter()
        .map(|l| {
            let layer = root.join(l.as_str().unwrap());
            let list = run(&["tar", "-tf", layer.to_str().unwrap()]);
            let paths =
                String::from_utf8_lossy(&list).lines().map(|p| p.trim_start_matches("./").to_string()).collect();
            (paths, std::fs::read(&layer).unwrap())
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_jobs_from_a_directory_plain_and_obfuscated() {
    let engine = Engine::connect().await.unwrap();
    let name = unique("build-dir");
    let s = docker_setup(&name, 1).await;
    let dir = tempfile::tempdir().unwrap();
    task_dir(dir.path(), &unique("n"));
    let code = s.mock.put_tree(dir.path());
    for (n, obfuscate) in [(1, false), (2, true)] {
        let build = ImageBuild { dockerfile: None, context: Some(code), git: None, obfuscate };
        s.mock.enqueue(build_lease(&s, n, build.clone()));
        let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
        let fin = r.finish.clone().unwrap();
        assert_eq!(fin.outcome, Outcome::Succeeded, "{r:#?}");
        assert_eq!(r.states, [JobState::Preparing, JobState::Running]);
        let res = fin.build.unwrap();
        assert_eq!((res.image.as_str(), &res.build), (build.tag().as_str(), &build));
        assert_eq!(res.task_yaml, std::fs::read_to_string(dir.path().join("task.yaml")).unwrap());
        assert_eq!(engine.image_id(&res.image).await.unwrap().as_deref(), Some(res.image_id.as_str()));
        assert!(system(&r).iter().any(|l| l.starts_with("Step 1/")), "the build's output is the log: {r:#?}");
        let (_, found) = run_in(&engine, &res.image, "find /task -name '*.py'").await;
        let ran = run_in(&engine, &res.image, "python3 -m main").await;
        if obfuscate {
            assert_eq!(found.trim(), "", "no Python source is left");
            assert_eq!(ran, (0, "hello from the task None nobody\n".into()), "runs from bytecode, no docstrings");
            assert!(system(&r).iter().any(|l| l.starts_with("obfuscating: checked")), "{r:#?}");
            let (_, pyc) = run_in(&engine, &res.image, "ls /task /task/lib").await;
            assert!(pyc.contains("main.pyc") && pyc.contains("helper.pyc"), "{pyc}");
            // No layer of the image ever held the sources (not even under
            // a whiteout of a later layer).
            let layers = saved_layers(&res.image);
            let files: Vec<&String> = layers.iter().flat_map(|(paths, _)| paths).collect();
            let sources: Vec<&&String> =
                files.iter().filter(|p| p.starts_with("task/") && p.ends_with(".py")).collect();
            assert!(sources.is_empty(), "layers hold the sources: {sources:?}");
            assert!(files.iter().any(|p| *p == "task/main.pyc"), "{files:?}");
            assert!(files.iter().any(|p| *p == "task/lib/helper.pyc"), "{files:?}");
            assert!(files.iter().any(|p| *p == "task/task.yaml"), "the other files of the context: {files:?}");
            for (_, bytes) in &layers {
                assert!(!contains(bytes, b"def greet():"), "a layer holds the source text");
                assert!(!contains(bytes, b"A docstring that obfuscation strips"), "a layer holds the docstring");
            }
        } else {
            assert_eq!(found.lines().count(), 2, "{found}");
            let layers = saved_layers(&res.image);
            assert!(layers.iter().any(|(paths, _)| paths.iter().any(|p| p == "task/main.py")), "the scan sees sources");
            assert_eq!(ran, (0, "hello from the task A docstring that obfuscation strips. nobody\n".into()));
        }
        // The built task runs as an environment (its image is found).
        let mut run = lease(&s, 10 + n, &["python3", "-m", "main"], false);
        run.job.spec.params = [("who".to_string(), "bob".to_string())].into();
        run.job.spec.environment = Some(EnvSpec {
            build: Some(res.build.clone()),
            workdir: Some("/task".into()),
            ..env("task:alice/mnist/greet")
        });
        s.mock.enqueue(run);
        let r = s.mock.wait_for(&format!("L{}", 10 + n), "finish", finished).await;
        assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
        assert!(stdout(&r).last().unwrap().ends_with("bob"), "{r:#?}");
        engine.remove_image(&res.image).await.unwrap();
    }
    // A task.yaml with a wrong type: the job fails naming file and line.
    std::fs::write(dir.path().join("task.yaml"), "name: greet\ncommand: [python3]\nparams:\n  n: {type: integer}\n")
        .unwrap();
    let bad = s.mock.put_tree(dir.path());
    s.mock.enqueue(build_lease(
        &s,
        3,
        ImageBuild { dockerfile: None, context: Some(bad), git: None, obfuscate: false },
    ));
    let r = s.mock.wait_for("L3", "finish", finished).await;
    let reason = r.finish.clone().unwrap().reason.unwrap();
    assert!(reason.starts_with("task.yaml:4:"), "{reason}");
    assert!(system(&r).iter().any(|l| l.starts_with("error: task.yaml:4:")), "{r:#?}");
    shut_down(s).await;
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_jobs_from_a_git_repository() {
    let engine = Engine::connect().await.unwrap();
    let name = unique("build-git");
    let s = docker_setup(&name, 1).await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    task_dir(repo.path(), &unique("n"));
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "task"]);
    let commit = git(repo.path(), &["rev-parse", "HEAD"]);
    // A later commit on main: the build of tag v1 must not see it.
    git(repo.path(), &["tag", "v1"]);
    std::fs::write(repo.path().join("later.py"), "x = 1\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "later"]);
    let url = format!("file://{}", repo.path().display());
    for (n, obfuscate) in [(1, false), (2, true)] {
        let source: GitSource = format!("{url}#v1").parse().unwrap();
        let build = ImageBuild { dockerfile: None, context: None, git: Some(source), obfuscate };
        s.mock.enqueue(build_lease(&s, n, build.clone()));
        let r = s.mock.wait_for(&format!("L{n}"), "finish", finished).await;
        let fin = r.finish.clone().unwrap();
        assert_eq!(fin.outcome, Outcome::Succeeded, "{r:#?}");
        let res = fin.build.unwrap();
        assert_eq!(res.build.git.as_ref().unwrap().commit.as_deref(), Some(commit.as_str()));
        assert_eq!(res.image, res.build.tag(), "tagged after the commit was known");
        assert_ne!(res.image, build.tag());
        let (_, found) = run_in(&engine, &res.image, "find /task -name '*.py' | sort; ls -a /task").await;
        assert!(!found.contains("later.py") && !found.contains(".git"), "{found}");
        assert_eq!(found.lines().any(|l| l == "/task/main.py"), !obfuscate, "{found}");
        assert_eq!(run_in(&engine, &res.image, "python3 -m main").await.0, 0);
        if obfuscate {
            // Gone from the engine: a job in this task's environment
            // builds it again from the recorded commit.
            engine.remove_image(&res.image).await.unwrap();
            let mut run = lease(&s, 10 + n, &["python3", "-m", "main"], false);
            run.job.spec.environment = Some(EnvSpec {
                build: Some(res.build.clone()),
                workdir: Some("/task".into()),
                ..env("task:alice/mnist/greet")
            });
            s.mock.enqueue(run);
            let r = s.mock.wait_for(&format!("L{}", 10 + n), "finish", finished).await;
            assert_eq!(r.finish.as_ref().unwrap().outcome, Outcome::Succeeded, "{r:#?}");
            assert!(system(&r).contains(&format!("git: commit {commit}")), "{r:#?}");
            assert_eq!(stdout(&r).last().unwrap(), "hello from the task None nobody");
        }
        engine.remove_image(&res.image).await.unwrap();
    }
    // A reference that does not exist.
    let build = ImageBuild {
        dockerfile: None,
        context: None,
        git: Some(format!("{url}#no-such-branch").parse().unwrap()),
        obfuscate: false,
    };
    s.mock.enqueue(build_lease(&s, 3, build));
    let r = s.mock.wait_for("L3", "finish", finished).await;
    let reason = r.finish.clone().unwrap().reason.unwrap();
    assert!(reason.contains("no-such-branch"), "{reason}");
    shut_down(s).await;
}
