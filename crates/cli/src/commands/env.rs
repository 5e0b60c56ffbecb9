//! `podder env ...`: create, list, show and delete environments.

use std::path::Path;

use anyhow::{Context, Result, bail};
use podder_core::api::{CreateEnv, Environment};
use podder_core::{EnvRef, Name};

use crate::args::EnvCmd;
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, cmd: EnvCmd) -> Result<i32> {
    match cmd {
        EnvCmd::Create { name, description, image, gpu_image, dockerfile, requirements, stock, replace, json } => {
            let name: Name = name.parse()?;
            if image.is_none() && dockerfile.is_none() && requirements.is_none() {
                bail!("give --image IMAGE, --dockerfile PATH or --requirements FILE (or an image and requirements)");
            }
            if image.is_some() && dockerfile.is_some() {
                bail!("give --image or --dockerfile, not both: a Dockerfile names its base image in FROM");
            }
            let read = |p: &Path, what: &str| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read the {what} {}", p.display()))
            };
            let dockerfile = dockerfile.as_deref().map(|p| read(p, "Dockerfile")).transpose()?;
            if let Some(d) = &dockerfile
                && !d.lines().any(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
            {
                bail!("the Dockerfile has no FROM line: start it with FROM IMAGE");
            }
            let requirements = requirements.as_deref().map(|p| read(p, "requirements file")).transpose()?;
            let env = ctx
                .client
                .create_env(&CreateEnv {
                    name,
                    description,
                    image,
                    gpu_image,
                    dockerfile,
                    requirements,
                    stock,
                    replace,
                })
                .await?;
            if json {
                display::json(&env)?;
            } else {
                println!("{}", env_name(ctx, &env));
            }
            Ok(0)
        }
        EnvCmd::List { json } => {
            let envs = ctx.client.list_envs().await?;
            if json {
                return display::json(&envs).map(|_| 0);
            }
            let rows: Vec<Vec<String>> =
                envs.iter().map(|e| vec![env_name(ctx, e), kind(e), source(e), e.description.clone()]).collect();
            display::table(&["NAME", "KIND", "IMAGE / REQUIREMENTS", "DESCRIPTION"], &rows);
            Ok(0)
        }
        EnvCmd::Show { name, json } => {
            let env = find(ctx, &name).await?;
            if json {
                return display::json(&env).map(|_| 0);
            }
            println!("name:         {}", env_name(ctx, &env));
            println!("kind:         {}", kind(&env));
            println!("description:  {}", env.description);
            if let Some(i) = &env.spec.image {
                println!("image:        {i}");
            }
            if let Some(i) = &env.spec.gpu_image {
                println!("gpu image:    {i}");
            }
            if let Some(b) = &env.spec.build {
                println!("built as:     {}", b.tag());
                if let Some(d) = &b.dockerfile {
                    println!("dockerfile:\n{}", indent(d));
                }
            }
            if let Some(r) = &env.spec.requirements {
                println!("requirements:\n{}", indent(if r.trim().is_empty() { "(none: a plain venv)" } else { r }));
            }
            Ok(0)
        }
        EnvCmd::Delete { name } => {
            let env = find(ctx, &name).await?;
            ctx.client.delete_env(&env.owner, &env.name).await?;
            eprintln!("deleted environment {}", env_name(ctx, &env));
            Ok(0)
        }
    }
}

/// Finds an environment as `run --env` resolves it: yours, else the stock one.
pub async fn find(ctx: &Ctx, name: &str) -> Result<Environment> {
    let r: EnvRef = name.parse()?;
    let envs = ctx.client.list_envs().await?;
    let pick = |owner: &str| envs.iter().find(|e| e.owner.as_str() == owner && e.name == r.name).cloned();
    let found = match &r.owner {
        Some(o) => pick(o.as_str()),
        None => pick(ctx.me.as_str()).or_else(|| pick(podder_core::env::STOCK_OWNER)),
    };
    match found {
        Some(e) => Ok(e),
        None => {
            let names: Vec<String> = envs.iter().map(|e| env_name(ctx, e)).collect();
            bail!("unknown environment '{name}' (there are: {}); create one with `podder env create`", names.join(", "))
        }
    }
}

pub fn env_name(ctx: &Ctx, e: &Environment) -> String {
    if e.stock || e.owner == ctx.me { e.name.to_string() } else { format!("{}/{}", e.owner, e.name) }
}

fn kind(e: &Environment) -> String {
    let s = &e.spec;
    let k = match (&s.build, &s.image, &s.requirements) {
        (Some(_), _, _) => "dockerfile",
        (None, Some(_), Some(_)) => "image+venv",
        (None, Some(_), None) => "image",
        (None, None, _) => "venv",
    };
    if e.stock { format!("{k} (stock)") } else { k.to_string() }
}

fn source(e: &Environment) -> String {
    let s = &e.spec;
    if let Some(b) = &s.build {
        return b.tag();
    }
    let reqs = s.requirements.as_deref().map(|r| {
        let pkgs: Vec<&str> =
            r.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).take(4).collect();
        if pkgs.is_empty() { "venv".to_string() } else { format!("venv: {}", pkgs.join(" ")) }
    });
    match (&s.image, reqs) {
        (Some(i), Some(r)) => format!("{i} + {r}"),
        (Some(i), None) => i.clone(),
        (None, Some(r)) => r,
        (None, None) => "-".into(),
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}
