//! `podder status [JOB] [--project P] [--json]`: one job in detail, or the project's jobs.

use anyhow::Result;
use podder_core::api::Job;

use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, job: Option<&str>, project: Option<&str>, json: bool) -> Result<i32> {
    match job {
        Some(j) => {
            let job = ctx.client.job(&ctx.job_ref(j, project)?, &ctx.me).await?;
            if json { display::json(&job)? } else { show(&job) }
        }
        None => {
            let (owner, project) = ctx.project(project)?;
            let jobs = ctx.client.jobs(&owner, &project).await?;
            if json {
                display::json(&jobs)?;
            } else {
                let rows: Vec<Vec<String>> = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            format!("#{}", j.job_ref.number),
                            j.state.to_string(),
                            display::ago(j.created_at),
                            display::runtime(j),
                            display::command_line(j),
                        ]
                    })
                    .collect();
                display::table(&["JOB", "STATE", "CREATED", "RUNTIME", "COMMAND"], &rows);
            }
        }
    }
    Ok(0)
}

fn show(j: &Job) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("job:        {}", j.job_ref);
    println!("state:      {}", j.state);
    if let Some(r) = &j.reason {
        println!("reason:     {r}");
    }
    println!("command:    {}", display::command_line(j));
    for s in &j.spec.setup {
        println!("setup:      {s}");
    }
    for (k, v) in &j.spec.params {
        println!("param:      {k}={v}");
    }
    for i in &j.spec.inputs {
        println!("input:      {} at {} ({})", i.source, i.mount, i.manifest.short());
    }
    println!("code:       {}", j.spec.code.short());
    println!("output:     {}", opt(j.output.map(|o| o.short())));
    println!("exit code:  {}", opt(j.exit_code.map(|c| c.to_string())));
    println!("attempt:    {} (retries allowed: {})", j.attempt, j.spec.retries);
    println!("agent:      {}", opt(j.agent.clone()));
    if let Some(m) = &j.message {
        println!("message:    {m}");
    }
    if let Some(r) = &j.restarted_from {
        println!("restart of: {r}");
    }
    println!("created:    {}", display::ago(j.created_at));
    println!("runtime:    {}", display::runtime(j));
}
