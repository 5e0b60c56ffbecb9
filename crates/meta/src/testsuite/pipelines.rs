//! Checks of pipelines: versions, schedules, runs with optimistic
//! concurrency, starting a step in one transaction, and the step cache.

use podder_pipeline::{PipelineSpec, RunOutcome, RunState, StepRun, StepState};

use super::*;
use crate::{NewPipeline, NewRun, RunUpdate, StartSteps, StepStart, Trigger};

fn pipeline_spec(name: &str, cron: Option<&str>) -> PipelineSpec {
    let mut v = serde_json::json!({
        "name": name,
        "steps": [
            { "name": "a", "command": ["true"] },
            { "name": "b", "command": ["true"], "needs": ["a"] }
        ]
    });
    if let Some(c) = cron {
        v["schedule"] = serde_json::json!({ "cron": c });
    }
    serde_json::from_value(v).unwrap()
}

fn new_pipeline(owner: &str, project: &str, file: &str, cron: Option<&str>, now: i64) -> NewPipeline {
    NewPipeline {
        owner: name(owner),
        project: name(project),
        file: file.into(),
        file_name: "p.yaml".into(),
        spec: pipeline_spec("nightly", cron),
        code: Some(ManifestId::of(b"pipeline code")),
        now,
    }
}

fn pending(steps: &[&str]) -> RunState {
    RunState {
        steps: steps.iter().map(|s| (s.to_string(), StepRun::pending())).collect(),
        cancelled: false,
        outcome: None,
        rerun: Default::default(),
    }
}

fn new_run(pipeline_id: i64, max_active: u32, scheduled_for: Option<i64>) -> NewRun {
    NewRun {
        pipeline_id,
        version: 1,
        trigger: if scheduled_for.is_some() { Trigger::Schedule } else { Trigger::Manual },
        scheduled_for,
        params: BTreeMap::from([("lr".to_string(), "0.1".to_string())]),
        state: pending(&["a", "b"]),
        retry_of: None,
        max_active,
        now: 100,
    }
}

pub(super) async fn pipelines(store: &dyn MetaStore) {
    project(store, "paula", "pipes").await;
    let (paula, pipes, nightly) = (name("paula"), name("pipes"), name("nightly"));

    let (p, added) = store.apply_pipeline(new_pipeline("paula", "pipes", "v1", Some("0 * * * *"), 10)).await.unwrap();
    assert!(added);
    assert_eq!((p.version, p.paused, p.last_scheduled, p.created_at), (1, false, 10, 10));
    assert_eq!((p.name.as_str(), p.file.as_str(), p.spec.steps.len()), ("nightly", "v1", 2));
    let (same, added) =
        store.apply_pipeline(new_pipeline("paula", "pipes", "v1", Some("0 * * * *"), 11)).await.unwrap();
    assert!(!added, "the same file and code make no new version");
    assert_eq!((same.id, same.version, same.updated_at), (p.id, 1, 10));
    let (v2, added) = store.apply_pipeline(new_pipeline("paula", "pipes", "v2", None, 12)).await.unwrap();
    assert!(added);
    assert_eq!((v2.id, v2.version, v2.file.as_str(), v2.updated_at), (p.id, 2, "v2", 12));
    let mut other_code = new_pipeline("paula", "pipes", "v2", Some("0 * * * *"), 13);
    other_code.code = Some(ManifestId::of(b"new code"));
    let (v3, added) = store.apply_pipeline(other_code).await.unwrap();
    assert!(added, "new code makes a new version");
    assert_eq!(v3.version, 3);
    assert_eq!(store.pipeline_version(p.id, 1).await.unwrap().file, "v1");
    assert_eq!(store.pipeline_version(p.id, 3).await.unwrap().code, Some(ManifestId::of(b"new code")));
    assert!(matches!(store.pipeline_version(p.id, 9).await, Err(MetaError::NotFound(_))));
    let missing = store.apply_pipeline(new_pipeline("paula", "nope", "v1", None, 1)).await;
    assert!(matches!(missing, Err(MetaError::NotFound(_))));

    assert_eq!(store.get_pipeline(&paula, &pipes, &nightly).await.unwrap().version, 3);
    assert_eq!(store.get_pipeline_by_id(p.id).await.unwrap().name, nightly);
    assert!(matches!(store.get_pipeline(&paula, &pipes, &name("nope")).await, Err(MetaError::NotFound(_))));
    assert_eq!(store.list_pipelines(&paula, &pipes).await.unwrap().len(), 1);
    let refs = store.referenced_manifests().await.unwrap();
    assert!(refs.contains(&ManifestId::of(b"pipeline code")) && refs.contains(&ManifestId::of(b"new code")));

    // Schedules: paused ones are not listed; a resume restarts the clock.
    let scheduled = |s: Vec<crate::PipelineRecord>| s.iter().any(|x| x.id == p.id);
    assert!(scheduled(store.scheduled_pipelines().await.unwrap()));
    let paused = store.set_paused(&paula, &pipes, &nightly, true, 20).await.unwrap();
    assert!(paused.paused);
    assert!(!scheduled(store.scheduled_pipelines().await.unwrap()));
    let resumed = store.set_paused(&paula, &pipes, &nightly, false, 500).await.unwrap();
    assert_eq!((resumed.paused, resumed.last_scheduled), (false, 500));
    assert_eq!(store.set_paused(&paula, &pipes, &nightly, false, 900).await.unwrap().last_scheduled, 500);
    store.set_last_scheduled(p.id, 600).await.unwrap();
    store.set_last_scheduled(p.id, 550).await.unwrap();
    assert_eq!(store.get_pipeline_by_id(p.id).await.unwrap().last_scheduled, 600, "it never goes back");
    assert!(matches!(store.set_paused(&paula, &pipes, &name("nope"), true, 1).await, Err(MetaError::NotFound(_))));

    // Runs: numbered per pipeline, at most max_active at once.
    let r1 = store.create_run(new_run(p.id, 2, None)).await.unwrap();
    assert_eq!((r1.number, r1.revision, r1.trigger, r1.is_active()), (1, 1, Trigger::Manual, true));
    assert_eq!((r1.owner.as_str(), r1.project.as_str(), r1.pipeline.as_str()), ("paula", "pipes", "nightly"));
    assert_eq!(r1.params["lr"], "0.1");
    let r2 = store.create_run(new_run(p.id, 2, Some(700))).await.unwrap();
    assert_eq!((r2.number, r2.scheduled_for, r2.trigger), (2, Some(700), Trigger::Schedule));
    assert_eq!(store.get_pipeline_by_id(p.id).await.unwrap().last_scheduled, 700);
    assert!(is_conflict(store.create_run(new_run(p.id, 2, Some(800))).await), "two are active");
    assert_eq!(store.get_pipeline_by_id(p.id).await.unwrap().last_scheduled, 800, "a skipped instant is handled");
    assert_eq!(store.get_run(p.id, 2).await.unwrap().id, r2.id);
    assert!(matches!(store.get_run(p.id, 9).await, Err(MetaError::NotFound(_))));
    let numbers: Vec<u64> = store.list_runs(p.id, 10).await.unwrap().iter().map(|r| r.number).collect();
    assert_eq!(numbers, [2, 1]);

    // Updates name the revision they read.
    let mut done = r2.state.clone();
    done.outcome = Some(RunOutcome::Succeeded);
    let stale = RunUpdate { run_id: r2.id, revision: 7, state: done.clone(), now: 900 };
    assert!(is_conflict(store.update_run(stale).await));
    let r2 = store.update_run(RunUpdate { run_id: r2.id, revision: 1, state: done, now: 900 }).await.unwrap();
    assert_eq!((r2.revision, r2.finished_at, r2.is_active()), (2, Some(900), false));
    let active: Vec<i64> = store.active_runs().await.unwrap().iter().map(|r| r.id).collect();
    assert!(active.contains(&r1.id) && !active.contains(&r2.id));
    assert_eq!(store.get_run_by_id(r2.id).await.unwrap().state.outcome, Some(RunOutcome::Succeeded));

    // Starting steps: the jobs, their links and the run's state, all or nothing.
    let job = |now| NewJob { message: Some("step".into()), now, ..new_job("paula", "pipes", spec("q-pipes", 0)) };
    let starts = |revision, state: &RunState, steps: &[(&str, u32)]| StartSteps {
        run_id: r1.id,
        revision,
        state: state.clone(),
        steps: steps.iter().map(|(s, a)| StepStart { step: s.to_string(), attempt: *a, job: job(1000) }).collect(),
        now: 1000,
    };
    assert!(is_conflict(store.start_steps(starts(5, &r1.state, &[("a", 1)])).await));
    assert_eq!(store.get_project(&paula, &pipes).await.unwrap().jobs, 0, "no job was created");
    let (recs, run) = store.start_steps(starts(1, &r1.state, &[("a", 1), ("b", 1)])).await.unwrap();
    let numbers: Vec<u64> = recs.iter().map(|r| r.job.job_ref.number).collect();
    assert_eq!(numbers, [1, 2]);
    assert!(recs.iter().all(|r| r.job.state == JobState::Queued));
    assert_eq!(run.revision, 2);
    let (a, b) = (&run.state.steps["a"], &run.state.steps["b"]);
    assert_eq!((a.state, a.attempt, a.job, a.started_at), (StepState::Running, 1, Some(1), Some(1000)));
    assert_eq!((b.state, b.job), (StepState::Running, Some(2)));
    let again = starts(2, &run.state, &[("c", 1), ("a", 1)]);
    assert!(is_conflict(store.start_steps(again).await), "a step attempt has one job");
    assert_eq!(store.get_project(&paula, &pipes).await.unwrap().jobs, 2, "and the whole batch was undone");
    assert_eq!(store.get_run_by_id(r1.id).await.unwrap().revision, 2);
    let rec = &recs[0];
    store.claim_job(&claim("q-pipes", "l-pipes", 99_000)).await.unwrap().unwrap();
    let mut done = finish(Outcome::Failed);
    done.output = Some(ManifestId::of(b"a out"));
    store.finish_job("l-pipes", &done).await.unwrap();
    let jobs = store.run_jobs(r1.id).await.unwrap();
    assert_eq!(jobs.len(), 2);
    let j = &jobs[0];
    assert_eq!((j.step.as_str(), j.attempt, j.job, j.number, j.state), ("a", 1, rec.id, 1, JobState::Failed));
    assert_eq!((j.output, j.exit_code, j.stop_requested), (Some(ManifestId::of(b"a out")), Some(1), false));
    assert_eq!((jobs[1].step.as_str(), jobs[1].state), ("b", JobState::Queued));
    assert_eq!(store.run_of_job(rec.id).await.unwrap(), Some(r1.id));
    let plain = store.create_job(new_job("paula", "pipes", spec("q-pipes", 0))).await.unwrap();
    assert_eq!(store.run_of_job(plain.id).await.unwrap(), None);
    assert!(store.run_jobs(r2.id).await.unwrap().is_empty());

    // The step cache.
    assert_eq!(store.get_cache(&paula, &pipes, "k1").await.unwrap(), None);
    let out = ManifestId::of(b"cached output");
    store.put_cache(&paula, &pipes, "k1", out, 1, 50).await.unwrap();
    let hit = store.get_cache(&paula, &pipes, "k1").await.unwrap().unwrap();
    assert_eq!((hit.output, hit.job), (out, 1));
    store.put_cache(&paula, &pipes, "k1", ManifestId::of(b"newer"), 2, 60).await.unwrap();
    assert_eq!(store.get_cache(&paula, &pipes, "k1").await.unwrap().unwrap().job, 2);
    assert!(matches!(store.put_cache(&paula, &pipes, "k2", out, 99, 1).await, Err(MetaError::NotFound(_))));
    project(store, "quinn", "pipes").await;
    assert_eq!(store.get_cache(&name("quinn"), &pipes, "k1").await.unwrap(), None, "the cache is per project");
}
