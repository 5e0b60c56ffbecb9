//! Validation of a pipeline file: YAML errors, then every semantic problem
//! at once, each located at the line of the step, parameter or schedule it
//! concerns (found in the text, since YAML values carry no positions).

use std::collections::BTreeMap;

use podder_core::MountPath;
use podder_core::task::{ParamSpec, ParamType};

use crate::spec::*;

/// The text of a parameter's default, in its normal form when it fits its type.
pub(crate) fn default_text(p: &ParamSpec) -> Option<Result<String, String>> {
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
}
