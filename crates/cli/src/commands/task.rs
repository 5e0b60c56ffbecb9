//! `podder task ...`: dispatch, and the small task commands (deploy, run,
//! list, show). `new` and `build` have their own files.

use anyhow::Result;
use podder_core::Name;
use podder_core::api::{DeployTask, RunTask, Task};

use crate::args::TaskCmd;
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, cmd: TaskCmd) -> Result<i32> {
    match cmd {
        TaskCmd::New { name, template, env, dir } => super::task_new::run(ctx, &name, &template, &env, dir).await,
        TaskCmd::Build { dir, obfuscate, git, project, queue, json } => {
            let a = super::task_build::BuildArgs { dir, obfuscate, git, project, queue, json };
            super::task_build::run(ctx, a).await
        }
        TaskCmd::Deploy { build, project, json } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let build_job = match build {
                Some(b) => Some(ctx.job_ref(&b, Some(&format!("{owner}/{project}")))?.number),
                None => None,
            };
            let task = ctx.client.deploy_task(&owner, &project, &DeployTask { build_job }).await?;
            if json {
                return display::json(&task).map(|_| 0);
            }
            eprintln!(
                "deployed {}/{}/{} v{} ({}{})",
                task.owner,
                task.project,
                task.name,
                task.version,
                task.environment.image_for(0).unwrap_or_default(),
                task.commit.as_deref().map(|c| format!(", commit {c}")).unwrap_or_default()
            );
            Ok(0)
        }
        TaskCmd::Run { name, params, data, resources, message, queue, project, follow, json } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let name: Name = name.parse()?;
            let req = RunTask {
                params: super::run::parse_params(&params)?,
                data,
                resources: super::run::resources(&resources)?,
                message,
                queue,
            };
            let job = ctx.client.run_task(&owner, &project, &name, &req).await?;
            if json {
                display::json(&job)?;
            } else {
                println!("{}", job.job_ref);
            }
            if follow {
                let done = super::logs::follow(ctx, &job.job_ref).await?;
                return Ok(super::logs::exit_code(&done));
            }
            Ok(0)
        }
        TaskCmd::List { project, json } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let tasks = ctx.client.list_tasks(&owner, &project).await?;
            if json {
                return display::json(&tasks).map(|_| 0);
            }
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    vec![
                        t.name.to_string(),
                        format!("v{}", t.version),
                        t.spec.command.join(" "),
                        t.build_job.to_string(),
                        source(t),
                        display::ago(t.deployed_at),
                    ]
                })
                .collect();
            display::table(&["NAME", "VERSION", "COMMAND", "BUILD", "SOURCE", "DEPLOYED"], &rows);
            Ok(0)
        }
        TaskCmd::Show { name, project, json } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let task = ctx.client.get_task(&owner, &project, &name.parse()?).await?;
            if json {
                return display::json(&task).map(|_| 0);
            }
            show(&task);
            Ok(0)
        }
    }
}

fn source(t: &Task) -> String {
    let mut s = match &t.commit {
        Some(c) => format!("git {}", &c[..c.len().min(12)]),
        None => "directory".into(),
    };
    if t.obfuscated {
        s.push_str(", obfuscated");
    }
    s
}

fn show(t: &Task) {
    println!("task:        {}/{}/{} v{}", t.owner, t.project, t.name, t.version);
    println!("description: {}", t.spec.description);
    println!("command:     {}", t.spec.command.join(" "));
    println!("image:       {}", t.environment.image_for(0).unwrap_or_default());
    println!("built by:    {} ({})", t.build_job, source(t));
    for i in &t.spec.inputs {
        println!("input:       {} at {}{}", i.name, i.mount, if i.optional { " (optional)" } else { "" });
    }
    for o in &t.spec.outputs {
        println!("output:      {o}");
    }
    for (k, p) in &t.spec.params {
        let d = p.default.as_ref().map(|d| format!(" = {d}")).unwrap_or_default();
        println!("param:       {k}: {:?}{d}", p.kind);
    }
}
