//! Job latency benchmark (issue 2).
//!
//! Starts an embedded server and one warm agent (process executor, bubblewrap
//! when installed), then submits 100 jobs running `true`, one after another:
//! - submit→running: the job's `started_at - created_at` (server clock);
//! - end to end: from the client sending the submit to the client seeing the
//!   job finished (logs long-poll `done`).
//!
//! Side by side in the same run it times the floor: spawning `true` directly
//! and through the same bubblewrap sandbox, and prints the ratios.
//!
//! Run: `cargo run --release -p podder-bench --bin bench-jobs [-- JOBS]`

#[path = "common.rs"]
mod common;

use std::time::Instant;

use anyhow::Result;
use common::{Embedded, agent_config, pct};
use podder_client::Client;
use podder_core::ExecutorKind;
use podder_core::api::SubmitJob;

fn spawn_floor(args: &[&str], n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let ok = std::process::Command::new(args[0]).args(&args[1..]).status().map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "{args:?} failed");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let jobs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut e = Embedded::start().await?;
    let bwrap = std::process::Command::new("bwrap").arg("--version").output().is_ok();
    let agent = agent_config("bench", "default", ExecutorKind::Process, e.tmp.path().join("agent"), "python:3.11-slim");
    e.add_agent(agent);
    let client = e.client.clone();
    let me = client.whoami().await?.owner;
    let manifest = Some(e.bench_project().await?);
    let submit = SubmitJob { code: manifest, command: vec!["true".into()], ..Default::default() };

    let run_one = |client: Client, me: podder_core::Name| {
        let submit = submit.clone();
        let project: podder_core::Name = "bench".parse().unwrap();
        async move {
            let t = Instant::now();
            let job = client.submit(&me, &project, &submit).await?;
            loop {
                let b = client.logs(&job.job_ref, &me, 0, 10_000).await?;
                if b.done {
                    break;
                }
            }
            let e2e = t.elapsed().as_secs_f64() * 1000.0;
            let j = client.job(&job.job_ref, &me).await?;
            anyhow::ensure!(j.state == podder_core::JobState::Succeeded, "job {} {}", j.job_ref, j.state);
            let to_running = (j.started_at.unwrap() - j.created_at) as f64;
            Ok::<_, anyhow::Error>((to_running, e2e))
        }
    };
    for _ in 0..5 {
        run_one(client.clone(), me.clone()).await?;
    }
    let (mut running, mut e2e) = (Vec::new(), Vec::new());
    for _ in 0..jobs {
        let (r, e) = run_one(client.clone(), me.clone()).await?;
        running.push(r);
        e2e.push(e);
    }
    e.shutdown().await;

    let mut bare = spawn_floor(&["true"], 50);
    let mut sandboxed = if bwrap {
        spawn_floor(
            &[
                "bwrap",
                "--die-with-parent",
                "--unshare-pid",
                "--ro-bind",
                "/usr",
                "/usr",
                "--ro-bind-try",
                "/bin",
                "/bin",
                "--ro-bind-try",
                "/lib",
                "/lib",
                "--ro-bind-try",
                "/lib64",
                "/lib64",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "true",
            ],
            50,
        )
    } else {
        Vec::new()
    };
    let (r50, r95) = (pct(&mut running, 0.5), pct(&mut running, 0.95));
    let (e50, e95) = (pct(&mut e2e, 0.5), pct(&mut e2e, 0.95));
    let b50 = pct(&mut bare, 0.5);
    println!(
        "podder job latency, {jobs} sequential jobs running `true`, warm agent, sandbox: {}",
        if bwrap { "bubblewrap" } else { "none" }
    );
    println!("  submit -> running   p50 {r50:7.2} ms   p95 {r95:7.2} ms   (target p50 < 20 ms)");
    println!("  submit -> finished  p50 {e50:7.2} ms   p95 {e95:7.2} ms");
    println!("  bare `true` spawn   p50 {b50:7.2} ms   ratio podder e2e / bare = {:.1}x", e50 / b50);
    if !sandboxed.is_empty() {
        let s50 = pct(&mut sandboxed, 0.5);
        println!("  bwrap `true` spawn  p50 {s50:7.2} ms   ratio podder e2e / bwrap = {:.1}x", e50 / s50);
    }
    Ok(())
}
