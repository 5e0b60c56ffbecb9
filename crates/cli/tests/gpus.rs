//! GPU placement with agents that declare fake GPU inventories (this machine
//! has no GPU): jobs land only where their GPUs are free, get concrete
//! indices, and never share one; impossible requests are refused at submit.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

fn gpus_of(j: &serde_json::Value) -> Vec<u64> {
    j["gpus"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()).collect()
}

#[test]
fn fake_gpu_jobs_land_right_and_never_share_a_gpu() {
    let mut c = Cluster::server_only(10);
    c.add_agent_with("one-gpu", &["--gpus", "0", "--slots", "3"]);
    c.add_agent_with("two-gpu", &["--gpus", "0,1", "--slots", "3"]);
    let dir = c.project_dir("gpus");
    let cmd = ["--", "sh", "-c", "echo visible=$CUDA_VISIBLE_DEVICES; sleep 1.5"];
    let mut jobs = Vec::new();
    // The 2-GPU job first, so it can only be on two-gpu with both GPUs.
    for n in [2, 1, 1, 1, 2] {
        let g = n.to_string();
        let mut args = vec!["run", "--gpu", g.as_str()];
        args.extend(cmd);
        jobs.push((n, c.ok(&dir, &args).trim().to_string()));
    }
    // Watch the jobs: at no moment do two leased jobs of one agent hold one GPU.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_running = 0;
    loop {
        // One listing is one consistent snapshot of every job.
        let listed: serde_json::Value = serde_json::from_str(&c.ok(&dir, &["status", "--json"])).unwrap();
        let all: Vec<serde_json::Value> = listed.as_array().unwrap().clone();
        assert_eq!(all.len(), jobs.len());
        let mut held: BTreeMap<(String, u64), String> = BTreeMap::new();
        for j in &all {
            if ["assigned", "preparing", "running"].contains(&j["state"].as_str().unwrap()) {
                seen_running += 1;
                for g in gpus_of(j) {
                    let key = (j["agent"].as_str().unwrap().to_string(), g);
                    let prev = held.insert(key.clone(), j["ref"].to_string());
                    assert!(prev.is_none(), "GPU {key:?} given to two jobs at once: {prev:?} and {}", j["ref"]);
                }
            }
        }
        if all.iter().all(|j| j["state"] == "succeeded") {
            break;
        }
        assert!(all.iter().all(|j| j["state"] != "failed"), "a job failed: {all:?}");
        assert!(Instant::now() < deadline, "jobs did not finish: {all:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen_running > 0);
    // And over time: two jobs that held one GPU of one agent never ran at once.
    let all: Vec<serde_json::Value> = jobs.iter().map(|(_, j)| c.job_json(&dir, j)).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let shared = gpus_of(a).iter().any(|g| gpus_of(b).contains(g));
            if a["agent"] == b["agent"] && shared {
                let (a0, a1) = (a["started_at"].as_i64().unwrap(), a["finished_at"].as_i64().unwrap());
                let (b0, b1) = (b["started_at"].as_i64().unwrap(), b["finished_at"].as_i64().unwrap());
                assert!(a1 <= b0 || b1 <= a0, "{} and {} shared a GPU at the same time", a["ref"], b["ref"]);
            }
        }
    }
    for (n, job) in &jobs {
        let j = c.job_json(&dir, job);
        let gpus = gpus_of(&j);
        assert_eq!(gpus.len(), *n as usize, "{job} asked for {n} GPUs: {j}");
        if *n == 2 {
            assert_eq!(j["agent"], "two-gpu", "a 2-GPU job can only run on two-gpu");
            assert_eq!(gpus, vec![0, 1]);
        }
        // The job saw exactly the GPUs it was given.
        let logs = c.ok(&dir, &["logs", job]);
        let want: Vec<String> = gpus.iter().map(|g| g.to_string()).collect();
        assert!(logs.contains(&format!("visible={}", want.join(","))), "{job}: {logs}");
    }
}

#[test]
fn fake_gpu_request_beyond_every_agent_is_refused_at_submit() {
    let mut c = Cluster::server_only(10);
    c.add_agent_with("two-gpu", &["--gpus", "0,1"]);
    let dir = c.project_dir("gpus");
    let out = c.podder(&dir, &["run", "--gpu", "3", "--", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains('3') && err.contains('2') && err.contains("--gpus"), "{err}");
    // Nothing was created.
    let list: serde_json::Value = serde_json::from_str(&c.ok(&dir, &["status", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
}

#[test]
fn gpu_job_on_a_server_without_gpu_agents_is_refused() {
    let mut c = Cluster::server_only(10);
    c.add_agent_with("cpu-only", &["--gpus", "none"]);
    let dir = c.project_dir("gpus");
    let out = c.podder(&dir, &["run", "--gpu", "--", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).to_lowercase().contains("gpu"), "{}", stderr(&out));
    // A CPU job runs, and says it has no GPU.
    let job = c.ok(&dir, &["run", "--cpu", "--follow", "--", "sh", "-c", "echo [$CUDA_VISIBLE_DEVICES]"]);
    assert!(job.contains("[]"), "{job}");
}
