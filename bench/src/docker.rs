//! Docker executor and environment benchmark (issue 4).
//!
//! In one run, on an embedded server:
//! 1. a warm docker agent runs JOBS sequential jobs `true` in IMAGE:
//!    submit→running (server clock) and submit→finished, beside a bare
//!    `docker run --rm IMAGE true` timed the same number of times;
//! 2. a process agent runs a job in a requirements environment twice: the
//!    first start builds the venv (pip install), the second finds it cached.
//!
//! Run: `cargo run --release -p podder-bench --bin bench-docker [-- JOBS IMAGE REQUIREMENT]`
//! (defaults: 20, podder-test/python:3.11 from scripts/test-images.sh, `six`;
//! give `-` as REQUIREMENT for an empty requirement set when PyPI is unreachable).

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Embedded, agent_config, pct};
use podder_client::Client;
use podder_core::api::{CreateEnv, SubmitJob};
use podder_core::{ExecutorKind, JobState, Name};

/// Submits, waits for the end; answers (submit→running, submit→finished) in ms.
async fn run_one(client: &Client, me: &Name, submit: &SubmitJob) -> Result<(f64, f64)> {
    let project: Name = "bench".parse()?;
    let t = Instant::now();
    let job = client.submit(me, &project, submit).await?;
    while !client.logs(&job.job_ref, me, 0, 10_000).await?.done {}
    let e2e = t.elapsed().as_secs_f64() * 1000.0;
    let j = client.job(&job.job_ref, me).await?;
    anyhow::ensure!(j.state == JobState::Succeeded, "job {} {}: {:?}", j.job_ref, j.state, j.reason);
    Ok(((j.started_at.unwrap() - j.created_at) as f64, e2e))
}

#[tokio::main]
async fn main() -> Result<()> {
    let jobs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let image = std::env::args().nth(2).unwrap_or_else(|| "podder-test/python:3.11".into());
    let requirement = std::env::args().nth(3).unwrap_or_else(|| "six".into());
    let mut e = Embedded::start().await?;
    let work = e.tmp.path().to_path_buf();
    e.add_agent(agent_config("docker", "default", ExecutorKind::Docker, work.join("d"), &image));
    e.add_agent(agent_config("process", "proc", ExecutorKind::Process, work.join("p"), &image));
    tokio::time::sleep(Duration::from_millis(500)).await; // let both agents register
    let client = e.client.clone();
    let me = client.whoami().await?.owner;
    let manifest = Some(e.bench_project().await?);

    // 1. Docker jobs against bare `docker run`.
    let submit = SubmitJob { code: manifest, command: vec!["true".into()], ..Default::default() };
    for _ in 0..3 {
        run_one(&client, &me, &submit).await?;
    }
    let (mut running, mut e2e) = (Vec::new(), Vec::new());
    for _ in 0..jobs {
        let (r, e) = run_one(&client, &me, &submit).await?;
        running.push(r);
        e2e.push(e);
    }
    let mut bare = Vec::new();
    for _ in 0..jobs {
        let t = Instant::now();
        let ok = std::process::Command::new("docker").args(["run", "--rm", &image, "true"]).status()?;
        anyhow::ensure!(ok.success(), "docker run failed");
        bare.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // 2. A requirements environment: first start (builds the venv), then cached.
    let reqs = if requirement == "-" { String::new() } else { format!("{requirement}\n") };
    client
        .create_env(&CreateEnv {
            name: "bench-env".parse()?,
            description: String::new(),
            image: None,
            gpu_image: None,
            dockerfile: None,
            requirements: Some(reqs),
            stock: false,
            replace: false,
        })
        .await?;
    let py = SubmitJob {
        code: manifest,
        command: vec!["python3".into(), "-c".into(), "import sys; print(sys.prefix)".into()],
        env: Some("bench-env".into()),
        queue: Some("proc".into()),
        ..Default::default()
    };
    let (first, _) = run_one(&client, &me, &py).await?;
    let mut cached = Vec::new();
    for _ in 0..5 {
        cached.push(run_one(&client, &me, &py).await?.0);
    }
    e.shutdown().await;

    let (r50, r95) = (pct(&mut running, 0.5), pct(&mut running, 0.95));
    let e50 = pct(&mut e2e, 0.5);
    let b50 = pct(&mut bare, 0.5);
    let c50 = pct(&mut cached, 0.5);
    println!("docker executor, {jobs} sequential jobs `true` in {image}, warm agent");
    println!("  submit -> running    p50 {r50:8.1} ms   p95 {r95:8.1} ms   (target p50 < 500 ms)");
    println!("  submit -> finished   p50 {e50:8.1} ms");
    println!("  bare `docker run`    p50 {b50:8.1} ms   ratio podder e2e / bare = {:.2}x", e50 / b50);
    let what = if requirement == "-" { "an empty requirement set".to_string() } else { format!("`{requirement}`") };
    println!("requirements environment ({what}), process executor, submit -> running");
    println!("  first start (venv built)  {first:8.1} ms");
    println!("  cached start        p50  {c50:8.1} ms   ratio first / cached = {:.1}x", first / c50);
    Ok(())
}
