use std::collections::BTreeMap;

use podder_core::{EnvSpec, ManifestId, MountPath};

use super::{pipeline, problems};
use crate::spec::{TriggerRule, cache_key, parse_duration, substitute};

const DOC_EXAMPLE: &str = r#"name: nightly
description: Prepare, train two models, compare
params:
  lr: {type: float, default: 0.1}
schedule: {cron: "0 3 * * *", timezone: Europe/Paris}
max_active_runs: 1
steps:
  - name: prepare
    task: prep                  # a deployed task of the project, by name
    params: {rows: "1000"}
  - name: train-a
    needs: [prepare]
    env: python-3.11
    command: [python3, train.py, --lr, "${params.lr}"]
    inputs:
      - {from: prepare, path: data, mount: /data/prep}
      - {dataset: cifar@2, mount: /data/cifar}
    retries: 2
    retry_delay: 5s
    timeout: 10m
    cache: true
  - name: compare
    needs: [train-a]
    trigger_rule: all_done
    command: [python3, compare.py]
"#;

#[test]
fn the_documented_example_parses() {
    let p = pipeline(DOC_EXAMPLE);
    assert_eq!(p.name.as_str(), "nightly");
    assert_eq!(p.steps.len(), 3);
    let t = p.step("train-a").unwrap();
    assert_eq!(t.retries, 2);
    assert_eq!(t.retry_delay_secs(), 5);
    assert_eq!(t.timeout_secs(), Some(600));
    assert!(t.cache);
    assert_eq!(p.step("compare").unwrap().trigger_rule, TriggerRule::AllDone);
    assert_eq!(p.step("prepare").unwrap().trigger_rule, TriggerRule::AllSuccess);
    assert_eq!(p.schedule.as_ref().unwrap().timezone, "Europe/Paris");
    assert!(!p.catchup);
    assert_eq!(p.topo_order(), ["prepare", "train-a", "compare"]);
    // the server keeps the parsed file as JSON: it must round-trip
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<crate::PipelineSpec>(&json).unwrap(), p);
}

/// The file of the error test, with its line numbers.
const BAD: &str = r#"name: nightly
params:
  lr: {type: float, default: 0.1}
  n: {type: int, default: abc}
schedule: {cron: "61 * * * *", timezone: Europe/Paris}
steps:
  - name: a
    needs: [c]
    command: [x]
  - name: b
    needs: [a]
    command: [x]
  - name: c
    needs: [b]
    command: [x]
  - name: t
    task: nope
  - name: p
    task: prep
    params: {rows: many}
  - name: d
    needs: [ghost]
    command: [x, "${params.zz}"]
    inputs:
      - {from: b, mount: /data/b}
      - {mount: /data/q}
    timeout: 10x
"#;

#[test]
fn every_problem_at_once_with_file_and_line() {
    let e = problems(BAD);
    let lines: Vec<&str> = e.lines().collect();
    let expect = [
        "nightly.yaml:4: parameter 'n': default \"abc\" is not an int",
        "nightly.yaml:5: bad cron expression '61 * * * *'",
        "nightly.yaml:7: steps form a cycle: a -> b -> c -> a",
        "nightly.yaml:16: step 't': unknown task 'nope' (deployed tasks: prep, train)",
        "nightly.yaml:18: step 'p': parameter 'rows': 'many' is not an int",
        "nightly.yaml:21: step 'd' needs 'ghost', which is not a step",
        "nightly.yaml:21: step 'd' uses ${params.zz}, which the pipeline does not declare (it declares: lr, n)",
        "nightly.yaml:21: step 'd' takes an input from 'b', which is not in needs",
        "nightly.yaml:21: step 'd': input 2 has neither from nor dataset",
        "nightly.yaml:21: step 'd': timeout: '10x' is not a duration",
    ];
    for want in expect {
        assert!(lines.iter().any(|l| l.starts_with(want)), "missing {want:?} in:\n{e}");
    }
    assert_eq!(lines.len(), expect.len(), "{e}");
    // sorted by line
    let nums: Vec<usize> = lines.iter().map(|l| l.split(':').nth(1).unwrap().parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] <= w[1]), "{e}");
}

#[test]
fn a_two_step_cycle_and_a_self_need() {
    let e = problems(
        "name: x\nsteps:\n  - name: a\n    needs: [b]\n    command: [x]\n  - name: b\n    needs: [a]\n    command: [x]\n  - {name: s, needs: [s], command: [x]}\n",
    );
    assert!(e.contains("nightly.yaml:3: steps form a cycle: a -> b -> a"), "{e}");
    assert!(e.contains("nightly.yaml:9: step 's' needs itself"), "{e}");
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn yaml_errors_have_line_and_column() {
    let e = problems("name: x\nsteps:\n  - name: a\n    comand: [x]\n");
    assert!(e.starts_with("nightly.yaml:4:"), "{e}");
    assert!(e.contains("comand"), "{e}");
    let e = problems("name: x\nsteps:\n  - name: a\n    retries: many\n    command: [x]\n");
    assert!(e.starts_with("nightly.yaml:4:"), "{e}");
    let e = problems("name: Bad\nsteps: []\n");
    assert!(e.starts_with("nightly.yaml:1:"), "{e}");
}

#[test]
fn step_shape_problems() {
    let e = problems(
        r#"name: x
max_active_runs: 0
schedule: {cron: "@daily", timezone: Mars/Olympus}
steps:
  - name: Bad
    command: [x]
  - name: both
    task: prep
    command: [x]
  - name: neither
  - name: dup
    command: [x]
  - name: dup
    command: [y]
  - name: t
    task: train
    params: {epochs: "${params.e}", lr: fast, nope: "1"}
    inputs:
      - {dataset: cifar, input: datasets}
  - name: m
    command: [x]
    inputs:
      - {dataset: cifar}
      - {dataset: "bad name", mount: /data/a}
      - {dataset: cifar, mount: /data/a/b}
    retry_delay: soon
"#,
    );
    for want in [
        "nightly.yaml:2: max_active_runs is 0",
        "nightly.yaml:3: unknown time zone 'Mars/Olympus'",
        "nightly.yaml:5: step name: the name 'Bad' must start with a lowercase letter",
        "nightly.yaml:7: step 'both' has both a task and a command",
        "nightly.yaml:10: step 'neither' has neither a task nor a command",
        "nightly.yaml:13: two steps are called 'dup'",
        "nightly.yaml:15: step 't' uses ${params.e}, which the pipeline does not declare",
        "nightly.yaml:15: step 't': parameter 'lr': 'fast' is not a float",
        "nightly.yaml:15: step 't': task 'train' has no parameter 'nope' (it has: epochs, lr)",
        "nightly.yaml:15: step 't': task 'train' has no input 'datasets' (it has: dataset)",
        "nightly.yaml:15: step 't': task 'train' needs input 'dataset'",
        "nightly.yaml:20: step 'm': input 1 has no mount",
        "nightly.yaml:20: step 'm': input 2: ",
        "nightly.yaml:20: step 'm': two inputs are mounted at '/data/a' and '/data/a/b'",
        "nightly.yaml:20: step 'm': retry_delay: 'soon' is not a duration",
    ] {
        assert!(e.lines().any(|l| l.starts_with(want)), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn task_steps_params_are_checked_after_substitution_when_possible() {
    let base =
        "name: x\nparams:\n  e: {type: str, default: ten}\n  free: {type: str}\n  n: {type: int, default: 4}\nsteps:\n";
    // `${params.e}` defaults to "ten": not an int for the task's `epochs`
    let e = problems(&format!(
        "{base}  - name: t\n    task: train\n    params: {{epochs: \"${{params.e}}\"}}\n    inputs: [{{dataset: cifar, input: dataset}}]\n"
    ));
    assert!(e.starts_with("nightly.yaml:7: step 't': parameter 'epochs' = '${params.e}'"), "{e}");
    assert!(e.contains("'ten' is not an int"), "{e}");
    // no default: not checked; a fitting default: fine
    pipeline(&format!(
        "{base}  - name: t\n    task: train\n    params: {{epochs: \"${{params.free}}\", lr: \"${{params.n}}\"}}\n    inputs: [{{dataset: cifar, input: dataset}}]\n"
    ));
}

#[test]
fn inputs_wire_task_inputs_and_upstream_outputs() {
    let p = pipeline(
        "name: x\nsteps:\n  - {name: a, task: prep}\n  - name: b\n    task: train\n    needs: [a]\n    inputs:\n      - {from: a, path: data, input: dataset}\n",
    );
    assert_eq!(p.step("b").unwrap().inputs[0].input.as_deref(), Some("dataset"));
}

#[test]
fn parameters_resolve_and_substitute() {
    let p = pipeline(
        "name: x\nparams:\n  lr: {type: float, default: 0.1}\n  epochs: {type: int}\n  fast: {type: bool, default: false}\nsteps:\n  - {name: a, command: [run, \"--lr=${params.lr}\", \"${params.epochs}\"]}\n",
    );
    let given = BTreeMap::from([("epochs".to_string(), " 7".to_string())]);
    let r = p.resolve_params(&given).unwrap();
    assert_eq!(
        r,
        BTreeMap::from([("epochs".into(), "7".into()), ("fast".into(), "false".into()), ("lr".into(), "0.1".into())])
    );
    let s = p.step("a").unwrap().substituted(&r);
    assert_eq!(s.command, ["run", "--lr=0.1", "7"]);

    let e = p
        .resolve_params(&BTreeMap::from([("lr".to_string(), "x".to_string()), ("zz".to_string(), "1".to_string())]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pipeline 'x' has no parameter 'zz' (it has: epochs, fast, lr)"), "{e}");
    assert!(e.contains("parameter 'lr': 'x' is not a float"), "{e}");
    assert!(e.contains("parameter 'epochs' has no default: give --param epochs=VALUE"), "{e}");
}

#[test]
fn substitute_replaces_known_names_only() {
    let p = BTreeMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), "two".to_string())]);
    assert_eq!(substitute("x${params.a}y${params.b}${params.a}", &p), "x1ytwo1");
    assert_eq!(substitute("${params.c} and ${params.a", &p), "${params.c} and ${params.a");
    assert_eq!(substitute("$params.a ${a}", &p), "$params.a ${a}");
    assert_eq!(substitute("", &p), "");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90"), Ok(90));
    assert_eq!(parse_duration("90s"), Ok(90));
    assert_eq!(parse_duration("10m"), Ok(600));
    assert_eq!(parse_duration("2h"), Ok(7200));
    assert_eq!(parse_duration("1d"), Ok(86400));
    assert_eq!(parse_duration("1h30m"), Ok(5400));
    assert_eq!(parse_duration(" 5s "), Ok(5));
    for bad in ["", "s", "-5", "5x", "1.5h", "1m30", "m5", "99999999999999999999", "5 s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn topo_order_puts_needs_first_and_keeps_file_order() {
    let p = pipeline(
        "name: x\nsteps:\n  - {name: d, needs: [b, c], command: [x]}\n  - {name: c, needs: [a], command: [x]}\n  - {name: b, needs: [a], command: [x]}\n  - {name: a, command: [x]}\n  - {name: e, command: [x]}\n",
    );
    assert_eq!(p.topo_order(), ["a", "c", "b", "d", "e"]);
    assert_eq!(p.downstream_of("a").into_iter().collect::<Vec<_>>(), ["b", "c", "d"]);
    assert_eq!(p.upstream_of("d").into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
}

fn mid(s: &str) -> ManifestId {
    ManifestId::of(s.as_bytes())
}

fn mount(s: &str) -> MountPath {
    s.parse().unwrap()
}

#[test]
fn cache_key_is_stable_and_changes_with_every_input() {
    let env = EnvSpec {
        name: "alice/python-3.11".into(),
        image: Some("python:3.11".into()),
        gpu_image: None,
        build: None,
        requirements: Some("numpy\n".into()),
        workdir: None,
    };
    let cmd = vec!["python".to_string(), "train.py".to_string()];
    let setup = vec!["pip install x".to_string()];
    let params = BTreeMap::from([("lr".to_string(), "0.1".to_string())]);
    let inputs = vec![(mid("data"), mount("/data/a")), (mid("other"), mount("/data/b"))];
    let key = |code: &ManifestId,
               env: Option<&EnvSpec>,
               cmd: &[String],
               setup: &[String],
               params: &BTreeMap<String, String>,
               inputs: &[(ManifestId, MountPath)]| cache_key(code, env, cmd, setup, params, inputs);
    let base = key(&mid("code"), Some(&env), &cmd, &setup, &params, &inputs);
    assert_eq!(base.len(), 64);
    assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
    // stable: same inputs, same key, whatever the order of the inputs
    assert_eq!(base, key(&mid("code"), Some(&env), &cmd, &setup, &params, &inputs));
    let swapped = vec![inputs[1].clone(), inputs[0].clone()];
    assert_eq!(base, key(&mid("code"), Some(&env), &cmd, &setup, &params, &swapped));
    // pinned (without an environment, whose JSON follows core's EnvSpec): the
    // encoding must not change silently, which would drop every cached result
    assert_eq!(key(&mid("code"), None, &cmd, &setup, &params, &inputs), PINNED_KEY);

    let mut env2 = env.clone();
    env2.requirements = Some("numpy==2\n".into());
    let split = vec!["python train.py".to_string()];
    let moved = vec![(mid("data"), mount("/data/c")), (mid("other"), mount("/data/b"))];
    let changed = vec![(mid("data2"), mount("/data/a")), (mid("other"), mount("/data/b"))];
    let variants = [
        key(&mid("code2"), Some(&env), &cmd, &setup, &params, &inputs),
        key(&mid("code"), None, &cmd, &setup, &params, &inputs),
        key(&mid("code"), Some(&env2), &cmd, &setup, &params, &inputs),
        key(&mid("code"), Some(&env), &split, &setup, &params, &inputs),
        key(&mid("code"), Some(&env), &cmd, &[], &params, &inputs),
        // an argument moved from the command into setup
        key(&mid("code"), Some(&env), &cmd[..1], &[cmd[1].clone(), setup[0].clone()], &params, &inputs),
        key(&mid("code"), Some(&env), &cmd, &setup, &BTreeMap::new(), &inputs),
        key(&mid("code"), Some(&env), &cmd, &setup, &BTreeMap::from([("lr".into(), "0.2".into())]), &inputs),
        key(&mid("code"), Some(&env), &cmd, &setup, &params, &inputs[..1]),
        key(&mid("code"), Some(&env), &cmd, &setup, &params, &moved),
        key(&mid("code"), Some(&env), &cmd, &setup, &params, &changed),
    ];
    let mut all: Vec<&String> = variants.iter().collect();
    all.push(&base);
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "two different steps share a key");
}

const PINNED_KEY: &str = "669484920ede1bc54df769fe1881717a58939baedbc94a77fdf1b7d2b1e822b5";
