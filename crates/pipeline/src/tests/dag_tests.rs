use std::collections::BTreeMap;

use podder_core::ManifestId;

use super::pipeline;
use crate::dag::*;
use crate::spec::{PipelineSpec, TriggerRule};

fn out(s: &str) -> ManifestId {
    ManifestId::of(s.as_bytes())
}

fn starts(actions: &[Action]) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { step, attempt } => Some((step.clone(), *attempt)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn start_names(actions: &[Action]) -> Vec<String> {
    starts(actions).into_iter().map(|(s, _)| s).collect()
}

/// Applies what `decide` answers (jobs numbered from `next_job`), as the
/// scheduler does; answers the actions.
fn step_once(spec: &PipelineSpec, run: &mut RunState, now: i64, next_job: &mut u64) -> Vec<Action> {
    let actions = decide(spec, run, now);
    for a in &actions {
        match a {
            Action::Start { step, attempt } => {
                *next_job += 1;
                started(run, step, *attempt, *next_job, now);
            }
            Action::Skip { step, reason } => skip(run, step, reason, now),
            Action::Finish { outcome } => finish(run, *outcome),
            Action::WakeAt { .. } | Action::StopJob { .. } => {}
        }
    }
    // a fixed point: nothing but the same WakeAt comes again
    let again = decide(spec, run, now);
    let wakes: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::WakeAt { .. })).collect();
    assert!(again.iter().all(|a| matches!(a, Action::WakeAt { .. })), "not a fixed point: {again:?}");
    assert_eq!(again.iter().collect::<Vec<_>>(), wakes, "not a fixed point");
    actions
}

const DIAMOND: &str = "name: d\nsteps:\n  - {name: a, command: [x]}\n  - {name: b, needs: [a], command: [x], inputs: [{from: a, path: part1, mount: /data/a}]}\n  - {name: c, needs: [a], command: [x], inputs: [{from: a, mount: /data/a}, {dataset: cifar@2, mount: /data/cifar}]}\n  - {name: d, needs: [b, c], command: [x]}\n";

#[test]
fn new_run_is_all_pending() {
    let spec = pipeline(DIAMOND);
    let run = RunState::new(&spec);
    assert_eq!(run.steps.len(), 4);
    assert!(run.steps.values().all(|s| *s == StepRun::pending()));
    assert!(!run.cancelled && run.outcome.is_none());
}

#[test]
fn diamond_starts_both_middle_steps_together_after_a() {
    let spec = pipeline(DIAMOND);
    let mut run = RunState::new(&spec);
    let mut job = 0;
    let a = step_once(&spec, &mut run, 0, &mut job);
    assert_eq!(a, vec![Action::Start { step: "a".into(), attempt: 1 }]);
    assert_eq!(run.steps["a"].state, StepState::Running);
    assert_eq!(run.steps["a"].job, Some(1));
    on_job_end(&spec, &mut run, "a", true, Some(out("a")), None, 10);
    let a = step_once(&spec, &mut run, 10, &mut job);
    assert_eq!(starts(&a), [("b".to_string(), 1), ("c".to_string(), 1)]);
    on_job_end(&spec, &mut run, "c", true, Some(out("c")), None, 20);
    assert!(step_once(&spec, &mut run, 20, &mut job).is_empty(), "d waits for b");
    on_job_end(&spec, &mut run, "b", true, Some(out("b")), None, 30);
    assert_eq!(start_names(&step_once(&spec, &mut run, 30, &mut job)), ["d"]);
    on_job_end(&spec, &mut run, "d", true, Some(out("d")), None, 40);
    assert_eq!(step_once(&spec, &mut run, 40, &mut job), [Action::Finish { outcome: RunOutcome::Succeeded }]);
    assert_eq!(run.outcome, Some(RunOutcome::Succeeded));
    assert!(decide(&spec, &run, 50).is_empty(), "a finished run answers nothing");
}

#[test]
fn output_to_input_edges_resolve_to_the_upstream_manifest() {
    let spec = pipeline(DIAMOND);
    let mut run = RunState::new(&spec);
    let params = BTreeMap::new();
    // before a ran, the edge has no manifest
    match &inputs_of(&spec, &run, "b", &params)[0].source {
        InputSource::Step { step, output, .. } => assert_eq!((step.as_str(), *output), ("a", None)),
        other => panic!("{other:?}"),
    }
    started(&mut run, "a", 1, 1, 0);
    on_job_end(&spec, &mut run, "a", true, Some(out("a-output")), None, 5);
    let b = inputs_of(&spec, &run, "b", &params);
    assert_eq!(
        b,
        [ResolvedInput {
            source: InputSource::Step { step: "a".into(), output: Some(out("a-output")), path: Some("part1".into()) },
            mount: Some("/data/a".parse().unwrap()),
            input: None,
        }]
    );
    let c = inputs_of(&spec, &run, "c", &params);
    assert_eq!(c[0].source, InputSource::Step { step: "a".into(), output: Some(out("a-output")), path: None });
    assert_eq!(c[1].source, InputSource::Data("cifar@2".into()));
    assert_eq!(c[1].mount.as_ref().unwrap().as_str(), "/data/cifar");
}

#[test]
fn retries_back_off_exponentially_then_succeed_or_fail() {
    let spec = pipeline(
        "name: r\nsteps:\n  - {name: flaky, command: [x], retries: 3, retry_delay: 5s}\n  - {name: now, command: [x], retries: 1}\n",
    );
    let mut run = RunState::new(&spec);
    let mut job = 0;
    assert_eq!(starts(&step_once(&spec, &mut run, 0, &mut job)), [("flaky".into(), 1), ("now".into(), 1)]);

    // no retry_delay: due at once
    on_job_end(&spec, &mut run, "now", false, None, Some("exit 1".into()), 1_000);
    assert_eq!(run.steps["now"].state, StepState::Retrying);
    assert_eq!(run.steps["now"].retry_at, Some(1_000));
    assert_eq!(starts(&step_once(&spec, &mut run, 1_000, &mut job)), [("now".into(), 2)]);
    on_job_end(&spec, &mut run, "now", false, None, Some("exit 1".into()), 2_000);
    assert_eq!(run.steps["now"].state, StepState::Failed, "one retry only");
    assert_eq!(run.steps["now"].reason.as_deref(), Some("exit 1"));

    // 5 s, 10 s, 20 s after each failure
    let mut t = 10_000;
    for (attempt, delay) in [(1, 5_000), (2, 10_000), (3, 20_000)] {
        assert_eq!(run.steps["flaky"].attempt, attempt);
        on_job_end(&spec, &mut run, "flaky", false, None, Some("boom".into()), t);
        let s = &run.steps["flaky"];
        assert_eq!((s.state, s.retry_at), (StepState::Retrying, Some(t + delay)));
        assert_eq!(step_once(&spec, &mut run, t + delay - 1, &mut job), [Action::WakeAt { at: t + delay }]);
        assert_eq!(starts(&step_once(&spec, &mut run, t + delay, &mut job)), [("flaky".into(), attempt + 1)]);
        assert_eq!(run.steps["flaky"].retry_at, None);
        t += delay + 1_000;
    }
    // the fourth attempt succeeds
    on_job_end(&spec, &mut run, "flaky", true, Some(out("f")), None, t);
    assert_eq!(run.steps["flaky"].state, StepState::Succeeded);
    assert_eq!(run.steps["flaky"].attempt, 4);
    assert_eq!(step_once(&spec, &mut run, t, &mut job), [Action::Finish { outcome: RunOutcome::Failed }]);
}

#[test]
fn the_earliest_retry_wakes_the_scheduler() {
    let spec = pipeline(
        "name: r\nsteps:\n  - {name: a, command: [x], retries: 1, retry_delay: 1m}\n  - {name: b, command: [x], retries: 1, retry_delay: 30s}\n",
    );
    let mut run = RunState::new(&spec);
    let mut job = 0;
    step_once(&spec, &mut run, 0, &mut job);
    on_job_end(&spec, &mut run, "a", false, None, None, 0);
    on_job_end(&spec, &mut run, "b", false, None, None, 0);
    assert_eq!(decide(&spec, &run, 0), [Action::WakeAt { at: 30_000 }]);
    assert_eq!(
        decide(&spec, &run, 30_000),
        [Action::Start { step: "b".into(), attempt: 2 }, Action::WakeAt { at: 60_000 }]
    );
}

#[test]
fn a_timed_out_step_runs_all_done_and_skips_all_success_downstream() {
    let spec = pipeline(
        "name: t\nsteps:\n  - {name: train, command: [x], timeout: 10m}\n  - {name: report, needs: [train], trigger_rule: all_done, command: [x]}\n  - {name: publish, needs: [train], command: [x]}\n  - {name: after-publish, needs: [publish], command: [x]}\n  - {name: cleanup, needs: [publish], trigger_rule: all_done, command: [x]}\n",
    );
    let mut run = RunState::new(&spec);
    let mut job = 0;
    step_once(&spec, &mut run, 0, &mut job);
    on_job_end(&spec, &mut run, "train", false, Some(out("partial")), Some("timed out after 10m".into()), 600_000);
    assert_eq!(run.steps["train"].state, StepState::Failed);
    assert_eq!(run.steps["train"].output, Some(out("partial")), "a failed job's output is kept");
    let a = step_once(&spec, &mut run, 600_000, &mut job);
    // one call skips the whole all_success branch and starts what those skips unblock
    assert_eq!(start_names(&a), ["cleanup", "report"]);
    assert!(
        a.contains(&Action::Skip {
            step: "publish".into(),
            reason: "all_success: upstream step 'train' failed".into()
        }),
        "{a:?}"
    );
    assert!(
        a.contains(&Action::Skip {
            step: "after-publish".into(),
            reason: "all_success: upstream step 'publish' was skipped".into()
        }),
        "{a:?}"
    );
    assert_eq!(run.steps["publish"].state, StepState::Skipped);
    on_job_end(&spec, &mut run, "report", true, Some(out("r")), None, 601_000);
    on_job_end(&spec, &mut run, "cleanup", true, Some(out("c")), None, 601_000);
    // the run fails: a step ended Failed, even though all_done steps handled it
    assert_eq!(step_once(&spec, &mut run, 601_000, &mut job), [Action::Finish { outcome: RunOutcome::Failed }]);
}

/// The verdict of one rule over upstream states.
fn verdict(rule: TriggerRule, ups: &[StepState]) -> Verdict {
    let named: Vec<(String, StepState)> = ups.iter().enumerate().map(|(i, s)| (format!("u{i}"), *s)).collect();
    let refs: Vec<(&str, StepState)> = named.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    trigger(rule, &refs)
}

fn runs(v: Verdict) -> &'static str {
    match v {
        Verdict::Run => "run",
        Verdict::Skip(_) => "skip",
        Verdict::Wait => "wait",
    }
}

#[test]
fn each_trigger_rule() {
    use StepState::*;
    use TriggerRule::*;
    let cases: &[(TriggerRule, &[StepState], &str)] = &[
        (AllSuccess, &[], "run"),
        (AllSuccess, &[Succeeded, Cached], "run"),
        (AllSuccess, &[Succeeded, Running], "wait"),
        (AllSuccess, &[Failed, Running], "skip"),
        (AllSuccess, &[Skipped, Succeeded], "skip"),
        (AllSuccess, &[Retrying, Succeeded], "wait"),
        (AllDone, &[Failed, Skipped, Succeeded], "run"),
        (AllDone, &[Failed, Running], "wait"),
        (AllDone, &[Failed, Retrying], "wait"),
        (OneSuccess, &[Succeeded, Running], "run"),
        (OneSuccess, &[Failed, Pending], "wait"),
        (OneSuccess, &[Failed, Skipped], "skip"),
        (OneFailed, &[Failed, Running], "run"),
        (OneFailed, &[Succeeded, Retrying], "wait"),
        (OneFailed, &[Succeeded, Skipped], "skip"),
        (NoneFailed, &[Succeeded, Skipped], "run"),
        (NoneFailed, &[Skipped, Skipped], "run"),
        (NoneFailed, &[Succeeded, Running], "wait"),
        (NoneFailed, &[Failed, Running], "skip"),
    ];
    for (rule, ups, want) in cases {
        assert_eq!(runs(verdict(*rule, ups)), *want, "{rule:?} over {ups:?}");
    }
}

#[test]
fn trigger_rules_in_a_run() {
    let spec = pipeline(
        "name: t\nsteps:\n  - {name: ok, command: [x]}\n  - {name: bad, command: [x]}\n  - {name: s, needs: [ok, bad], command: [x]}\n  - {name: d, needs: [ok, bad], trigger_rule: all_done, command: [x]}\n  - {name: os, needs: [ok, bad], trigger_rule: one_success, command: [x]}\n  - {name: of, needs: [ok, bad], trigger_rule: one_failed, command: [x]}\n  - {name: nf, needs: [ok, bad], trigger_rule: none_failed, command: [x]}\n  - {name: nf2, needs: [ok, s], trigger_rule: none_failed, command: [x]}\n",
    );
    let mut run = RunState::new(&spec);
    let mut job = 0;
    step_once(&spec, &mut run, 0, &mut job);
    on_job_end(&spec, &mut run, "ok", true, Some(out("ok")), None, 1);
    // one_success runs as soon as one upstream step succeeded
    assert_eq!(start_names(&step_once(&spec, &mut run, 1, &mut job)), ["os"]);
    on_job_end(&spec, &mut run, "bad", false, None, None, 2);
    let a = step_once(&spec, &mut run, 2, &mut job);
    assert_eq!(start_names(&a), ["d", "nf2", "of"], "{a:?}");
    let skipped: Vec<&str> =
        run.steps.iter().filter(|(_, s)| s.state == StepState::Skipped).map(|(n, _)| n.as_str()).collect();
    // nf2 runs: its upstream s was skipped, which is not a failure
    assert_eq!(skipped, ["nf", "s"]);
}

#[test]
fn cancel_stops_running_jobs_and_finishes_cancelled() {
    let spec = pipeline(DIAMOND);
    let mut run = RunState::new(&spec);
    let mut job = 0;
    step_once(&spec, &mut run, 0, &mut job);
    on_job_end(&spec, &mut run, "a", true, Some(out("a")), None, 1);
    step_once(&spec, &mut run, 1, &mut job);
    on_job_end(&spec, &mut run, "b", false, None, None, 2);
    let stops = cancel(&mut run, 3);
    assert_eq!(stops, [Action::StopJob { step: "c".into(), job: 3 }]);
    assert!(run.cancelled);
    let states: Vec<StepState> = run.steps.values().map(|s| s.state).collect();
    assert_eq!(states, [StepState::Succeeded, StepState::Failed, StepState::Cancelled, StepState::Cancelled]);
    // a late end of the stopped job changes nothing
    on_job_end(&spec, &mut run, "c", true, Some(out("c")), None, 4);
    assert_eq!(run.steps["c"].state, StepState::Cancelled);
    assert_eq!(step_once(&spec, &mut run, 4, &mut job), [Action::Finish { outcome: RunOutcome::Cancelled }]);
    assert!(cancel(&mut run, 5).is_empty(), "a finished run cannot be cancelled");
}

#[test]
fn retry_from_a_step_keeps_what_came_before() {
    let spec = pipeline(DIAMOND);
    let mut run = RunState::new(&spec);
    let mut job = 0;
    step_once(&spec, &mut run, 0, &mut job);
    on_job_end(&spec, &mut run, "a", true, Some(out("a")), None, 1);
    step_once(&spec, &mut run, 1, &mut job);
    on_job_end(&spec, &mut run, "b", true, Some(out("b")), None, 2);
    on_job_end(&spec, &mut run, "c", false, None, Some("oom".into()), 2);
    step_once(&spec, &mut run, 2, &mut job);
    assert_eq!(run.outcome, Some(RunOutcome::Failed));
    assert_eq!(run.steps["d"].state, StepState::Skipped);

    // from the failed steps
    let again = retry_from(&spec, &run, None).unwrap();
    let st = |r: &RunState, s: &str| r.steps[s].state;
    assert_eq!(
        (st(&again, "a"), st(&again, "b"), st(&again, "c"), st(&again, "d")),
        (StepState::Cached, StepState::Cached, StepState::Pending, StepState::Pending)
    );
    assert_eq!(again.steps["b"].output, Some(out("b")));
    assert_eq!(again.steps["c"].attempt, 0);
    assert_eq!(again.outcome, None);
    let mut again = again;
    assert_eq!(start_names(&step_once(&spec, &mut again, 10, &mut job)), ["c"]);
    assert_eq!(again.steps["c"].attempt, 1);

    // from a named step: it and its downstream run again
    assert!(again.rerun.is_empty() && again.may_use_cache("c"), "a retry of failed steps may use the cache");
    let from_a = retry_from(&spec, &run, Some("a")).unwrap();
    assert!(from_a.steps.values().all(|s| *s == StepRun::pending()));
    assert!(["a", "b", "c", "d"].iter().all(|s| !from_a.may_use_cache(s)), "{:?}", from_a.rerun);
    let from_b = retry_from(&spec, &run, Some("b")).unwrap();
    assert!(!from_b.may_use_cache("b") && !from_b.may_use_cache("d"));
    assert!(from_b.may_use_cache("a") && from_b.may_use_cache("c"));
    assert_eq!(
        (st(&from_b, "a"), st(&from_b, "b"), st(&from_b, "c"), st(&from_b, "d")),
        (StepState::Cached, StepState::Pending, StepState::Failed, StepState::Pending)
    );

    let e = retry_from(&spec, &run, Some("zz")).unwrap_err();
    assert_eq!(e, "pipeline 'd' has no step 'zz' (its steps: a, b, c, d)");
    let mut all_ok = RunState::new(&spec);
    for s in ["a", "b", "c", "d"] {
        cached(&mut all_ok, s, out(s), 0);
    }
    assert!(retry_from(&spec, &all_ok, None).is_err());
}

#[test]
fn only_runs_one_step_fed_by_the_latest_outputs() {
    let spec = pipeline(DIAMOND);
    let latest =
        BTreeMap::from([("a".to_string(), out("a")), ("b".to_string(), out("b")), ("c".to_string(), out("c"))]);
    let mut run = only(&spec, "d", &latest).unwrap();
    assert_eq!(run.steps["b"].state, StepState::Cached);
    assert_eq!(run.steps["c"].output, Some(out("c")));
    assert_eq!(run.steps["d"].state, StepState::Pending);
    let mut job = 0;
    assert_eq!(start_names(&step_once(&spec, &mut run, 0, &mut job)), ["d"]);
    on_job_end(&spec, &mut run, "d", true, Some(out("d2")), None, 1);
    assert_eq!(step_once(&spec, &mut run, 1, &mut job), [Action::Finish { outcome: RunOutcome::Succeeded }]);

    let run = only(&spec, "b", &latest).unwrap();
    let states: Vec<StepState> = run.steps.values().map(|s| s.state).collect();
    assert_eq!(states, [StepState::Cached, StepState::Pending, StepState::Skipped, StepState::Skipped]);

    let e = only(&spec, "d", &BTreeMap::from([("b".to_string(), out("b"))])).unwrap_err();
    assert!(e.contains("'c'"), "{e}");
    assert!(only(&spec, "zz", &latest).is_err());
    assert_eq!(only(&spec, "a", &BTreeMap::new()).unwrap().steps["a"].state, StepState::Pending);
}

#[test]
fn a_cache_hit_counts_as_success() {
    let spec = pipeline(DIAMOND);
    let mut run = RunState::new(&spec);
    cached(&mut run, "a", out("a"), 0);
    assert_eq!(run.steps["a"].attempt, 0, "no job ran");
    assert_eq!(start_names(&decide(&spec, &run, 0)), ["b", "c"]);
}

/// A small deterministic generator (no dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random-ish DAG run to its end: jobs end in a random order with random
/// results; `decide` and its actions reach a fixed point at every step;
/// every Start is one the trigger rule allows; no step runs more often than
/// its retries allow; the run finishes with every step done.
#[test]
fn random_dags_reach_a_fixed_point_and_finish() {
    let rules = ["all_success", "all_done", "one_success", "one_failed", "none_failed"];
    let (mut outcomes, mut retried, mut skipped) = (Vec::new(), 0, 0);
    for seed in 1..=40u64 {
        let mut rng = Lcg(seed);
        let n = 5 + rng.below(25) as usize;
        let mut yaml = String::from("name: sim\nsteps:\n");
        for i in 0..n {
            let needs: Vec<String> = (0..i).filter(|_| rng.below(4) == 0).map(|j| format!("s{j}")).collect();
            yaml.push_str(&format!(
                "  - {{name: s{i}, command: [x], needs: [{}], trigger_rule: {}, retries: {}, retry_delay: {}s}}\n",
                needs.join(", "),
                rules[rng.below(5) as usize],
                rng.below(3),
                rng.below(4)
            ));
        }
        let spec = pipeline(&yaml);
        let mut run = RunState::new(&spec);
        let mut now = 0i64;
        let mut job = 0u64;
        let mut starts_of: BTreeMap<String, u32> = BTreeMap::new();
        let mut finished = None;
        for _ in 0..10_000 {
            let before = run.clone();
            let actions = step_once(&spec, &mut run, now, &mut job);
            let mut wake = None;
            for a in &actions {
                match a {
                    Action::Start { step, attempt } => {
                        *starts_of.entry(step.clone()).or_default() += 1;
                        assert_eq!(*attempt, before.steps[step].attempt + 1);
                        let s = spec.step(step).unwrap();
                        if before.steps[step].state == StepState::Pending {
                            let ups: Vec<(&str, StepState)> =
                                s.needs.iter().map(|u| (u.as_str(), run.steps[u].state)).collect();
                            assert_eq!(
                                trigger(s.trigger_rule, &ups),
                                Verdict::Run,
                                "seed {seed}: {step} started early"
                            );
                        }
                        assert!(*attempt <= s.retries + 1, "seed {seed}: {step} ran too often");
                    }
                    Action::WakeAt { at } => wake = Some(*at),
                    Action::Finish { outcome } => finished = Some(*outcome),
                    _ => {}
                }
            }
            if finished.is_some() {
                break;
            }
            let running: Vec<String> =
                run.steps.iter().filter(|(_, s)| s.state == StepState::Running).map(|(n, _)| n.clone()).collect();
            if running.is_empty() {
                now = wake.unwrap_or_else(|| panic!("seed {seed}: stuck with nothing running: {run:?}"));
                continue;
            }
            let pick = &running[rng.below(running.len() as u64) as usize];
            now += 1 + rng.below(1_000) as i64;
            let ok = rng.below(3) != 0;
            on_job_end(&spec, &mut run, pick, ok, ok.then(|| out(pick)), None, now);
        }
        let outcome = finished.unwrap_or_else(|| panic!("seed {seed}: never finished"));
        assert!(run.all_done());
        assert_eq!(run.outcome, Some(outcome));
        assert_eq!(outcome, crate::dag::outcome(&run));
        let any_failed = run.steps.values().any(|s| s.state == StepState::Failed);
        assert_eq!(outcome == RunOutcome::Failed, any_failed);
        for (step, n) in &starts_of {
            assert_eq!(*n, run.steps[step].attempt, "seed {seed}: {step}");
        }
        outcomes.push(outcome);
        retried += starts_of.values().filter(|n| **n > 1).count();
        skipped += run.steps.values().filter(|s| s.state == StepState::Skipped).count();
    }
    // the simulation covered both outcomes, retries and skips
    assert!(outcomes.contains(&RunOutcome::Failed) && outcomes.contains(&RunOutcome::Succeeded), "{outcomes:?}");
    assert!(retried > 10 && skipped > 10, "{retried} {skipped}");
}

/// `decide` stays cheap on a wide DAG (the scheduler calls it after every job end).
#[test]
fn a_thousand_step_wide_dag_decides_quickly() {
    let mut yaml = String::from("name: wide\nsteps:\n  - {name: root, command: [x]}\n");
    for i in 0..1000 {
        yaml.push_str(&format!("  - {{name: s{i}, needs: [root], command: [x]}}\n"));
    }
    let spec = pipeline(&yaml);
    let mut run = RunState::new(&spec);
    cached(&mut run, "root", out("r"), 0);
    let t = std::time::Instant::now();
    let a = decide(&spec, &run, 0);
    assert_eq!(starts(&a).len(), 1000);
    for i in 0..1000 {
        started(&mut run, &format!("s{i}"), 1, i, 0);
    }
    for i in 0..1000 {
        on_job_end(&spec, &mut run, &format!("s{i}"), true, None, None, 1);
        decide(&spec, &run, 1);
    }
    assert_eq!(decide(&spec, &run, 1), [Action::Finish { outcome: RunOutcome::Succeeded }]);
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
}
