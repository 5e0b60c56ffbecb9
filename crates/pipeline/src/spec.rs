//! The pipeline file (YAML) and its validation.
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
use podder_core::task::ParamSpec;
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
}

impl PipelineSpec {
    /// Parses and validates a pipeline file: YAML errors and every semantic
    /// problem (cycles, unknown steps in `needs`, unknown tasks, inputs from
    /// steps not in `needs`, a bad cron or time zone, wrong parameter types,
    /// a step with both/neither `task` and `command`, duplicate names, bad
    /// durations), all at once, each with the file and line it is on.
    pub fn parse(text: &str, file: &str, known: &dyn Known) -> Result<PipelineSpec, Problems> {
        todo!("{text}{file}{}", known.task("").is_some())
    }

    /// The step names in an order where every step comes after its `needs`.
    pub fn topo_order(&self) -> Vec<String> {
        todo!()
    }

    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The pipeline's parameters for a run: given ones checked against
    /// their types, the rest from defaults; every problem at once.
    pub fn resolve_params(&self, given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Problems> {
        todo!("{given:?}")
    }
}

/// `${params.NAME}` in a step's command and parameter values, replaced.
pub fn substitute(text: &str, params: &BTreeMap<String, String>) -> String {
    todo!("{text}{params:?}")
}

/// `90`, `90s`, `10m`, `2h` → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    todo!("{s}")
}

/// The cache key of a step: BLAKE3 over the code manifest, the resolved
/// environment, the command, setup, parameters and the input manifests
/// (with their mount paths), in a canonical encoding (hex).
pub fn cache_key(
    code: &podder_core::ManifestId,
    env: Option<&podder_core::EnvSpec>,
    command: &[String],
    setup: &[String],
    params: &BTreeMap<String, String>,
    inputs: &[(podder_core::ManifestId, MountPath)],
) -> String {
    todo!("{code}{env:?}{command:?}{setup:?}{params:?}{inputs:?}")
}
