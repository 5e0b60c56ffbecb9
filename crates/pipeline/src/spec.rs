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
use podder_core::task::{ParamSpec, ParamType, TaskSpec};
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
    fn texts(&self) -> Vec<&str> {
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

/// The text of a parameter's default, in its normal form when it fits its type.
fn default_text(p: &ParamSpec) -> Option<Result<String, String>> {
    let d = p.default.as_ref()?;
    let fits = match (p.kind, d) {
        (ParamType::Str, serde_json::Value::String(s)) => Ok(s.clone()),
        (ParamType::Str, other) => Err(format!("default {other} is not a str (quote it)")),
        (k, serde_json::Value::String(s)) => Err(format!("default \"{s}\" is not a{} {}", article(k), kind_name(k))),
        (k, other) => {
            k.check(&other.to_string()).map_err(|_| format!("default {other} is not a{} {}", article(k), kind_name(k)))
        }
    };
    Some(fits)
}

fn kind_name(k: ParamType) -> &'static str {
    match k {
        ParamType::Int => "int",
        ParamType::Float => "float",
        ParamType::Str => "str",
        ParamType::Bool => "bool",
    }
}

fn article(k: ParamType) -> &'static str {
    if k == ParamType::Int { "n" } else { "" }
}

/// Finds the lines of keys and steps in a pipeline file's text (1-based).
struct Lines<'a> {
    lines: Vec<&'a str>,
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn is_blank(l: &str) -> bool {
    let t = l.trim();
    t.is_empty() || t.starts_with('#')
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        Lines { lines: text.lines().collect() }
    }

    /// The line of a top-level key (0-based index).
    fn top(&self, key: &str) -> Option<usize> {
        self.lines.iter().position(|l| {
            indent(l) == 0 && (l.starts_with(&format!("{key}:")) || l.starts_with(&format!("\"{key}\":")))
        })
    }

    /// The lines of a top-level key's block: the key's own line and the
    /// indented lines after it (0-based, end exclusive).
    fn block(&self, key: &str) -> Option<(usize, usize)> {
        let start = self.top(key)?;
        let mut end = start + 1;
        while end < self.lines.len() && (is_blank(self.lines[end]) || indent(self.lines[end]) > 0) {
            end += 1;
        }
        Some((start, end))
    }

    /// The line of `KEY: ...` (or `KEY:` in a flow mapping) inside a block.
    fn key_in(&self, (start, end): (usize, usize), key: &str) -> Option<usize> {
        (start..end).find(|&i| {
            let l = self.lines[i];
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:"))
                || t.starts_with(&format!("\"{key}\":"))
                || t.starts_with(&format!("'{key}':"))
                || l.contains(&format!("{{{key}:"))
                || l.contains(&format!(", {key}:"))
        })
    }

    /// The line of the `n`th step called `name` (1-based).
    fn step(&self, name: &str, n: usize) -> usize {
        let Some(block) = self.block("steps") else { return 1 };
        let mut seen = 0;
        for i in block.0..block.1 {
            let l = self.lines[i];
            let mut rest = l;
            while let Some(k) = rest.find("name:") {
                let before = rest[..k].chars().last();
                let after = &rest[k + "name:".len()..];
                let value = after.split([',', '}', '#']).next().unwrap_or("");
                if matches!(before, None | Some(' ' | '{' | ',' | '-' | '\t')) && unquote(value) == name {
                    seen += 1;
                    if seen > n {
                        return i + 1;
                    }
                    break;
                }
                rest = after;
            }
        }
        block.0 + 1
    }

    fn schedule(&self) -> usize {
        match self.block("schedule") {
            Some(b) => self.key_in(b, "cron").unwrap_or(b.0) + 1,
            None => 1,
        }
    }

    fn key(&self, key: &str) -> usize {
        self.top(key).map(|i| i + 1).unwrap_or(1)
    }

    fn param(&self, name: &str) -> usize {
        match self.block("params") {
            Some(b) => self.key_in(b, name).unwrap_or(b.0) + 1,
            None => 1,
        }
    }
}

impl PipelineSpec {
    /// Parses and validates a pipeline file: YAML errors and every semantic
    /// problem (cycles, unknown steps in `needs`, unknown tasks, inputs from
    /// steps not in `needs`, a bad cron or time zone, wrong parameter types,
    /// a step with both/neither `task` and `command`, duplicate names, bad
    /// durations), all at once, each with the file and line it is on:
    /// `file:line:col: ...` for YAML errors, `file:line: ...` for the others,
    /// sorted by line.
    pub fn parse(text: &str, file: &str, known: &dyn Known) -> Result<PipelineSpec, Problems> {
        let spec: PipelineSpec = yaml_serde::from_str(text).map_err(|e| {
            let at = e.location().map(|l| format!("{file}:{}:{}", l.line(), l.column())).unwrap_or(file.to_string());
            Problems(vec![format!("{at}: {e}")])
        })?;
        let problems = spec.problems(text, known);
        if problems.is_empty() {
            return Ok(spec);
        }
        let mut problems = problems;
        problems.sort_by_key(|(line, _)| *line);
        Err(Problems(problems.into_iter().map(|(line, m)| format!("{file}:{line}: {m}")).collect()))
    }

    /// Every semantic problem, with its line.
    fn problems(&self, text: &str, known: &dyn Known) -> Vec<(usize, String)> {
        let lines = Lines::new(text);
        let mut out: Vec<(usize, String)> = Vec::new();

        // Pipeline parameters.
        let mut defaults = BTreeMap::new();
        for (name, p) in &self.params {
            let line = lines.param(name);
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push((line, format!("parameter '{name}': use letters, digits and '_'")));
            }
            match default_text(p) {
                Some(Ok(v)) => {
                    defaults.insert(name.clone(), v);
                }
                Some(Err(e)) => out.push((line, format!("parameter '{name}': {e}"))),
                None => {}
            }
        }

        if let Some(s) = &self.schedule
            && let Err(e) = crate::cron::check(s)
        {
            out.push((lines.schedule(), e));
        }
        if self.max_active_runs == 0 {
            out.push((lines.key("max_active_runs"), "max_active_runs is 0: give 1 or more".to_string()));
        }
        if self.steps.is_empty() {
            out.push((lines.key("steps"), "the pipeline has no steps".to_string()));
        }

        // Step names, and the line of each step.
        let mut nth: BTreeMap<&str, usize> = BTreeMap::new();
        let mut step_lines = Vec::with_capacity(self.steps.len());
        for s in &self.steps {
            let n = nth.entry(&s.name).or_insert(0);
            let line = lines.step(&s.name, *n);
            if *n == 1 {
                out.push((line, format!("two steps are called '{}': give each step its own name", s.name)));
            }
            *n += 1;
            if let Err(e) = s.name.parse::<podder_core::Name>() {
                out.push((line, format!("step name: {e}")));
            }
            step_lines.push(line);
        }
        let names: BTreeMap<&str, usize> =
            self.steps.iter().enumerate().rev().map(|(i, s)| (s.name.as_str(), i)).collect();

        for (idx, s) in self.steps.iter().enumerate() {
            let line = step_lines[idx];
            let name = &s.name;
            let mut say = |m: String| out.push((line, m));

            // needs
            for n in &s.needs {
                if n == name {
                    say(format!("step '{name}' needs itself"));
                } else if !names.contains_key(n.as_str()) {
                    say(format!("step '{name}' needs '{n}', which is not a step"));
                }
            }

            // task or command
            let task = match (&s.task, s.command.is_empty()) {
                (Some(_), false) => {
                    say(format!("step '{name}' has both a task and a command: give one of them"));
                    None
                }
                (None, true) => {
                    say(format!("step '{name}' has neither a task nor a command: give one of them"));
                    None
                }
                (None, false) => None,
                (Some(t), true) => match known.task(t) {
                    Some(spec) => Some(spec),
                    None => {
                        let all = known.task_names();
                        let list = if all.is_empty() { "none".to_string() } else { all.join(", ") };
                        say(format!("step '{name}': unknown task '{t}' (deployed tasks: {list})"));
                        None
                    }
                },
            };
            if s.task.is_some() && s.env.is_some() {
                say(format!("step '{name}' runs a task, which has its own environment: remove env"));
            }

            // `${params.X}`
            let mut undeclared = Vec::new();
            for t in s.texts() {
                for r in param_refs(t) {
                    if !self.params.contains_key(&r) && !undeclared.contains(&r) {
                        undeclared.push(r);
                    }
                }
            }
            for r in &undeclared {
                let have: Vec<&str> = self.params.keys().map(String::as_str).collect();
                say(format!(
                    "step '{name}' uses ${{params.{r}}}, which the pipeline does not declare (it declares: {})",
                    if have.is_empty() { "nothing".to_string() } else { have.join(", ") }
                ));
            }

            // params, checked against the task's
            if let Some(t) = task {
                for (k, v) in &s.params {
                    let Some(p) = t.params.get(k) else {
                        let have: Vec<&str> = t.params.keys().map(String::as_str).collect();
                        say(format!(
                            "step '{name}': task '{}' has no parameter '{k}' (it has: {})",
                            t.name,
                            have.join(", ")
                        ));
                        continue;
                    };
                    let refs = param_refs(v);
                    if refs.is_empty() {
                        if let Err(e) = p.kind.check(v) {
                            say(format!("step '{name}': parameter '{k}': {e}"));
                        }
                    } else if refs.iter().all(|r| defaults.contains_key(r)) {
                        let v2 = substitute(v, &defaults);
                        if let Err(e) = p.kind.check(&v2) {
                            say(format!("step '{name}': parameter '{k}' = '{v}': with the pipeline's defaults {e}"));
                        }
                    }
                }
                for (k, p) in &t.params {
                    if p.default.is_none() && !s.params.contains_key(k) {
                        say(format!(
                            "step '{name}': task '{}' needs parameter '{k}' (it has no default): give it under params",
                            t.name
                        ));
                    }
                }
            }

            // inputs
            let mut mounts: Vec<MountPath> = Vec::new();
            let mut fed: Vec<&str> = Vec::new();
            for (i, inp) in s.inputs.iter().enumerate() {
                let what = format!("step '{name}': input {}", i + 1);
                match (&inp.from, &inp.dataset) {
                    (None, None) => say(format!("{what} has neither from nor dataset: give one of them")),
                    (Some(_), Some(_)) => say(format!("{what} has both from and dataset: give one of them")),
                    (Some(f), None) => {
                        if !s.needs.contains(f) {
                            say(format!(
                                "step '{name}' takes an input from '{f}', which is not in needs: add it to needs"
                            ));
                        }
                    }
                    (None, Some(d)) => {
                        if inp.path.is_some() {
                            say(format!(
                                "{what}: path is for an input from a step; give a dataset's directory as NAME#N/DIR or leave path out"
                            ));
                        }
                        if param_refs(d).is_empty()
                            && let Err(e) = d.parse::<podder_core::SourceRef>()
                        {
                            say(format!("{what}: {e}"));
                        }
                    }
                }
                if let Some(p) = &inp.path
                    && param_refs(p).is_empty()
                    && let Err(e) = podder_core::mount::check_relative(p)
                {
                    say(format!("{what}: path {e}"));
                }
                match (&inp.input, &inp.mount, task) {
                    (Some(_), _, None) if s.task.is_none() => {
                        say(format!("{what}: `input:` is for task steps; give mount instead"))
                    }
                    (None, None, _) if s.task.is_none() => say(format!("{what} has no mount: give mount: /data/...")),
                    (None, None, _) => say(format!("{what} has neither input (the task's input it feeds) nor mount")),
                    (Some(n), _, Some(t)) => match t.inputs.iter().find(|ti| ti.name.as_str() == n) {
                        Some(ti) => {
                            fed.push(n);
                            mounts.push(inp.mount.clone().unwrap_or_else(|| ti.mount.clone()));
                        }
                        None => {
                            let have: Vec<&str> = t.inputs.iter().map(|ti| ti.name.as_str()).collect();
                            say(format!(
                                "step '{name}': task '{}' has no input '{n}' (it has: {})",
                                t.name,
                                if have.is_empty() { "none".to_string() } else { have.join(", ") }
                            ));
                        }
                    },
                    (_, Some(m), _) => mounts.push(m.clone()),
                    _ => {}
                }
            }
            if let Some(t) = task {
                for ti in &t.inputs {
                    if !ti.optional && !fed.contains(&ti.name.as_str()) {
                        say(format!(
                            "step '{name}': task '{}' needs input '{}': feed it with inputs: [{{from: STEP, input: {}}}]",
                            t.name, ti.name, ti.name
                        ));
                    }
                }
            }
            if let Err(e) = podder_core::refs::check_mounts(mounts.iter()) {
                say(format!("step '{name}': {e}"));
            }

            // durations
            for (key, v) in [("timeout", &s.timeout), ("retry_delay", &s.retry_delay)] {
                if let Some(v) = v
                    && let Err(e) = parse_duration(v)
                {
                    say(format!("step '{name}': {key}: {e}"));
                }
            }
            if s.timeout_secs() == Some(0) {
                say(format!("step '{name}': timeout is 0: give a positive duration or leave it out"));
            }
        }

        // cycles
        for cycle in self.cycles(&names) {
            let first = names[cycle[0].as_str()];
            out.push((step_lines[first], format!("steps form a cycle: {}", cycle.join(" -> "))));
        }
        out
    }

    /// The cycles of `needs` (self-needs left out), each once, written in
    /// run order and closed: `a -> b -> a` when b needs a and a needs b.
    fn cycles(&self, names: &BTreeMap<&str, usize>) -> Vec<Vec<String>> {
        let n = self.steps.len();
        let needs: Vec<Vec<usize>> = self
            .steps
            .iter()
            .map(|s| s.needs.iter().filter(|x| **x != s.name).filter_map(|x| names.get(x.as_str()).copied()).collect())
            .collect();
        // 0 unvisited, 1 on the stack, 2 done
        let mut color = vec![0u8; n];
        let mut found: Vec<Vec<String>> = Vec::new();
        let mut seen_sets: Vec<Vec<usize>> = Vec::new();
        for root in 0..n {
            if color[root] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            color[root] = 1;
            while let Some(&mut (v, ref mut k)) = stack.last_mut() {
                if *k < needs[v].len() {
                    let w = needs[v][*k];
                    *k += 1;
                    match color[w] {
                        0 => {
                            color[w] = 1;
                            stack.push((w, 0));
                        }
                        1 => {
                            // stack from w to v is a cycle in "needs" direction
                            let pos = stack.iter().position(|(x, _)| *x == w).expect("on the stack");
                            let mut members: Vec<usize> = stack[pos..].iter().map(|(x, _)| *x).collect();
                            let mut key = members.clone();
                            key.sort_unstable();
                            if !seen_sets.contains(&key) {
                                seen_sets.push(key);
                                members.reverse(); // run order: upstream first
                                // start at the step declared first
                                let at =
                                    members.iter().enumerate().min_by_key(|(_, m)| **m).map(|(i, _)| i).unwrap_or(0);
                                members.rotate_left(at);
                                let mut names: Vec<String> =
                                    members.iter().map(|m| self.steps[*m].name.clone()).collect();
                                names.push(names[0].clone());
                                found.push(names);
                            }
                        }
                        _ => {}
                    }
                } else {
                    color[v] = 2;
                    stack.pop();
                }
            }
        }
        found
    }

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

/// `90`, `90s`, `10m`, `2h`, `1d`, or several of them (`1h30m`) → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("'{s}' is not a duration: use seconds (90) or a number with s, m, h or d (90s, 10m, 2h, 1h30m)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        if total != 0 || t.chars().any(|c| !c.is_ascii_digit()) {
            // a bare number after a unit, like `1m30`
            return Err(bad());
        }
        total = num.parse().map_err(|_| bad())?;
    }
    Ok(total)
}

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
