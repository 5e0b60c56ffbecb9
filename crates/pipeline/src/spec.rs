//! The pipeline file (YAML): its types and helpers. Parsing and validation
//! (`PipelineSpec::parse`) are in `validate.rs`.
//!
//! ```yaml
//! name: nightly
//! description: Prepare, train two models, compare
//! params:
//!   lr: {type: float, default: 0.1}
//! schedule: {cron: "0 3 * * *", timezone: Europe/Paris}
//! max_active_runs: 1
//! steps:
//!   - name: prepare
//!     task: prep                  # a deployed task of the project, by name
//!     params: {rows: "1000"}
//!   - name: train-a
//!     needs: [prepare]
//!     env: python-3.11            # an inline step: env + command, run on the
//!     command: [python3, train.py, --lr, "${params.lr}"]   # pipeline's code snapshot
//!     inputs:
//!       - {from: prepare, path: data, mount: /data/prep}   # an upstream step's output
//!       - {dataset: cifar@2, mount: /data/cifar}
//!     retries: 2
//!     retry_delay: 5s
//!     timeout: 10m
//!     cache: true
//!   - name: compare
//!     needs: [train-a]
//!     trigger_rule: all_done
//!     command: [python3, compare.py]
//! ```

use std::collections::BTreeMap;

use podder_core::MountPath;
use podder_core::task::{ParamSpec, TaskSpec};

use crate::validate::default_text;
use serde::{Deserialize, Serialize};

/// When a step runs, given how its upstream steps (`needs`) ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream step succeeded (or was reused from the cache).
    #[default]
    AllSuccess,
    /// Every upstream step ended, however.
    AllDone,
    /// At least one upstream step succeeded (runs as soon as one does).
    OneSuccess,
    /// At least one upstream step failed (runs as soon as one does).
    OneFailed,
    /// No upstream step failed (skipped ones are fine).
    NoneFailed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// 5-field cron, `@daily`, `MON-FRI`, ... (croner's syntax).
    pub cron: String,
    /// An IANA time zone; default UTC.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".into()
}

/// One input of a step: an upstream step's output (or a path inside it),
/// or a dataset / job output as `run --data` takes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    /// An upstream step whose output is mounted (it must be in `needs`).
    #[serde(default)]
    pub from: Option<String>,
    /// A directory inside that output.
    #[serde(default)]
    pub path: Option<String>,
    /// Or a data source: `cifar@2`, `bob/cifar`, `mnist#12/model`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// For a task step: the task's input this feeds (mounted where the
    /// task declares it); else `mount` is required.
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub mount: Option<MountPath>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    /// A deployed task of the project, by name...
    #[serde(default)]
    pub task: Option<String>,
    /// ...or an inline step: a command (with an optional env) run on the
    /// pipeline's code snapshot.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub setup: Vec<String>,
    /// Parameters: values may use `${params.NAME}` of the pipeline.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub inputs: Vec<StepInput>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub retries: u32,
    /// Delay before the first retry (`30`, `5s`, `2m`); doubles each retry.
    #[serde(default)]
    pub retry_delay: Option<String>,
    /// `90`, `90s`, `10m`, `2h`.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub trigger_rule: TriggerRule,
    /// Reuse the previous result when code, environment, command,
    /// parameters and input versions are all the same.
    #[serde(default)]
    pub cache: bool,
    #[serde(default)]
    pub gpu: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: podder_core::Name,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// How many runs may be active at once (scheduled runs beyond it are
    /// skipped, manual ones refused).
    #[serde(default = "one")]
    pub max_active_runs: u32,
    /// Run the missed schedule instants after a pause or downtime (default:
    /// no, only the latest one).
    #[serde(default)]
    pub catchup: bool,
    pub steps: Vec<StepSpec>,
}

fn one() -> u32 {
    1
}

/// Every problem of a pipeline file, each with `file:line:` in front, one
/// per line. `Display` joins them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Problems {}

/// What validation needs to know about the world: which tasks the project
/// has deployed, and their parameters and inputs.
pub trait Known {
    fn task(&self, name: &str) -> Option<&podder_core::task::TaskSpec>;
    /// The names of the deployed tasks, for the "unknown task" message.
    fn task_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Tasks by name (what the server has after loading a project's tasks).
impl Known for BTreeMap<String, TaskSpec> {
    fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.get(name)
    }
    fn task_names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// A project without deployed tasks.
pub struct NoTasks;

impl Known for NoTasks {
    fn task(&self, _: &str) -> Option<&TaskSpec> {
        None
    }
}

impl StepSpec {
    /// `timeout` in seconds (None: no timeout). Validated by [`PipelineSpec::parse`].
    pub fn timeout_secs(&self) -> Option<u64> {
        self.timeout.as_deref().and_then(|t| parse_duration(t).ok())
    }

    /// `retry_delay` in seconds (0 when absent: retry at once).
    pub fn retry_delay_secs(&self) -> u64 {
        self.retry_delay.as_deref().and_then(|t| parse_duration(t).ok()).unwrap_or(0)
    }

    /// The step with `${params.NAME}` replaced in its command, setup, env,
    /// parameter values and its inputs' datasets and paths.
    pub fn substituted(&self, params: &BTreeMap<String, String>) -> StepSpec {
        let mut s = self.clone();
        for c in s.command.iter_mut().chain(s.setup.iter_mut()) {
            *c = substitute(c, params);
        }
        if let Some(e) = &mut s.env {
            *e = substitute(e, params);
        }
        for v in s.params.values_mut() {
            *v = substitute(v, params);
        }
        for i in &mut s.inputs {
            if let Some(d) = &mut i.dataset {
                *d = substitute(d, params);
            }
            if let Some(p) = &mut i.path {
                *p = substitute(p, params);
            }
        }
        s
    }

    /// Every text of the step where `${params.NAME}` may appear.
    pub(crate) fn texts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.command.iter().chain(self.setup.iter()).map(String::as_str).collect();
        out.extend(self.env.as_deref());
        out.extend(self.params.values().map(String::as_str));
        for i in &self.inputs {
            out.extend(i.dataset.as_deref());
            out.extend(i.path.as_deref());
        }
        out
    }
}

/// The parameter names that a text refers to with `${params.NAME}`.
pub fn param_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${params.") {
        let after = &rest[i + "${params.".len()..];
        match after.find('}') {
            Some(j) => {
                out.push(after[..j].to_string());
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

impl PipelineSpec {
    /// The step names in an order where every step comes after its `needs`;
    /// among steps that are ready together, the one declared first comes
    /// first. Steps in a cycle (rejected by [`PipelineSpec::parse`]) come
    /// last, in file order.
    pub fn topo_order(&self) -> Vec<String> {
        let n = self.steps.len();
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            index.entry(s.name.as_str()).or_insert(i);
        }
        let mut indegree = vec![0usize; n];
        let mut down: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, s) in self.steps.iter().enumerate() {
            let mut ups: Vec<usize> = s.needs.iter().filter_map(|x| index.get(x.as_str()).copied()).collect();
            ups.sort_unstable();
            ups.dedup();
            for u in ups {
                indegree[i] += 1;
                down[u].push(i);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|i| indegree[*i] == 0).collect();
        let mut done = vec![false; n];
        let mut out = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            done[i] = true;
            out.push(self.steps[i].name.clone());
            for &d in &down[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        out.extend((0..n).filter(|i| !done[*i]).map(|i| self.steps[i].name.clone()));
        out
    }

    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps that `step` needs, directly or not.
    pub fn upstream_of(&self, step: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut todo = vec![step.to_string()];
        while let Some(s) = todo.pop() {
            if let Some(spec) = self.step(&s) {
                for n in &spec.needs {
                    if out.insert(n.clone()) {
                        todo.push(n.clone());
                    }
                }
            }
        }
        out
    }

    /// The steps that need `step`, directly or not.
    pub fn downstream_of(&self, step: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut todo = vec![step.to_string()];
        while let Some(s) = todo.pop() {
            for spec in &self.steps {
                if spec.needs.contains(&s) && out.insert(spec.name.clone()) {
                    todo.push(spec.name.clone());
                }
            }
        }
        out
    }

    /// The pipeline's parameters for a run: given ones checked against
    /// their types (and put in their normal form), the rest from defaults;
    /// every problem at once.
    pub fn resolve_params(&self, given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Problems> {
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for k in given.keys() {
            if !self.params.contains_key(k) {
                let have: Vec<&str> = self.params.keys().map(String::as_str).collect();
                problems.push(format!(
                    "pipeline '{}' has no parameter '{k}' (it has: {})",
                    self.name,
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                ));
            }
        }
        for (k, p) in &self.params {
            match given.get(k) {
                Some(v) => match p.kind.check(v) {
                    Ok(v) => {
                        out.insert(k.clone(), v);
                    }
                    Err(e) => problems.push(format!("parameter '{k}': {e}")),
                },
                None => match default_text(p) {
                    Some(Ok(v)) => {
                        out.insert(k.clone(), v);
                    }
                    Some(Err(e)) => problems.push(format!("parameter '{k}': {e}")),
                    None => problems.push(format!("parameter '{k}' has no default: give --param {k}=VALUE")),
                },
            }
        }
        if problems.is_empty() { Ok(out) } else { Err(Problems(problems)) }
    }
}

/// `${params.NAME}` in a step's command and parameter values, replaced.
/// Names that `params` lacks are left as they are.
pub fn substitute(text: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${params.") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "${params.".len()..];
        match after.find('}') {
            Some(j) => {
                match params.get(&after[..j]) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[i..i + "${params.".len() + j + 1]),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

pub use podder_core::duration::parse_duration;

/// The cache key of a step: BLAKE3 over the code manifest, the resolved
/// environment, the command, setup, parameters and the input manifests
/// (with their mount paths), in a canonical encoding (hex).
///
/// The encoding (version 1): the tag `podder-step-cache-v1\0`, then each
/// field as a sequence of length-prefixed byte strings (the length as 8
/// bytes little-endian, then the bytes): the code manifest's hex id; the
/// environment as `-` when absent or `+` and its JSON (serde_json, fields
/// in declaration order); the command (a count, then each argument); the
/// setup (likewise); the parameters sorted by name (a count, then name and
/// value); the inputs sorted by mount path (a count, then mount path and
/// manifest hex id). Input order does not matter (each is mounted at its
/// own path); everything else does.
pub fn cache_key(
    code: &podder_core::ManifestId,
    env: Option<&podder_core::EnvSpec>,
    command: &[String],
    setup: &[String],
    params: &BTreeMap<String, String>,
    inputs: &[(podder_core::ManifestId, MountPath)],
) -> String {
    fn put(h: &mut blake3::Hasher, b: &[u8]) {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    }
    fn count(h: &mut blake3::Hasher, n: usize) {
        h.update(&(n as u64).to_le_bytes());
    }
    let mut h = blake3::Hasher::new();
    h.update(b"podder-step-cache-v1\0");
    put(&mut h, code.to_hex().as_bytes());
    match env {
        None => put(&mut h, b"-"),
        Some(e) => {
            let mut b = b"+".to_vec();
            b.extend(serde_json::to_vec(e).expect("an EnvSpec serializes"));
            put(&mut h, &b);
        }
    }
    for list in [command, setup] {
        count(&mut h, list.len());
        for a in list {
            put(&mut h, a.as_bytes());
        }
    }
    count(&mut h, params.len());
    for (k, v) in params {
        put(&mut h, k.as_bytes());
        put(&mut h, v.as_bytes());
    }
    let mut ins: Vec<(&str, String)> = inputs.iter().map(|(m, p)| (p.as_str(), m.to_hex())).collect();
    ins.sort();
    count(&mut h, ins.len());
    for (p, m) in ins {
        put(&mut h, p.as_bytes());
        put(&mut h, m.as_bytes());
    }
    h.finalize().to_hex().to_string()
}
