//! `podder task build [DIR] [--obfuscate] [--git URL#REF]`: a build job on
//! a docker agent makes the task's image; the job's log is the build log.
//!
//! From a directory, `task.yaml` is checked here first (errors with file and
//! line) and the directory is uploaded like code; from Git, the agent clones
//! the commit and checks `task.yaml` there.

use std::path::PathBuf;

use anyhow::{Result, bail};
use podder_core::api::{BuildRequest, Job, SubmitJob};
use podder_core::env::GitSource;
use podder_core::task::TaskSpec;

use crate::ctx::Ctx;
use crate::display;

pub struct BuildArgs {
    pub dir: Option<PathBuf>,
    pub obfuscate: bool,
    pub git: Option<String>,
    pub project: Option<String>,
    pub queue: Option<String>,
    pub json: bool,
}

pub async fn run(ctx: &Ctx, a: BuildArgs) -> Result<i32> {
    if a.git.is_some() && a.dir.is_some() {
        bail!("give a directory or --git URL, not both");
    }
    if let Some(g) = &a.git {
        g.parse::<GitSource>()?;
    }
    let (owner, project) = ctx.project(a.project.as_deref())?;
    let code = match &a.git {
        Some(_) => {
            let empty = tempfile::tempdir()?;
            super::run::upload_code(ctx, empty.path().to_path_buf(), 1).await?.manifest
        }
        None => {
            let dir = a.dir.clone().unwrap_or(std::env::current_dir()?);
            let yaml = dir.join("task.yaml");
            let text = std::fs::read_to_string(&yaml).map_err(|e| {
                anyhow::anyhow!("cannot read {}: {e}; scaffold a task with `podder task new NAME`", yaml.display())
            })?;
            TaskSpec::from_yaml(&text, &yaml.display().to_string())?;
            if !dir.join("Dockerfile").is_file() {
                bail!("{} has no Dockerfile: the task's image is built from it", dir.display());
            }
            super::run::upload_code(ctx, dir, 1 << 30).await?.manifest
        }
    };
    let job = ctx
        .client
        .submit(
            &owner,
            &project,
            &SubmitJob {
                code,
                build: Some(BuildRequest { git: a.git.clone(), obfuscate: a.obfuscate }),
                queue: a.queue,
                message: Some(match &a.git {
                    Some(g) => format!("build from {g}"),
                    None => "build".to_string(),
                }),
                ..Default::default()
            },
        )
        .await?;
    eprintln!("building in {}", job.job_ref);
    let done = super::logs::follow_to(ctx, &job.job_ref, a.json).await?;
    if a.json {
        display::json(&done)?;
    }
    report(&done)
}

fn report(job: &Job) -> Result<i32> {
    match &job.build_result {
        Some(r) if job.state == podder_core::JobState::Succeeded => {
            let commit = r.build.git.as_ref().and_then(|g| g.commit.clone());
            eprintln!(
                "built {} ({}){}{}",
                r.image,
                short(&r.image_id),
                commit.map(|c| format!(" from commit {c}")).unwrap_or_default(),
                if r.build.obfuscate { ", obfuscated" } else { "" }
            );
            eprintln!("next: `podder task deploy {}`", job.job_ref);
            Ok(0)
        }
        _ => {
            let why = job.reason.as_deref().unwrap_or("see the log above");
            eprintln!("the build failed: {why}; its log stays: `podder logs {}`", job.job_ref);
            Ok(1)
        }
    }
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}
