//! Starting, retrying and watching pipeline runs: a per-step view that is
//! redrawn in place on a terminal as the run changes (long-poll on its
//! revision), and printed as one line per change otherwise.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use podder_core::Name;
use podder_core::api::{PipelineRun, RetryRun, StartRun};

use super::pipeline::{is_done, parse_run};
use crate::ctx::Ctx;
use crate::display;

pub async fn start(
    ctx: &Ctx,
    name: &str,
    params: &[String],
    only: Option<String>,
    follow: bool,
    project: Option<&str>,
    json: bool,
) -> Result<i32> {
    let (owner, project) = ctx.project(project)?;
    let name: Name = name.parse()?;
    let req = StartRun { params: super::run::parse_params(params)?, only };
    let run = ctx.client.start_run(&owner, &project, &name, &req).await?;
    after_start(ctx, &owner, &project, run, follow, json).await
}

pub async fn retry(
    ctx: &Ctx,
    run: &str,
    from: Option<String>,
    follow: bool,
    project: Option<&str>,
    json: bool,
) -> Result<i32> {
    let (owner, project) = ctx.project(project)?;
    let (name, number) = parse_run(run)?;
    let run = ctx.client.retry_run(&owner, &project, &name, number, &RetryRun { from }).await?;
    after_start(ctx, &owner, &project, run, follow, json).await
}

async fn after_start(
    ctx: &Ctx,
    owner: &Name,
    project: &Name,
    run: PipelineRun,
    follow: bool,
    json: bool,
) -> Result<i32> {
    if !follow {
        if json {
            display::json(&run)?;
        } else {
            println!("{}/{}", run.pipeline, run.number);
        }
        return Ok(0);
    }
    eprintln!("{}/{}", run.pipeline, run.number);
    let done = watch(ctx, owner, project, run, json).await?;
    Ok(exit_code(&done))
}

pub async fn status(ctx: &Ctx, run: &str, follow: bool, project: Option<&str>, json: bool) -> Result<i32> {
    let (owner, project) = ctx.project(project)?;
    let (name, number) = parse_run(run)?;
    let r = ctx.client.get_run(&owner, &project, &name, number, None, 0).await?;
    if follow {
        let done = watch(ctx, &owner, &project, r, json).await?;
        return Ok(exit_code(&done));
    }
    if json {
        display::json(&r)?;
    } else {
        print_table(&r);
    }
    Ok(0)
}

fn exit_code(r: &PipelineRun) -> i32 {
    if r.state == "succeeded" { 0 } else { 1 }
}

/// Follows a run until it ends; returns it ended.
async fn watch(ctx: &Ctx, owner: &Name, project: &Name, mut run: PipelineRun, json: bool) -> Result<PipelineRun> {
    let tty = std::io::stdout().is_terminal() && !json;
    let mut drawn = 0usize;
    let mut last: Vec<(String, String)> = Vec::new();
    loop {
        if tty {
            drawn = redraw(&run, drawn);
        } else if !json {
            for s in &run.steps {
                let key = (s.name.clone(), format!("{} {}", s.state, s.attempt));
                if !last.contains(&key) {
                    let job = s.job.as_ref().map(|j| format!(" {j}")).unwrap_or_default();
                    println!("{}/{} {}: {}{job}", run.pipeline, run.number, s.name, s.state);
                }
            }
            last = run.steps.iter().map(|s| (s.name.clone(), format!("{} {}", s.state, s.attempt))).collect();
        }
        if run.state != "running" {
            break;
        }
        run = ctx.client.get_run(owner, project, &run.pipeline, run.number, Some(run.revision), 25_000).await?;
    }
    if json {
        display::json(&run)?;
    } else {
        let took = run.finished_at.map(|f| display::duration_ms(f - run.created_at)).unwrap_or_default();
        eprintln!("{}/{} {} in {took}", run.pipeline, run.number, run.state);
    }
    Ok(run)
}

fn rows(r: &PipelineRun) -> Vec<Vec<String>> {
    r.steps
        .iter()
        .map(|s| {
            let took = match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) => display::duration_ms(b - a),
                (Some(a), None) => display::duration_ms(display::now_ms() - a),
                _ => "-".into(),
            };
            let job = match (&s.job, &s.cached_from) {
                (_, Some(c)) => format!("reused {c}"),
                (Some(j), None) => j.to_string(),
                _ => "-".into(),
            };
            let attempt = if s.attempt > 1 { format!(" (attempt {})", s.attempt) } else { String::new() };
            vec![
                format!("{} {}", mark(&s.state), s.name),
                format!("{}{attempt}", s.state),
                job,
                took,
                s.reason.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

fn print_table(r: &PipelineRun) {
    println!("run {}/{}: {} ({})", r.pipeline, r.number, r.state, r.trigger);
    display::table(&["STEP", "STATE", "JOB", "TOOK", "REASON"], &rows(r));
}

/// Draws the table over the previous one; answers how many lines it drew.
fn redraw(r: &PipelineRun, previous: usize) -> usize {
    let mut out = std::io::stdout().lock();
    if previous > 0 {
        let _ = write!(out, "\x1b[{previous}A\x1b[J");
    }
    let _ = out.flush();
    drop(out);
    print_table(r);
    let done = r.steps.iter().filter(|s| is_done(&s.state)).count();
    println!("{done}/{} steps done", r.steps.len());
    r.steps.len() + 3
}

fn mark(state: &str) -> &'static str {
    match state {
        "succeeded" => "✓",
        "cached" => "↺",
        "failed" => "✗",
        "running" => "▶",
        "retrying" => "↻",
        "skipped" | "cancelled" => "-",
        _ => "·",
    }
}
