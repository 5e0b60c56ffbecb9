//! Unit tests of the pure pipeline core.

mod cron_tests;
mod dag_tests;
mod spec_tests;

use std::collections::BTreeMap;

use podder_core::task::TaskSpec;

use crate::spec::{NoTasks, PipelineSpec};

/// A project with the task `prep` (param `rows: int`, no inputs) and
/// `train` (params `epochs: int = 3`, `lr: float = 0.1`; input `dataset`
/// at /data/input).
pub fn tasks() -> BTreeMap<String, TaskSpec> {
    let prep = TaskSpec::from_yaml(
        "name: prep\ncommand: [python, prep.py]\nparams:\n  rows: {type: int, default: 10}\n",
        "prep.yaml",
    )
    .unwrap();
    let train = TaskSpec::from_yaml(
        "name: train\ncommand: [python, -m, main]\ninputs:\n  - name: dataset\n    mount: /data/input\nparams:\n  epochs: {type: int, default: 3}\n  lr: {type: float, default: 0.1}\n",
        "train.yaml",
    )
    .unwrap();
    BTreeMap::from([("prep".to_string(), prep), ("train".to_string(), train)])
}

/// Parses a pipeline that must be valid.
pub fn pipeline(text: &str) -> PipelineSpec {
    match PipelineSpec::parse(text, "p.yaml", &tasks()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Parses a pipeline that must be invalid; answers its problems' text.
pub fn problems(text: &str) -> String {
    match PipelineSpec::parse(text, "nightly.yaml", &tasks()) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn no_tasks_knows_nothing() {
    let e = PipelineSpec::parse("name: x\nsteps:\n  - {name: a, task: prep}\n", "x.yaml", &NoTasks).unwrap_err();
    assert_eq!(e.to_string(), "x.yaml:3: step 'a': unknown task 'prep' (deployed tasks: none)");
}
