//! Agents that die: leases expire, jobs become lost, retries run elsewhere.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn killed_agent_makes_the_job_lost_and_a_retry_succeeds_elsewhere() {
    let mut c = Cluster::start(3);
    let dir = c.project_dir("crash");
    let marker = "5550123";
    let job = c
        .ok(&dir, &["run", "--retries", "1", "--", &format!("sh -c 'sleep 2.{marker}; echo finished on $PODDER_JOB'")])
        .trim()
        .to_string();
    let j = c.wait_job(&dir, &job, 30, |j| j["state"] == "running");
    assert_eq!(j["agent"], "a1");
    c.kill_agent("a1");
    let killed = Instant::now();
    // the job's processes die with their agent
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the job outlived its agent");
        std::thread::sleep(Duration::from_millis(50));
    }
    // requeued (attempt 2) once the 3 s lease expires
    let j = c.wait_job(&dir, &job, 15, |j| j["attempt"] == 2);
    assert!(killed.elapsed() < Duration::from_secs(3 + 3), "took {:?}", killed.elapsed());
    assert_eq!(j["state"], "queued", "{j}");
    c.add_agent("a2");
    let j = c.wait_job(&dir, &job, 60, |j| j["state"] == "succeeded");
    assert_eq!(j["agent"], "a2");
    let logs = c.ok(&dir, &["logs", &job]);
    assert!(logs.contains("finished on alice/crash#1"), "{logs}");
}

#[test]
fn without_retries_a_lost_job_stays_lost() {
    let mut c = Cluster::start(2);
    let dir = c.project_dir("gone");
    let job = c.ok(&dir, &["run", "--", "sleep 600"]).trim().to_string();
    c.wait_job(&dir, &job, 30, |j| j["state"] == "running");
    c.kill_agent("a1");
    let j = c.wait_job(&dir, &job, 10, |j| j["state"] == "lost");
    assert!(j["reason"].as_str().unwrap_or("").contains("lease"), "{j}");
}
