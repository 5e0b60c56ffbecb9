//! Tasks: reusable steps described by a `task.yaml`, built into an image.
//!
//! ```yaml
//! name: train
//! description: Trains the model
//! command: [python, -m, main]
//! workdir: /task
//! inputs:
//!   - name: dataset
//!     mount: /data/input
//! outputs: [model]
//! params:
//!   epochs: {type: int, default: 3}
//!   lr: {type: float, default: 0.01}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, invalid};
use crate::mount::MountPath;
use crate::names::Name;

/// The type of a task parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Int,
    Float,
    Str,
    Bool,
}

impl ParamType {
    /// Checks a value given as text; answers its normal form.
    pub fn check(self, v: &str) -> Result<String, String> {
        match self {
            ParamType::Int => {
                v.trim().parse::<i64>().map(|n| n.to_string()).map_err(|_| format!("'{v}' is not an int"))
            }
            ParamType::Float => match v.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(v.trim().to_string()),
                _ => Err(format!("'{v}' is not a float")),
            },
            ParamType::Bool => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok("true".into()),
                "false" | "0" | "no" => Ok("false".into()),
                _ => Err(format!("'{v}' is not a bool (true or false)")),
            },
            ParamType::Str => Ok(v.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    pub name: Name,
    pub mount: MountPath,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub optional: bool,
}

/// A `task.yaml`, as written by the user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: Name,
    #[serde(default)]
    pub description: String,
    /// The environment the scaffold's Dockerfile starts from (for the record).
    #[serde(default)]
    pub env: Option<String>,
    pub command: Vec<String>,
    /// Where the task's code lives in its image.
    #[serde(default = "default_workdir")]
    pub workdir: String,
    #[serde(default)]
    pub inputs: Vec<TaskInput>,
    /// Names of what the task writes under `/output`.
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
}

fn default_workdir() -> String {
    "/task".into()
}

impl TaskSpec {
    /// Parses a `task.yaml`; errors name the file, line and column.
    pub fn from_yaml(text: &str, file: &str) -> Result<TaskSpec, Error> {
        let spec: TaskSpec = yaml_serde::from_str(text).map_err(|e| {
            let at = e.location().map(|l| format!("{file}:{}:{}", l.line(), l.column())).unwrap_or(file.to_string());
            invalid(format!("{at}: {e}"))
        })?;
        spec.validate().map_err(|e| invalid(format!("{file}: {e}")))?;
        Ok(spec)
    }

    /// Every problem at once, one per line.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if self.command.is_empty() {
            problems.push("command is empty: give the command the task runs, e.g. [python, -m, main]".to_string());
        }
        if !self.workdir.starts_with('/') {
            problems.push(format!("workdir '{}' must be an absolute path", self.workdir));
        }
        for (name, p) in &self.params {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push(format!("parameter '{name}': use letters, digits and '_'"));
            }
            if let Some(d) = &p.default {
                let text = match d {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let fits = match (p.kind, d) {
                    (ParamType::Str, serde_json::Value::String(_)) => true,
                    (ParamType::Str, _) => false,
                    (_, serde_json::Value::String(_)) => false,
                    (k, _) => k.check(&text).is_ok(),
                };
                if !fits {
                    problems.push(format!("parameter '{name}': default {d} is not a {:?}", p.kind).to_lowercase());
                }
            }
        }
        let mounts: Vec<&MountPath> = self.inputs.iter().map(|i| &i.mount).collect();
        if let Err(e) = crate::refs::check_mounts(mounts) {
            problems.push(e.to_string());
        }
        if problems.is_empty() { Ok(()) } else { Err(invalid(problems.join("\n"))) }
    }

    /// The parameters a run gets: the given ones checked against their
    /// types, the rest from their defaults. Every problem at once.
    pub fn resolve_params(&self, given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Error> {
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for k in given.keys() {
            if !self.params.contains_key(k) {
                let known: Vec<&str> = self.params.keys().map(String::as_str).collect();
                problems.push(format!("task '{}' has no parameter '{k}' (it has: {})", self.name, known.join(", ")));
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
                None => match &p.default {
                    Some(serde_json::Value::String(s)) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Some(v) => {
                        out.insert(k.clone(), v.to_string());
                    }
                    None => problems.push(format!("parameter '{k}' has no default: give --param {k}=VALUE")),
                },
            }
        }
        if problems.is_empty() { Ok(out) } else { Err(invalid(problems.join("\n"))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: train\ncommand: [python, -m, main]\ninputs:\n  - name: dataset\n    mount: /data/input\nparams:\n  epochs: {type: int, default: 3}\n  lr: {type: float, default: 0.5}\n  tag: {type: str}\n";

    #[test]
    fn parses_and_resolves_params() {
        let t = TaskSpec::from_yaml(GOOD, "task.yaml").unwrap();
        assert_eq!(t.workdir, "/task");
        let given = BTreeMap::from([("epochs".to_string(), "5".to_string()), ("tag".to_string(), "x".to_string())]);
        let p = t.resolve_params(&given).unwrap();
        assert_eq!(p["epochs"], "5");
        assert_eq!(p["lr"], "0.5");
        let bad = BTreeMap::from([("epochs".to_string(), "five".to_string()), ("nope".to_string(), "1".to_string())]);
        let e = t.resolve_params(&bad).unwrap_err().to_string();
        assert!(
            e.contains("'five' is not an int")
                && e.contains("no parameter 'nope'")
                && e.contains("'tag' has no default"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = TaskSpec::from_yaml("name: train\ncommand: [python]\nparams:\n  n: {type: integer}\n", "t/task.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t/task.yaml:4:"), "{e}");
        let e = TaskSpec::from_yaml("name: train\n", "task.yaml").unwrap_err().to_string();
        assert!(e.contains("command"), "{e}");
        let e =
            TaskSpec::from_yaml("name: train\ncommand: [x]\nparams:\n  n: {type: int, default: abc}\n", "task.yaml")
                .unwrap_err()
                .to_string();
        assert!(e.contains("default"), "{e}");
    }
}
