//! The docker executor on the real Docker engine (images made locally by
//! scripts/test-images.sh): the same filesystem contract as the process
//! executor, limits, stop, orphans after a crash, Dockerfile environments.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A server with one docker agent (queue `default`) using the local images.
/// Agent names are unique per test: an agent removes every container
/// labelled with its name when it starts, and tests run side by side.
fn docker_cluster(agent: &str) -> Cluster {
    let mut c = Cluster::server_only(5);
    c.local_python_env();
    c.add_agent_with(agent, &["--executor", "docker", "--slots", "2", "--default-image", PYTHON_IMAGE]);
    c
}

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const PROBE: &str = "cat /data/in/a.txt; (echo x > /data/in/new) 2>/dev/null && echo INPUT-WRITABLE || echo INPUT-READONLY; \
    echo made > /output/o.txt; echo code=$(pwd) out=$PODDER_OUTPUT job=$PODDER_JOB p=$PODDER_PARAM_LR; cat train.py";

#[test]
fn docker_job_sees_the_same_paths_as_a_process_job_and_cannot_write_inputs() {
    let mut c = docker_cluster("d-paths");
    c.add_agent_with("p1", &["--queue", "proc"]);
    let data = c.tmp.path().join("ds");
    write(&data, "a.txt", "hello data\n");
    c.ok(&data, &["data", "upload", "ds", "."]);
    let dir = c.project_dir("same");
    write(&dir, "train.py", "print('hi')\n");
    let mut outs = Vec::new();
    for queue in ["default", "proc"] {
        let args = ["run", "--queue", queue, "--env", "python-3.11", "--data", "ds:/data/in", "--param", "lr=0.1"];
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--follow", "--", "sh", "-c", PROBE]);
        let out = c.ok(&dir, &a);
        let job = out.lines().next().unwrap().to_string();
        let body: Vec<String> = out.lines().skip(1).map(|l| l.replace(&job, "JOB")).collect();
        let j = c.job_json(&dir, &job);
        assert_eq!(j["agent"], if queue == "default" { "d-paths" } else { "p1" });
        let listing = c.ok(&dir, &["output", &job]);
        assert!(listing.contains("o.txt"), "{listing}");
        outs.push(body);
    }
    assert_eq!(outs[0], outs[1], "docker and process jobs differ");
    let text = outs[0].join("\n");
    assert!(text.contains("hello data") && text.contains("INPUT-READONLY"), "{text}");
    assert!(text.contains("code=/code out=/output job=JOB p=0.1") && text.contains("print('hi')"), "{text}");
}

#[test]
fn docker_job_runs_as_non_root_with_limits_and_no_network() {
    let c = docker_cluster("d-limits");
    let dir = c.project_dir("limits");
    let job =
        c.ok(&dir, &["run", "--cpus", "0.5", "--memory", "256M", "--no-network", "--", "sh", "-c", "id -u; sleep 60"]);
    let job = job.trim();
    wait_for(60, "the container", || !containers_of(job).is_empty());
    c.wait_job(&dir, job, 60, |j| j["state"] == "running");
    let id = &containers_of(job)[0];
    let f = "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.NetworkMode}} {{.Config.User}} {{index .Config.Labels \"podder.agent\"}}";
    let got = docker(&["inspect", "--format", f, id]);
    assert_eq!(got, "500000000 268435456 none 1000:1000 d-limits");
    // Stop kills the container.
    c.ok(&dir, &["stop", job]);
    c.wait_job(&dir, job, 30, |j| j["state"] == "stopped");
    wait_for(30, "the container to go", || containers_of(job).is_empty());
    let logs = c.ok(&dir, &["logs", job]);
    assert!(logs.lines().any(|l| l.trim() == "1000"), "{logs}");
}

#[test]
fn docker_agent_killed_and_restarted_removes_its_orphan_container() {
    let mut c = docker_cluster("d-orphans");
    let dir = c.project_dir("orphans");
    let job = c.ok(&dir, &["run", "--", "sleep", "300"]).trim().to_string();
    c.wait_job(&dir, &job, 60, |j| j["state"] == "running");
    wait_for(30, "the container", || !containers_of(&job).is_empty());
    c.kill_agent("d-orphans"); // SIGKILL: the engine keeps the container running
    assert!(!containers_of(&job).is_empty(), "the container should outlive its agent");
    c.add_agent_with("d-orphans", &["--executor", "docker", "--default-image", PYTHON_IMAGE]);
    wait_for(30, "the orphan to be removed", || containers_of(&job).is_empty());
    c.wait_job(&dir, &job, 30, |j| j["state"] == "lost");
}

#[test]
fn dockerfile_environment_is_built_once_and_reused() {
    let c = docker_cluster("d-envs");
    let dir = c.project_dir("envs");
    let marker = format!("built-{}", std::process::id());
    write(&dir, "env/Dockerfile", &format!("FROM {BUSYBOX_IMAGE}\nRUN echo {marker} > /built.txt\n"));
    c.ok(&dir, &["env", "create", "mine", "--dockerfile", "env/Dockerfile", "--description", "test env"]);
    let listed = c.ok(&dir, &["env", "list", "--json"]);
    assert!(listed.contains("\"mine\"") && listed.contains("python-3.11"), "{listed}");
    let first = c.ok(&dir, &["run", "--env", "mine", "--follow", "--", "cat", "/built.txt"]);
    assert!(first.contains(&marker), "{first}");
    let job1 = first.lines().next().unwrap();
    let log1 = stderr(&c.podder(&dir, &["logs", job1]));
    let second = c.ok(&dir, &["run", "--env", "mine", "--follow", "--", "cat", "/built.txt"]);
    assert!(second.contains(&marker), "{second}");
    let job2 = second.lines().next().unwrap();
    let log2 = stderr(&c.podder(&dir, &["logs", job2]));
    // The first job built the image (its build steps are in its log); the second reused it.
    assert!(log1.contains(&format!("echo {marker}")), "first job's log lacks the build: {log1}");
    assert!(!log2.contains(&format!("echo {marker}")), "second job rebuilt: {log2}");
    let env: serde_json::Value = serde_json::from_str(&c.ok(&dir, &["env", "show", "mine", "--json"])).unwrap();
    assert!(env["spec"]["build"]["dockerfile"].as_str().unwrap().contains(&marker));
}

#[test]
fn broken_dockerfile_and_missing_image_fail_the_job_with_the_reason_kept() {
    let c = docker_cluster("d-broken");
    let dir = c.project_dir("broken");
    write(&dir, "Dockerfile.bad", &format!("FROM {BUSYBOX_IMAGE}\nRUN echo about-to-fail && exit 7\n"));
    c.ok(&dir, &["env", "create", "bad", "--dockerfile", "Dockerfile.bad"]);
    let out = c.podder(&dir, &["run", "--env", "bad", "--follow", "--", "true"]);
    assert!(!out.status.success());
    let job = stdout(&out).lines().next().unwrap().to_string();
    let j = c.job_json(&dir, &job);
    assert_eq!(j["state"], "failed");
    assert!(j["reason"].as_str().unwrap().contains("build"), "{j}");
    let log = stderr(&c.podder(&dir, &["logs", &job]));
    assert!(log.contains("about-to-fail"), "the build log is kept: {log}");

    c.ok(&dir, &["env", "create", "ghost", "--image", "podder-test/does-not-exist:1"]);
    let out = c.podder(&dir, &["run", "--env", "ghost", "--follow", "--", "true"]);
    assert!(!out.status.success());
    let job = stdout(&out).lines().next().unwrap().to_string();
    let j = c.job_json(&dir, &job);
    assert!(j["reason"].as_str().unwrap().contains("podder-test/does-not-exist:1"), "{j}");

    // An unknown environment is refused at submit; no job is made.
    let out = c.podder(&dir, &["run", "--env", "nope", "--", "true"]);
    assert!(!out.status.success() && stderr(&out).contains("nope"), "{}", stderr(&out));
    // A Dockerfile without FROM is refused before anything is sent.
    write(&dir, "Dockerfile.nofrom", "RUN true\n");
    let out = c.podder(&dir, &["env", "create", "nofrom", "--dockerfile", "Dockerfile.nofrom"]);
    assert!(!out.status.success() && stderr(&out).contains("FROM"), "{}", stderr(&out));
}
