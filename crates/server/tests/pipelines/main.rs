//! Pipelines over HTTP: applying files, runs driven by fake agents that
//! lease and finish the steps' jobs, retries, trigger rules, the cache,
//! cancel, retry, `--only`, recovery after a restart, cron schedules on a
//! manual clock, and bad input.

#[path = "../common/mod.rs"]
mod common;
mod input;
mod recovery;
mod runs;
mod schedules;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, assert_error, assert_invalid};
use podder_core::api::{
    ApplyPipeline, Finish, HeartbeatReply, Job, Lease, Pipeline, PipelineRun, RetryRun, StartRun, StepView,
};
use podder_core::{JobState, Manifest, ManifestId, Outcome};
use podder_server::{Clock, ManualClock, ServerConfig};
use reqwest::StatusCode;

const P: &str = "/projects/alice/p/pipelines";

async fn setup(ts: &TestServer) -> String {
    let alice = ts.token("alice").await;
    ts.create_project(&alice, "p").await;
    alice
}

async fn apply_with(ts: &TestServer, token: &str, file: &str, code: Option<ManifestId>) -> reqwest::Response {
    let req = ApplyPipeline { file: file.into(), file_name: "pipe.yaml".into(), code };
    ts.post(token, P).json(&req).send().await.unwrap()
}

async fn apply(ts: &TestServer, token: &str, file: &str) -> Pipeline {
    let code = ts.code(token).await;
    let r = apply_with(ts, token, file, Some(code)).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn start_with(ts: &TestServer, token: &str, name: &str, req: &StartRun) -> reqwest::Response {
    ts.post(token, &format!("{P}/{name}/runs")).json(req).send().await.unwrap()
}

async fn start(ts: &TestServer, token: &str, name: &str) -> PipelineRun {
    let r = start_with(ts, token, name, &StartRun::default()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn get_run(ts: &TestServer, token: &str, name: &str, n: u64, after: Option<u64>, wait_ms: u64) -> PipelineRun {
    let after = after.map(|a| format!("&after={a}")).unwrap_or_default();
    let r = ts.get(token, &format!("{P}/{name}/runs/{n}?wait_ms={wait_ms}{after}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// Follows a run by long-poll until `done` holds (at most 10 s).
async fn wait_run(
    ts: &TestServer,
    token: &str,
    name: &str,
    n: u64,
    done: impl Fn(&PipelineRun) -> bool,
) -> PipelineRun {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut run = get_run(ts, token, name, n, None, 0).await;
    while !done(&run) {
        assert!(tokio::time::Instant::now() < deadline, "the run did not get there: {run:#?}");
        run = get_run(ts, token, name, n, Some(run.revision), 2000).await;
    }
    run
}

async fn finished(ts: &TestServer, token: &str, name: &str, n: u64) -> PipelineRun {
    wait_run(ts, token, name, n, |r| r.state != "running").await
}

fn step<'a>(run: &'a PipelineRun, name: &str) -> &'a StepView {
    run.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name} in {run:#?}"))
}

/// The step a leased job runs, from its message (`pipeline P run N step S`).
fn step_of(lease: &Lease) -> String {
    let m = lease.job.message.clone().unwrap_or_default();
    m.rsplit_once(" step ").map(|(_, s)| s.to_string()).unwrap_or(m)
}

/// Leases the next job (waiting up to 5 s for the scheduler to create it).
async fn lease(ts: &TestServer) -> Lease {
    ts.lease(&ts.admin, "default", 5000).await.expect("a step's job should be queued")
}

async fn finish(ts: &TestServer, lease: &Lease, outcome: Outcome, output: Option<ManifestId>) -> Job {
    let f = Finish {
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        output,
        reason: None,
        build: None,
    };
    let r = ts.post(&ts.admin, &format!("/agent/leases/{}/finish", lease.lease_id)).json(&f).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn jobs(ts: &TestServer, token: &str) -> Vec<Job> {
    ts.get(token, "/projects/alice/p/jobs").send().await.unwrap().json().await.unwrap()
}

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_800_000_000_000))
}

const DIAMOND: &str = "\
name: diamond
steps:
  - name: a
    command: [python, a.py]
  - name: b
    needs: [a]
    command: [python, b.py]
  - name: c
    needs: [a]
    command: [python, c.py]
  - name: d
    needs: [b, c]
    command: [python, d.py]
";
