//! Pipelines end to end with real agents (process executor): a diamond with
//! overlapping branches and exact bytes along its edges, retries, timeouts
//! and trigger rules, caching, validation errors, and a server killed with
//! SIGKILL mid-run that carries on after a restart.

mod common;

use std::path::Path;

use common::*;

fn pipeline(c: &Cluster, dir: &Path, file: &str, yaml: &str) {
    std::fs::write(dir.join(file), yaml).unwrap();
    c.ok(dir, &["pipeline", "apply", file]);
}

/// Runs the pipeline to its end; answers the run's JSON (and whether the CLI succeeded).
fn run_follow(c: &Cluster, dir: &Path, args: &[&str]) -> (serde_json::Value, bool) {
    let mut a = vec!["pipeline", "run"];
    a.extend(args);
    a.extend(["--follow", "--json"]);
    let out = c.podder(dir, &a);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    (v, out.status.success())
}

fn step<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

fn jobs(c: &Cluster, dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&c.ok(dir, &["status", "--json"])).unwrap().as_array().unwrap().clone()
}

fn download(c: &Cluster, dir: &Path, job: &str) -> std::path::PathBuf {
    let to = c.tmp.path().join(format!("dl-{}", job.replace(['/', '#'], "-")));
    c.ok(dir, &["output", job, "--download", to.to_str().unwrap()]);
    to
}

const DIAMOND: &str = r#"name: diamond
steps:
  - name: make
    command: [sh, -c, "mkdir -p /output/data && head -c 300000 /dev/urandom > /output/data/blob.bin && echo made"]
  - name: left
    needs: [make]
    inputs: [{from: make, path: data, mount: /in}]
    command: [sh, -c, "sleep 1.5; cp /in/blob.bin /output/left.bin"]
  - name: right
    needs: [make]
    inputs: [{from: make, mount: /in}]
    command: [sh, -c, "sleep 1.5; cp /in/data/blob.bin /output/right.bin"]
  - name: join
    needs: [left, right]
    inputs:
      - {from: left, mount: /l}
      - {from: right, mount: /r}
    command: [sh, -c, "cmp /l/left.bin /r/right.bin && cat /l/left.bin > /output/joined.bin"]
"#;

#[test]
fn diamond_runs_in_order_branches_overlap_and_edges_carry_exact_bytes() {
    let mut c = Cluster::server_only(10);
    c.add_agent_with("a1", &["--slots", "3"]);
    let dir = c.project_dir("pipes");
    pipeline(&c, &dir, "diamond.yaml", DIAMOND);
    let (run, ok) = run_follow(&c, &dir, &["diamond"]);
    assert!(ok, "{run}");
    assert_eq!(run["state"], "succeeded");
    let (make, left, right, join) = (step(&run, "make"), step(&run, "left"), step(&run, "right"), step(&run, "join"));
    let t = |s: &serde_json::Value, k: &str| s[k].as_i64().unwrap();
    assert!(t(make, "finished_at") <= t(left, "started_at") && t(make, "finished_at") <= t(right, "started_at"));
    assert!(t(left, "finished_at") <= t(join, "started_at") && t(right, "finished_at") <= t(join, "started_at"));
    // The two middle branches ran at the same time.
    assert!(t(left, "started_at") < t(right, "finished_at") && t(right, "started_at") < t(left, "finished_at"));
    let made = download(&c, &dir, make["job"].as_str().unwrap());
    let joined = download(&c, &dir, join["job"].as_str().unwrap());
    let a = std::fs::read(made.join("data/blob.bin")).unwrap();
    assert_eq!(a.len(), 300_000);
    assert_eq!(a, std::fs::read(joined.join("joined.bin")).unwrap());
    // Each step's job is an ordinary job, with its logs.
    assert!(c.ok(&dir, &["logs", make["job"].as_str().unwrap()]).contains("made"));
    assert_eq!(jobs(&c, &dir).len(), 4);
    let listed = c.ok(&dir, &["pipeline", "runs", "diamond"]);
    assert!(listed.contains("diamond/1") && listed.contains("succeeded"), "{listed}");
}

#[test]
fn flaky_step_retries_and_a_timeout_follows_the_trigger_rules() {
    let mut c = Cluster::server_only(10);
    c.add_agent_with("a1", &["--slots", "2"]);
    let dir = c.project_dir("flaky");
    // Job #1 is the first attempt: it fails; the retry (another job) succeeds.
    pipeline(
        &c,
        &dir,
        "flaky.yaml",
        r##"name: flaky
steps:
  - name: flaky
    command: [sh, -c, 'case "$PODDER_JOB" in *"#1") echo failing; exit 3;; esac; echo fine']
    retries: 2
    retry_delay: 1s
  - name: slow
    needs: [flaky]
    command: [sleep, "30"]
    timeout: 1s
  - name: cleanup
    needs: [slow]
    trigger_rule: all_done
    command: ["true"]
  - name: report
    needs: [slow]
    command: ["true"]
"##,
    );
    let (run, ok) = run_follow(&c, &dir, &["flaky"]);
    assert!(!ok, "a run with a failed step must exit non-zero");
    assert_eq!(run["state"], "failed");
    let flaky = step(&run, "flaky");
    assert_eq!((flaky["state"].as_str(), flaky["attempt"].as_u64()), (Some("succeeded"), Some(2)), "{flaky}");
    assert_eq!(step(&run, "slow")["state"], "failed");
    assert!(step(&run, "slow")["reason"].as_str().unwrap_or("").contains("time"), "{run}");
    assert_eq!(step(&run, "cleanup")["state"], "succeeded");
    assert_eq!(step(&run, "report")["state"], "skipped");
    // The failed first attempt is a job of its own, kept.
    let j1 = c.job_json(&dir, "flaky#1");
    assert_eq!(j1["state"], "failed");
}

#[test]
fn cached_step_is_reused_until_its_input_changes() {
    let mut c = Cluster::server_only(10);
    c.add_agent("a1");
    let data = c.tmp.path().join("ds");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x.txt"), "one\n").unwrap();
    c.ok(&data, &["data", "upload", "ds", "."]);
    let dir = c.project_dir("cache");
    pipeline(
        &c,
        &dir,
        "cache.yaml",
        r#"name: cached
steps:
  - name: count
    cache: true
    inputs: [{dataset: ds, mount: /d}]
    command: [sh, -c, "wc -c < /d/x.txt > /output/n.txt"]
"#,
    );
    let (r1, ok) = run_follow(&c, &dir, &["cached"]);
    assert!(ok, "{r1}");
    assert_eq!(step(&r1, "count")["state"], "succeeded");
    assert_eq!(jobs(&c, &dir).len(), 1);
    let (r2, ok) = run_follow(&c, &dir, &["cached"]);
    assert!(ok, "{r2}");
    assert_eq!(step(&r2, "count")["state"], "cached", "{r2}");
    assert_eq!(step(&r2, "count")["output"], step(&r1, "count")["output"]);
    assert_eq!(jobs(&c, &dir).len(), 1, "a cached step must not run a job");
    std::fs::write(data.join("x.txt"), "two and more\n").unwrap();
    c.ok(&data, &["data", "upload", "ds", "."]);
    let (r3, ok) = run_follow(&c, &dir, &["cached"]);
    assert!(ok, "{r3}");
    assert_eq!(step(&r3, "count")["state"], "succeeded");
    assert_eq!(jobs(&c, &dir).len(), 2, "a changed input runs the step again");
}

#[test]
fn bad_pipeline_files_and_runs_are_refused_with_every_problem() {
    let c = Cluster::server_only(10);
    let dir = c.project_dir("bad");
    std::fs::write(
        dir.join("bad.yaml"),
        "name: bad\nschedule: {cron: \"61 * * * *\"}\nsteps:\n  - name: a\n    needs: [b]\n    command: [\"true\"]\n  - name: b\n    needs: [a]\n    command: [\"true\"]\n",
    )
    .unwrap();
    let out = c.podder(&dir, &["pipeline", "apply", "bad.yaml"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad.yaml:") && err.contains("cycle") && err.contains("cron"), "{err}");
    let out = c.podder(&dir, &["pipeline", "run", "nope"]);
    assert!(!out.status.success() && stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = c.podder(&dir, &["pipeline", "status", "nope"]);
    assert!(!out.status.success() && stderr(&out).contains("PIPELINE/N"), "{}", stderr(&out));
}

#[test]
fn server_killed_mid_run_finishes_the_run_with_every_step_run_once() {
    let mut c = Cluster::server_only(5);
    c.add_agent_with("a1", &["--slots", "2"]);
    let dir = c.project_dir("crash");
    pipeline(
        &c,
        &dir,
        "chain.yaml",
        r#"name: chain
steps:
  - name: one
    command: [sh, -c, "sleep 1; echo 1 > /output/n"]
  - name: two
    needs: [one]
    command: [sh, -c, "sleep 2; echo 2 > /output/n"]
  - name: three
    needs: [two]
    command: [sh, -c, "echo 3 > /output/n"]
"#,
    );
    let number = c.ok(&dir, &["pipeline", "run", "chain"]).trim().to_string();
    assert_eq!(number, "chain/1");
    // Wait until step two runs, then SIGKILL the server.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&c.ok(&dir, &["pipeline", "status", "chain/1", "--json"])).unwrap();
        if step(&s, "two")["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "step two never ran: {s}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    c.restart_server_after_sigkill(5);
    let out = c.podder(&dir, &["pipeline", "status", "chain/1", "--follow", "--json"]);
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "succeeded", "{run}");
    let all = jobs(&c, &dir);
    assert_eq!(all.len(), 3, "every step ran exactly once: {all:?}");
    assert!(all.iter().all(|j| j["state"] == "succeeded"), "{all:?}");
}

#[test]
fn retry_from_a_cached_step_runs_it_again() {
    let mut c = Cluster::server_only(10);
    c.add_agent("a1");
    let dir = c.project_dir("again");
    pipeline(
        &c,
        &dir,
        "again.yaml",
        r#"name: again
steps:
  - name: prepare
    cache: true
    command: [sh, -c, "echo data > /output/d.txt"]
  - name: train
    needs: [prepare]
    cache: true
    inputs: [{from: prepare, mount: /in}]
    command: [sh, -c, "cat /in/d.txt > /output/model.txt"]
"#,
    );
    let (r1, ok) = run_follow(&c, &dir, &["again"]);
    assert!(ok, "{r1}");
    assert_eq!(jobs(&c, &dir).len(), 2);
    // The cache alone would reuse both steps.
    let (r2, ok) = run_follow(&c, &dir, &["again"]);
    assert!(ok, "{r2}");
    assert_eq!(step(&r2, "train")["state"], "cached", "{r2}");
    assert_eq!(jobs(&c, &dir).len(), 2);

    let out = c.podder(&dir, &["pipeline", "retry", "again/2", "--from", "train", "--follow", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r3: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(step(&r3, "train")["state"], "succeeded", "a retry from train must run train: {r3}");
    assert_eq!(step(&r3, "prepare")["state"], "cached", "{r3}");
    let all = jobs(&c, &dir);
    assert_eq!(all.len(), 3, "exactly one new job, train's: {all:?}");
    assert!(step(&r3, "train")["cached_from"].is_null(), "{r3}");
    assert_eq!(step(&r3, "train")["job"], "alice/again#3", "{r3}");
}
