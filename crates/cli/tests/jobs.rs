//! Jobs end to end: the real server, real agents, the real CLI binary.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn run_follow_logs_and_exit_codes() {
    let c = Cluster::start(30);
    let dir = c.project_dir("hello");
    std::fs::write(
        dir.join("hello.py"),
        "import sys\nprint('hello from', sys.argv[1])\nprint('to stderr', file=sys.stderr)\n",
    )
    .unwrap();
    let out = c.podder(&dir, &["run", "--follow", "--", "python3", "hello.py", "podder"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let so = stdout(&out);
    assert!(so.starts_with("alice/hello#1\n"), "{so}");
    assert!(so.contains("hello from podder"), "{so}");
    assert!(stderr(&out).contains("to stderr"));

    let out = c.podder(&dir, &["run", "--follow", "--", "sh -c 'echo failing; exit 3'"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let j = c.job_json(&dir, "hello#2");
    assert_eq!(j["state"], "failed");
    assert_eq!(j["exit_code"], 3);

    // logs of a finished job, and status listing
    let logs = c.ok(&dir, &["logs", "hello#1"]);
    assert!(logs.contains("hello from podder"));
    let list: serde_json::Value = serde_json::from_str(&c.ok(&dir, &["status", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    // setup commands and parameters
    let out = c.ok(
        &dir,
        &[
            "run",
            "--follow",
            "--setup",
            "echo setting-up > /tmp/s",
            "--param",
            "lr=0.5",
            "--",
            "sh -c 'cat /tmp/s; echo lr=$PODDER_PARAM_LR job=$PODDER_JOB'",
        ],
    );
    assert!(out.contains("setting-up"), "{out}");
    assert!(out.contains("lr=0.5 job=alice/hello#3"), "{out}");
}

#[test]
fn logs_follow_streams_live() {
    let c = Cluster::start(30);
    let dir = c.project_dir("live");
    let out = c.ok(&dir, &["run", "--", "sh -c 'for i in 1 2 3; do echo line-$i; sleep 0.3; done'"]);
    let job = out.trim();
    let started = Instant::now();
    let f = c.podder(&dir, &["logs", "-f", job]);
    assert!(f.status.success());
    assert_eq!(
        stdout(&f).lines().filter(|l| l.starts_with("line-")).collect::<Vec<_>>(),
        ["line-1", "line-2", "line-3"]
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn stop_kills_the_process_tree() {
    let c = Cluster::start(30);
    let dir = c.project_dir("sleepy");
    let marker = "918273645";
    let job = c.ok(&dir, &["run", "--", &format!("sh -c 'sleep {marker} & sleep {marker}; wait'")]).trim().to_string();
    c.wait_job(&dir, &job, 30, |j| j["state"] == "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_with(&format!("sleep {marker}")).len() < 2 {
        assert!(Instant::now() < deadline, "the job's processes never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.ok(&dir, &["stop", &job]);
    let j = c.wait_job(&dir, &job, 30, |j| j["state"] != "running");
    assert_eq!(j["state"], "stopped", "{j}");
    assert!(pids_with(&format!("sleep {marker}")).is_empty(), "processes survived the stop");
    // stopping a finished job is refused with a message
    let again = c.podder(&dir, &["stop", &job]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("stopped"), "{}", stderr(&again));
}

#[test]
fn timeout_fails_the_job() {
    let c = Cluster::start(30);
    let dir = c.project_dir("slow");
    let out = c.podder(&dir, &["run", "--follow", "--timeout", "1s", "--", "sleep 30"]);
    assert!(!out.status.success());
    let j = c.job_json(&dir, "slow#1");
    assert_eq!(j["state"], "failed");
    assert!(j["reason"].as_str().unwrap_or("").contains("timed out"), "{j}");
}

#[test]
fn restart_clone_output_and_mounting_outputs() {
    let c = Cluster::start(30);
    let dir = c.project_dir("pipe");
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("blob.bin"), &blob).unwrap();
    std::fs::write(dir.join("ignored.log"), "secret").unwrap();
    std::fs::write(dir.join(".podderignore"), "*.log\n").unwrap();
    std::fs::write(
        dir.join("make.sh"),
        "set -e\nmkdir -p /output/sub /output/empty\ncp blob.bin /output/sub/blob.bin\nchmod +x /output/sub/blob.bin\nprintf 'é' > /output/données.txt\ntest ! -e ignored.log\n",
    )
    .unwrap();
    c.ok(&dir, &["run", "--follow", "--", "sh make.sh"]);

    // output: listing and byte-identical download
    let listing = c.ok(&dir, &["output", "pipe#1"]);
    assert!(listing.contains("sub/blob.bin"), "{listing}");
    let dl = c.tmp.path().join("dl");
    c.ok(&dir, &["output", "pipe#1", "--download", dl.to_str().unwrap()]);
    assert_eq!(std::fs::read(dl.join("sub/blob.bin")).unwrap(), blob);
    assert_eq!(std::fs::read_to_string(dl.join("données.txt")).unwrap(), "é");
    assert!(dl.join("empty").is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert!(std::fs::metadata(dl.join("sub/blob.bin")).unwrap().permissions().mode() & 0o100 != 0);
    let part = c.tmp.path().join("part");
    c.ok(&dir, &["output", "pipe#1", "--path", "sub", "--download", part.to_str().unwrap()]);
    assert_eq!(std::fs::read(part.join("blob.bin")).unwrap(), blob);

    // clone: the code snapshot, without ignored files
    let cl = c.tmp.path().join("cl");
    c.ok(&dir, &["clone", "pipe#1", cl.to_str().unwrap()]);
    assert_eq!(std::fs::read(cl.join("blob.bin")).unwrap(), blob);
    assert!(cl.join("make.sh").exists());
    assert!(!cl.join("ignored.log").exists());

    // restart: same code and command, recorded
    let r = c.ok(&dir, &["restart", "pipe#1", "--follow"]);
    assert!(r.contains("alice/pipe#2"), "{r}");
    let j1 = c.job_json(&dir, "pipe#1");
    let j2 = c.job_json(&dir, "pipe#2");
    assert_eq!(j2["state"], "succeeded");
    assert_eq!(j2["restarted_from"], "alice/pipe#1");
    assert_eq!(j1["spec"], j2["spec"]);

    // a job mounting the first job's output reads it and cannot write it
    let check = "cmp /prev/sub/blob.bin blob.bin && echo same; if touch /prev/x 2>/dev/null; then echo WROTE; else echo readonly; fi; ls /data/pipe-2/sub";
    let out = c.ok(
        &dir,
        &["run", "--follow", "--data", "pipe#1:/prev", "--data", "pipe#2", "--", &format!("sh -c '{check}'")],
    );
    assert!(out.contains("same"), "{out}");
    assert!(out.contains("readonly"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("blob.bin"), "{out}");
    let j = c.job_json(&dir, "pipe#3");
    assert_eq!(j["spec"]["inputs"][0]["source"], "alice/pipe#1");
    assert_eq!(j["spec"]["inputs"][0]["mount"], "/prev");
    // a sub-path of an output
    let out = c.ok(&dir, &["run", "--follow", "--data", "pipe#1/sub:/model", "--", "ls /model"]);
    assert!(out.contains("blob.bin"), "{out}");
}

#[test]
fn sandbox_hides_the_server_data_dir_and_other_jobs() {
    let c = Cluster::start(30);
    let dir = c.project_dir("peek");
    let data = c.data_dir();
    assert!(data.join("meta.db").exists());
    let agents = c.tmp.path().join("agent-a1");
    let script = format!(
        "for p in {} {} {} /root; do if [ -e $p ]; then echo VISIBLE $p; fi; done; echo checked; touch /output/ok",
        data.display(),
        data.join("meta.db").display(),
        agents.display()
    );
    let out = c.ok(&dir, &["run", "--follow", "--", &format!("sh -c '{script}'")]);
    assert!(out.contains("checked"), "{out}");
    assert!(!out.contains("VISIBLE"), "the job saw the host: {out}");
}

#[test]
fn unchanged_code_sends_no_chunk_twice() {
    let c = Cluster::start(30);
    let dir = c.project_dir("dedup");
    for i in 0..20 {
        std::fs::write(dir.join(format!("f{i}.py")), format!("print({i})\n").repeat(100 + i)).unwrap();
    }
    let first = c.podder(&dir, &["run", "--", "true"]);
    assert!(first.status.success());
    let before = c.stats()["chunks_received"].as_u64().unwrap();
    assert!(before >= 20, "first upload sent {before} chunks");
    let second = c.podder(&dir, &["run", "--", "true"]);
    assert!(second.status.success());
    assert!(stderr(&second).contains("sent 0 of"), "{}", stderr(&second));
    assert_eq!(c.stats()["chunks_received"].as_u64().unwrap(), before, "the second submit sent chunks");
    // one changed file sends one chunk
    std::fs::write(dir.join("f3.py"), "print('changed')\n").unwrap();
    assert!(c.podder(&dir, &["run", "--", "true"]).status.success());
    assert_eq!(c.stats()["chunks_received"].as_u64().unwrap(), before + 1);
}
