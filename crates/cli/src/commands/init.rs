//! `podder init NAME`: links this directory to a project, creating it when
//! it does not exist, and writes `podder.yaml`.

use anyhow::Result;

use crate::config::{PROJECT_FILE, ProjectFile};
use crate::ctx::Ctx;

pub async fn run(ctx: &Ctx, name: &str) -> Result<i32> {
    let (owner, project) = ctx.split_project(name)?;
    let dir = std::env::current_dir()?;
    if dir.join(PROJECT_FILE).exists() {
        anyhow::bail!("{PROJECT_FILE} already exists here: edit it, or remove it first");
    }
    match ctx.client.project(&owner, &project).await {
        Ok(_) => println!("linked to existing project {owner}/{project}"),
        Err(e) if e.status() == Some(404) && owner == ctx.me => {
            ctx.client.create_project(&project, "").await?;
            println!("created project {owner}/{project}");
        }
        Err(e) => return Err(e.into()),
    }
    let spec = if owner == ctx.me { project.to_string() } else { format!("{owner}/{project}") };
    ProjectFile { project: spec, env: None }.write(&dir)?;
    println!("wrote {PROJECT_FILE}; next: podder run -- python3 train.py");
    Ok(0)
}
