//! How a run flows: order, long polls, outputs into inputs, retries, trigger
//! rules, the cache, cancel, retry, `--only`, task steps and wide DAGs.

use super::*;

#[tokio::test]
async fn a_diamond_runs_in_order_with_its_middle_steps_leased_together() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let p = apply(&ts, &alice, DIAMOND).await;
    assert_eq!((p.name.as_str(), p.version, p.paused, p.next_run_at), ("diamond", 1, false, None));
    let run = start(&ts, &alice, "diamond").await;
    assert_eq!((run.number, run.trigger.as_str(), run.state.as_str()), (1, "manual", "running"));
    let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(step(&run, "d").needs, ["b", "c"]);

    let a = lease(&ts).await;
    assert_eq!(step_of(&a), "a");
    assert_eq!(a.job.spec.command, ["python", "a.py"]);
    assert!(ts.lease(&ts.admin, "default", 100).await.is_none(), "b and c wait for a");
    finish(&ts, &a, Outcome::Succeeded, None).await;
    // Both middle steps are queued at once: two leases hold them together.
    let first = lease(&ts).await;
    let second = lease(&ts).await;
    let mut middle = [step_of(&first), step_of(&second)];
    middle.sort();
    assert_eq!(middle, ["b", "c"]);
    let run = get_run(&ts, &alice, "diamond", 1, None, 0).await;
    assert_eq!((step(&run, "b").state.as_str(), step(&run, "c").state.as_str()), ("running", "running"));
    assert!(ts.lease(&ts.admin, "default", 100).await.is_none(), "d waits for both");
    finish(&ts, &first, Outcome::Succeeded, None).await;
    assert!(ts.lease(&ts.admin, "default", 200).await.is_none(), "d waits for the other one too");
    finish(&ts, &second, Outcome::Succeeded, None).await;
    let d = lease(&ts).await;
    assert_eq!(step_of(&d), "d");
    finish(&ts, &d, Outcome::Succeeded, None).await;

    let run = finished(&ts, &alice, "diamond", 1).await;
    assert_eq!(run.state, "succeeded");
    assert!(run.finished_at.is_some());
    for s in &run.steps {
        assert_eq!((s.state.as_str(), s.attempt), ("succeeded", 1), "{s:?}");
        assert!(s.job.is_some() && s.cached_from.is_none());
    }
    assert_eq!(jobs(&ts, &alice).await.len(), 4, "one job per step");
    let a_done = step(&run, "a").finished_at.unwrap();
    assert!(step(&run, "b").started_at.unwrap() >= a_done && step(&run, "c").started_at.unwrap() >= a_done);

    let listed: Vec<PipelineRun> =
        ts.get(&alice, &format!("{P}/diamond/runs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1);
    let all: Vec<Pipeline> = ts.get(&alice, P).send().await.unwrap().json().await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn a_long_poll_on_a_run_answers_when_its_revision_moves() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    apply(&ts, &alice, DIAMOND).await;
    start(&ts, &alice, "diamond").await;
    let run = wait_run(&ts, &alice, "diamond", 1, |r| step(r, "a").state == "running").await;
    let t = std::time::Instant::now();
    let same = get_run(&ts, &alice, "diamond", 1, Some(run.revision), 300).await;
    assert_eq!(same.revision, run.revision);
    assert!(t.elapsed() >= Duration::from_millis(250), "nothing changed: it waited");
    let old = get_run(&ts, &alice, "diamond", 1, Some(0), 5000).await;
    assert_eq!(old.revision, run.revision, "a newer revision answers at once");
    let waiting = {
        let (ts_base, alice) = (ts.base.clone(), alice.clone());
        let rev = run.revision;
        tokio::spawn(async move {
            let url = format!("{ts_base}/api/v1{P}/diamond/runs/1?wait_ms=10000&after={rev}");
            let t = std::time::Instant::now();
            let r: PipelineRun =
                reqwest::Client::new().get(url).bearer_auth(alice).send().await.unwrap().json().await.unwrap();
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = lease(&ts).await;
    finish(&ts, &a, Outcome::Succeeded, None).await;
    let (r, took) = waiting.await.unwrap();
    assert!(r.revision > run.revision);
    assert!(took < Duration::from_secs(5), "woken by the change, not the timeout");
}

#[tokio::test]
async fn an_output_feeds_the_next_step_exactly_and_a_directory_inside_it() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let file = "\
name: edges
steps:
  - name: prep
    command: [python, prep.py]
  - name: train
    needs: [prep]
    command: [python, train.py]
    inputs:
      - {from: prep, mount: /data/prep}
      - {from: prep, path: model, mount: /data/model}
";
    apply(&ts, &alice, file).await;
    start(&ts, &alice, "edges").await;
    let prep = lease(&ts).await;
    let out = ts.commit_tree(&ts.admin, &[("model/w.bin", b"weights"), ("log.txt", b"log")]).await;
    finish(&ts, &prep, Outcome::Succeeded, Some(out)).await;
    let train = lease(&ts).await;
    assert_eq!(step_of(&train), "train");
    let inputs = &train.job.spec.inputs;
    assert_eq!(inputs.len(), 2);
    assert_eq!((inputs[0].manifest, inputs[0].mount.to_string().as_str()), (out, "/data/prep"));
    assert_eq!(inputs[0].source, format!("alice/p#{}", prep.job.job_ref.number));
    let tree: Manifest = ts.get(&ts.admin, &format!("/manifests/{out}")).send().await.unwrap().json().await.unwrap();
    let model = tree.subtree("model").unwrap();
    assert_eq!((inputs[1].manifest, inputs[1].mount.to_string().as_str()), (model.id(), "/data/model"));
    assert!(inputs[1].source.ends_with("/model"), "{}", inputs[1].source);
    let got: Manifest =
        ts.get(&alice, &format!("/manifests/{}", model.id())).send().await.unwrap().json().await.unwrap();
    assert_eq!(got.id(), model.id(), "the sub-tree is stored and readable by the owner");
    finish(&ts, &train, Outcome::Succeeded, None).await;
    let run = finished(&ts, &alice, "edges", 1).await;
    assert_eq!((run.state.as_str(), step(&run, "prep").output), ("succeeded", Some(out)));
}

#[tokio::test]
async fn a_flaky_step_is_retried_after_its_delay_then_succeeds() {
    let clock = manual_clock();
    let c = clock.clone();
    let ts = TestServer::with_config(move |cfg| cfg.clock = Some(c as Arc<dyn Clock>)).await;
    let alice = setup(&ts).await;
    let file = "\
name: flaky
steps:
  - name: s
    command: [python, s.py]
    retries: 2
    retry_delay: 10s
    timeout: 90s
";
    apply(&ts, &alice, file).await;
    start(&ts, &alice, "flaky").await;
    let first = lease(&ts).await;
    assert_eq!((first.job.spec.timeout_secs, first.job.spec.retries), (Some(90), 0), "retries are the DAG's");
    finish(&ts, &first, Outcome::Failed, None).await;
    let run = wait_run(&ts, &alice, "flaky", 1, |r| step(r, "s").state == "retrying").await;
    assert_eq!(step(&run, "s").attempt, 1);
    assert!(step(&run, "s").reason.as_deref().unwrap_or("").contains("failed"), "{run:?}");
    assert!(ts.lease(&ts.admin, "default", 200).await.is_none(), "the retry waits for its delay");
    clock.advance(9_000);
    assert!(ts.lease(&ts.admin, "default", 200).await.is_none(), "not yet");
    clock.advance(1_000);
    let second = lease(&ts).await;
    assert_eq!(step_of(&second), "s");
    assert_ne!(second.job.job_ref, first.job.job_ref, "each attempt is its own job");
    finish(&ts, &second, Outcome::Failed, None).await;
    wait_run(&ts, &alice, "flaky", 1, |r| step(r, "s").state == "retrying" && step(r, "s").attempt == 2).await;
    clock.advance(19_000);
    assert!(ts.lease(&ts.admin, "default", 200).await.is_none(), "the delay doubles");
    clock.advance(1_000);
    let third = lease(&ts).await;
    finish(&ts, &third, Outcome::Succeeded, None).await;
    let run = finished(&ts, &alice, "flaky", 1).await;
    assert_eq!(run.state, "succeeded");
    let s = step(&run, "s");
    assert_eq!((s.state.as_str(), s.attempt, s.job.as_ref()), ("succeeded", 3, Some(&third.job.job_ref)));
    assert_eq!(jobs(&ts, &alice).await.len(), 3);
}

#[tokio::test]
async fn a_failed_step_leads_its_downstream_steps_by_their_trigger_rules() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let file = "\
name: rules
steps:
  - name: a
    command: [python, a.py]
    timeout: 1m
  - name: strict
    needs: [a]
    command: ['true']
  - name: always
    needs: [a]
    trigger_rule: all_done
    command: ['true']
  - name: on-failure
    needs: [a]
    trigger_rule: one_failed
    command: ['true']
  - name: after-strict
    needs: [strict]
    trigger_rule: none_failed
    command: ['true']
";
    apply(&ts, &alice, file).await;
    start(&ts, &alice, "rules").await;
    let a = lease(&ts).await;
    assert_eq!(a.job.spec.timeout_secs, Some(60));
    // The agent enforces the timeout and fails the job with the reason.
    let f = Finish {
        outcome: Outcome::Failed,
        exit_code: None,
        output: None,
        reason: Some("timed out after 60 s".into()),
        build: None,
    };
    let r = ts.post(&ts.admin, &format!("/agent/leases/{}/finish", a.lease_id)).json(&f).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut ran = vec![step_of(&lease(&ts).await), step_of(&lease(&ts).await), step_of(&lease(&ts).await)];
    ran.sort();
    assert_eq!(ran, ["after-strict", "always", "on-failure"]);
    assert!(ts.lease(&ts.admin, "default", 200).await.is_none());
    let run = get_run(&ts, &alice, "rules", 1, None, 0).await;
    assert_eq!(step(&run, "a").state, "failed");
    assert!(step(&run, "a").reason.as_deref().unwrap().contains("timed out"), "{:?}", step(&run, "a").reason);
    assert_eq!(step(&run, "strict").state, "skipped");
    assert!(step(&run, "strict").job.is_none());
}

#[tokio::test]
async fn a_cached_step_is_reused_until_its_input_changes() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    ts.create_dataset(&alice, "raw").await;
    let v1 = ts.commit_tree(&alice, &[("rows.csv", b"1,2\n")]).await;
    ts.version(&alice, "alice", "raw", v1).await;
    let file = "\
name: cached
params:
  n: {type: int, default: 3}
steps:
  - name: prep
    command: [python, prep.py, '${params.n}']
    cache: true
    inputs:
      - {dataset: raw, mount: /data/raw}
  - name: train
    needs: [prep]
    command: [python, train.py]
    inputs:
      - {from: prep, mount: /data/prep}
";
    apply(&ts, &alice, file).await;
    let prep_out = ts.commit_tree(&ts.admin, &[("clean.csv", b"1,2\n")]).await;

    start(&ts, &alice, "cached").await;
    let prep = lease(&ts).await;
    assert_eq!(prep.job.spec.command, ["python", "prep.py", "3"]);
    assert_eq!(prep.job.spec.inputs[0].manifest, v1);
    finish(&ts, &prep, Outcome::Succeeded, Some(prep_out)).await;
    let train = lease(&ts).await;
    finish(&ts, &train, Outcome::Succeeded, None).await;
    assert_eq!(finished(&ts, &alice, "cached", 1).await.state, "succeeded");

    // Nothing changed: prep is reused, no job runs for it.
    start(&ts, &alice, "cached").await;
    let train = lease(&ts).await;
    assert_eq!(step_of(&train), "train", "prep did not run again");
    assert_eq!(train.job.spec.inputs[0].manifest, prep_out, "the cached output feeds the next step");
    finish(&ts, &train, Outcome::Succeeded, None).await;
    let run = finished(&ts, &alice, "cached", 2).await;
    let p = step(&run, "prep");
    assert_eq!((p.state.as_str(), p.output, p.job.as_ref()), ("cached", Some(prep_out), None));
    assert_eq!(p.cached_from.as_ref(), Some(&prep.job.job_ref));
    assert_eq!(jobs(&ts, &alice).await.len(), 3);

    // Another parameter value is another key.
    let r =
        start_with(&ts, &alice, "cached", &StartRun { params: BTreeMap::from([("n".into(), "4".into())]), only: None })
            .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let prep4 = lease(&ts).await;
    assert_eq!(prep4.job.spec.command, ["python", "prep.py", "4"]);
    finish(&ts, &prep4, Outcome::Succeeded, Some(prep_out)).await;
    finish(&ts, &lease(&ts).await, Outcome::Succeeded, None).await;
    finished(&ts, &alice, "cached", 3).await;

    // A new version of the input dataset: prep runs again on it.
    let v2 = ts.commit_tree(&alice, &[("rows.csv", b"1,2\n3,4\n")]).await;
    ts.version(&alice, "alice", "raw", v2).await;
    start(&ts, &alice, "cached").await;
    let again = lease(&ts).await;
    assert_eq!(step_of(&again), "prep");
    assert_eq!(again.job.spec.inputs[0].manifest, v2);
    assert_eq!(again.job.spec.inputs[0].source, "alice/raw@2");
}

#[tokio::test]
async fn cancel_stops_the_running_steps_and_starts_nothing_more() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    apply(&ts, &alice, DIAMOND).await;
    start(&ts, &alice, "diamond").await;
    let a = lease(&ts).await;
    let r = ts.post(&alice, &format!("{P}/diamond/runs/1/cancel")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let run: PipelineRun = r.json().await.unwrap();
    assert_eq!(run.state, "cancelled");
    assert!(run.steps.iter().all(|s| s.state == "cancelled"), "{run:?}");
    let hb: HeartbeatReply = ts
        .post(&ts.admin, &format!("/agent/leases/{}/heartbeat?wait_ms=0", a.lease_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(hb.stop, "the running step's job is asked to stop");
    let job = finish(&ts, &a, Outcome::Failed, None).await;
    assert_eq!(job.state, JobState::Stopped);
    assert!(ts.lease(&ts.admin, "default", 300).await.is_none(), "no step starts after a cancel");
    assert_eq!(get_run(&ts, &alice, "diamond", 1, None, 0).await.state, "cancelled");
    let again = ts.post(&alice, &format!("{P}/diamond/runs/1/cancel")).send().await.unwrap();
    assert_error(again, StatusCode::CONFLICT, "already cancelled").await;
}

#[tokio::test]
async fn retry_keeps_what_succeeded_and_from_runs_a_step_and_its_downstream_again() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let file = "\
name: chain
steps:
  - {name: a, command: [python, a.py]}
  - {name: b, needs: [a], command: [python, b.py], inputs: [{from: a, mount: /data/a}]}
  - {name: c, needs: [b], command: [python, c.py]}
";
    apply(&ts, &alice, file).await;
    start(&ts, &alice, "chain").await;
    let a = lease(&ts).await;
    let a_out = ts.commit_tree(&ts.admin, &[("a.txt", b"a")]).await;
    finish(&ts, &a, Outcome::Succeeded, Some(a_out)).await;
    let b = lease(&ts).await;
    let r = ts.post(&alice, &format!("{P}/chain/runs/1/retry")).json(&RetryRun::default()).send().await.unwrap();
    assert_error(r, StatusCode::CONFLICT, "still running").await;
    finish(&ts, &b, Outcome::Failed, None).await;
    let run = finished(&ts, &alice, "chain", 1).await;
    assert_eq!((run.state.as_str(), step(&run, "c").state.as_str()), ("failed", "skipped"));

    let r = ts.post(&alice, &format!("{P}/chain/runs/1/retry")).json(&RetryRun::default()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let retry: PipelineRun = r.json().await.unwrap();
    assert_eq!((retry.number, retry.trigger.as_str(), retry.retry_of), (2, "retry", Some(1)));
    let b2 = lease(&ts).await;
    assert_eq!(step_of(&b2), "b", "a is kept");
    assert_eq!(b2.job.spec.inputs[0].manifest, a_out);
    finish(&ts, &b2, Outcome::Succeeded, None).await;
    finish(&ts, &lease(&ts).await, Outcome::Succeeded, None).await;
    let run = finished(&ts, &alice, "chain", 2).await;
    assert_eq!(run.state, "succeeded");
    assert_eq!(step(&run, "a").state, "cached");
    assert_eq!(step(&run, "a").cached_from.as_ref(), Some(&a.job.job_ref));

    let from_a = RetryRun { from: Some("a".into()) };
    let r = ts.post(&alice, &format!("{P}/chain/runs/2/retry")).json(&from_a).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let a3 = lease(&ts).await;
    assert_eq!(step_of(&a3), "a", "from a: everything runs again");
    let bad = RetryRun { from: Some("nope".into()) };
    let r = ts.post(&alice, &format!("{P}/chain/runs/2/retry")).json(&bad).send().await.unwrap();
    assert_invalid(r, "no step 'nope'").await;
}

#[tokio::test]
async fn only_runs_one_step_fed_by_the_latest_successful_upstream_outputs() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let file = "\
name: two
steps:
  - {name: a, command: [python, a.py]}
  - {name: b, needs: [a], command: [python, b.py], inputs: [{from: a, mount: /data/a}]}
";
    apply(&ts, &alice, file).await;
    let only_b = StartRun { params: BTreeMap::new(), only: Some("b".into()) };
    assert_invalid(start_with(&ts, &alice, "two", &only_b).await, "no successful run").await;
    let nope = StartRun { params: BTreeMap::new(), only: Some("nope".into()) };
    assert_invalid(start_with(&ts, &alice, "two", &nope).await, "no step 'nope'").await;

    start(&ts, &alice, "two").await;
    let a = lease(&ts).await;
    let a_out = ts.commit_tree(&ts.admin, &[("a.txt", b"a1")]).await;
    finish(&ts, &a, Outcome::Succeeded, Some(a_out)).await;
    finish(&ts, &lease(&ts).await, Outcome::Succeeded, None).await;
    finished(&ts, &alice, "two", 1).await;

    let r = start_with(&ts, &alice, "two", &only_b).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let run: PipelineRun = r.json().await.unwrap();
    assert_eq!(run.trigger, "only");
    let b = lease(&ts).await;
    assert_eq!(step_of(&b), "b");
    assert_eq!(b.job.spec.inputs[0].manifest, a_out);
    assert_eq!(b.job.spec.inputs[0].source, a.job.job_ref.to_string());
    finish(&ts, &b, Outcome::Succeeded, None).await;
    let run = finished(&ts, &alice, "two", 2).await;
    assert_eq!((run.state.as_str(), step(&run, "a").state.as_str()), ("succeeded", "cached"));
    assert_eq!(jobs(&ts, &alice).await.len(), 3);
}

#[tokio::test]
async fn a_task_step_runs_like_a_task_run_fed_by_its_upstream_step() {
    use common::inventory;
    use podder_core::api::{BuildRequest, BuildResult, DeployTask, SubmitJob};

    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let yaml = "name: train\ncommand: [python, -m, main]\ninputs:\n  - name: dataset\n    mount: /data/input\nparams:\n  epochs: {type: int, default: 3}\n  lr: {type: float}\n";
    // Build and deploy the task, as `task build` and `task deploy` do.
    let docker = inventory(&[], true);
    assert!(ts.lease_as(&ts.admin, "docker", "default", docker.clone(), 0).await.is_none());
    let ctx = ts.commit_tree(&alice, &[("task.yaml", yaml.as_bytes())]).await;
    let build =
        SubmitJob { code: Some(ctx), command: vec![], build: Some(BuildRequest::default()), ..SubmitJob::default() };
    assert_eq!(ts.submit(&alice, "alice", "p", &build).await.status(), StatusCode::CREATED);
    let l = ts.lease_as(&ts.admin, "docker", "default", docker.clone(), 0).await.unwrap();
    let b = l.job.spec.build.clone().unwrap();
    let result = BuildResult { image: b.tag(), image_id: "sha256:1".into(), build: b, task_yaml: yaml.into() };
    let f = Finish { outcome: Outcome::Succeeded, exit_code: Some(0), output: None, reason: None, build: Some(result) };
    let r = ts.post(&ts.admin, &format!("/agent/leases/{}/finish", l.lease_id)).json(&f).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = ts.post(&alice, "/projects/alice/p/tasks").json(&DeployTask::default()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());

    let file = "\
name: tasked
params:
  rate: {type: float, default: 0.5}
steps:
  - {name: prep, command: [python, prep.py]}
  - name: fit
    needs: [prep]
    task: train
    params: {lr: '${params.rate}'}
    inputs:
      - {from: prep, path: clean, input: dataset}
";
    apply(&ts, &alice, file).await;
    start(&ts, &alice, "tasked").await;
    let prep = ts.lease_as(&ts.admin, "docker", "default", docker.clone(), 5000).await.unwrap();
    let out = ts.commit_tree(&ts.admin, &[("clean/rows.csv", b"1\n")]).await;
    finish(&ts, &prep, Outcome::Succeeded, Some(out)).await;
    let fit = ts.lease_as(&ts.admin, "docker", "default", docker.clone(), 5000).await.unwrap();
    assert_eq!(step_of(&fit), "fit");
    let spec = &fit.job.spec;
    assert_eq!(spec.command, ["python", "-m", "main"]);
    assert_eq!(spec.env.as_deref(), Some("task:alice/p/train"));
    assert!(spec.needs_docker());
    assert_eq!(spec.params["lr"], "0.5");
    assert_eq!(spec.params["epochs"], "3", "the task's defaults are filled in");
    assert_eq!(spec.inputs.len(), 1);
    assert_eq!(spec.inputs[0].mount.to_string(), "/data/input", "mounted where the task declares its input");
    let tree: Manifest = ts.get(&ts.admin, &format!("/manifests/{out}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(spec.inputs[0].manifest, tree.subtree("clean").unwrap().id());
    finish(&ts, &fit, Outcome::Succeeded, None).await;
    assert_eq!(finished(&ts, &alice, "tasked", 1).await.state, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wide_dag_queues_every_branch_at_once_and_a_chain_flows_without_waiting() {
    let ts = TestServer::start().await;
    let alice = setup(&ts).await;
    let mut wide = String::from("name: wide\nmax_active_runs: 2\nsteps:\n  - {name: root, command: ['true']}\n");
    for i in 0..200 {
        wide.push_str(&format!("  - {{name: s{i}, needs: [root], command: ['true']}}\n"));
    }
    apply(&ts, &alice, &wide).await;
    start(&ts, &alice, "wide").await;
    finish(&ts, &lease(&ts).await, Outcome::Succeeded, None).await;
    let t = std::time::Instant::now();
    let mut leased = Vec::new();
    for _ in 0..200 {
        leased.push(lease(&ts).await);
    }
    let fanned = t.elapsed();
    for l in &leased {
        finish(&ts, l, Outcome::Succeeded, None).await;
    }
    let run = finished(&ts, &alice, "wide", 1).await;
    assert_eq!(run.state, "succeeded");
    assert_eq!(jobs(&ts, &alice).await.len(), 201);

    let mut chain = String::from("name: chain\nsteps:\n  - {name: s0, command: ['true']}\n");
    for i in 1..40 {
        chain.push_str(&format!("  - {{name: s{i}, needs: [s{}], command: ['true']}}\n", i - 1));
    }
    apply(&ts, &alice, &chain).await;
    let t = std::time::Instant::now();
    start(&ts, &alice, "chain").await;
    for _ in 0..40 {
        finish(&ts, &lease(&ts).await, Outcome::Succeeded, None).await;
    }
    let run = finished(&ts, &alice, "chain", 1).await;
    let sequential = t.elapsed();
    assert_eq!(run.state, "succeeded");
    eprintln!("200 branches leased in {fanned:?}; 40 sequential steps in {sequential:?}");
    assert!(sequential < Duration::from_secs(20), "{sequential:?}");
}
