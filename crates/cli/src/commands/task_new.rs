//! `podder task new NAME`: scaffold a task directory from a template.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use podder_core::Name;

use crate::ctx::Ctx;

/// A template's files: path and text with `{{name}}`, `{{env}}`, `{{image}}`.
const PYTHON: &[(&str, &str)] = &[
    ("task.yaml", include_str!("../../templates/python/task.yaml")),
    ("main.py", include_str!("../../templates/python/main.py")),
    ("requirements.txt", include_str!("../../templates/python/requirements.txt")),
    ("Dockerfile", include_str!("../../templates/python/Dockerfile")),
    ("sample/input.txt", include_str!("../../templates/python/sample/input.txt")),
];

pub async fn run(ctx: &Ctx, name: &str, template: &str, env: &str, dir: Option<PathBuf>) -> Result<i32> {
    let name: Name = name.parse().context("bad task name")?;
    let files = match template {
        "python" => PYTHON,
        other => bail!("unknown template '{other}': the templates are: python"),
    };
    let environment = super::env::find(ctx, env).await?;
    let image = environment.spec.image_for(0).ok_or_else(|| {
        anyhow::anyhow!("environment '{env}' has no Docker image to start a task from: pick one with an image")
    })?;
    if environment.spec.build.is_some() {
        bail!("environment '{env}' is built from a Dockerfile; start the task from an image environment instead");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name.as_str()));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty: pick another --dir", dir.display());
    }
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("template files have parents"))?;
        let text = text.replace("{{name}}", name.as_str()).replace("{{env}}", env).replace("{{image}}", &image);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!("created task {name} in {} (template {template}, from {image})", dir.display());
    eprintln!("next: edit main.py and task.yaml, then `podder task build {}` and `podder task deploy`", dir.display());
    Ok(0)
}
